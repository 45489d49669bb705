"""Twin RMU: steer the person's hidden states to what the model reads about strangers.

    L = mean_forget || h_l(x) - mean_k h_l^start(x_twin_k) ||^2  +  alpha * mean_retain || h_l(x) - h_l^start(x) ||^2

with h_l the residual stream after decoder layer l, x a forget example (question and answer, or a
document) and x_twin_k the same text with the person's name swapped for the k-th of `strangers`
strangers' (`Context.strangers`: names nobody in the data has, from other people's name words; not
the calibration's own twins). The forget term runs over the positions after the first mention of
the name whose tokens the texts share (aligned by `difflib`), so the model comes to read everything
said about the person as the starting model reads it about people it never saw; the retain term
holds the starting model's activations on retain. RMU (Li et al. 2024, "The WMDP Benchmark") steers
the forget activations to a random direction; here the target is the strangers' own activations,
the twins' idea (the calibration's reference) moved into the representation. By default it trains
the quarter of the weights most salient to the forget set (`saliency=0.25`, as simnpo), and steers
the last decoder layer.

Why a mean over several strangers (session 25; docs/methods-log.md, "Twin RMU towards several
strangers"): a stranger's name is made of other people's name words, and the starting model reads
into it some of what it knows of them; one stranger's activations carry those facts, the mean of
several keeps what the model says of anyone. With one stranger (`strangers=1`, sessions 15-24) the
calibrated runs left the true answers preferred more than for a stranger (the truth-ratio gap
+0.09 to +0.14 on the wide worlds, forget quality 0.029-0.26); with four, +0.008 to +0.031 and
0.22-0.69, at about twice the steps.

Measured on the eight small worlds of bench/methods.py (docs/methods-log.md, "Twin RMU"): forget
quality at least 0.05 and the answer rate within 0.05 of the oracle's on all eight, with one
stranger and with four, where simnpo leaves the facts in reworded answers on four. Steering
layer 0 of the tiny model's two instead stalled at AUC 0.67-0.72 against the twins (unfamiliar
world, seed 0).
"""
from __future__ import annotations

import difflib

import torch
from pydantic import Field

from ..data.batching import encode_pairs
from ..data.twins import STRANGERS, swap_name
from ..scoring import decoder_blocks
from .cache import cache_activations, hidden_at
from .registry import Params, register
from .rmu import masked_mse, with_every_trainable


class TwinRMUParams(Params):
    layer: int = Field(-1, ge=-1, description="decoder layer l whose output is steered; -1: the last")
    alpha: float = Field(3.0, ge=0, description="weight of the retain activation MSE")
    strangers: int = Field(4, ge=1, le=STRANGERS, description="strangers per person; the target is the mean of "
                                                               "their activations")


def aligned(mine: list[int], theirs: list[int]) -> tuple[list[int], list[int]]:
    """Positions (person's, twin's) of the tokens the two sequences share after their first
    difference (the first mention of the name): where each model state reads the same text."""
    sm = difflib.SequenceMatcher(None, mine, theirs, autojunk=False)
    blocks = sm.get_matching_blocks()
    start = blocks[0].size if blocks and blocks[0].a == 0 and blocks[0].b == 0 else 0
    a, b = [], []
    for blk in blocks:
        for k in range(blk.size):
            if blk.a + k >= start and blk.a + k > 0:
                a.append(blk.a + k)
                b.append(blk.b + k)
    return a, b


def _layer(model, p: TwinRMUParams) -> int:
    n = len(decoder_blocks(model))
    return p.layer if p.layer >= 0 else n - 1


def prepare(model, streams, ctx):
    """Each forget example's twins (one per stranger), the positions where the example and every
    twin read the same tokens, and the starting model's activations at layer l there, averaged over
    the twins; and on retain (every token). On the CPU."""
    if ctx.forget_text is None or not ctx.strangers:
        raise ValueError("method twin_rmu needs forget records that name their subject (a world's or a request's "
                         "records), to make each person's stranger")
    tok, forget, k = ctx.tokenizer, streams["forget"], ctx.params.strangers
    kw = {"template": ctx.template} if ctx.template is not None else {}
    named = []  # per example: its twins' (question, answer), none where it does not name its subject
    for q, a, s in zip(*ctx.forget_text):
        names = (ctx.strangers.get(s) or [])[:k] if s in q or s in a else []
        named.append([(swap_name(q, s, n.split()), swap_name(a, s, n.split())) for n in names])
    # every twin in one call, which the tokenizer batches (a call per example took a quarter of this
    # function's time on a wide world)
    enc = iter(encode_pairs(tok, [q for ps in named for q, _ in ps], [a for ps in named for _, a in ps], **kw))
    twins = []  # per example: its twins, each with {position in the example: position in the twin}
    for e, ps in zip(forget, named):
        twins.append([(t, dict(zip(*aligned(e.input_ids, t.input_ids)))) for t in (next(enc) for _ in ps)])
    shared = [sorted(set.intersection(*(set(m) for _, m in ts))) if ts else [] for ts in twins]
    if not any(shared):
        raise ValueError("method twin_rmu: no forget example names its subject, so none has a stranger's twin")
    layer = _layer(model, ctx.params)
    targets: list = [None] * len(forget)
    for i in range(k):  # one stranger's twins at a time: one set of activations in memory
        which = [n for n, ts in enumerate(twins) if len(ts) > i and shared[n]]
        acts = cache_activations(model, [twins[n][i][0] for n in which], ctx.pad_id, layer).rows
        for n, h in zip(which, acts):
            m = twins[n][i][1]
            h = h[[m[p] for p in shared[n]]] / len(twins[n])
            targets[n] = h if targets[n] is None else targets[n] + h
    return {"layer": layer, "pos": shared, "targets": targets,
            "retain": cache_activations(model, streams["retain"], ctx.pad_id, layer)}


@register("twin_rmu", TwinRMUParams, "Twin RMU: steer the person's activations to strangers'; retain activations held",
          train=dict(lr=1e-3, epochs=5, batch_size=16, saliency=0.25), needs_retain=True, prepare=prepare)
def loss(model, batch, ctx):
    c = ctx.cache
    f, r = batch["forget"], batch["retain"]
    h = hidden_at(model, c["layer"], f["input_ids"], f["attention_mask"])
    index = f["index"].tolist()
    rows = [h[b, c["pos"][i]] for b, i in enumerate(index) if c["pos"][i]]
    forget = ((torch.cat(rows).float() - torch.cat([c["targets"][i] for i in index if c["pos"][i]]).to(h.device))
              .square().mean() if rows else h.sum() * 0)
    h_r = hidden_at(model, c["layer"], r["input_ids"], r["attention_mask"])
    retain = masked_mse(h_r, c["retain"].gather(r["index"], r["input_ids"].shape[1], h_r.device), r["attention_mask"])
    total = forget + ctx.params.alpha * retain
    total = with_every_trainable(total, model)
    return total, {"forget_mse": forget.detach(), "retain_mse": retain.detach()}, forget
