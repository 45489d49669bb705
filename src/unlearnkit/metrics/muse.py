"""MUSE metrics (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language
Models", arXiv:2407.06460).

- VerbMem: mean ROUGE-L F1 between the true continuation of a forget document and the model's
  greedy continuation of the document's first tokens (no verbatim memorisation: lower is better).
- KnowMem: mean ROUGE-L F1 between greedy answers and true answers to questions about the forget
  (lower is better) or retain (higher is better) documents.
- PrivLeak: relative gap between the Min-K% membership AUC of the model and of the oracle
  (retrained without the forget set), forget documents against holdout documents.

MUSE and open-unlearning report scores in [0, 1] here; multiply by 100 for the paper's tables.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .text import rouge_l_f1


def _mean_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return float(np.mean([rouge_l_f1(p, r) for p, r in zip(predictions, references)]))


def verbmem(continuations: Sequence[str], true_continuations: Sequence[str]) -> float:
    """MUSE VerbMem: mean ROUGE-L F1(greedy continuation, true continuation)."""
    return _mean_f1(continuations, true_continuations)


def knowmem(answers: Sequence[str], true_answers: Sequence[str]) -> float:
    """MUSE KnowMem: mean ROUGE-L F1(greedy answer, true answer)."""
    return _mean_f1(answers, true_answers)


def privleak(auc_model: float, auc_oracle: float) -> float:
    """MUSE PrivLeak in percent, with MUSE's sign convention.

    Inputs are our membership AUCs: roc_auc_score with forget (member) documents labelled 1 and
    holdout documents labelled 0, scored by the Min-K% *member-ness* score (higher = more likely a
    member), so 1 = members perfectly detected, 0.5 = chance. MUSE reports the complementary AUC,
    AUC' = 1 - AUC (its Min-K% score is loss-like: higher = non-member); open-unlearning makes the
    same conversion. PrivLeak = (AUC'_model - AUC'_oracle) / AUC'_oracle x 100
                             = (AUC_oracle - AUC_model) / (1 - AUC_oracle) x 100.
    0 = leaks exactly as much as the oracle; strongly negative (down to -100) = forget documents are
    still recognisable as members (under-unlearned); positive = forget documents look *less* like
    members than the oracle's (over-unlearned, itself a membership signal).
    Returns +-inf when the oracle's AUC is 1 and the two differ.
    """
    ref = 1.0 - float(auc_oracle)
    diff = (1.0 - float(auc_model)) - ref
    if ref == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / ref * 100.0
