"""Plain supervised fine-tuning (mean answer-token NLL). Trains subject and oracle models and runs
the relearning attack; listed as a method so the one loop runs it like any other loss.

With a `docs` stream beside the QA stream, each step also draws a few documents, and the loss is the
mean NLL over the answer and document tokens of both, each document token weighted by
`docs_weight`: set to (documents per QA example in the data) / (documents per QA example in a
step), each document then counts as much as in one shuffled stream, without a document padding a
whole batch of short QA pairs to its width."""
from ..scoring import answer_logprobs
from .registry import register


@register("finetune", "Supervised fine-tuning on the given data (not an unlearning method)", lr=3e-3, epochs=1, batch_size=32)
def loss(model, batch, ctx):
    parts = [(batch["forget"] if "forget" in batch else batch["train"], 1.0)]
    if "docs" in batch:
        parts.append((batch["docs"], ctx["params"].get("docs_weight", 1.0)))
    total = count = 0
    for b, w in parts:
        o = answer_logprobs(model, b["input_ids"], b["attention_mask"], b["labels"])
        total = total - w * o["logprobs"].sum()
        count = count + w * o["mask"].sum()
    return total / count.clamp_min(1), {}
