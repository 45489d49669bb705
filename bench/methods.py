"""Calibrated forgetting across world shapes and seeds: the table of docs/methods-log.md.

    python bench/methods.py                                    # 4 shapes x 2 seeds, every method
    python bench/methods.py --shapes default --seeds 0 --methods graddiff
    python bench/methods.py --write docs/methods-log.md        # replace the table between the markers
    python bench/methods.py --param graddiff.alpha=20 --calibration max_doublings=0 --train lr=1e-4
                                                               # one setting for every run (an experiment)
    python bench/methods.py --size small --cache runs/bench-small   # subject and oracles of another size

For each world (`unlearnkit.data.world.SHAPES`, each seed) it builds (or reuses, in `--cache`) the
world, the subject and the oracle; then runs every method twice from the subject: calibrated (no
budget flags: `api.forget` stops at the oracle-free target) and with the method's fixed default
budget, for the cost ratio. No oracle is used during any run; the oracle only judges afterwards:
- forget quality (KS p of forget truth ratios against the oracle's),
- answer rate: forget questions whose greedy answer holds the whole true answer (ROUGE-L recall 1),
  beside the oracle's,
- PrivLeak against the oracle, model utility / the subject's,
- why the calibrated run stopped, and its wall time / the fixed-budget run's; the fixed-budget
  run gets a row of its own (`NAME, fixed budget`), judged the same way, so the cost ratio compares
  a run with one whose result is known,
- the evaluation's own verdict (pass / fail / cannot decide, with its power checks).
The `targets met` column checks the issue's targets: answer rate within 0.05 of the oracle's, |PrivLeak| <= 10,
forget quality >= 0.05, utility >= 0.95x (for every method but the default, `stop` says whether it
reached the target or where it stopped). Exact unlearning is measured too: `--retrained N` (3) more
oracles, trained on the oracle's data from other seeds, get rows of their own, judged the same way.
`within retraining` checks the same targets, each widened to exact retraining's own spread on that
world (the farthest a retrained oracle lands from the oracle; `retraining_spread`). Results also go
to `--cache/methods.json`.

Worlds are trained two at a time, the cores shared out between them; set --jobs 1 on a busy machine.
`--size` trains the subject and the oracles at another of `models.tiny.SIZES` (tiny: hidden 128, 2
layers; small: hidden 256, 4 layers); a cache whose models have another size is an error, never
trained over.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# "default": a run with no method named, as `unlearn forget` without --method does (the method and
# its reference chosen by `unlearning.default_plan`); its row is named "default (METHOD, REFERENCE)".
DEFAULT = "default"
METHODS = [DEFAULT, "graddiff", "ga", "npo", "npo_rt", "simnpo", "idk_dpo", "rmu", "twin_rmu"]
SHAPES = ["default", "sentences", "large", "unfamiliar"]
BEGIN, END = "<!-- bench/methods.py: begin -->", "<!-- bench/methods.py: end -->"
SUITES = ("tofu", "muse", "mia")


def _fmt(x, spec=".3f"):
    return "–" if x is None else format(x, spec)


def answer_rate(res: dict) -> float:
    r = res["per_sample"]["forget_rouge"]
    return sum(x >= 1.0 - 1e-9 for x in r) / len(r)


def world_dir(cache: Path, shape: str, seed: int) -> Path:
    return cache / f"{shape}-s{seed}"


RETRAIN_SEED = 1000  # the retrained oracles' training seeds: seed + this + i


def retrained_names(n: int) -> list[str]:
    return ["retrained" if i == 0 else f"retrained-{i + 1}" for i in range(n)]


def build(cache: Path, shape: str, seed: int, retrained: int = 0, size: str = "tiny") -> tuple[Path, dict]:
    """World, subject, oracle and `retrained` more oracles trained on the same data from other seeds
    (exact unlearning's own spread), each reused when already trained on that world at that size
    (`models.tiny.SIZES`)."""
    from unlearnkit import api

    root = world_dir(cache, shape, seed)
    data = api.world(root / "world", seed=seed, shape=shape)
    plan = {"subject": (seed, "subject"), "oracle": (seed, "oracle"),
            **{k: (seed + RETRAIN_SEED + i, "oracle") for i, k in enumerate(retrained_names(retrained))}}
    models = {k: root / "models" / k for k in plan}
    for k in plan:  # a model of another size is never trained over: it may be the only one of its kind
        meta = models[k] / "unlearnkit.json"
        other = json.loads(meta.read_text()).get("size") if meta.is_file() else None
        if other not in (None, size):
            raise SystemExit(f"{models[k]}: trained at size {other}, not {size}: pass --size {other}, "
                             f"or another --cache")
    for k, (s, kind) in plan.items():
        if not api.reusable(models[k], data, s, kind, size):
            api.finetune(data, models[k], without_forget=kind == "oracle", seed=s, size=size, progress=False, overwrite=True)
    return data, models


def _build_job(args):
    import torch

    *args, threads = args
    torch.set_num_threads(threads)
    return build(*args)


def fixed_budget(method) -> dict:
    t = method.train_defaults
    return {"steps": t["steps"]} if t.get("steps") else {"epochs": t.get("epochs", 1.0)}


def run_world(cache: Path, shape: str, seed: int, methods: list[str], fixed: bool, params: dict | None = None,
              calibration: dict | None = None, train: dict | None = None, retrained: int = 0,
              size: str = "tiny") -> list[dict]:
    from unlearnkit import api
    from unlearnkit.methods import get_method

    data, models = build(cache, shape, seed, retrained, size)
    root = world_dir(cache, shape, seed)
    oracle = api.evaluate(models["oracle"], data, oracle="self", suites=SUITES)
    subject = api.evaluate(models["subject"], data, oracle=oracle, suites=SUITES)
    rows = [{"shape": shape, "seed": seed, "model": "subject", **_metrics(subject, oracle, subject)},
            {"shape": shape, "seed": seed, "model": "oracle", **_metrics(oracle, oracle, subject)}]
    for name in retrained_names(retrained):
        res = api.evaluate(models[name], data, oracle=oracle, subject=subject, suites=SUITES)
        rows.append({"shape": shape, "seed": seed, "model": name, **_metrics(res, oracle, subject),
                     "verdict": res["verdict"]["overall"]["status"]})
    for name in methods:
        t0 = time.perf_counter()
        run = api.forget(models["subject"], data, None if name == DEFAULT else name, root / "runs" / name, seed=seed,
                         progress=False, params=method_params(name, params, data, calibration, train),
                         calibration=calibration, overwrite=True, **(train or {}))
        wall = time.perf_counter() - t0
        stop = json.loads((run / "train.json").read_text())
        config = yaml.safe_load((run / "config.yaml").read_text())  # the method run, for the default's
        method = config["method"]
        if name == DEFAULT:
            name = f"{DEFAULT} ({method}, {config['calibration']['reference']})"
        res = api.evaluate(run / "model", data, oracle=oracle, subject=subject, suites=SUITES)
        row = {"shape": shape, "seed": seed, "model": name, **_metrics(res, oracle, subject), "wall_s": wall,
               "stop": stop["stop"]["reason"], "kept_step": stop["stop"].get("kept_step"),
               "stopped_at": stop["stop"].get("stopped_at"), "utility_checks": stop["stop"].get("utility_checks"),
               "check_seconds": stop["stop"].get("seconds"),
               # what the calibrator saw at the kept check, without an oracle: forget and reference
               # answers reproduced word for word (teacher-forced), beside the evaluation's answer rates
               "kept_forget_exact": (stop["stop"].get("kept") or {}).get("forget_exact"),
               "kept_reference_exact": (stop["stop"].get("kept") or {}).get("reference_exact"),
               # and the truth ratios' KS p against the reference's (forget quality without an oracle)
               "kept_truth_ks_p": ((stop["stop"].get("truth_ratio") or {}).get("kept") or {}).get("ks_p"),
               # the repair rounds that followed: records taken, and still reproduced after
               "repairs": [[r["records"], r["left"]] for r in stop["stop"].get("repairs") or []],
               "verdict": res["verdict"]["overall"]["status"]}
        rows.append(row)
        if fixed:  # what the cost ratio compares with, judged by the same targets
            budget = fixed_budget(get_method(method))
            t0 = time.perf_counter()
            run = api.forget(models["subject"], data, method, root / "fixed" / method, seed=seed, progress=False,
                             params=(params or {}).get(method), overwrite=True, **budget)
            row["fixed_wall_s"] = time.perf_counter() - t0
            res = api.evaluate(run / "model", data, oracle=oracle, subject=subject, suites=SUITES)
            rows.append({"shape": shape, "seed": seed, "model": fixed_name(method), **_metrics(res, oracle, subject),
                         "wall_s": row["fixed_wall_s"], "stop": "budget", "budget": budget,
                         "verdict": res["verdict"]["overall"]["status"]})
    return rows


def method_params(name: str, params: dict | None, data: Path, calibration: dict | None,
                  train: dict | None) -> dict | None:
    """`--param` settings of the run named `name`; the default's are `default.KEY=V`, else those
    given for the method it runs on `data` (`unlearning.default_plan`; a budget in `train` makes
    it a fixed-budget run)."""
    from unlearnkit.calibrate import settings_from
    from unlearnkit.data.io import load_world
    from unlearnkit.unlearning import BUDGET_KEYS, default_plan

    params = params or {}
    if name != DEFAULT or name in params:
        return params.get(name)
    fixed = any(k in (train or {}) for k in BUDGET_KEYS)
    return params.get(default_plan(None, None if fixed else settings_from(calibration), load_world(data))[0])


def fixed_name(method: str) -> str:
    """The row of `method`'s fixed default budget (no calibration)."""
    return f"{method}, fixed budget"


def _metrics(res, oracle, subject) -> dict:
    mu, smu = res.get("model_utility"), subject.get("model_utility")
    return {"forget_quality": res.get("forget_quality"), "forget_quality_twins": res.get("forget_quality_twins"),
            "truth_gap_twins": res.get("truth_gap_twins"), "answer_rate": answer_rate(res),
            "oracle_answer_rate": answer_rate(oracle), "privleak": res.get("privleak"),
            "utility_ratio": mu / smu if mu is not None and smu else None, "n_forget": res["n"]["forget"]}


TARGETS = {"answer_gap": 0.05, "privleak": 10.0, "forget_quality": 0.05, "utility": 0.95}  # the issue's


def retraining_spread(retrained: list[dict]) -> dict:
    """The issue's targets, each widened to exact retraining's own spread on that world: the farthest
    any retrained oracle (the same data, another training seed) lands from the oracle. A target
    tighter than that cannot tell exact unlearning from a second draw of itself."""
    t = dict(TARGETS)
    for r in retrained:
        t["answer_gap"] = max(t["answer_gap"], abs(r["answer_rate"] - r["oracle_answer_rate"]))
        if r["privleak"] is not None:
            t["privleak"] = max(t["privleak"], abs(r["privleak"]))
        t["forget_quality"] = min(t["forget_quality"], r["forget_quality"])
        t["utility"] = min(t["utility"], r["utility_ratio"])
    return t


def meets(row: dict, tol: dict = TARGETS) -> bool:
    return (abs(row["answer_rate"] - row["oracle_answer_rate"]) <= tol["answer_gap"] + 1e-9
            and row["privleak"] is not None and abs(row["privleak"]) <= tol["privleak"] + 1e-9
            and row["forget_quality"] >= tol["forget_quality"] and row["utility_ratio"] >= tol["utility"])


def _retrained(rows: list[dict], world: tuple, but: dict | None = None) -> list[dict]:
    return [r for r in rows if (r["shape"], r["seed"]) == world and r["model"].startswith("retrained") and r is not but]


def within_retraining(row: dict, rows: list[dict]) -> bool:
    """`meets` with the targets widened to exact retraining's spread on the row's world; a retrained
    oracle is judged by the spread of the others (leave one out)."""
    return meets(row, retraining_spread(_retrained(rows, (row["shape"], row["seed"]), but=row)))


def twins_agreement(rows: list[dict]) -> tuple[int, int] | None:
    """(rows where forget quality against the twins and against the oracle fall on the same side of
    the target, rows with both), the oracle's own rows left out; None when no row has both."""
    both = [r for r in rows if r["model"] != "oracle" and r.get("forget_quality_twins") is not None
            and r["forget_quality"] is not None]
    if not both:
        return None
    t = TARGETS["forget_quality"]
    return sum((r["forget_quality"] >= t) == (r["forget_quality_twins"] >= t) for r in both), len(both)


def table(rows: list[dict], default: str = DEFAULT) -> str:
    spreads = {w: retraining_spread(_retrained(rows, w)) for w in {(r["shape"], r["seed"]) for r in rows}}
    lines = ["| world | seed | model | stop | forget quality | against twins | answer rate (oracle) | PrivLeak "
             "| utility vs subject | targets met | within retraining | verdict | wall s (fixed budget) |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for r in rows:
        judged = r["model"] not in ("subject", "oracle")
        ok = ("yes" if meets(r) else "no") if judged else ""
        near = ("yes" if within_retraining(r, rows) else "no") if judged else ""
        if judged and (r["model"] == default or r["model"].startswith(default + " (")):
            ok, near = f"**{ok}**", f"**{near}**"
        lines.append(f"| {r['shape']} | {r['seed']} | {r['model']} | {r.get('stop', '')} | "
                     f"{_fmt(r['forget_quality'], '.2g')} | {_fmt(r.get('forget_quality_twins'), '.2g')} | "
                     f"{_fmt(r['answer_rate'], '.2f')} "
                     f"({_fmt(r['oracle_answer_rate'], '.2f')}) | {_fmt(r['privleak'], '.1f')} | "
                     f"{_fmt(r['utility_ratio'], '.3f')} | {ok} | {near} | {r.get('verdict', '')} | "
                     f"{_fmt(r.get('wall_s'), '.1f')} ({_fmt(r.get('fixed_wall_s'), '.1f')}) |")
    agree = twins_agreement(rows)
    if agree:
        lines += ["", f"Forget quality against the twins (no oracle) and against the oracle fall on the same side of "
                  f"{TARGETS['forget_quality']} on {agree[0]} of {agree[1]} rows (subjects, retrained oracles and "
                  f"runs; the oracle's own is 1 by definition and left out)."]
    lines += ["", "Exact retraining's spread (the targets as widened for `within retraining`):", "",
              "| world | seed | retrained oracles | answer-rate gap | \\|PrivLeak\\| | forget quality | utility |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for (shape, seed), t in sorted(spreads.items(), key=lambda kv: (SHAPES.index(kv[0][0])
                                                                    if kv[0][0] in SHAPES else 99, kv[0][1])):
        n = len(_retrained(rows, (shape, seed)))
        lines.append(f"| {shape} | {seed} | {n} | ≤ {t['answer_gap']:.2f} | ≤ {t['privleak']:.1f} | "
                     f"≥ {_fmt(t['forget_quality'], '.2g')} | ≥ {t['utility']:.3f} |")
    seen = [r for r in rows if r.get("kept_forget_exact") is not None]
    if seen:
        lines += ["", "Answers reproduced, as the calibrator saw them at the first run's kept check (teacher-forced, "
                  "no oracle; before any repair round), the repair rounds that followed (records taken → still "
                  "reproduced after), and as the evaluation counts them on the result (greedy answers holding the "
                  "true answer):", "",
                  "| world | seed | model | forget answers reproduced | repair rounds | answer rate | twins' answers "
                  "reproduced | oracle's answer rate | truth ratios vs twins, KS p (calibrator) | forget quality "
                  "against twins (evaluation) |", "|---|---:|---|---:|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['shape']} | {r['seed']} | {r['model']} | {r['kept_forget_exact']:.3f} | "
                  f"{', '.join(f'{a} → {b}' for a, b in r.get('repairs') or []) or '–'} | {r['answer_rate']:.3f} | "
                  f"{r['kept_reference_exact']:.3f} | {r['oracle_answer_rate']:.3f} | "
                  f"{_fmt(r.get('kept_truth_ks_p'), '.2g')} | {_fmt(r.get('forget_quality_twins'), '.2g')} |"
                  for r in seen]
    return "\n".join(lines)


def main():
    from unlearnkit.models.tiny import SIZES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-fixed", action="store_true", help="skip the fixed-budget runs (no cost ratio)")
    ap.add_argument("--retrained", type=int, default=3,
                    help="oracles retrained from other seeds per world: exact unlearning's own spread")
    ap.add_argument("--jobs", type=int, default=2, help="worlds trained side by side")
    ap.add_argument("--size", default="tiny", choices=sorted(SIZES),
                    help="the subject's and oracles' model size (models.tiny.SIZES)")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-methods"))
    ap.add_argument("--write", type=Path, help="markdown file whose table (between the markers) is replaced")
    ap.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                    help="a method setting for every run of that method (repeatable); the default's run "
                         "takes those of the method it runs, or default.KEY=VALUE")
    ap.add_argument("--calibration", action="append", default=[], metavar="KEY=VALUE",
                    help="a calibration setting for every calibrated run (repeatable)")
    ap.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                    help="a training setting (lr, batch_size, ...) for every calibrated run (repeatable)")
    args = ap.parse_args()
    from unlearnkit.shell import assignments

    params: dict = {}
    for key, value in assignments(args.param, "--param").items():
        method, _, field = key.partition(".")
        params.setdefault(method, {})[field] = value
    calibration = assignments(args.calibration, "--calibration") or None
    train = assignments(args.train, "--train")

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    worlds = [(s, int(seed)) for s in args.shapes.split(",") for seed in args.seeds.split(",")]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        threads = max(1, (os.cpu_count() or 1) // min(args.jobs, len(worlds)))  # the cores shared out
        list(pool.map(_build_job, [(args.cache, s, seed, args.retrained, args.size, threads) for s, seed in worlds]))
    methods = args.methods.split(",")
    rows = []
    for shape, seed in worlds:
        rows += run_world(args.cache, shape, seed, methods, not args.no_fixed, params, calibration, train,
                          args.retrained, args.size)
        (args.cache / "methods.json").write_text(json.dumps(rows, indent=1))
    out = table(rows)
    extra = "".join(f" --{k} {v}" for k in ("param", "calibration", "train") for v in getattr(args, k))
    extra += f" --retrained {args.retrained}" if args.retrained != 3 else ""
    extra += f" --size {args.size}" if args.size != "tiny" else ""
    cmd = f"`python bench/methods.py --shapes {args.shapes} --seeds {args.seeds} --methods {args.methods}{extra}`"
    out = f"Command: {cmd}. Default method in bold.\n\n" + out
    print(out)
    if args.write:
        text = args.write.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{args.write}: markers {BEGIN} / {END} not found")
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: f"{BEGIN}\n{out}\n{END}", text, flags=re.S)
        args.write.write_text(text)


if __name__ == "__main__":
    main()
