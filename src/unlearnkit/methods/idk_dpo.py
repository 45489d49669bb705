"""IdkDPO: Direct Preference Optimization towards "I don't know"-style refusals.

    L = -(2/beta) * E_forget[ log sigmoid(beta * ((log pi(y_idk|x) - log pi_ref(y_idk|x))
                                                - (log pi(y|x)     - log pi_ref(y|x)))) ]
        + alpha * NLL(retain)

with y the true forget answer (dispreferred), y_idk a refusal drawn from `resources/refusals.txt`
(preferred; one fixed refusal per forget example, chosen by a seeded shuffle) and log pi the summed
answer-token log-probability. Rafailov et al. 2023 (DPO); Maini et al. 2024 (TOFU, the IdkDPO
baseline); the 2/beta scale follows open-unlearning. Reference log-probs of both answers are cached
once before training (`cache.cache_sequence_logprobs`): no frozen copy of the model stays in memory.
"""
import random
from importlib import resources

import torch.nn.functional as F
from pydantic import Field

from ..data.batching import Encoded, collate
from ..scoring import nll, sequence_logprob
from .registry import Params, register


class IdkDPOParams(Params):
    beta: float = Field(0.1, gt=0, description="DPO inverse temperature")
    gamma: float = Field(1.0, ge=0, description="weight of the DPO term")
    alpha: float = Field(1.0, ge=0, description="weight of the retain NLL term")


def refusals() -> list[str]:
    """The refusal answers that ship with the project, one per line."""
    text = resources.files("unlearnkit").joinpath("resources/refusals.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def prepare(model, streams, ctx):
    """Pair each forget example with a refusal (same prompt ids, drawn with the run's seed) and cache
    both reference log-probs."""
    from .cache import cache_sequence_logprobs

    tok, forget = ctx.tokenizer, streams["forget"]
    answers = refusals()
    random.Random(ctx.seed).shuffle(answers)
    a_ids = tok([" " + answers[i % len(answers)] for i in range(len(forget))], add_special_tokens=False)["input_ids"]
    idk = [Encoded(e.input_ids[:e.n_prompt] + a + [tok.eos_token_id], e.n_prompt) for e, a in zip(forget, a_ids)]
    return {"idk": idk, "forget_ref": cache_sequence_logprobs(model, forget, ctx.pad_id),
            "idk_ref": cache_sequence_logprobs(model, idk, ctx.pad_id)}


@register("idk_dpo", IdkDPOParams, "DPO towards 'I don't know' refusals on forget, NLL on retain",
          train=dict(lr=1e-3, steps=240, batch_size=16), needs_retain=True, prepare=prepare)
def loss(model, batch, ctx):
    p, f, c = ctx.params, batch["forget"], ctx.cache
    index = f["index"].cpu()
    idk = collate([c["idk"][i] for i in index.tolist()], ctx.pad_id)
    idk = {k: v.to(f["input_ids"].device) for k, v in idk.items()}
    win = sequence_logprob(model, idk).float() - c["idk_ref"][index].to(f["input_ids"].device)
    lose = sequence_logprob(model, f).float() - c["forget_ref"][index].to(f["input_ids"].device)
    forget = -2 / p.beta * F.logsigmoid(p.beta * (win - lose)).mean()
    retain = nll(model, batch["retain"])
    logs = {"dpo": forget.detach(), "retain_nll": retain.detach(), "margin": (win - lose).detach().mean()}
    return p.gamma * forget + p.alpha * retain, logs, p.gamma * forget
