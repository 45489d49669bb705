"""Relearning attack: fine-tune a copy of the model for a few steps on a small part of the forget set
(or on public neighbour data) and measure the forget metrics on the part it was *not* trained on.

If unlearning only hid the knowledge, a few steps on some facts bring the others back (Lynch et al.
2024, "Eight methods to evaluate robust unlearning in LLMs"; Hu et al. 2024, "Jogging the memory of
unlearned LLMs through targeted relearning attacks"). A model that never knew the held-out facts
(the oracle) cannot recover them from unrelated ones, so the oracle under the same relearning shows
what the relearn data itself teaches.

source (which data relearns; the split is a deterministic function of `seed`):
- "people": all facts of `fraction` of the forget people (at least one, at most all but one);
  evaluated on the other people.
- "facts": `fraction` of each forget person's facts; evaluated on their other facts.
- "neighbours": `fraction` of the neighbour records (public people who share a birthplace, an
  employer or a relation with a forget person); evaluated on the whole forget set.
- "retain": as many retain records as the forget set has, unrelated to it (fine-tuning on benign
  data, which also brings hidden knowledge back: Lynch et al.); evaluated on the whole forget set.
  It runs wherever there is a retain set: a request batch of one person with one fact falls back to it.
Training: the `finetune` loss (plain NLL) through `unlearnkit.train.train`, every training phrasing
of each relearn fact, `steps` AdamW steps at constant `lr`, `batch_size` pairs per step.
"""
from __future__ import annotations

import random

from . import AttackPlan, Variant

SOURCES = ("people", "facts", "neighbours", "retain")


def _take(n: int, fraction: float, lo: int = 1) -> int:
    return min(n - 1, max(lo, round(fraction * n)))


def split(world, source: str = "people", fraction: float = 0.5, seed: int = 0) -> tuple[list, list]:
    """(relearn records, evaluation records), deterministic in `seed`."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"relearn fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    forget = list(world.forget)
    if source == "people":
        people = sorted({r.subject for r in forget})
        if len(people) < 2:
            raise ValueError("relearn source 'people' needs at least 2 forget people; use source='facts'")
        rng.shuffle(people)
        chosen = set(people[:_take(len(people), fraction)])
        return [r for r in forget if r.subject in chosen], [r for r in forget if r.subject not in chosen]
    if source == "facts":
        relearn_ids = set()
        for person in sorted({r.subject for r in forget}):
            facts = sorted(r.id for r in forget if r.subject == person)
            if len(facts) < 2:
                continue
            rng.shuffle(facts)
            relearn_ids.update(facts[:_take(len(facts), fraction)])
        if not relearn_ids:
            raise ValueError("relearn source 'facts' needs a forget person with at least 2 facts")
        return [r for r in forget if r.id in relearn_ids], [r for r in forget if r.id not in relearn_ids]
    if source == "neighbours":
        nb = sorted(world.neighbours, key=lambda r: r.id)
        if not nb:
            raise ValueError("relearn source 'neighbours': the world has no neighbours split")
        rng.shuffle(nb)
        return nb[:max(1, round(fraction * len(nb)))], forget
    if source == "retain":
        pool = sorted(world.retain, key=lambda r: r.id)
        if not pool:
            raise ValueError("relearn source 'retain': the world has no retain split")
        rng.shuffle(pool)
        return pool[:len(forget)], forget
    raise ValueError(f"unknown relearn source {source!r}; valid sources: {', '.join(SOURCES)}")


def relearn(net, tok, records, *, steps: int = 20, lr: float = 3e-4, batch_size: int = 16, seed: int = 0,
            template=None):
    """Fine-tune `net` in place on `records` (every phrasing) with the plain NLL loss; returns it."""
    from ..data.batching import encode_pairs
    from ..sft import sft_loss
    from ..train import TrainConfig, train

    prompts, answers = [], []
    for r in records:
        for q in r.phrasings():
            prompts.append(q)
            answers.append(r.answer)
    for p in net.parameters():
        p.requires_grad_(True)
    cfg = TrainConfig(lr=lr, steps=steps, batch_size=batch_size, seed=seed, schedule="constant")
    from ..data.templates import parse_template

    stream = encode_pairs(tok, prompts, answers, template=parse_template(template))
    return train(net, sft_loss(), {"train": stream}, cfg, pad_id=tok.pad_token_id, progress=False,
                 desc="relearn").model


def plan(world, *, seed: int = 0, steps: int = 20, lr: float = 3e-4, fraction: float = 0.5, source: str = "people",
         batch_size: int = 16, template=None) -> AttackPlan:
    """`template`: the prompt format the relearning data is written in (the attacked model's)."""
    if steps < 1:
        raise ValueError(f"relearn steps must be >= 1, got {steps}")
    if lr <= 0:
        raise ValueError(f"relearn lr must be > 0, got {lr}")
    train_recs, eval_recs = split(world, source, fraction, seed)
    n_pairs = sum(len(r.phrasings()) for r in train_recs)

    def transform(net, tok):
        relearn(net, tok, train_recs, steps=steps, lr=lr, batch_size=batch_size, seed=seed, template=template)
        return net, {"relearn_pairs": n_pairs, "steps": steps}

    opts = {"steps": steps, "lr": lr, "fraction": fraction, "source": source, "batch_size": batch_size}
    info = {"relearn_ids": [r.id for r in train_recs], "n_relearn_records": len(train_recs), "n_relearn_pairs": n_pairs,
            "relearn_people": sorted({r.subject for r in train_recs})}
    name = f"relearn-{source}"
    return AttackPlan(eval_recs, {name: Variant(transform=transform, info={"source": source})}, opts, info)
