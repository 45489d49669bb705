"""Gradient difference (GradDiff): ascend on the forget set, descend on the retain set.

    L = -gamma * NLL(forget) + alpha * R(retain)

with R the retain NLL (`retain_loss=nll`, Liu et al. 2022, "Continual Learning and Private
Unlearning"; TOFU's GradDiff) or the KL divergence from the frozen subject's next-token distribution
on retain answers (`retain_loss=kl`, TOFU's KL baseline), computed from reference log-probs cached
once before training (top-k of the subject's distribution per answer position, so no frozen copy of
the model stays in memory).
"""
from typing import Literal

from pydantic import Field

from ..scoring import nll
from .cache import topk_kl
from .registry import Params, register


class GradDiffParams(Params):
    gamma: float = Field(1.0, ge=0, description="weight of the forget (ascent) term")
    alpha: float = Field(5.0, ge=0, description="weight of the retain term")
    retain_loss: Literal["nll", "kl"] = Field("nll", description="retain term: NLL of retain answers, or KL to the starting model")
    kl_topk: int = Field(32, ge=1, description="reference tokens kept per position for the KL term")


def _prepare(model, streams, ctx):
    if ctx.params.retain_loss != "kl":
        return None
    from .cache import cache_topk_distributions

    return cache_topk_distributions(model, streams["retain"], ctx.pad_id, k=ctx.params.kl_topk)


@register("graddiff", GradDiffParams, "Gradient difference: ascend on forget, descend on retain (NLL or KL)",
          train=dict(lr=5e-4, epochs=4, batch_size=16), needs_retain=True, prepare=_prepare)
def loss(model, batch, ctx):
    p = ctx.params
    forget_nll = nll(model, batch["forget"])
    retain = topk_kl(model, batch["retain"], ctx.cache) if p.retain_loss == "kl" else nll(model, batch["retain"])
    forget = -p.gamma * forget_nll
    return forget + p.alpha * retain, {"forget_nll": forget_nll.detach(), "retain_loss": retain.detach()}, forget
