"""How the strangers' names move the MIA check for a model that never saw the person.

    python bench/stranger_names.py runs/bench-requests/seed4 runs/bench-methods/default-s0
    python bench/stranger_names.py ROOT --draws 5 --json

A request home's MIA check (`requests.verify.mia_check`) computes the LOSS attack's ROC AUC: a
person's facts against the same questions and answers about strangers. Exact unlearning, a model
that never saw the person, should read about 0.5. The home names its strangers as the twins are
named (`data.twins`): recombined from the name words of the people it keeps (a first name of one,
a surname of another). Each ROOT holds `world/` and `models/{oracle,subject}/`, as bench/requests.py
lays out its `--out` and bench/methods.py each world of its `--cache`.

For each world and model, this prints the AUC of the world's forget records against their twins,
`--draws` twins a record (one name per person and draw). It does this twice:
- with names recombined from the retained people's name words, as the home's strangers are named;
- with invented names (`data.twins.invent_names`: syllables no one in the world has).

For the oracle, it also prints the lowest and highest AUC of any one person. The check's tolerance
(`mia_tolerance`, 0.3) is per person.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

KINDS = {"recombined": True, "invented": False}  # name the strangers from the retained people's words?


def measure(world_dir: Path, models: dict[str, Path], draws: int = 3) -> dict:
    """{model: {kind: {"auc", "per_person"}}}: the LOSS attack's AUC (`requests.verify.loss_scores`,
    as the check scores) of the forget records against `draws` twins each, named as `KINDS` says,
    pooled and per forget person."""
    import numpy as np

    from unlearnkit.data.io import load_world
    from unlearnkit.data.twins import twins, words_of
    from unlearnkit.metrics.mia import auc
    from unlearnkit.models.load import load_model
    from unlearnkit.requests.verify import loss_scores
    from unlearnkit.scoring import LM

    w = load_world(world_dir)
    forget = w.forget
    people = sorted({r.subject for r in [*w.retain, *w.neighbours]})
    avoid = words_of(r.subject for s in (w.forget, w.retain, w.neighbours, w.holdout) for r in s)
    at: dict[str, list[int]] = {}  # each forget person's records
    for i, r in enumerate(forget):
        at.setdefault(r.subject, []).append(i)
    drawn = {kind: [twins(forget, avoid, seed=d, people=people if named else ()) for d in range(draws)]
             for kind, named in KINDS.items()}
    out = {}
    for name, path in models.items():
        lm = LM(*load_model(str(path)))
        mine = np.array(loss_scores(lm, forget))
        out[name] = {}
        for kind, sets in drawn.items():
            theirs = [np.array(loss_scores(lm, t)) for t in sets]
            per = {p: float(auc(mine[ix], np.concatenate([t[ix] for t in theirs]))) for p, ix in sorted(at.items())}
            out[name][kind] = {"auc": float(auc(mine, np.concatenate(theirs))), "per_person": per}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", type=Path, help="directories holding world/ and models/{oracle,subject}/")
    ap.add_argument("--draws", type=int, default=3, help="twins a forget record, each named afresh (>= 1)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    if args.draws < 1:
        ap.error("--draws must be >= 1")
    for root in args.roots:
        missing = [p for p in ("world", "models/oracle", "models/subject") if not (root / p).is_dir()]
        if missing:
            ap.error(f"{root}: holds no {', '.join(missing)} (bench/requests.py --out or bench/methods.py --cache)")
    rows = []
    for root in args.roots:
        got = measure(root / "world", {k: root / "models" / k for k in ("oracle", "subject")}, args.draws)
        rows.append({"world": str(root), **got})
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| world | oracle: recombined (people, lowest-highest) | oracle: invented (people) "
          "| subject: recombined | subject: invented |")
    print("|---|---|---|---:|---:|")
    for r in rows:
        o = r["oracle"]
        span = lambda k: f"{min(o[k]['per_person'].values()):.2f}-{max(o[k]['per_person'].values()):.2f}"  # noqa: E731
        print(f"| {r['world']} | {o['recombined']['auc']:.3f} ({span('recombined')}) | "
              f"{o['invented']['auc']:.3f} ({span('invented')}) | {r['subject']['recombined']['auc']:.3f} | "
              f"{r['subject']['invented']['auc']:.3f} |")


if __name__ == "__main__":
    main()
