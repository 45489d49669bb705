"""What the guard does with a prompt that hits a target.

* ``refuse``: answer with a fixed neutral sentence (:data:`REFUSAL`). It names nothing: not the
  target, not its facts, not even that a target matched, so a refusal cannot leak what it protects.
* ``forbid``: let the model answer, but make the target's facts unreachable while decoding:
  :class:`ForbidTokensProcessor` sets to -inf the logit of the first token of every forbidden
  string and, once the output so far ends with a proper prefix of one, the logit of its next token.
  Forbidden strings are the target's answers and `forbidden` list, and their close variants: each
  content word alone, lower/Title/UPPER case, with and without a leading space (each of which
  tokenises differently in a BPE vocabulary).
* ``pseudonymise``: the target's name in the prompt is replaced by a stand-in name the model has
  never seen (invented, fixed per target), the model answers, and the stand-in in its answer is
  turned back into the words the prompt used. The model then answers about someone it knows
  nothing of, which is what a model never trained on the target (the oracle) does: on the
  embedded world the guarded model's forget quality, PrivLeak and MIA AUC are the oracle's
  (docs/guard.md). A prompt that hit without naming the target (a description, a document) has
  nothing to substitute and is answered as under ``forbid``.
* ``icu``: in-context unlearning (Pawelczyk et al. 2023, "In-Context Unlearning: Language Models
  as Few-Shot Unlearners"): the prompt is preceded by the target's questions shown with *wrong*
  labels (their perturbed answers, or another of the target's answers), one example per line in
  the model's own ``question answer`` format, so the model copies the flipped labels.
"""
from __future__ import annotations

import hashlib
import random
import re

import torch
from transformers import LogitsProcessor

from ..data.twins import invent_names
from .targets import Target

REFUSAL = "I'm sorry, but I can't share information about that."

_FUNC = frozenset("a an the of in on at to for and or is was it its by from with as".split())


def refusal(target: Target | None = None, text: str = REFUSAL) -> str:
    """The refusal for a hit. It deliberately ignores `target`: nothing about it is echoed."""
    return text


def forbidden_strings(target: Target) -> list[str]:
    """The strings the model must not produce for `target`, before case/space variants: each
    answer and `forbidden` string, and every content word (3+ characters, not a function word, not
    part of the target's own name) in them. Facts given only as free text contribute their
    capitalised words and numbers (the likely names, places and dates)."""
    name_words = {w.casefold() for n in target.names for w in re.findall(r"\w+", n)}
    base = [p.answer for p in target.qa] + list(target.forbidden)
    for f in target.facts:
        base += [w for w in re.findall(r"\b(?:[A-Z][\w'-]+|\d[\d.,]*)\b", f)
                 if w.casefold() not in name_words and w.casefold() not in _FUNC]
    out: list[str] = []
    for s in base:
        s = s.strip().strip(".")
        if not s:
            continue
        out.append(s)
        ws = re.findall(r"[\w'-]+", s)
        if len(ws) > 1:
            out += [w for w in ws if len(w) >= 3 and w.casefold() not in _FUNC and w.casefold() not in name_words]
    return list(dict.fromkeys(out))


def forbidden_token_sequences(tokenizer, strings: list[str]) -> list[list[int]]:
    """Token-id sequences of every string in every case and leading-space variant."""
    seqs = set()
    for s in strings:
        for v in {s, s.lower(), s.capitalize(), s.title(), s.upper()}:
            for text in (v, " " + v):
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                if ids:
                    seqs.add(tuple(ids))
    special = {tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id} - {None}
    return [list(s) for s in sorted(seqs) if not (len(s) == 1 and s[0] in special)]


