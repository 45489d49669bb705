"""What a method needs from the frozen model, computed once before training and kept on the CPU.

NPO, SimNPO's baselines and DPO need the reference model's log-probability of each example; the KL
retain term needs the reference's next-token distribution at each answer position; RMU needs the
frozen model's hidden states on retain inputs. All are functions of the *starting* weights, so
`prepare` computes them with the model it is about to train, before the first step: no second copy
of the model stays in memory, and nothing is computed twice. Each cache is indexed by the example's
position in its stream (`batch["index"]`).
"""
from __future__ import annotations

import torch

from ..data.batching import Encoded, collate, length_batches
from ..scoring import answer_logprobs, backbone_and_head, decoder_blocks

MAX_TOKENS = 8192  # padded tokens per no-grad batch while caching


def device_batches(model, examples: list[Encoded], pad_id: int, max_tokens: int = MAX_TOKENS, max_rows: int = 256):
    """(indices, device batch) of examples grouped by length, at most `max_tokens` padded tokens and
    `max_rows` rows a batch (the caches below run them without grad, in eval mode;
    `unlearning.keep_salient` with grad)."""
    device = next(model.parameters()).device
    for idx in length_batches([len(e.input_ids) for e in examples], max_tokens, max_rows):
        b = collate([examples[i] for i in idx], pad_id)
        yield idx, {k: v.to(device) for k, v in b.items()}


def _frozen(fn):
    def wrapper(model, *args, **kwargs):
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                return fn(model, *args, **kwargs)
        finally:
            model.train(was)
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_frozen
def cache_sequence_logprobs(model, examples: list[Encoded], pad_id: int, normalise: bool = False) -> torch.Tensor:
    """log p_ref(answer | prompt) per example (sum over answer tokens, or mean with `normalise`),
    float32 on the CPU, indexed by example position."""
    out = torch.zeros(len(examples), dtype=torch.float32)
    for idx, b in device_batches(model, examples, pad_id):
        r = answer_logprobs(model, b["input_ids"], b["attention_mask"], b["labels"])
        total = r["logprobs"].float().sum(-1)
        if normalise:
            total = total / r["mask"].sum(-1).clamp_min(1)
        out[torch.tensor(idx)] = total.cpu()
    return out


class TopK:
    """The reference's top-k next-token log-probs at every answer position of every example.

    Rows are stored flat (example after example, answer positions in order), so `gather` of a
    batch's indices returns rows aligned with `hidden[:, :-1][labels[:, 1:] != -100]`: the answer
    positions of a right-padded batch, row by row.
    """

    def __init__(self, ids: torch.Tensor, logprobs: torch.Tensor, offsets: torch.Tensor):
        self.ids, self.logprobs, self.offsets = ids, logprobs, offsets

    def gather(self, index: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.cat([torch.arange(self.offsets[i], self.offsets[i + 1]) for i in index.tolist()])
        return self.ids[rows].to(device).long(), self.logprobs[rows].to(device).float()


@_frozen
def cache_topk_distributions(model, examples: list[Encoded], pad_id: int, k: int = 32) -> TopK:
    """Top-k token ids and log-probs of the model's next-token distribution at each answer position
    (k * (4 + 4) bytes per answer token: a 1,000-example retain set of 30-token answers with k=32
    is 8 MB)."""
    decoder, head = backbone_and_head(model)
    n_ans = [len(e.labelled) for e in examples]
    offsets = torch.zeros(len(examples) + 1, dtype=torch.long)
    offsets[1:] = torch.tensor(n_ans).cumsum(0)
    ids = torch.zeros(int(offsets[-1]), k, dtype=torch.int32)
    logps = torch.zeros(int(offsets[-1]), k, dtype=torch.float32)
    for idx, b in device_batches(model, examples, pad_id):
        hidden = decoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
        mask = b["labels"][:, 1:] != -100
        h = hidden[:, :-1][mask]
        top = torch.log_softmax(head(h).float(), -1).topk(k, dim=-1)
        rows = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in idx])
        ids[rows] = top.indices.int().cpu()
        logps[rows] = top.values.cpu()
    return TopK(ids, logps, offsets)


def hidden_at(model, layer: int, input_ids, attention_mask) -> torch.Tensor:
    """The residual stream after decoder layer `layer` (0-based), running only layers 0..layer."""
    decoder, _ = backbone_and_head(model)
    box = {}

    def hook(module, args, output):
        box["h"] = output[0] if isinstance(output, tuple) else output
        raise _Stop

    handle = decoder_blocks(model)[layer].register_forward_hook(hook)
    try:
        decoder(input_ids=input_ids, attention_mask=attention_mask)
    except _Stop:
        pass
    finally:
        handle.remove()
    return box["h"]


class _Stop(Exception):
    """Raised by `hidden_at`'s hook: the layers after the one we read are not run."""


class Activations:
    """Frozen hidden states at one layer for every token of every example (CPU, `dtype`)."""

    def __init__(self, rows: list[torch.Tensor]):
        self.rows = rows

    def gather(self, index: torch.Tensor, width: int, device) -> torch.Tensor:
        """(batch, width, hidden), right-padded with zeros like the batch itself."""
        out = torch.zeros(len(index), width, self.rows[0].shape[-1], dtype=torch.float32)
        for r, i in enumerate(index.tolist()):
            h = self.rows[i]
            out[r, :len(h)] = h
        return out.to(device)


@_frozen
def cache_activations(model, examples: list[Encoded], pad_id: int, layer: int, dtype=torch.float32) -> Activations:
    """Hidden states after `layer` on each example's real (unpadded) tokens."""
    rows: list[torch.Tensor | None] = [None] * len(examples)
    for idx, b in device_batches(model, examples, pad_id):
        h = hidden_at(model, layer, b["input_ids"], b["attention_mask"])
        for r, i in enumerate(idx):
            rows[i] = h[r, :len(examples[i].input_ids)].to("cpu", dtype)
    return Activations(rows)


def activation_bytes(model, examples: list[Encoded], dtype=torch.float32) -> int:
    """What `cache_activations` would hold, to decide whether caching pays."""
    hidden = model.config.hidden_size
    return sum(len(e.input_ids) for e in examples) * hidden * torch.finfo(dtype).bits // 8


def topk_kl(model, batch: dict, ref: TopK) -> torch.Tensor:
    """Mean KL(p_ref || p_model) over the reference's top-k tokens (and the tail mass beyond them)
    at the batch's answer positions; `ref` holds one row per answer position of each example."""
    decoder, head = backbone_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["labels"][:, 1:] != -100
    h = hidden[:, :-1][mask]
    ref_idx, ref_logp = ref.gather(batch["index"], h.device)
    logp = torch.log_softmax(head(h).float(), -1)
    sel = logp.gather(-1, ref_idx)
    p_ref = ref_logp.exp()
    tail_ref = (1 - p_ref.sum(-1)).clamp_min(1e-8)
    tail = (1 - sel.exp().sum(-1)).clamp_min(1e-8)
    kl = (p_ref * (ref_logp - sel)).sum(-1) + tail_ref * (tail_ref.log() - tail.log())
    return kl.mean()
