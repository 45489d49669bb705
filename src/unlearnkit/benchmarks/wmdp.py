"""WMDP (Li et al. 2024, arXiv:2403.03218; hub `cais/wmdp`, `cais/wmdp-corpora`, `cais/mmlu`)
from a local copy.

- `wmdp-bio` / `wmdp-cyber` (split `test`; question, choices, answer as an index): the forget
  measure, multiple-choice accuracy as lm-evaluation-harness computes it
  (`unlearnkit.benchmarks.multiple_choice`); lower after unlearning, 0.25 is chance;
- MMLU (`cais/mmlu`, config `all`, split `test`; question, subject, choices, answer) under
  `DIR/mmlu/` (or `DIR/all/`): the utility measure, the same accuracy;
- the corpora (`cais/wmdp-corpora`: `<domain>-forget-corpus`, `<domain>-retain-corpus`, column
  `text`) under `DIR/` or `DIR/wmdp-corpora/`: what `unlearn forget` (RMU in the WMDP paper)
  trains on, as documents. The bio forget corpus is distributed on request; put it in the same
  layout.
"""
from __future__ import annotations

from pathlib import Path

from ..data.io import DataError
from .base import Benchmark
from .multiple_choice import LETTERS, Question, accuracy
from .tables import find_rows, read_rows

SPLITS = ("bio", "cyber", "chem")
TOPICS = {"bio": "biology", "cyber": "cybersecurity", "chem": "chemistry"}  # lm-eval's wmdp_*.yaml descriptions


def _questions(rows: list[dict], where: str, topic: str | None = None) -> list[Question]:
    """The rows as questions; `topic` None: each row's MMLU `subject` (underscores as spaces; a row
    without one is asked with no description)."""
    out = []
    for i, r in enumerate(rows):
        for field in ("question", "choices", "answer"):
            if field not in r:
                raise DataError(f"{where} row {i + 1}: field '{field}': missing")
        if not isinstance(r["choices"], (list, tuple)) or not 2 <= len(r["choices"]) <= len(LETTERS):
            raise DataError(f"{where} row {i + 1}: field 'choices': expected a list of 2 to {len(LETTERS)} options, "
                            f"got {r['choices']!r:.60}")
        choices = tuple(str(c) for c in r["choices"])
        ans = r["answer"]
        if isinstance(ans, bool) or not isinstance(ans, int) or not 0 <= ans < len(choices):
            raise DataError(f"{where} row {i + 1}: field 'answer': expected an index into the {len(choices)} choices, got {ans!r}")
        about = topic if topic is not None else str(r.get("subject") or "").replace("_", " ")
        out.append(Question(r["question"], choices, ans, about))
    return out


def _mmlu(root: Path) -> list[Question] | None:
    for base, config in ((root / "mmlu", "all"), (root, "all"), (root, "mmlu")):
        if base.is_dir() and (rows := find_rows(base, config, "test")) is not None:
            if not rows:
                raise DataError(f"{base}[{config}/test]: no questions")
            return _questions(rows, f"{base}[{config}/test]")
    return None


def _corpus(root: Path, name: str) -> tuple[list[str], list[str]]:
    base = root / "wmdp-corpora" if (root / "wmdp-corpora").is_dir() else root
    texts = [r["text"] for r in read_rows(base, name, "train", required=("text",))]
    return [""] * len(texts), texts


def load(root: str | Path, split: str | None = None) -> Benchmark:
    """WMDP `split` (bio | cyber | chem; default bio) under `root`."""
    root = Path(root)
    split = split or "bio"
    if split not in SPLITS:
        raise ValueError(f"WMDP split {split!r}: choose one of {', '.join(SPLITS)}")
    config = f"wmdp-{split}"
    forget_q = _questions(read_rows(root, config, "test", required=("question", "choices", "answer"),
                                    kinds={"choices": "texts", "answer": "any"}), f"{root}[{config}]", TOPICS[split])
    mmlu = _mmlu(root)

    def run(lm, batch_size: int | None = None) -> dict:
        res = {config: accuracy(lm, forget_q, batch_size)}
        notes = []
        if mmlu is not None:
            res["mmlu"] = accuracy(lm, mmlu, batch_size)
        else:
            notes.append(f"no MMLU under {root}/mmlu: utility not measured")
        # each question's chosen option beside its answer, to read which were lost (none until session 36)
        per_sample = {name: {"chosen": r.pop("chosen"), "answer": [q.answer for q in qs]}
                      for (name, r), qs in zip(res.items(), (forget_q, mmlu))}
        return {"forget_accuracy": res[config]["acc"], "utility_accuracy": res.get("mmlu", {}).get("acc"),
                "splits": res, "per_sample": per_sample, "notes": notes}

    return Benchmark("wmdp", split, run=run, forget=lambda: _corpus(root, f"{split}-forget-corpus"),
                     retain=lambda: _corpus(root, f"{split}-retain-corpus"))
