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

TOFU has no name column. Each fictitious author's 20 records get as subject the name most of them
share (`author_name`), so a calibrated run has twins to compare with and the evaluation reports
forget quality against them (docs/metrics.md); an author whose records do not name them, and every
real-authors and world-facts record, gets a subject with no name in it (`_unnamed`).

With these, `unlearnkit.evaluate` computes TOFU's numbers as TOFU's aggregate_eval_stat.py does:
probability exp(-mean token loss) on forget and retain and p(answer)/(p(answer)+sum p(perturbed))
on real authors and world facts; ROUGE-L recall (stemmer on); truth ratio
exp(mean perturbed loss - base loss), reported as mean(max(0, 1 - 1/R)) on the three utility sets;
model utility = harmonic mean of those 9 numbers; forget quality = KS-test p-value of the forget
truth ratios against a retain model's: an `unlearn eval` result of the retain model, or TOFU's own
saved `eval_log_forget.json` / `eval_log_aggregated.json` (`oracle_from_tofu_log`).
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

from ..data.io import DataError, WorldData, validate_record
from ..data.schema import QARecord
from .base import Benchmark
from .tables import find_rows, read_rows

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 200  # open-unlearning's TOFU generation length

SPLITS = ("forget01", "forget05", "forget10")
AUTHOR_QA = 20  # TOFU: 20 question-answer pairs per fictitious author, in order


def _forget_percent(split: str) -> int:
    m = re.fullmatch(r"forget(\d\d)", split)
    if not m or split not in SPLITS:
        raise ValueError(f"TOFU split {split!r}: choose one of {', '.join(SPLITS)}")
    return int(m.group(1))


_WORD = re.compile(r"[^\W\d_][\w]*(?:[-'’][\w]+)*")
NAME_SUPPORT = 0.25  # the least share of an author's records that must name them for the name to be taken


def _name_runs(text: str) -> set[tuple[str, ...]]:
    """Every run of two or more capitalised words of `text` (one space apart; a possessive 's ends a
    run and is dropped), with all its sub-runs of two words or more."""
    out, run, prev_end, prev_poss = set(), [], None, False
    for m in _WORD.finditer(text):
        w = m.group()
        if not w[0].isupper():
            run, prev_end = [], None
            continue
        poss = bool(re.search(r"['’]s$", w))
        w = re.sub(r"['’]s$", "", w)
        run = run + [w] if prev_end is not None and text[prev_end:m.start()] == " " and not prev_poss else [w]
        out.update(tuple(run[-n:]) for n in range(2, len(run) + 1))
        prev_end, prev_poss = m.end(), poss
    return out


def author_name(rows: list[dict]) -> str | None:
    """The name one fictitious author's records share, or None.

    TOFU has no name column, but most of an author's 20 questions and answers name them ("What
    does Jaime Vasquez's father do?"). Of the runs of two or more capitalised words (`_name_runs`),
    the one in the most records, in at least `NAME_SUPPORT` of them (and two), is the name; ties
    go to the longer. So "Does Jaime Vasquez" at the start of one question loses to "Jaime
    Vasquez" in fifteen."""
    counts: dict[tuple[str, ...], int] = {}
    for r in rows:
        for key in _name_runs(r.get("question") or "") | _name_runs(r.get("answer") or ""):
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return None
    best = max(counts, key=lambda k: (counts[k], len(k)))
    return " ".join(best) if counts[best] >= max(2, NAME_SUPPORT * len(rows)) else None


_LETTER = {"forget": "F", "retain": "R", "real": "A", "world": "W", "holdout": "H"}  # config -> `_unnamed`'s letter


def _unnamed(config: str, k: int) -> str:
    """The subject of records whose person has no known name: one letter for the config and a
    number, so no word of it is taken for a name in the text (`data.twins.name_parts` reads words of
    two letters or more; a subject "forget10_perturbed:author3" made every "author" in a question
    a name to swap for a twin's)."""
    return f"{_LETTER.get(config.split('_')[0].rstrip('0123456789'), 'X')}#{k}"


