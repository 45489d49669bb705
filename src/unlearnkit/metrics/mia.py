"""Membership-inference attacks on sequence scores, and their ROC AUC.

Every attack returns a *member-ness* score: higher = more likely seen in training (losses are
negated). `auc(members, nonmembers)` is sklearn.metrics.roc_auc_score with members labelled 1 and
non-members 0, so 1.0 = members perfectly detected, 0.5 = chance, below 0.5 = members look *less*
familiar than non-members. In unlearning evaluation the members are the forget set and the
non-members the holdout set: after ideal unlearning the AUC equals the oracle's.

Attacks (each a pure function of one sample's scoring output):
- LOSS (Yeom et al. 2018): mean token log p = -mean token loss.
- zlib (Carlini et al. 2021): -loss / zlib_length(text), loss the mean token loss and the length
  that of the zlib-compressed UTF-8 text in bytes.
- Min-K% (Shi et al. 2024, "Detecting Pretraining Data from LLMs"): mean of the lowest k fraction
  of token log-probs (at least one token), the eos position left out (as open-unlearning does:
  the eos of a short text is often its least likely token, and says nothing about the text).
- Min-K%++ (Zhang et al. 2024, "Min-K%++"): each token's log p standardised by the mean mu and
  standard deviation sigma of log p under the model's own next-token distribution at that
  position, (log p - mu) / sigma, then Min-K% over those (eos left out as for Min-K%); as in the
  authors' code (zjysteven/mink-plus-plus), sigma is the square root of the variance of log p.
- reference (Carlini et al. 2021): -(loss_model - loss_reference) = loss_ref - loss_model; a
  reference model calibrates away how hard the text is.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from .text import zlib_length
from .tofu import logprobs_of, without_eos

MIN_K = 0.2  # the MIA table's Min-K% fraction (Shi et al. 2024 report 20%); PrivLeak has its own (muse.PRIVLEAK_K)
SIGMA_FLOOR = 1e-3  # std below this is a near-deterministic position: avoid dividing by ~0
ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus", "reference")


def null_auc_se(n1: int, n2: int) -> float:
    """Standard error of the ROC AUC when both samples come from one distribution (Hanley & McNeil
    1982): sqrt((n1 + n2 + 1) / (12 n1 n2))."""
    return math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))


def loss_score(x) -> float:
    """LOSS attack: mean token log p (= -mean token loss)."""
    return float(logprobs_of(x).mean())


def zlib_score(x, text: str) -> float:
    """zlib attack: -mean token loss / zlib-compressed length of `text` in bytes."""
    return float(logprobs_of(x).mean()) / zlib_length(text)


def _lowest_k_mean(values: np.ndarray, k: float) -> float:
    if not 0.0 < k <= 1.0:
        raise ValueError(f"k is a fraction in (0, 1], got {k}")
    # floor(k * n), at least 1; the epsilon keeps 0.3 * 10 = 3.0000000000000004 from flooring to 2
    # and 0.29 * 100 = 28.999999999999996 from flooring to 28.
    n = max(1, int(math.floor(k * values.size + 1e-9)))
    return float(np.sort(values)[:n].mean())


def min_k_score(x, k: float = MIN_K) -> float:
    """Min-K% attack: mean of the lowest max(1, floor(k * n)) token log-probs, n the number of
    tokens without eos."""
    return _lowest_k_mean(without_eos(logprobs_of(x), x), k)


def min_k_plus_plus_score(x, k: float = MIN_K) -> float:
    """Min-K%++ attack: Min-K% over (log p - mu) / sigma, mu and sigma the mean and std of log p
    under the model's next-token distribution (`x.mu`, `x.sigma`, from scoring with stats=True)."""
    lp = logprobs_of(x)
    mu, sigma = getattr(x, "mu", None), getattr(x, "sigma", None)
    if mu is None or sigma is None:
        raise ValueError("Min-K%++ needs mu and sigma: score with stats=True")
    z = (lp - np.asarray(mu, np.float64)) / np.maximum(np.asarray(sigma, np.float64), SIGMA_FLOOR)
    return _lowest_k_mean(without_eos(z, x), k)


def reference_score(x, ref) -> float:
    """Reference attack: reference model's mean token loss minus the model's."""
    return float(logprobs_of(x).mean() - logprobs_of(ref).mean())


def auc(member_scores: Sequence[float], nonmember_scores: Sequence[float]) -> float:
    """ROC AUC of member-ness scores, members labelled 1 (sklearn.metrics.roc_auc_score)."""
    m, n = list(member_scores), list(nonmember_scores)
    if not m or not n:
        raise ValueError(f"AUC needs members and non-members, got {len(m)} and {len(n)}")
    y = np.r_[np.ones(len(m)), np.zeros(len(n))]
    return float(roc_auc_score(y, np.r_[np.asarray(m, np.float64), np.asarray(n, np.float64)]))


def attack_scores(scores: Sequence, texts: Sequence[str], *, k: float = MIN_K,
                  reference: Sequence | None = None, attacks: Sequence[str] = ATTACKS) -> dict[str, list[float]]:
    """Member-ness scores of every sample under each attack that its inputs allow: Min-K%++ only
    when the scores carry mu/sigma, reference only when `reference` scores are given."""
    out: dict[str, list[float]] = {}
    for a in attacks:
        if a == "loss":
            out[a] = [loss_score(s) for s in scores]
        elif a == "zlib":
            out[a] = [zlib_score(s, t) for s, t in zip(scores, texts, strict=True)]
        elif a == "min_k":
            out[a] = [min_k_score(s, k) for s in scores]
        elif a == "min_k_plus_plus":
            if all(getattr(s, "mu", None) is not None for s in scores):
                out[a] = [min_k_plus_plus_score(s, k) for s in scores]
        elif a == "reference":
            if reference is not None:
                out[a] = [reference_score(s, r) for s, r in zip(scores, reference, strict=True)]
        else:
            raise ValueError(f"unknown attack {a!r}; known: {', '.join(ATTACKS)}")
    return out


def attack_aucs(members: Sequence, member_texts: Sequence[str], nonmembers: Sequence,
                nonmember_texts: Sequence[str], *, k: float = MIN_K, ref_members: Sequence | None = None,
                ref_nonmembers: Sequence | None = None, attacks: Sequence[str] = ATTACKS) -> dict[str, float]:
    """{attack: AUC} for members (forget) against non-members (holdout); see `auc` for orientation."""
    use_ref = ref_members is not None and ref_nonmembers is not None
    sm = attack_scores(members, member_texts, k=k, reference=ref_members if use_ref else None, attacks=attacks)
    sn = attack_scores(nonmembers, nonmember_texts, k=k, reference=ref_nonmembers if use_ref else None, attacks=attacks)
    return {a: auc(sm[a], sn[a]) for a in sm if a in sn}
