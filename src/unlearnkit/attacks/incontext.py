"""In-context attack: re-introduce part of a forgotten person's facts in the prompt, ask about the rest.

Reminding the model of some facts about a person can re-activate suppressed associations for the
others (the in-context counterpart of relearning; Shumailov et al. 2024, "UnUnlearning"). For each
forget person, `fraction` of their facts (chosen by seed) are written before the question as
question-answer lines in the training format ("Where was X born? Greywater"), and the metrics are
measured on that person's other facts only. The oracle under the same prompts shows what the context
itself gives away (a model that never knew X cannot infer X's employer from X's birthplace).
"""
from __future__ import annotations

import random

from . import AttackPlan, Variant


def plan(world, *, seed: int = 0, fraction: float = 0.5) -> AttackPlan:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"incontext fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    context_ids: set[str] = set()
    by_person: dict[str, list] = {}
    for r in world.forget:
        by_person.setdefault(r.subject, []).append(r)
    for person in sorted(by_person):
        facts = sorted(by_person[person], key=lambda r: r.id)
        if len(facts) < 2:
            continue
        rng.shuffle(facts)
        n = min(len(facts) - 1, max(1, round(fraction * len(facts))))
        context_ids.update(r.id for r in facts[:n])
    if not context_ids:
        raise ValueError("incontext needs a forget person with at least 2 facts")
    records = [r for r in world.forget if r.id not in context_ids]
    prompts = []
    for r in records:
        ctx = [c for c in by_person[r.subject] if c.id in context_ids]
        prompts.append("\n".join([f"{c.question} {c.answer}" for c in ctx] + [r.question]))
    info = {"context_ids": sorted(context_ids), "n_context_facts": len(context_ids)}
    return AttackPlan(records, {"incontext": Variant(prompts=prompts)}, {"fraction": fraction}, info)