def _records(rows: list[dict], config: str, root, *, base_is_answer: bool = False,
             per_author: bool = True) -> list[QARecord]:
    """One record per row of table `config` (split train) under `root`. With `per_author`, every
    `AUTHOR_QA` rows are one author's, whose subject is the name their records share (`author_name`;
    the twins of calibration and of forget quality are made from it), else an unnamed subject per
    author (`_unnamed`); without, one per record."""
    names = {}
    if per_author:
        if len(rows) % AUTHOR_QA:  # TOFU's tables hold 20 rows an author; another count is someone else's data
            log.warning("%s[%s]: %d rows, not a multiple of TOFU's %d an author: authors are read as blocks of "
                        "%d rows, so the people's names (and the twins made from them) may be wrong; data of "
                        "another shape is better given as a world directory (README, \"Your own data\")",
                        root, config, len(rows), AUTHOR_QA, AUTHOR_QA)
        for k in range(0, len(rows), AUTHOR_QA):
            names[k // AUTHOR_QA] = author_name(rows[k:k + AUTHOR_QA]) or _unnamed(config, k // AUTHOR_QA)
    out = []
    for i, r in enumerate(rows):
        where = f"{root}[{config}/train] row {i + 1}"
        pert = r.get("perturbed_answer")
        if pert is not None and not isinstance(pert, list):
            raise DataError(f"{where}: field 'perturbed_answer': expected a list of strings")
        # the truth ratio reads the paraphrased answer against the perturbed ones: an empty one stood in
        # by the answer itself (a ratio of the answer against the paraphrase) until session 35
        if pert is not None and not [a for a in pert if str(a).strip()]:
            raise DataError(f"{where}: field 'perturbed_answer': empty (the truth ratio needs one or more)")
        if not base_is_answer and "paraphrased_answer" in r and not str(r["paraphrased_answer"] or "").strip():
            raise DataError(f"{where}: field 'paraphrased_answer': empty")
        answer = r["answer"]
        out.append(validate_record(QARecord, dict(  # one line naming table, row and field (pydantic's
            id=f"{config}:{i}",  # "1 validation error for QARecord" until session 37)
            subject=names[i // AUTHOR_QA] if per_author else _unnamed(config, i),
            question=r["question"],
            answer=answer,
            paraphrased_answer=answer if base_is_answer or not r.get("paraphrased_answer") else r["paraphrased_answer"],
            perturbed_answers=pert or [answer],
            paraphrased_question=r.get("paraphrased_question") or None,
        ), where))
    return out


def _pairs(rows: list[dict]) -> tuple[list[str], list[str]]:
    return [r["question"] for r in rows], [r["answer"] for r in rows]


PERT = {"perturbed_answer": "texts"}


def load(root: str | Path, split: str | None = None) -> Benchmark:
    """The TOFU benchmark `split` (forget01 | forget05 | forget10; default forget10) under `root`."""
    split = split or "forget10"
    pct = _forget_percent(split)
    qa = ("question", "answer")
    pert = qa + ("perturbed_answer",)
    forget = read_rows(root, f"{split}_perturbed", "train", required=pert + ("paraphrased_answer",), kinds=PERT)
    world = WorldData(
        forget=_records(forget, f"{split}_perturbed", root),
        retain=_records(read_rows(root, "retain_perturbed", "train", required=pert + ("paraphrased_answer",), kinds=PERT),
                        "retain_perturbed", root),
        neighbours=_records(read_rows(root, "real_authors_perturbed", "train", required=pert, kinds=PERT),
                            "real_authors_perturbed", root, base_is_answer=True, per_author=False),
        world_facts=_records(read_rows(root, "world_facts_perturbed", "train", required=pert, kinds=PERT),
                             "world_facts_perturbed", root, base_is_answer=True, per_author=False),
        path=Path(root),
    )
    holdout = find_rows(root, f"holdout{pct:02d}", "train")
    if holdout is not None:
        world.holdout = _records(read_rows(root, f"holdout{pct:02d}", "train", required=qa), f"holdout{pct:02d}", root)

    subject_of = {r.question: r.subject for r in world.forget}

    def forget_pairs():
        """(questions, answers, subjects): each question's author as the evaluation names them, so
        training leaves the name out of the forget loss as it does on a world (`encode_pairs`)."""
        rows = find_rows(root, split, "train")
        q, a = _pairs(read_rows(root, split, "train", required=qa) if rows is not None else forget)
        if [r.question for r in world.forget] == q:  # TOFU's order: the same rows
            return q, a, [r.subject for r in world.forget]
        return q, a, [subject_of.get(x, _unnamed(split, i // AUTHOR_QA)) for i, x in enumerate(q)]

    def retain_pairs():
        return _pairs(read_rows(root, f"retain{100 - pct}", "train", required=qa))

    # answers generated as long as TOFU's (open-unlearning's max_new_tokens: 200; TOFU's max_length 200
    # with the prompt): 32 new tokens, until session 36, cut the ROUGE of TOFU's longer answers
    return Benchmark("tofu", split, world=world, suites=("tofu", "mia"), forget=forget_pairs, retain=retain_pairs,
                     eval_options={"max_new_tokens": MAX_NEW_TOKENS}, convert_oracle=oracle_from_tofu_log)


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
    if not isinstance(para, dict) or not isinstance(pert, dict):
        raise DataError("TOFU eval log: 'avg_paraphrased_loss' and 'average_perturb_loss' must map question indices "
                        "to losses")
    keys = sorted(para, key=lambda k: int(k) if str(k).isdigit() else str(k))
    for k in keys:  # a missing key was "error: 5", an empty list a ZeroDivisionError (until session 35)
        losses = pert.get(k)
        if not isinstance(losses, list) or not losses or not all(isinstance(x, (int, float)) for x in losses):
            raise DataError(f"TOFU eval log: 'average_perturb_loss' question {k}: expected a non-empty list of losses, "
                            f"got {losses!r:.40}")
        if not isinstance(para[k], (int, float)):
            raise DataError(f"TOFU eval log: 'avg_paraphrased_loss' question {k}: expected a loss, got {para[k]!r:.40}")
    ratios = [math.exp(sum(pert[k]) / len(pert[k]) - para[k]) for k in keys]
    return {"per_sample": {"forget_truth_ratios": ratios}, "source": "TOFU eval_log_forget"}
