"""Every guard action on the embedded world, through the full evaluation suite; prints a table.

    python bench/guard_actions.py [--out runs/bench] [--people 60] [--seed 0] [--rate 0.01]

Builds (or reuses, from --out) the demo-sized world with its subject and oracle, puts the forget
people in a guard as targets, calibrates the detector on the retain and neighbour questions at
--rate false refusals, and evaluates the guarded subject under each action (`refuse`, `forbid`,
`pseudonymise`, `icu`) with the oracle as reference, next to the subject and the oracle
themselves. Results: OUT/guard_actions.json; the table is the one in docs/guard.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

COLUMNS = [  # (header, path in the results, digits)
    ("forget ROUGE", ("forget_rouge",), 3),
    ("paraphrased", ("paraphrase_forget_rouge",), 3),
    ("retain", ("retain_rouge",), 3),
    ("neighbours", ("splits", "neighbours", "rouge"), 3),
    ("forget quality", ("forget_quality",), None),
    ("PrivLeak", ("privleak",), 1),
    ("MIA AUC (Min-K%)", ("mia_auc", "min_k"), 3),
    ("VerbMem", ("verbmem_forget",), 3),
    ("utility", ("model_utility",), 3),
]


def _get(res: dict, path: tuple):
    for k in path:
        res = res.get(k) if isinstance(res, dict) else None
    return res


def _fmt(x, digits) -> str:
    if x is None:
        return "–"
    return f"{x:.2g}" if digits is None else f"{x:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench"))
    ap.add_argument("--people", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.01, help="false-refusal rate for calibration")
    args = ap.parse_args()

    from unlearnkit import api, runinfo
    from unlearnkit.guard import ACTIONS, GuardedLM
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    t0 = time.perf_counter()
    data, paths = api.embedded(args.out, seed=args.seed, n_people=args.people, progress=False)
    oracle = api.evaluate(paths["oracle"], data)
    subject = LM(*load_model(paths["subject"]))
    rows = {"subject": api.evaluate(subject, data, oracle=oracle), "oracle": oracle}
    g = api.demo_guard(None, data, action=None, false_refusal=args.rate)  # the demo's guard; actions set below
    cal = g.settings.calibration
    print(f"calibrated at {args.rate:.0%}: threshold {cal['threshold']:.3f}, false refusals {cal['achieved']:.2%} "
          f"(per group {', '.join(f'{k} {v:.2%}' for k, v in cal['per_group'].items())}), "
          f"recall on held-out paraphrases of forget questions {cal['recall']:.0%}", file=sys.stderr)
    for action in ACTIONS:
        print(f"evaluating: guard, {action}", file=sys.stderr)
        g.settings.default_action = action
        rows[f"guard, {action}"] = api.evaluate(GuardedLM(subject, g), data, oracle=oracle, subject=rows["subject"])
    runinfo.write_json(args.out / "guard_actions.json", {
        "rows": rows, "calibration": cal, "args": {k: str(v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - t0})

    print("| model | " + " | ".join(h for h, _, _ in COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for name, res in rows.items():
        print(f"| {name} | " + " | ".join(_fmt(_get(res, p), d) for _, p, d in COLUMNS) + " |")
    print(f"\n({args.people}-person world, seed {args.seed}; {time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
