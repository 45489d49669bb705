"""MUSE metrics (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language
Models", arXiv:2407.06460).

ROUGE here is MUSE's: ROUGE-L F1 from `rouge_score` *without* the Porter stemmer (MUSE's eval code
builds its scorer with use_stemmer=False; TOFU's ROUGE keeps the stemmer).

- VerbMem: mean ROUGE-L F1 between the true continuation of a forget document and the model's
  greedy continuation of the document's first tokens (no verbatim memorisation: lower is better).
- KnowMem: mean ROUGE-L F1 between greedy answers and true answers to questions about the forget
  (lower is better) or retain (higher is better) documents.
- PrivLeak: relative gap between the Min-K% membership AUC of the model and of the oracle
  (retrained without the forget set), forget documents against holdout documents, with Min-40%
  (k = 0.4, `PRIVLEAK_K`) as MUSE and open-unlearning compute it.

MUSE and open-unlearning report scores in [0, 1] here; multiply by 100 for the paper's tables.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .text import rouge_l

PRIVLEAK_K = 0.4  # MUSE's PrivLeak uses Min-40% (MUSE eval code; open-unlearning's privleak config)


def rouge_f1(prediction: str, reference: str) -> float:
    """MUSE's ROUGE: ROUGE-L F1 without the stemmer."""
    return rouge_l(prediction, reference, use_stemmer=False)["f1"]


def _mean_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    return float(np.mean([rouge_f1(p, r) for p, r in zip(predictions, references)]))


def verbmem(continuations: Sequence[str], true_continuations: Sequence[str]) -> float:
    """MUSE VerbMem: mean ROUGE-L F1(greedy continuation, true continuation)."""
    return _mean_f1(continuations, true_continuations)


# where MUSE's KnowMem cuts a greedy answer: what follows is the model writing the next question
ANSWER_ENDS = ("\n\n", "\nQuestion", "Question:")


def answer_part(output: str) -> str:
    """The answer in a greedy output, as MUSE's KnowMem reads it: the text before the first of
    `ANSWER_ENDS` (its eval's `get_prefix_before_words_occur`)."""
    for end in ANSWER_ENDS:
        output = output.split(end)[0]
    return output


def knowmem(answers: Sequence[str], true_answers: Sequence[str]) -> float:
    """MUSE KnowMem: mean ROUGE-L F1(greedy answer, true answer), each answer cut where the model
    goes on to the next question (`answer_part`; scored whole until session 36, which lowered the
    F1 of a right answer that the model followed with "\n\nQuestion: ...")."""
    return _mean_f1([answer_part(a) for a in answers], true_answers)


def privleak(auc_model: float, auc_oracle: float, k_model: float | None = None,
             k_oracle: float | None = None) -> float:
    """MUSE PrivLeak in percent, with MUSE's sign convention.

    `k_model`/`k_oracle`: the Min-K% fraction each AUC was computed with. Two AUCs at different k
    measure different attacks and their gap means nothing, so unequal k (or one given and the
    other unknown) raises ValueError instead of returning a number.

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
    if (k_model is None) != (k_oracle is None) or (k_model is not None and not math.isclose(k_model, k_oracle)):
        raise ValueError(f"PrivLeak compares Min-K% AUCs at one k: the model's is at k = {k_model}, the "
                         f"oracle's at k = {k_oracle}; evaluate the oracle again with this version")
    ref = 1.0 - float(auc_oracle)
    diff = (1.0 - float(auc_model)) - ref
    if ref == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / ref * 100.0
