"""The methods table of docs/methods.md: every method, default settings, on the embedded world.

    python bench/methods.py                         # print the markdown table
    python bench/methods.py --write docs/methods.md # replace the table between the markers there

Builds (or reuses, in `--cache`) the world, the subject and the oracle with `unlearnkit.api`, runs
`api.forget` with each method's defaults and evaluates with `api.evaluate` against the oracle.
Wall time is the unlearning run alone (prepare + train + save), on whatever machine runs this.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METHODS = ["ga", "graddiff", "npo", "npo_rt", "simnpo", "idk_dpo", "rmu"]
BEGIN, END = "<!-- bench/methods.py: begin -->", "<!-- bench/methods.py: end -->"


def _fmt(x, spec=".3f"):
    return "–" if x is None else format(x, spec)


def main():
    from unlearnkit import api

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--cache", type=Path, default=Path("runs/bench"), help="world and models (shared with bench/robustness.py)")
    ap.add_argument("--write", type=Path, help="markdown file whose table (between the markers) is replaced")
    args = ap.parse_args()

    data, models = api.embedded(args.cache, seed=args.seed, n_people=args.people, progress=False)
    suites = ("tofu",)
    oracle = api.evaluate(models["oracle"], data, suites=suites)
    oracle = api.evaluate(models["oracle"], data, oracle=oracle, suites=suites)
    rows = [("subject", api.evaluate(models["subject"], data, oracle=oracle, suites=suites), None),
            ("oracle", oracle, None)]
    for name in args.methods.split(","):
        t0 = time.perf_counter()
        run = api.forget(models["subject"], data, name, args.cache / "runs" / name, seed=args.seed, progress=False)
        wall = time.perf_counter() - t0
        rows.append((name, api.evaluate(run / "model", data, oracle=oracle, suites=suites), wall))

    n_forget = sum(1 for _ in open(Path(data) / "forget.jsonl"))
    lines = [f"World: {args.people} people (seed {args.seed}), {n_forget} forget facts; tiny Llama; default settings; "
             f"`python bench/methods.py --people {args.people}`.", "",
             "| model | forget quality (KS p) | model utility | forget ROUGE | retain ROUGE | wall time (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r, wall in rows:
        lines.append(f"| {name} | {_fmt(r.get('forget_quality'), '.2g')} | {_fmt(r.get('model_utility'))} | "
                     f"{_fmt(r.get('forget_rouge'))} | {_fmt(r.get('retain_rouge'))} | {_fmt(wall, '.1f')} |")
    table = "\n".join(lines)
    print(table)
    if args.write:
        text = args.write.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{args.write}: markers {BEGIN} / {END} not found")
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{table}\n{END}", text, flags=re.S)
        args.write.write_text(text)
    (args.cache / "methods.json").write_text(json.dumps({n: {k: r.get(k) for k in ("forget_quality", "model_utility",
                                             "forget_rouge", "retain_rouge")} | {"wall_s": w} for n, r, w in rows}, indent=1))


if __name__ == "__main__":
    main()
