"""The one per-sample scoring function behind every loss, metric and attack.

`answer_logprobs` runs the model's backbone once and applies the output head only at answer
positions, in chunks, in float32: the full float32 logit tensor over the vocabulary for every
position is never built (on a 128k vocabulary it dominates memory and time). `LM` wraps a model and
its tokenizer behind two text-level calls, `score` and `generate`, that the evaluation suite, the
attacks and the guard all share.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

from .data.batching import IGNORE, collate, collate_left, encode_pairs, encode_prompts, length_batches
from .data.templates import RAW, Template

CHUNK = 4096  # answer positions per head/log-softmax chunk
# A chunk's logits are recomputed in backward instead of kept, once they exceed this many elements
# (16 MiB in float32); below it, keeping them is cheaper than a second head pass.
RECOMPUTE_ABOVE = 1 << 22


def backbone_and_head(model):
    """(decoder, lm_head) of a causal LM, also through a peft wrapper (LoRA layers stay active)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


# where architectures keep their decoder blocks, under the decoder (`backbone_and_head`)
BLOCKS = ("layers", "h", "decoder.layers", "blocks")


def attribute_at(obj, dotted: str):
    """`obj.a.b` for "a.b", or None where any part is missing: where architectures keep a module."""
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def decoder_blocks(model) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM, in order: `layers` (Llama, Mistral, Qwen, Phi, Gemma,
    GPT-NeoX), `h` (GPT-2, GPT-J, Falcon, BLOOM), `decoder.layers` (OPT), `blocks`. Until session 36
    only `layers` was looked for, and RMU and Twin RMU (the default) failed with an AttributeError on
    GPT-2."""
    decoder = backbone_and_head(model)[0]
    for path in BLOCKS:
        if isinstance(m := attribute_at(decoder, path), torch.nn.ModuleList) and len(m):
            return m
    raise ValueError(f"{type(decoder).__name__}: no decoder blocks where architectures keep them "
                     f"({', '.join(BLOCKS)}); the methods that read a layer's activations (rmu, twin_rmu) "
                     f"cannot run on it: choose another (simnpo, npo, graddiff)")


def _chunk_stats(head, h, targets, stats: bool):
    logits = head(h).float()
    logp = torch.log_softmax(logits, dim=-1)
    tok = logp.gather(-1, targets[:, None]).squeeze(-1)
    out = [tok, logits.argmax(-1) == targets]
    if stats:
        p = logp.exp()
        mu = (p * logp).sum(-1)
        var = (p * logp.square()).sum(-1) - mu.square()
        out += [mu, var.clamp_min(0).sqrt()]
    return out


def answer_logprobs(model, input_ids, attention_mask, labels, stats: bool = False):
    """Per-token log p(label | prefix) at every labelled position.

    Returns a dict of (batch, seq-1) tensors aligned with `labels[:, 1:]`: `logprobs` (0 where the
    label is ignored), `mask`, `hits` (argmax == label) and, with `stats`, `mu`/`sigma` of log p
    under the model's own next-token distribution (for Min-K%++). Differentiable when grad is on.
    """
    decoder, head = backbone_and_head(model)
    hidden = decoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    target = labels[:, 1:]
    mask = target != IGNORE
    h = hidden[:, :-1][mask]
    t = target[mask]
    parts = []
    for s in range(0, t.numel(), CHUNK):
        args = (h[s:s + CHUNK], t[s:s + CHUNK])
        if torch.is_grad_enabled() and h.requires_grad and args[1].numel() * head.out_features > RECOMPUTE_ABOVE:
            parts.append(checkpoint(lambda a, b: _chunk_stats(head, a, b, stats), *args, use_reentrant=False))
        else:
            parts.append(_chunk_stats(head, *args, stats))
    cols = [torch.cat(c) for c in zip(*parts)] if parts else [torch.zeros(0)] * (4 if stats else 2)
    names = ["logprobs", "hits", "mu", "sigma"][: len(cols)]
    out = {"mask": mask}
    for name, col in zip(names, cols):
        dense = torch.zeros(target.shape, dtype=col.dtype, device=target.device)
        dense[mask] = col
        out[name] = dense
    return out


def sequence_logprob(model, batch, normalise: bool = False):
    """Sum (or mean, with `normalise`) of answer-token log-probs per sequence: the quantity every
    preference-style loss (NPO, SimNPO, DPO) and the TOFU probability are built on."""
    out = answer_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    total = out["logprobs"].sum(-1)
    return total / out["mask"].sum(-1).clamp_min(1) if normalise else total


def nll(model, batch):
    """Mean token negative log-likelihood over the answer tokens of the batch."""
    out = answer_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    return -out["logprobs"].sum() / out["mask"].sum().clamp_min(1)


@dataclass
class SampleScore:
    """One sample's answer tokens: log-probs (incl. eos), argmax hits, and Min-K%++ statistics.
    `eos`: whether the last position is the eos (false when `max_length` cut the answer off);
    exact memorisation, extraction strength and Min-K% leave that position out."""
    logprobs: np.ndarray
    argmax_hits: np.ndarray
    mu: np.ndarray | None = None
    sigma: np.ndarray | None = None
    eos: bool = False

    @property
    def mean_logprob(self) -> float:
        return float(self.logprobs.mean()) if self.logprobs.size else 0.0


def is_lm(x) -> bool:
    """Whether `x` already scores and generates text (an `LM`, a guarded or quantised one), as
    opposed to weights (a path, a Hugging Face model) that still need wrapping in `LM`."""
    return hasattr(x, "score") and hasattr(x, "generate") and not hasattr(x, "forward")


MAX_LENGTH = 2048  # tokens a text is scored on at most, where the model takes more (a cap on memory)


class LM:
    """A causal LM with its tokenizer, seen as text in, scores and text out; prompts are put to
    the model in the format of `template` (data/templates.py).

    Anything with these two methods (a guarded model, a quantised one) can be evaluated and attacked.
    """

    def __init__(self, model, tokenizer, max_tokens: int = 16384, max_batch: int = 256, max_length: int | None = None,
                 template: Template = RAW):
        template.check(tokenizer)  # a server would start and fail every request (until session 34)
        self.model, self.tokenizer, self.template = model, tokenizer, template
        self.max_tokens, self.max_batch = max_tokens, max_batch
        # a text is scored up to what the model takes, at most `MAX_LENGTH` tokens (every text was cut
        # at 512, a news article's Min-K% and PrivLeak too, whatever the model, until session 36)
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_length = max_length or min(positions or 512, MAX_LENGTH)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @torch.no_grad()
    def score(self, prompts: list[str], answers: list[str], stats: bool = False, batch_size: int | None = None) -> list[SampleScore]:
        """Log-probs of each answer given its prompt (answer tokens and eos only)."""
        enc = encode_pairs(self.tokenizer, prompts, answers, self.max_length, self.template)
        out: list[SampleScore | None] = [None] * len(enc)
        was_training = self.model.training
        self.model.eval()
        for idx in length_batches([len(e.input_ids) for e in enc], self.max_tokens, batch_size or self.max_batch):
            b = {k: v.to(self.device) for k, v in collate([enc[i] for i in idx], self.tokenizer.pad_token_id).items()}
            r = answer_logprobs(self.model, b["input_ids"], b["attention_mask"], b["labels"], stats=stats)
            r = {k: v.cpu() for k, v in r.items()}
            for row, i in enumerate(idx):
                m = r["mask"][row]
                out[i] = SampleScore(
                    logprobs=r["logprobs"][row][m].double().numpy(),
                    argmax_hits=r["hits"][row][m].numpy(),
                    mu=r["mu"][row][m].double().numpy() if stats else None,
                    sigma=r["sigma"][row][m].double().numpy() if stats else None,
                    eos=enc[i].input_ids[-1] == self.tokenizer.eos_token_id,
                )
        self.model.train(was_training)
        return out

    @torch.no_grad()
    def generate(self, prompts: list[str], max_new_tokens: int = 32, batch_size: int | None = None,
                 logits_processor=None) -> list[str]:
        """Greedy continuations, batched with left padding and the KV cache."""
        tok = self.tokenizer
        ids = encode_prompts(tok, prompts, self.template)
        out: list[str | None] = [None] * len(ids)
        budget = max(1, self.max_tokens // 2)
        was_training = self.model.training
        self.model.eval()
        for idx in length_batches([len(x) + max_new_tokens for x in ids], budget, batch_size or self.max_batch):
            b = {k: v.to(self.device) for k, v in collate_left([ids[i] for i in idx], tok.pad_token_id).items()}
            gen = self.model.generate(
                **b, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                logits_processor=logits_processor,
            )
            new = gen[:, b["input_ids"].shape[1]:]
            for row, i in enumerate(idx):
                out[i] = tok.decode(new[row], skip_special_tokens=True).strip()
        self.model.train(was_training)
        return out
