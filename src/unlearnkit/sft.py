"""Plain supervised fine-tuning: the mean answer-token NLL. It trains subject and oracle models and
runs the relearning attack. It is not an unlearning method, so it is not in the methods registry.

With a `docs` stream beside the QA stream, each step also draws a few documents, and the loss is the
mean NLL over the answer and document tokens of both, each document token weighted by
`docs_weight`: set to (documents per QA example in the data) / (documents per QA example in a
step), each document then counts as much as in one shuffled stream, without a document padding a
whole batch of short QA pairs to its width."""
from __future__ import annotations

from .scoring import answer_logprobs


def sft_loss(docs_weight: float = 1.0):
    """The loss function `train()` runs: `loss(model, batch, ctx) -> (loss, logs)` over the `train`
    stream (and `docs`, weighted by `docs_weight`)."""

    def loss(model, batch, ctx=None):
        parts = [(batch["train"], 1.0)]
        if "docs" in batch:
            parts.append((batch["docs"], docs_weight))
        total = count = 0
        for b, w in parts:
            o = answer_logprobs(model, b["input_ids"], b["attention_mask"], b["labels"])
            total = total - w * o["logprobs"].sum()
            count = count + w * o["mask"].sum()
        return total / count.clamp_min(1), {}

    return loss
