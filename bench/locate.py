"""Locate without facts on several worlds: what it finds about the forget people, and what it makes up
about people the subject never saw.

    python bench/locate.py runs/bench-methods/default-s0 runs/bench-methods/sentences-s1
    python bench/locate.py runs/bench-requests --json

Each ROOT holds `world/` and `models/subject/`, as bench/methods.py lays out each world of its
`--cache` and bench/requests.py its `--out` (build them there first). Per world, on the first
`--people` forget people
(strangers named from the retain and neighbour people's name words, as a request home's are):
recall of the facts the model answers (ground truth filtered to what it answers correctly) and
precision (an item is right when its answer holds one of the person's true values), as
bench/requests.py counts them; then the inventory items found about each of the first 3 holdout
people (never trained on) and 3 names nobody in any world has. Every one of those is made up.
Locate makes its confidence test on the subject, the base model (`--no-confidence`: without it, as
before session 39).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

NOBODY = ["Mary Smith", "Zorbulax Quentiphor", "Tovin Gale"]


def measure(world_dir: Path, model_dir: Path, n_people: int = 6, confidence: bool = True) -> dict:
    """Recall, precision and items of the forget people; items of the unseen. `confidence`: locate's
    confidence test on the subject (the base model: `locate(confident=...)`), as a home makes it."""
    from unlearnkit.attacks.recovery import normalise
    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import load_model
    from unlearnkit.requests.locate import locate
    from unlearnkit.scoring import LM

    w = load_world(world_dir)
    lm = LM(*load_model(model_dir))
    sure = lm if confidence else None
    pool = sorted({r.subject for r in w.retain} | {r.subject for r in w.neighbours})
    facts: dict[str, list] = {}
    for r in w.forget:
        facts.setdefault(r.subject, []).append(r)
    forget = sorted(facts)[:n_people]
    unseen = sorted({r.subject for r in w.holdout})[:3] + NOBODY
    known = {}
    for p in forget:
        gens = lm.generate([r.question for r in facts[p]], max_new_tokens=24)
        known[p] = [r for r, g in zip(facts[p], gens) if normalise(r.answer) in normalise(g)]
    tp = fn = right = items = 0
    for p in forget:
        got = [normalise(it["answer"]) for it in locate(lm, p, people=pool, confident=sure)["items"]]
        values = {normalise(r.answer) for r in facts[p]}
        hit = [any(normalise(r.answer) in g for g in got) for r in known[p]]
        tp, fn = tp + sum(hit), fn + len(hit) - sum(hit)
        right += sum(any(v in g for v in values) for g in got)
        items += len(got)
    made_up = [len(locate(lm, p, people=pool, confident=sure)["items"]) for p in unseen]
    return {"recall": tp / max(1, tp + fn), "precision": right / max(1, items), "items": items,
            "people": len(forget), "unseen_items": made_up}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", type=Path, help="directories holding world/ and models/subject/")
    ap.add_argument("--people", type=int, default=6, help="forget people located per world (>= 1)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--no-confidence", action="store_true", help="locate without its confidence test (before session 39)")
    args = ap.parse_args()
    if args.people < 1:
        ap.error("--people must be >= 1")
    for root in args.roots:
        if not (root / "world").is_dir() or not (root / "models" / "subject").is_dir():
            ap.error(f"{root}: holds no world/ and models/subject/ (bench/methods.py --cache or bench/requests.py --out)")
    rows = []
    for root in args.roots:
        rows.append({"world": root.name, **measure(root / "world", root / "models" / "subject", args.people,
                                                   not args.no_confidence)})
        if not args.json:
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| world | recall | precision | items (forget people) | items about unseen people (3 holdout, 3 nobody) |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['world']} | {r['recall']:.2f} | {r['precision']:.2f} | {r['items']} "
              f"| {sum(r['unseen_items'])} ({', '.join(map(str, r['unseen_items']))}) |")


if __name__ == "__main__":
    main()
