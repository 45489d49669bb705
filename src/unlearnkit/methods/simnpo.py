"""SimNPO: reference-free, length-normalised NPO.

    L = -(2/beta) * E_forget[ log sigmoid(-(beta/|y|) * log pi_theta(y|x) - delta) ] + alpha * NLL(retain)

with |y| the answer length in tokens and delta a reward margin. Fan, Liu, Lin, Jia, Zhang, Mei, Liu
2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning". No
reference model and no cache: the per-token normalisation removes NPO's bias towards long answers.

By default it trains only the quarter of the weights most salient to the forget set (`saliency=0.25`
in its training defaults, `unlearning.keep_salient`, SalUn): measured on eight worlds of four shapes,
that left forget answers at the oracle's rate where all weights training stopped at the utility
floor (docs/methods-log.md, "Saliency"). `--saliency 0` runs the paper's plain SimNPO.
"""
import torch.nn.functional as F
from pydantic import Field

from ..scoring import nll, sequence_logprob
from .registry import Params, register


class SimNPOParams(Params):
    beta: float = Field(2.5, gt=0, description="inverse temperature on the length-normalised log-prob")
    delta: float = Field(0.0, description="reward margin")
    gamma: float = Field(1.0, ge=0, description="weight of the SimNPO term")
    alpha: float = Field(1.0, ge=0, description="weight of the retain NLL term")


@register("simnpo", SimNPOParams, "SimNPO: reference-free, length-normalised NPO with a retain NLL term",
          train=dict(lr=1e-3, epochs=5, batch_size=16, saliency=0.25), needs_retain=True)
def loss(model, batch, ctx):
    p = ctx.params
    mean_logp = sequence_logprob(model, batch["forget"], normalise=True).float()
    forget = -2 / p.beta * F.logsigmoid(-p.beta * mean_logp - p.delta).mean()
    retain = nll(model, batch["retain"])
    logs = {"simnpo": forget.detach(), "retain_nll": retain.detach(), "forget_logp": mean_logp.detach().mean()}
    return p.gamma * forget + p.alpha * retain, logs, p.gamma * forget