class ForbidTokensProcessor(LogitsProcessor):
    """Forbid token sequences during decoding (and, in scoring, under teacher forcing).

    At every step it bans the first token of each sequence and, where the row's text so far ends
    with a proper prefix of a sequence, that sequence's next token; so no forbidden sequence can
    ever be completed. One instance holds one set of sequences for the whole batch, which makes
    it safe under any batching of the caller. Stateless: it can be reused across calls.
    """

    def __init__(self, sequences: list[list[int]]):
        self.first = sorted({s[0] for s in sequences})
        self.longer = [s for s in sequences if len(s) > 1]

    def banned(self, ids: list[int]) -> set[int]:
        """Token ids banned after the prefix `ids`."""
        out = set(self.first)
        for s in self.longer:
            for k in range(1, len(s)):
                if len(ids) >= k and ids[-k:] == s[:k]:
                    out.add(s[k])
        return out

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        if self.first:
            scores[:, self.first] = -float("inf")
        if self.longer:
            for row in range(input_ids.shape[0]):
                tail = input_ids[row, -max(len(s) for s in self.longer):].tolist()
                extra = self.banned(tail) - set(self.first)
                if extra:
                    scores[row, sorted(extra)] = -float("inf")
        return scores


def icu_prompt(target: Target, prompt: str, k: int = 4) -> str:
    """The prompt preceded by up to `k` of the target's questions with wrong labels.

    As in the paper, the forget point itself comes first with a flipped label: the target's
    questions are ranked by word overlap with the prompt, so a paraphrase of a forget question is
    preceded by that very question with a false answer."""
    pw = set(re.findall(r"\w+", prompt.casefold()))
    answers = [p.answer for p in target.qa]

    def overlap(i):
        qw = set(re.findall(r"\w+", target.qa[i].question.casefold()))
        return len(pw & qw) / max(1, len(pw | qw))

    lines = []
    for i in sorted(range(len(target.qa)), key=overlap, reverse=True):
        p = target.qa[i]
        wrong = next((w for w in p.wrong_answers if w.strip().casefold() != p.answer.casefold()), None)
        if wrong is None:  # no perturbed answer: another of the target's answers
            others = [a for a in answers[i + 1:] + answers[:i] if a.casefold() != p.answer.casefold()]
            if not others:
                continue
            wrong = others[0]
        lines.append(f"{p.question} {wrong}")
        if len(lines) >= k:
            break
    return "\n".join(lines[::-1] + [prompt]) if lines else prompt


def stand_in(target: Target, avoid: frozenset | set = frozenset()) -> list[str]:
    """The stand-in name of `target` for ``pseudonymise``: an invented name (`data.twins.invent_names`)
    of as many words as its first name has (at least one), fixed by the target's id, none of them
    in `avoid` (normalised name tokens of the guard's targets)."""
    n = max((len(re.findall(r"[^\W_]+", nm)) for nm in target.names[:1]), default=1) or 1
    return invent_names(1, n, set(avoid), random.Random(hashlib.sha256(target.id.encode()).digest()))[0]


def _case_like(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like.islower():
        return word.lower()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def pseudonymise(text: str, spans: list[tuple[int, int, int]], stand: list[str]) -> tuple[str, dict[str, str]]:
    """Replace the words at `spans` ((start, end, token number), from `Detector.name_spans`) by the
    stand-in's words: token number -1 (a name run together) by the whole stand-in run together, a
    one-letter word (an initial) by the stand-in word's initial. Returns the new text and
    {stand-in word: the first original word it replaced}, for :func:`restore`."""
    out, mapping, last = [], {}, 0
    for a, b, k in sorted(spans):
        if a < last:  # overlapping spans (one word matched twice)
            continue
        word = "".join(stand) if k < 0 else stand[min(k, len(stand) - 1)]
        orig = text[a:b]
        if len(orig) == 1:
            new = _case_like(word[0], orig)
        else:
            new = _case_like(word, orig)
            mapping.setdefault(word, orig)
        out += [text[last:a], new]
        last = b
    return "".join(out) + text[last:], mapping


def restore(text: str, mapping: dict[str, str]) -> str:
    """Put the prompt's own words back where the model repeated a stand-in word."""
    for new, orig in mapping.items():
        text = re.sub(rf"\b{re.escape(new)}\b", lambda m, o=orig: _case_like(o, m.group()), text, flags=re.IGNORECASE)
    return text
