"""Counterfactual twins: a forget record with its subject's name replaced by an invented one.

A model that never saw a person answers questions about them the way it answers questions about
anyone it never saw. So the twin of a forget record (same question and answer, the name swapped for
one that appears nowhere in the training data) shows, on the model at hand and with no retraining,
what "never seen" looks like for that very question and answer. `calibrate` compares the forget set
with its twins; the pseudonymise guard rests on the same idea.
"""
from __future__ import annotations

import random
import re
from typing import Iterable

from .schema import QARecord

# Syllables unlike the embedded world's (data/world.py), so twins rarely resemble real subjects.
_ONSETS = ["h", "j", "w", "y", "ch", "qu", "ph", "wh", "cl", "fl", "gl", "pl", "sc", "sp"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
_CODAS = ["", "", "m", "x", "ck", "th", "lt"]


def name_parts(subject: str) -> list[str]:
    """The words of a name that identify it (letters, at least two of them)."""
    return [w for w in re.findall(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", subject) if len(w) >= 2]


def words_of(texts: Iterable[str]) -> set[str]:
    """Lower-cased words of a corpus: what an invented name must not be."""
    out: set[str] = set()
    for t in texts:
        out.update(w.lower() for w in re.findall(r"[^\W\d_]+", t))
    return out


def invent_names(n: int, parts: int, avoid: set[str], rng: random.Random) -> list[list[str]]:
    """`n` distinct names of `parts` words each, no word in `avoid` (lower-case) or used twice."""
    used = set(avoid)
    out = []
    for _ in range(n):
        name = []
        for _ in range(parts):
            for _ in range(10_000):
                w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                            for _ in range(rng.randint(2, 3))).capitalize()
                if w.lower() not in used:
                    break
            used.add(w.lower())
            name.append(w)
        out.append(name)
    return out


def swap_name(text: str, subject: str, new: list[str]) -> str:
    """`text` with the full name `subject` and each of its words replaced (whole words only)."""
    old = name_parts(subject)
    if not old:
        return text
    text = re.sub(r"\b" + re.escape(subject) + r"\b", " ".join(new), text)
    for i, w in enumerate(old):
        text = re.sub(r"\b" + re.escape(w) + r"\b", new[min(i, len(new) - 1)], text)
    return text


def mentions(record: QARecord) -> bool:
    """Whether the record's question names its subject (else its twin would be itself)."""
    return any(re.search(r"\b" + re.escape(w) + r"\b", record.question) for w in name_parts(record.subject))


def twins(records: list[QARecord], avoid: set[str], seed: int = 0) -> list[QARecord]:
    """One twin per record; all records of one subject share one invented name."""
    subjects = sorted({r.subject for r in records})
    rng = random.Random(seed)
    names = {}
    for s in subjects:
        names[s] = invent_names(1, max(1, len(name_parts(s))), avoid | {w.lower() for v in names.values() for w in v},
                                rng)[0]
    out = []
    for r in records:
        new = names[r.subject]
        sw = lambda t: swap_name(t, r.subject, new)  # noqa: E731
        out.append(r.model_copy(update={
            "id": f"{r.id}~twin", "subject": " ".join(new), "question": sw(r.question), "answer": sw(r.answer),
            "paraphrased_answer": sw(r.paraphrased_answer), "perturbed_answers": [sw(a) for a in r.perturbed_answers],
            "alt_questions": [sw(q) for q in r.alt_questions],
            "paraphrased_question": sw(r.paraphrased_question) if r.paraphrased_question else None}))
    return out
