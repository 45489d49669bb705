"""TOFU (Maini et al. 2024, arXiv:2401.06121; hub `locuslab/TOFU`) from a local copy.

Configs read (columns as published; each config's one split is `train`):
- `forgetNN_perturbed` (NN = 01, 05, 10): question, answer, paraphrased_answer, perturbed_answer
  (a list), paraphrased_question (optional) -> the world's `forget`;
- `retain_perturbed` (same columns) -> `retain`;
- `real_authors_perturbed`, `world_facts_perturbed`: question, answer, perturbed_answer ->
  `neighbours` and `world_facts`, with paraphrased_answer = answer, because TOFU's evaluation
  (config/eval_everything.yaml, base_answer_key) compares `answer` itself with the perturbed
  options on these two sets, for both the normalised probability and the truth ratio;
- `holdoutNN` (question, answer), if present -> `holdout`, the non-members of the MIA (its
  paraphrased and perturbed answers are set to the answer; no metric reads them);
- for `unlearn forget`: `forgetNN` and `retain{100-NN}` (question, answer), the training sets.

With these, `unlearnkit.evaluate` computes TOFU's numbers as TOFU's aggregate_eval_stat.py does:
probability exp(-mean token loss) on forget and retain and p(answer)/(p(answer)+sum p(perturbed))
on real authors and world facts; ROUGE-L recall (stemmer on); truth ratio
exp(mean perturbed loss - base loss), reported as mean(max(0, 1 - 1/R)) on the three utility sets;
model utility = harmonic mean of those 9 numbers; forget quality = KS-test p-value of the forget
truth ratios against a retain model's: an `unlearn eval` result of the retain model, or TOFU's own
saved `eval_log_forget.json` / `eval_log_aggregated.json` (`oracle_from_tofu_log`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from ..data.io import DataError, WorldData
from ..data.schema import QARecord
from .base import Benchmark
from .tables import find_rows, read_rows

SPLITS = ("forget01", "forget05", "forget10")
AUTHOR_QA = 20  # TOFU: 20 question-answer pairs per fictitious author, in order


def _forget_percent(split: str) -> int:
    m = re.fullmatch(r"forget(\d\d)", split)
    if not m or split not in SPLITS:
        raise ValueError(f"TOFU split {split!r}: choose one of {', '.join(SPLITS)}")
    return int(m.group(1))


def _records(rows: list[dict], config: str, *, base_is_answer: bool = False, per_author: bool = True) -> list[QARecord]:
    out = []
    for i, r in enumerate(rows):
        pert = r.get("perturbed_answer")
        if pert is not None and not isinstance(pert, list):
            raise DataError(f"[{config}] row {i}: field 'perturbed_answer': expected a list of strings")
        answer = r["answer"]
        out.append(QARecord(
            id=f"{config}:{i}",
            subject=f"{config}:author{i // AUTHOR_QA}" if per_author else f"{config}:{i}",
            question=r["question"],
            answer=answer,
            paraphrased_answer=answer if base_is_answer or not r.get("paraphrased_answer") else r["paraphrased_answer"],
            perturbed_answers=pert or [answer],
            paraphrased_question=r.get("paraphrased_question") or None,
        ))
    return out


def _pairs(rows: list[dict]) -> tuple[list[str], list[str]]:
    return [r["question"] for r in rows], [r["answer"] for r in rows]


def load(root: str | Path, split: str | None = None) -> Benchmark:
    """The TOFU benchmark `split` (forget01 | forget05 | forget10; default forget10) under `root`."""
    split = split or "forget10"
    pct = _forget_percent(split)
    qa = ("question", "answer")
    pert = qa + ("perturbed_answer",)
    forget = read_rows(root, f"{split}_perturbed", "train", required=pert + ("paraphrased_answer",))
    world = WorldData(
        forget=_records(forget, f"{split}_perturbed"),
        retain=_records(read_rows(root, "retain_perturbed", "train", required=pert + ("paraphrased_answer",)),
                        "retain_perturbed"),
        neighbours=_records(read_rows(root, "real_authors_perturbed", "train", required=pert),
                            "real_authors_perturbed", base_is_answer=True, per_author=False),
        world_facts=_records(read_rows(root, "world_facts_perturbed", "train", required=pert),
                             "world_facts_perturbed", base_is_answer=True, per_author=False),
        path=Path(root),
    )
    holdout = find_rows(root, f"holdout{pct:02d}", "train")
    if holdout is not None:
        world.holdout = _records(read_rows(root, f"holdout{pct:02d}", "train", required=qa), f"holdout{pct:02d}")

    def forget_pairs():
        rows = find_rows(root, split, "train")
        return _pairs(read_rows(root, split, "train", required=qa) if rows is not None else forget)

    def retain_pairs():
        return _pairs(read_rows(root, f"retain{100 - pct}", "train", required=qa))

    return Benchmark("tofu", split, world=world, suites=("tofu", "mia"), forget=forget_pairs, retain=retain_pairs,
                     convert_oracle=oracle_from_tofu_log)


def oracle_from_tofu_log(result: dict) -> dict:
    """An oracle result (`per_sample.forget_truth_ratios`) from TOFU's own saved evaluation of a
    retain model: `eval_log_forget.json` ({"avg_paraphrased_loss": {i: L}, "average_perturb_loss":
    {i: [L, ...]}}) or `eval_log_aggregated.json` (those under the key "eval_log_forget.json"), as
    TOFU's aggregate_eval_stat.py reads them: R_i = exp(mean(perturbed losses) - paraphrased loss).
    Any other dict (an `unlearn eval` result) is returned unchanged."""
    log = result.get("eval_log_forget.json", result)
    if not isinstance(log, dict) or "avg_paraphrased_loss" not in log or "average_perturb_loss" not in log:
        return result
    para, pert = log["avg_paraphrased_loss"], log["average_perturb_loss"]
    keys = sorted(para, key=lambda k: int(k) if str(k).isdigit() else str(k))
    ratios = [math.exp(sum(pert[k]) / len(pert[k]) - para[k]) for k in keys]
    return {"per_sample": {"forget_truth_ratios": ratios}, "source": "TOFU eval_log_forget"}
