"""Negative Preference Optimization (NPO), and NPO with a retain term (NPO-RT).

    L_NPO = (2/beta) * E_forget[ log(1 + (pi_theta(y|x) / pi_ref(y|x))^beta) ]
          = -(2/beta) * E_forget[ log sigmoid(-beta * (log pi_theta(y|x) - log pi_ref(y|x))) ]
    L_NPO-RT = gamma * L_NPO + alpha * NLL(retain)

with log pi(y|x) the summed answer-token log-probability. Zhang, Lin, Bai, Mei 2024, "Negative
Preference Optimization: From Catastrophic Collapse to Effective Unlearning". As beta -> 0 it is
gradient ascent; unlike GA its gradient vanishes once pi_theta(y|x) << pi_ref(y|x), so it is bounded.
The reference log-probs are those of the starting model, cached once before training
(`cache.cache_sequence_logprobs`): no frozen copy of the model stays in memory.
"""
import torch.nn.functional as F
from pydantic import Field

from ..scoring import nll, sequence_logprob
from .registry import Params, register


class NPOParams(Params):
    beta: float = Field(0.1, gt=0, description="inverse temperature; beta -> 0 is gradient ascent")


class NPORTParams(NPOParams):
    gamma: float = Field(1.0, ge=0, description="weight of the NPO term")
    alpha: float = Field(5.0, ge=0, description="weight of the retain NLL term")


def prepare(model, streams, ctx):
    from .cache import cache_sequence_logprobs

    return cache_sequence_logprobs(model, streams["forget"], ctx.pad_id)


def npo_loss(model, batch, ctx):
    """The NPO term on `batch["forget"]` (shared by npo and npo_rt); `ctx.cache` holds the
    reference log-probs."""
    beta = ctx.params.beta
    logp = sequence_logprob(model, batch["forget"])
    ref = ctx.cache[batch["forget"]["index"].cpu()].to(logp.device)
    log_ratio = logp.float() - ref
    return -2 / beta * F.logsigmoid(-beta * log_ratio).mean(), log_ratio.detach().mean()


@register("npo", NPOParams, "Negative Preference Optimization: bounded, reference-relative ascent on forget",
          train=dict(lr=2e-4, steps=40, batch_size=16), prepare=prepare)
def loss(model, batch, ctx):
    forget, log_ratio = npo_loss(model, batch, ctx)
    return forget, {"log_ratio": log_ratio}, forget


@register("npo_rt", NPORTParams, "NPO plus a retain-set NLL term (NPO-RT)",
          train=dict(lr=5e-4, epochs=5, batch_size=16), needs_retain=True, prepare=prepare)
def loss_rt(model, batch, ctx):
    p = ctx.params
    forget, log_ratio = npo_loss(model, batch, ctx)
    retain = nll(model, batch["retain"])
    return (p.gamma * forget + p.alpha * retain, {"npo": forget.detach(), "retain_nll": retain.detach(), "log_ratio": log_ratio},
            p.gamma * forget)
