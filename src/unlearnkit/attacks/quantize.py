"""Quantization attack: round the weights of a copy of the model to 8 and 4 bits and evaluate.

Zhang et al. 2025 ("Catastrophic failure of LLM unlearning via quantization", ICLR) found that
unlearning with small learning rates moves the weights less than one 4-bit quantization step, so
the quantized unlearned model rounds back to (nearly) the quantized subject and answers again.

Here the quantization is simulated on CPU ("fake quantization": quantize, then dequantize to float):
symmetric round-to-nearest, w_q = clamp(round(w / s), -q, q) * s with q = 2^(bits-1) - 1 and
s = max|w| / q taken per output channel (one scale per row of a Linear weight; `group_size=0`) or per
group of `group_size` consecutive input columns of each row (as GPTQ/AWQ/llama.cpp groups, e.g. 128;
a row whose width is not a multiple falls back to per-channel). Every `torch.nn.Linear` (and
GPT-2's `Conv1D`, transposed) is quantized, and a model with none is refused;
the embedding (and an output head tied to it) only with `embeddings=True`, as in common 4/8-bit
inference setups. Biases and norms stay in full precision. Reported per variant: the mean relative
weight error ||W_q - W||_F / ||W||_F over the quantized tensors.

On a GPU, real low-bit kernels give the deployed model's behaviour: load the checkpoint with
`transformers.BitsAndBytesConfig(load_in_8bit=True)` or `(load_in_4bit=True, bnb_4bit_quant_type="nf4")`
(bitsandbytes), or a GPTQ/AWQ export, wrap it as `unlearnkit.scoring.LM(model, tokenizer)` and pass
it to `unlearnkit.api.evaluate` (docs/robustness.md). Round-to-nearest is the simplest of these and
the one the paper shows is enough.
"""
from __future__ import annotations

import torch

from . import AttackPlan, Variant


def _grouped(cols: int, group_size: int) -> bool:
    """Whether a row `cols` wide is quantized in groups (else per channel: no groups asked, or its
    width is not a multiple of `group_size`, or not wider than one group)."""
    return bool(group_size) and group_size > 0 and cols % group_size == 0 and group_size < cols


@torch.no_grad()
def fake_quantize(w: torch.Tensor, bits: int, group_size: int = 0) -> torch.Tensor:
    """Symmetric round-to-nearest quantization of a 2-D weight (out, in), dequantized back to its dtype."""
    if bits < 2 or bits > 16:
        raise ValueError(f"bits must be between 2 and 16, got {bits}")
    q = 2 ** (bits - 1) - 1
    x = w.detach().float()
    rows, cols = x.shape
    grouped = _grouped(cols, group_size)
    g = x.reshape(rows, cols // group_size, group_size) if grouped else x.reshape(rows, 1, cols)
    scale = g.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / q
    out = (torch.round(g / scale).clamp_(-q, q) * scale).reshape(rows, cols)
    return out.to(w.dtype)


@torch.no_grad()
def quantize_model(net, bits: int, group_size: int = 0, embeddings: bool = False) -> dict:
    """Fake-quantize `net` in place; returns {"n_tensors", "mean_relative_error", "skipped",
    "per_channel"}: the last names the tensors that fell back to one scale per row when groups were
    asked (until session 35 a variant named `-g7` said "group 7" where every row fell back)."""
    from transformers.pytorch_utils import Conv1D

    emb = net.get_input_embeddings() if hasattr(net, "get_input_embeddings") else None
    emb_w = emb.weight if emb is not None else None
    errors, skipped, per_channel, done = [], [], [], set()
    # GPT-2's projections are `Conv1D`s, their weights (in, out): quantized transposed, a scale per
    # output channel as for a Linear (skipped until session 36, and GPT-2 "recovered" nothing)
    mods = [(n, m) for n, m in net.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))]
    if embeddings and emb is not None:
        mods.append(("embed_tokens", emb))
    for name, m in mods:
        w = m.weight
        if id(w) in done:
            continue
        if w is emb_w and not embeddings:
            skipped.append(f"{name} (tied to the input embedding)")
            continue
        done.add(id(w))
        rows = w.T if isinstance(m, Conv1D) else w  # (out, in)
        if group_size and not _grouped(rows.shape[1], group_size):
            per_channel.append(name)
        new = fake_quantize(rows, bits, group_size)
        errors.append(float((new.float() - rows.float()).norm() / rows.float().norm().clamp_min(1e-12)))
        rows.copy_(new)
    if not errors:
        raise ValueError(f"quantize: no Linear or Conv1D weights in {type(net).__name__} to quantize"
                         f"{' (skipped: ' + ', '.join(skipped) + ')' if skipped else ''}")
    return {"n_tensors": len(errors), "mean_relative_error": sum(errors) / max(1, len(errors)), "skipped": skipped,
            "per_channel": per_channel}


def plan(world, *, seed: int = 0, bits=(8, 4), group_size: int = 0, embeddings: bool = False) -> AttackPlan:
    given = bits
    if isinstance(bits, str):  # the CLI's form, "8,4"
        bits = [b for b in bits.split(",") if b.strip()]
    try:
        bits = [int(b) for b in ([bits] if isinstance(bits, int) else bits)]
    except (TypeError, ValueError):
        raise ValueError(f"quantize bits {given!r}: expected widths such as 8,4 or [8, 4]") from None
    if not bits:  # until session 37 an empty list ran no variant and reported nothing, exit 0
        raise ValueError("quantize bits: give at least one width, e.g. 8,4")
    for b in bits:
        if b < 2 or b > 16:
            raise ValueError(f"quantize bits must be between 2 and 16, got {b}")
    if group_size < 0:
        raise ValueError(f"group_size must be >= 0 (0: per output channel), got {group_size}")
    variants = {}
    for b in bits:
        def transform(net, tok, b=b):
            return net, quantize_model(net, b, group_size, embeddings)
        name = f"int{b}" + (f"-g{group_size}" if group_size else "")
        granularity = (f"group {group_size} (per channel in a row not a multiple of it wide: the model's "
                       f"`per_channel` lists those tensors)" if group_size else "per channel")
        variants[name] = Variant(transform=transform, info={"bits": b, "group_size": group_size,
                                                            "granularity": granularity})
    return AttackPlan(list(world.forget), variants, {"bits": bits, "group_size": group_size, "embeddings": embeddings})
