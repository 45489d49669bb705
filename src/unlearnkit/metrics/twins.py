"""Permutation tests of "the model treats this person like a stranger", fact by fact.

Each fact located about a person is also asked about invented strangers with the same answer (its
twins: `requests.locate.twin_records`). A model that never saw the person (exact unlearning) has
little reason to treat the person's question otherwise than its twins': within a fact, the person
is one more stranger, exchangeable with its m twins. Both tests below condition on what the model
did on each fact (which of the m + 1 were answered, the m + 1 scores) and ask how unusual the
person's place among them is, over the person's n facts, however few the facts or twins and
however hard each fact is.

Exchangeability is the null, and it holds only nearly: the oracles of bench/requests.py's worlds
scored their forget people's answers above the twins' (pooled AUC 0.61 on average over 36 people,
session 41), likely because a model that never saw a person may still have met the name in
retained records (a neighbour's mother, say), where a twin's name appears nowhere. So a check does
not fail on significance alone: it fails beyond a tolerance, and significantly
(`requests.verify.judged`).

- `answered_test`: the person's facts answered, against the chance that, on each fact, the person
  is among those of the m + 1 who were answered (c / (m + 1)): a Poisson-binomial tail, one-sided
  (answering fewer than strangers is no leak).
- `pooled_test`: the ROC AUC of the person's answer log-probs against all its twins' (the LOSS
  attack as `metrics.mia` runs it), 0.5 at chance, 1 when the person's answers are likelier than
  every twin's (remembered), 0 when less likely (over-forgotten: that gives the person away too);
  its null by placing the person at random within each fact (seeded draws). Two-sided.
  (The paired form, each fact's person ranked among its own twins alone, was tried in session 41:
  the oracle's paired AUCs spread wider, 0.40-0.90 on 36 people against 0.48-0.80 pooled, and it
  failed two of twenty sequential batches; docs/requests-log.md.)

Each returns the statistic, its p-value, and `min_p`: the smallest p-value the test can give on
these facts (the person answered on all of them and no twin; first or last on all). A test
whose `min_p` is above the level it is judged at cannot reject anything: it has no power there.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


DRAWS = 10_000  # placings of `pooled_test`: its p-value to 1e-4, against levels of 0.05 / (2 x a batch's requests)


def _tail_at_least(pmf: np.ndarray, k: int) -> float:
    return float(min(1.0, pmf[k:].sum())) if k < len(pmf) else 0.0


def answered_test(mine: Sequence[float], twins: Sequence[Sequence[float]]) -> dict:
    """`mine`: per fact, 1 where the person's answer was given; `twins`: per fact, its twins' 0/1.
    Facts without twins are left out. Returns {"n", "gap" (person's rate - twins' rate), "p"
    (P(answered >= observed) under exchangeability), "min_p"}."""
    pairs = [(float(a), np.asarray(t, float)) for a, t in zip(mine, twins) if len(t)]
    if not pairs:
        return {"n": 0, "gap": None, "p": None, "min_p": 1.0}
    pmf, min_p = np.ones(1), 1.0
    for a, t in pairs:
        q = (a + t.sum()) / (1 + len(t))  # P(the person is among the answered | how many were)
        pmf = np.convolve(pmf, [1 - q, q])
        min_p /= 1 + len(t)
    got = int(round(sum(a for a, _ in pairs)))
    gap = float(np.mean([a for a, _ in pairs]) - np.mean([t.mean() for _, t in pairs]))
    return {"n": len(pairs), "gap": gap, "p": _tail_at_least(pmf, got), "min_p": min_p}


def pooled_test(mine: Sequence[float], twins: Sequence[Sequence[float]], draws: int = DRAWS, seed: int = 0) -> dict:
    """`mine`: per fact, the person's score (higher = more familiar, e.g. `mia.loss_score`); `twins`:
    per fact, its twins' scores. Facts without twins are left out. Returns {"n", "auc" (the ROC AUC
    of the person's scores against all twins' scores: `mia.auc`), "p" (two-sided: P(|AUC - 0.5| >=
    observed) when, on each fact, any of the m + 1 could have been the person; from `draws` seeded
    placings, so at least 1 / (draws + 1)), "min_p" (the chance of one extreme placing, twice:
    about the smallest p-value these facts allow)}."""
    from scipy.stats import rankdata

    facts = [np.append(np.asarray(t, float), float(s)) for s, t in zip(mine, twins) if len(t)]  # the person last
    if not facts:
        return {"n": 0, "auc": None, "p": None, "min_p": 1.0}
    n, sizes = len(facts), np.array([len(v) for v in facts])
    ranks = rankdata(np.concatenate(facts))  # ties share a rank: half a pair each
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    pairs = n * (sizes.sum() - n)

    def auc_of(person):  # (draws, n): each fact's position of the person
        return (ranks[start + person].sum(-1) - n * (n + 1) / 2) / pairs

    got = float(auc_of(sizes - 1))
    placed = (np.random.default_rng(seed).random((draws, n)) * sizes).astype(int)
    far = (np.abs(auc_of(placed) - 0.5) >= abs(got - 0.5) - 1e-12).sum()
    return {"n": n, "auc": got, "p": float((far + 1) / (draws + 1)), "min_p": min(1.0, 2 * float(np.prod(1 / sizes)))}


def beyond(distance: float, tolerance: float) -> bool:
    """Whether `distance` (an AUC's from 0.5, an answer rate's from the strangers') is beyond
    `tolerance`; one at the tolerance is within it, whatever the float arithmetic that made it:
    0.8 - 0.5 is 0.30000000000000004, and an AUC of exactly 0.8 (160 of 200 pairs) failed a
    request home's MIA check at tolerance 0.3 (session 45)."""
    return distance > tolerance + 1e-9


__all__ = ["answered_test", "beyond", "pooled_test"]
