"""Text helpers shared by the metrics: ROUGE-L and zlib length.

ROUGE-L is the `rouge_score` implementation (Lin 2004, longest common subsequence over tokens),
with the Porter stemmer on by default, as TOFU's evaluation uses it (MUSE's runs without it:
`unlearnkit.metrics.muse.rouge_f1`). `rouge_score` lower-cases and keeps only
[a-z0-9] tokens, so punctuation and case never count.
"""
from __future__ import annotations

import zlib
from functools import lru_cache

from rouge_score import rouge_scorer


@lru_cache(maxsize=None)
def _scorer(use_stemmer: bool = True) -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l(prediction: str, reference: str, use_stemmer: bool = True) -> dict[str, float]:
    """ROUGE-L of `prediction` against `reference`: {"recall", "precision", "f1"}.

    recall = LCS / |reference tokens|, precision = LCS / |prediction tokens|, f1 their harmonic
    mean. An empty side gives 0 for all three.
    """
    s = _scorer(use_stemmer).score(reference, prediction)["rougeL"]
    return {"recall": float(s.recall), "precision": float(s.precision), "f1": float(s.fmeasure)}


def rouge_l_recall(prediction: str, reference: str) -> float:
    """ROUGE-L recall (TOFU's ROUGE): LCS / number of reference tokens."""
    return rouge_l(prediction, reference)["recall"]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """ROUGE-L F1 with the stemmer (MUSE's VerbMem and KnowMem use `muse.rouge_f1`, without it)."""
    return rouge_l(prediction, reference)["f1"]


def zlib_length(text: str) -> int:
    """Length in bytes of the zlib-compressed UTF-8 text (Carlini et al. 2021's zlib entropy)."""
    return len(zlib.compress(text.encode("utf-8")))


def split_words(text: str, n_prompt: int, n_continuation: int | None = None) -> tuple[str, str]:
    """(first `n_prompt` words, the following words, at most `n_continuation` of them).

    Used to cut a document into a VerbMem prompt and its true continuation at a word boundary, so
    the prompt tokenises as it did inside the document (byte-level BPE splits at spaces).
    """
    words = text.split()
    rest = words[n_prompt:] if n_continuation is None else words[n_prompt:n_prompt + n_continuation]
    return " ".join(words[:n_prompt]), " ".join(rest)
