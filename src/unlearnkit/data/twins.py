"""Counterfactual twins: a forget record with its subject's name replaced by one nobody has.

A model that never saw a person answers questions about them the way it answers questions about
anyone it never saw. So the twin of a forget record (same question and answer, the name swapped for
one that belongs to no one in the training data) shows, on the model at hand and with no retraining,
what "never seen" looks like for that very question and answer. `calibrate` compares the forget set
with its twins; the pseudonymise guard rests on the same idea.

Where the data has other people, a twin's name is made of their name words, recombined into a name
that nobody has (first name of one, surname of another): words the model has read in that place,
so the text after the name is as likely as after any name. An invented word is cut into rare
tokens, and what follows it is less likely for that reason alone: on sentence answers that repeat
the name, the forget set's AUC against invented-name twins ran up to 0.19 above its AUC against the
holdout people, so a forget set matched to them was over-forgotten (docs/methods.md). Without other
people, names are invented.
"""
from __future__ import annotations

import random
import re
from typing import Iterable

from .schema import QARecord

# Plain syllables and common surname endings: an ordinary-looking name that names nobody. (Odd
# letters, "Quuchun Jomholm", moved the pseudonymise guard's answers further from the oracle's on
# the embedded world: forget quality 0.12-0.27 against 0.38-0.51 with these, over three draws each.)
_ONSETS = ["b", "d", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v"]
_VOWELS = ["a", "e", "i", "o", "u"]
_ENDS = ["ley", "ton", "man", "son", "ford", "well"]

STRANGERS = 8  # strangers made per person for a method that steers to them (`unlearning._strangers`)


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
    """`n` distinct invented names of `parts` words each (the last one a surname), no word in
    `avoid` (lower-case). The one generator of invented names: twins without other people's names
    to recombine, the pseudonymise guard's stand-ins, the strangers locate asks about."""
    avoid, out, seen = {w.casefold() for w in avoid}, [], set()
    on, vo = _ONSETS, _VOWELS
    for _ in range(1000 * (n + 10)):
        if len(out) == n:
            return out
        name = [rng.choice(on) + rng.choice(vo) + rng.choice(on) + rng.choice(vo) + rng.choice("nlrs")
                for _ in range(parts - 1)]
        name.append(rng.choice(on) + rng.choice(vo) + rng.choice("lnrm") + rng.choice(_ENDS))
        name = [w.capitalize() for w in name]
        key = tuple(w.casefold() for w in name)
        if not set(key) & avoid and key not in seen and len(set(key)) == len(key):
            seen.add(key)
            out.append(name)
    if len(out) < n:
        raise ValueError(f"could not invent {n} distinct names of {parts} words avoiding {len(avoid)} words")
    return out


def _whole_word(w: str) -> str:
    return r"\b" + re.escape(w) + r"\b"


def name_spans(text: str, subject: str) -> list[tuple[int, int]]:
    """Character spans of the words of `subject`'s name in `text` (whole words)."""
    return [m.span() for w in name_parts(subject) for m in re.finditer(_whole_word(w), text)]


def swap_name(text: str, subject: str, new: list[str]) -> str:
    """`text` with the full name `subject` and each of its words replaced (whole words only)."""
    old = name_parts(subject)
    if not old:
        return text
    text = re.sub(_whole_word(subject), " ".join(new), text)
    for i, w in enumerate(old):
        text = re.sub(_whole_word(w), new[min(i, len(new) - 1)], text)
    return text


def mentions(record: QARecord) -> bool:
    """Whether the record's question names its subject (else its twin would be itself)."""
    return bool(name_spans(record.question, record.subject))


def _name_words(people: list[str]) -> tuple[list[str], list[str], list[str]] | None:
    """(first names, middle names, surnames) of `people`, or None when they have too few to recombine."""
    parts = [name_parts(p) for p in people]
    firsts = sorted({p[0] for p in parts if len(p) >= 2})
    lasts = sorted({p[-1] for p in parts if len(p) >= 2})
    middles = sorted({w for p in parts for w in p[1:-1]}) or firsts
    return (firsts, middles, lasts) if len(firsts) >= 2 and len(lasts) >= 2 else None


def _recombine(own: list[str], words, taken: set, rng: random.Random, avoid: set[str] = frozenset()) -> list[str] | None:
    """A name of as many words as `own` (at least two) from `words` (`_name_words`), not in `taken`
    (which it joins), sharing no word with `own` or `avoid` (lower-case); None when none turns up."""
    firsts, middles, lasts = words
    n, banned = max(2, len(own)), {w.lower() for w in own} | set(avoid)
    for _ in range(1000):
        name = [rng.choice(firsts), *(rng.choice(middles) for _ in range(n - 2)), rng.choice(lasts)]
        if tuple(name) not in taken and not banned & {w.lower() for w in name}:
            taken.add(tuple(name))
            return name
    return None


def recombined_names(subjects: list[str], people: Iterable[str], rng: random.Random) -> dict[str, list[str]] | None:
    """A name per subject from the words of `people`'s names (each word in the place it has there:
    first, middle, last), that no one in `people` or `subjects` has, none sharing a word with its
    subject, none given twice; None when `people` have too few distinct words for that."""
    people = list(people)
    if (words := _name_words(people)) is None:
        return None
    taken = {tuple(name_parts(p)) for p in [*people, *subjects]}
    out: dict[str, list[str]] = {}
    for s in sorted(set(subjects)):
        if (name := _recombine(name_parts(s), words, taken, rng)) is None:
            return None
        out[s] = name
    return out


def stranger_names(person: str, n: int, people: Iterable[str] = (), avoid: set[str] = frozenset(),
                   seed: int = 0) -> list[str]:
    """`n` full names of people who do not exist, made as twins' names are: recombined from
    `people`'s name words when they allow it, else invented; none shares a word with `person` or
    `avoid` (lower-case: the person's aliases), none is given twice. What locate asks about beside
    the person."""
    rng, own, people = random.Random(seed), name_parts(person), list(people)
    if (words := _name_words(people)) is not None:
        taken = {tuple(name_parts(p)) for p in [*people, person]}
        names = [_recombine(own, words, taken, rng, set(avoid)) for _ in range(n)]
        if None not in names:
            return [" ".join(x) for x in names]
    return [" ".join(x) for x in invent_names(n, max(2, len(own)), {*avoid, *(w.lower() for w in own)}, rng)]


def twins(records: list[QARecord], avoid: set[str], seed: int = 0, people: Iterable[str] = ()) -> list[QARecord]:
    """One twin per record; all records of one subject share one name: recombined from `people`'s
    names (`recombined_names`) when they allow it, else invented (no word in `avoid`)."""
    subjects = sorted({r.subject for r in records})
    rng = random.Random(seed)
    names = recombined_names(subjects, list(people), rng)
    if names is None:  # as many words as each subject's name, all names distinct
        size = {s: max(1, len(name_parts(s))) for s in subjects}
        made = {k: iter(invent_names(list(size.values()).count(k), k, avoid, rng)) for k in sorted(set(size.values()))}
        names = {s: next(made[size[s]]) for s in subjects}
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


def forget_twins(world, seed: int = 0) -> tuple[list[QARecord], list[QARecord]]:
    """(the forget records that name their subject, their twins): `world_twins` of the forget split."""
    return world_twins(world, world.forget, seed)


def world_twins(world, records: list[QARecord], seed: int = 0) -> tuple[list[QARecord], list[QARecord]]:
    """(the `records` that name their subject, their twins): names recombined from the retain and
    neighbour people's, else invented avoiding every word of the world (all QA splits and
    documents)."""
    named = [r for r in records if mentions(r)]
    corpus = [t for split in (world.forget, world.retain, world.neighbours, world.holdout, world.world_facts)
              for r in split for t in (r.subject, r.question, r.answer, *r.alt_questions)]
    corpus += [d.text for split in (world.forget_docs, world.retain_docs, world.neighbours_docs) for d in split]
    people = sorted({r.subject for split in (world.retain, world.neighbours) for r in split})
    return named, twins(named, words_of(corpus), seed, people) if named else []
