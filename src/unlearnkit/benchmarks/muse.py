"""MUSE (Shi et al. 2024, arXiv:2407.06460; hub `muse-bench/MUSE-News`, `muse-bench/MUSE-Books`)
from a local copy.

Configs and splits read (columns as published):
- `raw`: forget, retain1, retain2, holdout (column `text`): `unlearn forget` ascends on `forget`
  and uses `retain1` as the retain set, as MUSE's baselines do;
- `knowmem`: forget_qa, retain_qa (question, answer) and, if present, forget_qa_icl /
  retain_qa_icl, in-context examples put before each question as "Question: q\\nAnswer: a\\n\\n"
  (C2 no knowledge memorisation on forget_qa, C4 utility preservation on retain_qa);
- `verbmem`: forget (prompt, gt): C1, ROUGE-L F1 of the greedy continuation of `prompt` against
  `gt`, up to 128 new tokens;
- `privleak`: forget, holdout (text): C3, PrivLeak from the Min-40% AUC, forget against holdout
  (falls back to raw forget / holdout);
- `scal` / `sust`: forget_1 ... forget_4 (text). `--split scal/forget_2` unlearns that forget set
  instead of raw/forget (C5 scalability); for C6 sustainability run `unlearn forget` on
  sust/forget_1, then on its output with sust/forget_2, and so on, evaluating after each.
Evaluation runs the `muse` and `mia` suites; the six criteria are C1-C4 above with C5/C6 as those
sequences of runs.
"""
from __future__ import annotations

from pathlib import Path

from ..data.io import WorldData, validate_record
from ..data.schema import DocRecord, QARecord
from .base import Benchmark
from .tables import find_rows, read_rows

VERBMEM_MAX_NEW_TOKENS = 128  # MUSE's VerbMem generation length


def _icl_prefix(root, split: str) -> str:
    if not find_rows(root, "knowmem", f"{split}_icl"):
        return ""
    # validated as the questions are (a number for an answer was written into every prompt until session 36)
    rows = read_rows(root, "knowmem", f"{split}_icl", required=("question", "answer"))
    return "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in rows)


def _qa(root, split: str) -> list[QARecord]:
    rows = read_rows(root, "knowmem", split, required=("question", "answer"))
    prefix = _icl_prefix(root, split)
    # KnowMem reads only question and answer; the TOFU fields are set to the answer (unused). The
    # prompt is MUSE's, with or without examples before it (the bare question without them, and no
    # space after "Answer:", until session 36)
    # validated as a world's records are: one line naming table, row and field (pydantic's "1 validation
    # error for QARecord" until session 37)
    return [validate_record(QARecord, dict(
        id=f"knowmem/{split}:{i}", subject=f"knowmem/{split}", question=f"{prefix}Question: {r['question']}\nAnswer: ",
        answer=r["answer"], paraphrased_answer=r["answer"], perturbed_answers=[r["answer"]]),
        f"{root}[knowmem/{split}] row {i + 1}") for i, r in enumerate(rows)]


def _docs(root, config: str, split: str) -> list[DocRecord]:
    rows = read_rows(root, config, split, required=("text",))
    return [validate_record(DocRecord, dict(id=f"{config}/{split}:{i}", subject=f"{config}/{split}", text=r["text"]),
                            f"{root}[{config}/{split}] row {i + 1}") for i, r in enumerate(rows)]


def _texts(root, config: str, split: str) -> tuple[list[str], list[str]]:
    texts = [r["text"] for r in read_rows(root, config, split, required=("text",))]
    return [""] * len(texts), texts


def load(root: str | Path, split: str | None = None) -> Benchmark:
    """MUSE under `root`; `split`: None (raw/forget), or scal/forget_N, sust/forget_N."""
    split = split or "raw/forget"
    config, _, forget_split = split.partition("/")
    if config not in ("raw", "scal", "sust") or not forget_split.startswith("forget"):
        raise ValueError(f"MUSE split {split!r}: use raw/forget, scal/forget_N or sust/forget_N")
    # read now, so that a split that is not there is refused by `eval` too (it evaluated raw/forget's
    # world and recorded the split asked for until session 36)
    forget = _texts(root, config, forget_split)
    privleak = "privleak" if find_rows(root, "privleak", "forget") is not None else "raw"
    world = WorldData(forget=_qa(root, "forget_qa"), retain=_qa(root, "retain_qa"),
                      forget_docs=_docs(root, privleak, "forget"), holdout_docs=_docs(root, privleak, "holdout"),
                      path=Path(root))
    verbmem = [(r["prompt"], r["gt"]) for r in read_rows(root, "verbmem", "forget", required=("prompt", "gt"))]
    return Benchmark("muse", split, world=world, suites=("muse", "mia"),
                     eval_options={"verbmem_pairs": verbmem, "verbmem_max_new_tokens": VERBMEM_MAX_NEW_TOKENS,
                                   "mia_source": "docs"},
                     forget=lambda: forget, retain=lambda: _texts(root, "raw", "retain1"))
