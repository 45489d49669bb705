"""The output check: does what the model wrote name a target, or state a target's forgotten value
in that target's context?

The input side cannot see everything: a completion prompt that is the start of a name ("Lin",
"Linine V") or that names nobody ("The glassblower from Greywater is") lets the model write the
name and the biography itself. So the guard reads the prompt and the model's text *together*
with the same name matcher as the input side (`Detector.mentions`), and acts when
  * the text names a target by any form the name channel accepts (whole, initials, run together,
    misspelt, homoglyphs, a partial name nothing contradicts), or
  * a target is in the context only weakly (the start of one of its name tokens, "Lin", or a
    partial name beside another word, "Linine Oakhurst") and the output states one of its
    forgotten values: the normalised answer of one of its QA pairs, or a `forbidden` string,
    contained in the normalised output as whole words (the forget-fact measure of
    `attacks.recovery.forget_metrics`: "the answer contains the true value");
  * or the context is a rare value itself: the output states one of a target's values and the
    prompt or the output another, different one, at least one of them held by at most a few
    targets ("Where was the author of Tallow and Thread born?" answered with the author's
    birthplace). Rare values are found through an index of word n-grams (:class:`ValueIndex`), so
    the cost does not grow with the number of targets.
A value alone, with no reference to the target, is no leak: many people share a birthplace.

It costs one name-matcher pass over prompt + output (no embedding), run twice: once with the
text joined to the prompt as is and once with a space, because `LM.generate` strips the space a
continuation starts with ("Linine V" + "igormont" and "Linine V" + "was born").
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from .detect import Detector
from .targets import Target
from .names import fold_text


def normalise(text: str) -> str:
    """Folded (as names are), lower case, punctuation to spaces, whitespace collapsed."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", fold_text(text).lower()).split())


@functools.lru_cache(maxsize=65536)
def _values(answers: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for a in answers:
        v = normalise(a)
        if len(v) >= 3 or v.isdigit():
            out.append(v)
    return tuple(dict.fromkeys(out))


def values(target: Target) -> tuple[str, ...]:
    """The target's forgotten values, normalised: its QA answers and `forbidden` strings."""
    return _values(tuple(p.answer for p in target.qa) + tuple(target.forbidden))


def states_value(target: Target, text: str) -> bool:
    """Whether `text` contains one of the target's values as whole words."""
    padded = f" {normalise(text)} "
    return any(f" {v} " in padded for v in values(target))


class ValueIndex:
    """The targets' *rare* values (held by at most `rare` targets: a book title, not a birthplace
    that thousands share) -> target positions. `find` looks up the word n-grams of a text (n up to
    the longest value), so a check costs O(words), not O(targets)."""

    def __init__(self, targets: list[Target], rare: int = 8):
        by_value: dict[str, set[int]] = {}
        for pos, t in enumerate(targets):
            for v in values(t):
                by_value.setdefault(v, set()).add(pos)
        self.by_value = {v: ps for v, ps in by_value.items() if len(ps) <= rare}
        self.longest = max((len(v.split()) for v in self.by_value), default=0)

    def find(self, text: str) -> dict[int, set[str]]:
        """{target position: its rare values that `text` states}."""
        ws = normalise(text).split()
        out: dict[int, set[str]] = {}
        for i in range(len(ws)):
            for n in range(1, min(self.longest, len(ws) - i) + 1):
                v = " ".join(ws[i:i + n])
                for pos in self.by_value.get(v, ()):
                    out.setdefault(pos, set()).add(v)
        return out


@dataclass
class Leak:
    """What the output check found: the target and where its mention ends in the output (0 when
    the mention lies in the prompt, or when only a value gave it away)."""
    target: Target
    named: bool  # named in prompt + output (else: a value in a weak context)
    cut: int  # characters of the output up to the end of the first mention
    spans: list[tuple[int, int, int]]  # the target's name spans in `combined`
    combined: str  # the prompt + output text the spans refer to
    prompt_len: int  # characters of `combined` that belong to the prompt (and the joining space)


def find_leak(detector: Detector, prompt: str, text: str, skip: set[str] = frozenset(),
              context: str = "", value_index: ValueIndex | None = None) -> Leak | None:
    """The first target (not in `skip`, by id) that `text`, written after `prompt`, names or
    whose value it states in that target's context; None if there is none. `context`: earlier
    text (other messages) that counts for weak references only. `value_index`: the targets'
    values (built here when not given; a caller that checks many answers keeps one)."""
    if not text.strip():
        return None
    weak_ctx: set[int] = set()
    if context:
        s, w = detector.mentions(context)
        weak_ctx = w | set(s)
    for join in ("", " "):
        combined = prompt + join + text
        strong, weak = detector.mentions(combined)
        start = len(prompt) + len(join)
        named = [(m, t) for m, t in zip(strong.values(), detector.targets_at(strong)) if t.id not in skip]
        if named:
            m, t = min(named, key=lambda mt: mt[0].spans[0][0] if mt[0].spans else 0)
            return Leak(t, True, _cut(m.spans, start), m.spans, combined, start)
        stated = _Stated(text)
        for t in detector.targets_at(sorted(weak | weak_ctx)):
            if t.id not in skip and stated.any(t):
                return Leak(t, False, 0, [], combined, start)
    vi = value_index if value_index is not None else ValueIndex(detector.store.targets)
    rare = vi.find(prompt + "\n" + context + "\n" + text)
    if rare:
        stated = _Stated(text)
        for pos in sorted(rare):
            t = detector.targets_at([pos])[0]
            out = stated.which(t)
            if t.id not in skip and out and len(out | rare[pos]) >= 2:
                return Leak(t, False, 0, [], prompt + text, len(prompt))
    return None


class _Stated:
    """One answer, normalised once, asked which values of a target it states."""

    def __init__(self, text: str):
        self.padded = f" {normalise(text)} "

    def which(self, target: Target) -> set[str]:
        return {v for v in values(target) if f" {v} " in self.padded}

    def any(self, target: Target) -> bool:
        return any(f" {v} " in self.padded for v in values(target))


def _cut(spans: list[tuple[int, int, int]], start: int) -> int:
    """Characters of the output (which starts at `start`) up to the end of the first mention: the
    first span that reaches into the output, and the spans right after it (the rest of the name)."""
    spans = sorted(spans)
    i = next((k for k, (_, b, _) in enumerate(spans) if b > start), None)
    if i is None:
        return 0
    end = spans[i][1]
    for a, b, _ in spans[i + 1:]:
        if a - end > 3:
            break
        end = b
    return max(0, end - start)
