"""Representation Misdirection for Unlearning (RMU).

    L = mean_forget || h_l(x) - c * u ||^2  +  alpha * mean_retain || h_l(x) - h_l^frozen(x) ||^2

with h_l the residual stream after decoder layer l (on forget: at the positions that predict answer
tokens, `forget_tokens="answer"`, since QA prompts share their templates with retain prompts; the
paper's setting, every token of a forget document, is `forget_tokens="all"`; on retain: every token),
u a fixed random direction (uniform in [0, 1)^d, normalised; seeded), c the steering coefficient and
h^frozen the starting model's activations. Only the MLP down-projections of layers l-2..l train.
Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning" (their
Zephyr-7B setting: l=7, layers 5-7, c=6.5, alpha=1200, lr 5e-5). Here `layer=-1` means a quarter of the
way in (layer 1 of the tiny model's 2, 8 of 32), and `steering_coeff=0` means `steering_scale` times the mean norm of the frozen
forget activations, so the defaults carry across model sizes.

Frozen retain activations are cached once before training when they fit in `cache_mb` (CPU);
otherwise the starting values of the few trained matrices are kept, and the frozen pass swaps them
in under no_grad (one extra forward up to layer l, no second model).
"""
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ..scoring import attribute_at, decoder_blocks
from .cache import Activations, activation_bytes, cache_activations, hidden_at
from .registry import Params, register


class RMUParams(Params):
    layer: int = Field(-1, ge=-1, description="decoder layer l whose output is steered; -1: a quarter of the way in")
    steering_coeff: float = Field(0.0, ge=0, description="c; 0: steering_scale x the mean norm of the frozen forget activations")
    steering_scale: float = Field(1.0, gt=0, description="c as a multiple of the activation norm (when steering_coeff is 0)")
    alpha: float = Field(3.0, ge=0, description="weight of the retain activation MSE")
    forget_tokens: Literal["answer", "all"] = Field("answer", description="forget positions steered: answer tokens, or every token")
    cache_mb: int = Field(1024, ge=0, description="cache frozen retain activations when they fit in this many MiB")


@dataclass
class RMUCache:
    layer: int
    target: torch.Tensor                              # c * u
    retain_frozen: Activations | None = None      # frozen retain activations, or
    frozen_weights: list[torch.Tensor] | None = None  # the trained matrices' starting values


def _layer(model, p: RMUParams) -> int:
    n = len(decoder_blocks(model))
    return p.layer if p.layer >= 0 else max(1, n // 4) if n > 1 else 0


# a block's MLP output projection, by architecture: Llama/Mistral/Qwen/Gemma, GPT-2 (a Conv1D),
# GPT-NeoX/Falcon/BLOOM, Phi, GPT-J, OPT (the block's own fc2), Mixtral-style w2
MLP_OUT = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "mlp.fc2", "mlp.fc_out", "fc2", "mlp.w2")


def mlp_out(block) -> torch.nn.Parameter:
    """The weight of `block`'s MLP output projection (`MLP_OUT`; only Llama's `mlp.down_proj` until
    session 36, an AttributeError on GPT-NeoX)."""
    for path in MLP_OUT:
        if isinstance(w := attribute_at(block, path + ".weight"), torch.nn.Parameter):
            return w
    raise ValueError(f"{type(block).__name__}: no MLP output projection where architectures keep it "
                     f"({', '.join(MLP_OUT)}); rmu trains those: choose another method (simnpo, npo, graddiff)")


def _trained(model, layer: int) -> list[torch.nn.Parameter]:
    blocks = decoder_blocks(model)
    return [mlp_out(blocks[i]) for i in range(max(0, layer - 2), layer + 1)]


def trainable(model, params: RMUParams):
    """Freeze everything but the MLP down-projections of layers l-2..l."""
    keep = {id(w) for w in _trained(model, _layer(model, params))}
    for w in model.parameters():
        w.requires_grad_(id(w) in keep)


def prepare(model, streams, ctx) -> RMUCache:
    p = ctx.params
    if not hasattr(model, "peft_config"):  # under LoRA the adapter is what trains
        trainable(model, p)
    layer = _layer(model, p)
    g = torch.Generator().manual_seed(ctx.seed)  # the run's seed picks the direction u
    u = torch.rand(model.config.hidden_size, generator=g)
    coeff = p.steering_coeff
    if not coeff:
        norms = cache_activations(model, streams["forget"], ctx.pad_id, layer).rows
        coeff = p.steering_scale * torch.cat(norms).norm(dim=-1).mean().item()
    cache = RMUCache(layer, coeff * u / u.norm())
    if activation_bytes(model, streams["retain"]) <= p.cache_mb * 2**20:
        cache.retain_frozen = cache_activations(model, streams["retain"], ctx.pad_id, layer)
    else:
        cache.frozen_weights = [w.detach().clone() for w in _trained(model, layer)]
    return cache


def _frozen_hidden(model, batch, c: RMUCache):
    if c.retain_frozen is not None:
        return c.retain_frozen.gather(batch["index"], batch["input_ids"].shape[1], batch["input_ids"].device)
    weights = _trained(model, c.layer)
    live = [w.data for w in weights]
    with torch.no_grad():
        try:
            for w, f in zip(weights, c.frozen_weights):
                w.data = f.to(w.device, w.dtype)
            return hidden_at(model, c.layer, batch["input_ids"], batch["attention_mask"]).float()
        finally:
            for w, d in zip(weights, live):
                w.data = d


def with_every_trainable(total: torch.Tensor, model) -> torch.Tensor:
    """`total` plus zero times one entry of every trainable tensor, so that DDP's reducer also sees
    the tensors after the steered layer (LoRA), which the loss itself never reaches. Under FSDP2 the
    weights of the layers not run are still sharded (DTensors) and are left out: FSDP reduces each
    layer's gradients after its own backward, and a layer that never ran has none on any process.
    Under ZeRO-3 such a layer's weights are empty (partitioned, not gathered) and are left out too."""
    from torch.distributed.tensor import DTensor

    return total + 0.0 * sum(w.view(-1)[0] for w in model.parameters()
                             if w.requires_grad and not isinstance(w, DTensor) and w.numel())


def masked_mse(h, target, mask):
    """Mean squared error over the hidden size, averaged over the positions `mask` keeps (shared with twin_rmu)."""
    return ((h.float() - target).square().mean(-1) * mask).sum() / mask.sum()


@register("rmu", RMUParams, "Representation Misdirection: steer one layer's activations on forget to a random direction",
          train=dict(lr=1e-2, epochs=10, batch_size=16), needs_retain=True, prepare=prepare, trainable=trainable)
def loss(model, batch, ctx):
    c = ctx.cache
    f, r, layer = batch["forget"], batch["retain"], c.layer
    h_f = hidden_at(model, layer, f["input_ids"], f["attention_mask"])
    if ctx.params.forget_tokens == "answer":  # the positions that predict answer tokens
        mask = torch.zeros_like(f["attention_mask"])
        mask[:, :-1] = f["labels"][:, 1:] != -100
    else:
        mask = f["attention_mask"]
    forget = masked_mse(h_f, c.target.to(h_f.device), mask)
    h_r = hidden_at(model, layer, r["input_ids"], r["attention_mask"])
    retain = masked_mse(h_r, _frozen_hidden(model, r, c), r["attention_mask"])
    total = forget + ctx.params.alpha * retain
    total = with_every_trainable(total, model)
    return total, {"forget_mse": forget.detach(), "retain_mse": retain.detach()}, forget
