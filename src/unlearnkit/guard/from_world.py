"""Forget targets from a world: one per person of a split."""
from __future__ import annotations

import hashlib
import re

from .targets import Action, QAPair, Target, as_target


def _stable_id(subject: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:40] or "t"
    return f"{slug}-{hashlib.sha1(subject.encode()).hexdigest()[:6]}"


def targets_from_world(world, action: Action | None = None, split: str = "forget") -> list[Target]:
    """One target per person of a world split (default: the forget people): the name, their QA
    pairs (question, true answer, perturbed answers as wrong labels) and their biographies. Ids are stable: a slug of the name plus a short hash."""
    from collections import OrderedDict

    from ..data.io import QA_SPLITS

    if split not in QA_SPLITS:  # not "'WorldData' object has no attribute"
        raise ValueError(f"--split {split!r}: choose one of {', '.join(QA_SPLITS)}")
    by: OrderedDict[str, list] = OrderedDict()
    for r in getattr(world, split):
        by.setdefault(r.subject, []).append(r)
    docs: dict[str, list[str]] = {}
    for d in getattr(world, f"{split}_docs", []) or []:
        docs.setdefault(d.subject, []).append(d.text)
    out = []
    for subject, recs in by.items():
        qa = [QAPair(question=r.question, answer=r.answer,
                     wrong_answers=[a for a in r.perturbed_answers if a.strip()][:8]) for r in recs]
        out.append(as_target(dict(id=_stable_id(subject), subject=subject, qa=qa, documents=docs.get(subject, []),
                                  action=action)))
    return out
