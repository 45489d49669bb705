"""Twin KL: the person's next-token distributions matched to a stranger's.

    L = mean_forget KL(p_start(. | x_twin) || p(. | x))  +  alpha * mean_retain KL(p_start(. | x) || p(. | x))

with x a forget example (question and answer, or a document) and x_twin the same text about the
person's stranger (twin_rmu's pairs: `twin_rmu.twin_pairs`), at every position after the first
mention of the name whose token the two texts share. Twin RMU steers the last hidden state there
to the stranger's; this matches what the model says next, the whole distribution (the starting
model's top-k tokens and the tail mass), so the alternatives to the true answer are weighed as
they were for someone the model never saw: what TOFU's truth ratio reads, which the hidden
states' squared error weighs only through the head. The retain term is the KL to the starting
model on retain answers (graddiff's `retain_loss=kl`). It trains the salient quarter of the weights,
as twin_rmu.
"""
from __future__ import annotations

import torch
from pydantic import Field

from ..scoring import backbone_and_head
from .cache import cache_topk_at, cache_topk_distributions, kl_rows, topk_kl
from .registry import Params, register
from .twin_rmu import twin_pairs


class TwinKLParams(Params):
    alpha: float = Field(1.0, ge=0, description="weight of the retain KL")
    kl_topk: int = Field(32, ge=1, description="starting-model tokens kept per position for both KL terms")


def prepare(model, streams, ctx):
    """The aligned positions, the starting model's top-k next-token distributions on each twin at
    its positions, and on retain answers."""
    pos, twins = twin_pairs(streams["forget"], ctx, "twin_kl")
    k = ctx.params.kl_topk
    return {"pos": [mine for mine, _ in pos],
            "targets": cache_topk_at(model, twins, [theirs for _, theirs in pos], ctx.pad_id, k),
            "retain": cache_topk_distributions(model, streams["retain"], ctx.pad_id, k)}


@register("twin_kl", TwinKLParams, "Twin KL: the person's next-token distributions matched to a stranger's; retain KL",
          train=dict(lr=1e-3, epochs=5, batch_size=16, saliency=0.25), needs_retain=True, prepare=prepare)
def loss(model, batch, ctx):
    c, f = ctx.cache, batch["forget"]
    decoder, head = backbone_and_head(model)
    hidden = decoder(input_ids=f["input_ids"], attention_mask=f["attention_mask"]).last_hidden_state
    rows = [hidden[b, c["pos"][i]] for b, i in enumerate(f["index"].tolist()) if c["pos"][i]]
    if rows:
        forget = kl_rows(torch.log_softmax(head(torch.cat(rows)).float(), -1),
                         *c["targets"].gather(f["index"], hidden.device))
    else:
        forget = hidden.sum() * 0
    retain = topk_kl(model, batch["retain"], c["retain"])
    return forget + ctx.params.alpha * retain, {"forget_kl": forget.detach(), "retain_kl": retain.detach()}, forget
