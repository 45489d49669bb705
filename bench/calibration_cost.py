"""What a calibrated run costs beside its method's fixed budget, timed in repeats, and where the
difference goes: issue 11's cost line (a calibrated run within 1.5x of the fixed budget's wall time).

    python bench/calibration_cost.py --shapes wide --seeds 0 --cache DIR          # 2 repeats a world
    python bench/calibration_cost.py --shapes default,sentences --seeds 0,1 --repeats 3
    python bench/calibration_cost.py --shapes wide --seeds 0 --calibration max_stride=4   # another setting

For each world it builds (or reuses) the world, subject and oracle as bench/methods.py does, in the
same `--cache` layout, and then runs, `--repeats` times, the default with no budget (calibrated) and
the method the default chose with its fixed budget, alternating which goes first so that a slow
spell of the machine falls on both. It prints the median wall time of each, the median of the
paired ratios with their range, and where the calibrated run's extra time goes, from its
`train.json` and `calibration.json`:
- extra steps: (its steps - the fixed budget's) x the fixed run's seconds a step;
- checks: the calibrator's passes (`StopInfo.seconds`: target, truth ratios, utility);
- repair: the repair rounds, with the generation that decides whether one runs;
- other: the rest (loading, setting up the checks' records, saving, and how much slower or faster
  the same steps ran this time).
Nothing is judged here (bench/methods.py judges the runs against the oracle). A one-world wall time
on this 2-core machine moves by up to a fifth from one run to the next, hence the repeats.
Results also go to `--cache/cost.json`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_spec = importlib.util.spec_from_file_location("bench_methods", Path(__file__).parent / "methods.py")
methods = importlib.util.module_from_spec(_spec)  # its `build`: the same worlds and models, the same cache
_spec.loader.exec_module(methods)


def _run(models: dict, data: Path, out: Path, seed: int, method: str | None, budget: dict | None,
         calibration: dict | None = None) -> dict:
    """One run from the subject, timed, with what its `train.json` and `calibration.json` say."""
    from unlearnkit import api

    t0 = time.perf_counter()
    api.forget(models["subject"], data, method, out, seed=seed, progress=False, overwrite=True,
               calibration=calibration, **(budget or {}))
    wall = time.perf_counter() - t0
    info = json.loads((out / "train.json").read_text())
    row = {"wall_s": wall, "steps": info["train_stats"]["steps"], "seconds": info["seconds"],
           "stop": info["stop"]["reason"]}
    if (out / "calibration.json").is_file():
        cal = json.loads((out / "calibration.json").read_text())
        row |= {"checks": cal["checks"], "utility_checks": cal["utility_checks"], "check_seconds": cal["seconds"]}
    return row


def world_cost(cache: Path, shape: str, seed: int, repeats: int, size: str = "tiny",
               calibration: dict | None = None) -> dict:
    """`repeats` calibrated and fixed-budget runs of the default on one world, alternating order;
    `calibration`: settings for the calibrated runs (their directories are named after them)."""
    import yaml

    from unlearnkit.methods import get_method

    data, models = methods.build(cache, shape, seed, 0, size)
    named = "".join(f"-{k}={v}" for k, v in (calibration or {}).items())
    root = methods.world_dir(cache, shape, seed) / f"cost{named}"
    runs: dict[str, list[dict]] = {"calibrated": [], "fixed": []}
    method = budget = None
    for r in range(repeats):  # the first repeat runs the default first: the fixed run takes its method
        for kind in (("fixed", "calibrated") if r % 2 else ("calibrated", "fixed")):
            if kind == "fixed" and method is None:
                method = yaml.safe_load((root / "calibrated-0" / "config.yaml").read_text())["method"]
                budget = methods.fixed_budget(get_method(method))
            plan = (method, budget, None) if kind == "fixed" else (None, None, calibration)  # the default, calibrated
            runs[kind].append(_run(models, data, root / f"{kind}-{r}", seed, *plan))
    return {"shape": shape, "seed": seed, "method": method, "budget": budget, "size": size,
            "calibration": calibration or {}, **runs}


def breakdown(w: dict) -> dict:
    """Medians over the repeats: each run's wall time, the paired ratios, and the calibrated run's
    extra time by part (module docstring)."""
    cal, fix = w["calibrated"], w["fixed"]
    med = statistics.median
    ratios = [c["wall_s"] / f["wall_s"] for c, f in zip(cal, fix)]
    per_step = med(f["seconds"]["train"] / max(f["steps"], 1) for f in fix)
    extra_steps = (cal[0]["steps"] - fix[0]["steps"]) * per_step
    checks = med(sum(c["check_seconds"].values()) for c in cal)
    repair = med(c["seconds"].get("repair", 0.0) for c in cal)
    fixed_wall, cal_wall = med(f["wall_s"] for f in fix), med(c["wall_s"] for c in cal)
    return {"fixed_wall_s": fixed_wall, "calibrated_wall_s": cal_wall, "ratio": med(ratios),
            "ratio_range": [min(ratios), max(ratios)], "fixed_steps": fix[0]["steps"], "steps": cal[0]["steps"],
            "stop": cal[0]["stop"], "prepare_s": med(c["seconds"]["prepare"] for c in cal),
            "step_s": per_step, "extra_steps_s": extra_steps, "checks_s": checks,
            "checks_by_kind_s": {k: med(c["check_seconds"].get(k, 0.0) for c in cal)
                                 for k in sorted({k for c in cal for k in c["check_seconds"]})},
            "repair_s": repair, "other_s": cal_wall - fixed_wall - extra_steps - checks - repair}


def table(worlds: list[dict]) -> str:
    head = ("| world | seed | method | fixed budget: steps, wall s | calibrated: stop, steps, wall s | ratio (range) "
            "| extra steps s | checks s (target / truth ratios / utility) | repair s | other s |\n"
            "|---|---:|---|---|---|---|---:|---|---:|---:|")
    lines = [head]
    for w in worlds:
        b = breakdown(w)
        k = b["checks_by_kind_s"]
        lines.append(
            f"| {w['shape']} | {w['seed']} | {w['method']} | {b['fixed_steps']}, {b['fixed_wall_s']:.1f} "
            f"| {b['stop']}, {b['steps']}, {b['calibrated_wall_s']:.1f} "
            f"| {b['ratio']:.2f}x ({b['ratio_range'][0]:.2f}-{b['ratio_range'][1]:.2f}) | {b['extra_steps_s']:.1f} "
            f"| {b['checks_s']:.1f} ({k.get('target', 0):.1f} / {k.get('truth_ratio', 0):.1f} / "
            f"{k.get('utility', 0):.1f}) | {b['repair_s']:.1f} | {b['other_s']:.1f} |")
    return "\n".join(lines)


def main():
    from unlearnkit.models.tiny import SIZES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="wide")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--repeats", type=int, default=2, help="calibrated and fixed-budget runs a world, interleaved")
    ap.add_argument("--size", default="tiny", choices=sorted(SIZES))
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-methods"))
    ap.add_argument("--calibration", action="append", default=[], metavar="KEY=VALUE",
                    help="a calibration setting for the calibrated runs (repeatable)")
    args = ap.parse_args()
    from unlearnkit.shell import assignments

    calibration = assignments(args.calibration, "--calibration") or None
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be at least 1, got {args.repeats}")
    worlds = []
    for shape in args.shapes.split(","):
        for seed in args.seeds.split(","):
            worlds.append(world_cost(args.cache, shape, int(seed), args.repeats, args.size, calibration))
            out = args.cache / "cost.json"
            out.write_text(json.dumps([{**w, "breakdown": breakdown(w)} for w in worlds], indent=1))
    cmd = (f"`python bench/calibration_cost.py --shapes {args.shapes} --seeds {args.seeds} --repeats {args.repeats}"
           + (f" --size {args.size}" if args.size != "tiny" else "")
           + "".join(f" --calibration {v}" for v in args.calibration) + "`")
    print(f"Command: {cmd}. Medians of {args.repeats} runs each.\n\n{table(worlds)}")


if __name__ == "__main__":
    main()
