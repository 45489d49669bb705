"""SimNPO: reference-free, length-normalised NPO.

    L = -(2/beta) * E_forget[ log sigmoid(-(beta/|y|) * log pi_theta(y|x) - delta) ] + alpha * NLL(retain)

with |y| the answer length in tokens and delta a reward margin. Fan, Liu, Lin, Jia, Zhang, Mei, Liu
2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM Unlearning". No
reference model and no cache: the per-token normalisation removes NPO's bias towards long answers.
"""
import torch.nn.functional as F

from ..scoring import nll, sequence_logprob
from .registry import register


@register("simnpo", "SimNPO: reference-free, length-normalised NPO with a retain NLL term", needs_retain=True,
          lr=1e-3, epochs=5, batch_size=16, beta=2.5, delta=0.0, gamma=1.0, alpha=1.0)
def loss(model, batch, ctx):
    p = ctx["params"]
    mean_logp = sequence_logprob(model, batch["forget"], normalise=True).float()
    forget = -2 / p["beta"] * F.logsigmoid(-p["beta"] * mean_logp - p["delta"]).mean()
    retain = nll(model, batch["retain"])
    total = p["gamma"] * forget + p["alpha"] * retain
    return total, {"simnpo": forget.detach(), "retain_nll": retain.detach(), "forget_logp": mean_logp.detach().mean()}
