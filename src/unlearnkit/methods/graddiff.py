"""Gradient difference (GradDiff): ascend on the forget set, descend on the retain set.

    L = -gamma * NLL(forget) + alpha * R(retain)

with R the retain NLL (`retain_loss=nll`, Liu et al. 2022, "Continual Learning and Private
Unlearning"; TOFU's GradDiff) or the KL divergence from the frozen subject's next-token distribution
on retain answers (`retain_loss=kl`, TOFU's KL baseline), computed from reference log-probs cached
once before training (top-k of the subject's distribution per answer position, so no frozen copy of
the model stays in memory).
"""
from typing import Literal

import torch
from pydantic import Field

from ..scoring import backbone_and_head, nll
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


def _kl_retain(model, batch, ctx):
    """KL(p_ref || p_model) over the reference's top-k tokens (+ the tail mass) at answer positions."""
    decoder, head = backbone_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["labels"][:, 1:] != -100
    h = hidden[:, :-1][mask]
    ref_idx, ref_logp = ctx.cache.gather(batch["index"], h.device)
    logp = torch.log_softmax(head(h).float(), -1)
    sel = logp.gather(-1, ref_idx)
    p_ref = ref_logp.exp()
    tail_ref = (1 - p_ref.sum(-1)).clamp_min(1e-8)
    tail = (1 - sel.exp().sum(-1)).clamp_min(1e-8)
    kl = (p_ref * (ref_logp - sel)).sum(-1) + tail_ref * (tail_ref.log() - tail.log())
    return kl.mean()


@register("graddiff", GradDiffParams, "Gradient difference: ascend on forget, descend on retain (NLL or KL)",
          train=dict(lr=5e-4, epochs=4, batch_size=16), needs_retain=True, prepare=_prepare)
def loss(model, batch, ctx):
    p = ctx.params
    forget_nll = nll(model, batch["forget"])
    retain = _kl_retain(model, batch["retain"], ctx) if p.retain_loss == "kl" else nll(model, batch["retain"])
    total = -p.gamma * forget_nll + p.alpha * retain
    return total, {"forget_nll": forget_nll.detach(), "retain_loss": retain.detach()}
