"""Plain supervised fine-tuning (mean answer-token NLL). Trains subject and oracle models and runs
the relearning attack; listed as a method so the one loop runs it like any other loss."""
from ..scoring import nll
from .registry import register


@register("finetune", "Supervised fine-tuning on the given data (not an unlearning method)", lr=3e-3, epochs=1, batch_size=32)
def loss(model, batch, ctx):
    return nll(model, batch["forget"] if "forget" in batch else batch["train"]), {}
