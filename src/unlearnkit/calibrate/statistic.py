"""The calibrator's statistic: each record's mean answer log-prob from one scoring pass, the
references it is compared with, and the AUC."""
from __future__ import annotations

import numpy as np
import torch

from ..data.batching import Encoded, encode_pairs
from ..data.io import WorldData
from ..data.templates import parse_template
from ..data.twins import world_twins
from ..scoring import answer_logprobs

TWIN_PAIRS = 400  # forget facts and twins in the truth-ratio gap: its SE ~0.03 on the wide worlds (0.018 at 1000)


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(member score > non-member score) + 0.5 P(tie): the Mann-Whitney form of the ROC AUC."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(members, nonmembers).statistic / (len(members) * len(nonmembers)))


def reference_records(world: WorldData, kind: str, seed: int = 0, forget: list | None = None):
    """(forget records used, reference records): twins of the forget records (`forget`, default the
    world's forget split) that name their subject, or the holdout split. A one-line ValueError says
    when neither can be had."""
    forget = list(world.forget) if forget is None else list(forget)
    if kind == "holdout":
        if not world.holdout:
            raise ValueError("calibration reference 'holdout': the data has no holdout split; use reference=twins")
        return forget, list(world.holdout)
    named, tw = world_twins(world, forget, seed)
    if not named:
        raise ValueError("calibration reference 'twins': no forget question names its subject, so no twin can "
                         "be made; use reference=holdout, or a fixed budget (--steps/--epochs)")
    return named, tw


def encode_records(tokenizer, records, template=None, mask_names: bool = True) -> list[Encoded]:
    """Each record's question and answer, encoded as training encodes them; with `mask_names`, the
    subject's name tokens are left out of the labels (`data.batching.encode_pairs`).

    The statistic compares forget records with twins whose names were swapped, so the name's own
    tokens (memorised for a real person, not for a twin's) must not decide it: only the
    fact is compared. "Linine Vigormont was born in Thornwick." is scored on "was born in
    Thornwick." (and the end of sequence)."""
    recs = list(records)
    return encode_pairs(tokenizer, [r.question for r in recs], [r.answer for r in recs],
                        template=parse_template(template), subjects=[r.subject for r in recs] if mask_names else None)


def _before_eos(m: torch.Tensor) -> torch.Tensor:
    """The answer positions of `m` (a row's labelled positions) less each row's last, its end of sequence."""
    return m & ~(m & (m.cumsum(-1) == m.sum(-1, keepdim=True)))


def answer_scores(model, batch, ctx=None):
    """Per-row mean answer-token log-prob, the last (end-of-sequence) position left out."""
    return _answer_scores_and_exact(model, batch)[:, 0]


def _answer_scores_and_exact(model, batch, ctx=None):
    """Per row: the mean log-prob of the scored answer tokens (the end of sequence left out, but kept
    for a one-token answer; the subject's name is out of the labels: `encode_records`), and whether
    every one of them is the model's argmax: the answer reproduced word for word."""
    out = answer_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    m = out["mask"]
    keep = _before_eos(m)
    keep = torch.where(keep.any(-1, keepdim=True), keep, m)  # a one-token answer keeps its eos
    right = (out["hits"] | ~keep).all(-1).float()
    return torch.stack([(out["logprobs"] * keep).sum(-1) / keep.sum(-1).clamp_min(1), right], -1)


def _mean_logprob_and_accuracy(model, batch, ctx=None):
    """Per row: the mean answer-token log-prob (end of sequence included, as `LM.score` gives it to
    TOFU's metrics) and whether every answer token before the end of sequence is the model's argmax:
    the teacher-forced form of "the greedy answer is right". (The fraction of argmax tokens was
    tried: one wrong first token derails a greedy answer, and it stood at 0.95 with ROUGE at 0.77.)"""
    out = answer_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    m = out["mask"]
    n = m.sum(-1).clamp_min(1)
    right = ((out["hits"] | ~_before_eos(m)).all(-1)).float()
    return torch.stack([(out["logprobs"] * m).sum(-1) / n, right], -1)


def _lp(v: float) -> np.ndarray:
    """A sequence's mean log-prob as `metrics.tofu`'s functions take it (an array of log-probs)."""
    return np.array([v])


def _ratios(rows: list[tuple]) -> list[float]:
    """TOFU's truth ratio of each record's rows (`Calibrator._answer_rows`): paraphrased against perturbed."""
    from ..metrics import tofu

    return [tofu.truth_ratio(_lp(a[0]), [_lp(x) for x in q]) for _, a, q in rows]


def _utility_encoding(tokenizer, records, template=None, true: bool = True, others: bool = True) -> list[Encoded]:
    """Each record's question with its true answer (with `true`), then its paraphrased and perturbed
    answers (with `others`): a truth ratio needs only the others, the answers' utility only the true one."""
    a = [[*((r.answer,) if true else ()), *((r.paraphrased_answer, *r.perturbed_answers) if others else ())]
         for r in records]
    q = [r.question for r, xs in zip(records, a) for _ in xs]
    a = [x for xs in a for x in xs]
    return encode_pairs(tokenizer, q, a, template=parse_template(template))
