"""Replay calibrated runs' logs through today's stopping rule, before any rerun.

    python bench/replay.py runs/bench-methods/*/runs/*/            # every saved run of bench/methods.py
    python bench/replay.py RUN --calibration max_backtracks=2      # the same logs under other settings

A calibrated run is deterministic up to a decision: the checks it logged (`log.jsonl`: AUC, KS p,
utility, learning rate) are what any rule would have seen until the first step where that rule
decides otherwise. So each logged check is put in place of the measurement and handed to the real
rule (`Calibrator.replaying`: the rule alone, no data; `Calibrator.replay`: `check` on a given
check, its state decided again under the settings given); the decisions it
makes (brake, speed up, backtrack, stop) are compared with the ones the run logged. Per run:
- `same`: today's rule makes every decision the log shows, and stops where it stopped;
- `stops`: it stops at an earlier check (why, and the check it keeps: the same weights as the run
  kept when the step is the same);
- `diverges`: it decides otherwise at a check (the log from there on was made by another decision,
  so nothing after it can be read), wants the utility where the run did not measure it, or does not
  check where the run decided something. A logged check where the run decided nothing and the rule
  does not check (`max_stride`: fewer checks far from the target) is passed over: the weights at
  the next check are the same either way.
The settings and steps per epoch come from the run's `calibration.json` (`settings`, `per_epoch`;
runs saved before session 22 lack them: defaults, and a quarter epoch taken as the first check's
interval). Writes one JSON object per run to stdout with `--json`, else a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

EVENTS = ("brake", "speed_up", "backtrack")


class _Handle:
    """The `train.Handle` a replayed check decides on: it records, and changes nothing."""

    def __init__(self):
        self.lr, self.events = 0.0, []

    def log(self, rec: dict) -> None:
        self.events.append(rec)

    def snapshot(self) -> dict:
        return {}

    def restore(self, snap: dict) -> None:
        pass

    def scale_lr(self, factor: float) -> None:
        self.lr *= factor


def read_log(path: Path) -> tuple[list[tuple[dict, list[dict]]], dict | None]:
    """The run's checks, each with the decisions logged after it, and its `stopped` record."""
    checks, stopped = [], None
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "check" in rec:
            checks.append((rec["check"], []))
        elif checks and set(rec) & set(EVENTS):
            checks[-1][1].append(rec)
        elif "stopped" in rec:
            stopped = rec["stopped"]
    return checks, stopped


def _decisions(events: list[dict]) -> list[tuple[str, float]]:
    return [(k, round(v["to_lr"], 12)) for e in events for k, v in e.items() if k in EVENTS]


def replay(run: Path, overrides: dict | None = None) -> dict:
    """`run`'s log replayed through today's rule (module docstring); `overrides`: settings to try."""
    from unlearnkit.calibrate import Calibrator, Check, settings_from

    checks, stopped = read_log(run / "log.jsonl")
    if not checks or stopped is None:
        raise ValueError(f"{run / 'log.jsonl'}: no checks, or no 'stopped' record (a calibrated run that finished "
                         f"writes both)")
    info = json.loads((run / "calibration.json").read_text()) if (run / "calibration.json").is_file() else {}
    settings = settings_from({**(info.get("settings") or {}), **(overrides or {})})
    every = checks[1][0]["step"] - checks[0][0]["step"] if len(checks) > 1 else 1
    per_epoch = info.get("per_epoch") or 4 * every
    cal = Calibrator.replaying(settings, per_epoch, checks[0][0]["tolerance"])
    names = {f.name for f in fields(Check)}
    out = {"run": str(run), "logged": {k: stopped[k] for k in ("reason", "stopped_at", "kept_step")},
           "per_epoch": per_epoch, "per_epoch_logged": bool(info.get("per_epoch"))}
    h = _Handle()
    for i, (logged, events) in enumerate(checks):
        c = Check(**{k: v for k, v in logged.items() if k in names})
        last = i == len(checks) - 1
        if i and not cal.due(c.step):  # the rule's schedule skips it (`max_stride`)
            if events or last:
                return {**out, "outcome": "diverges", "step": c.step,
                        "why": "the rule does not check here; the run " + ("stopped" if last else "decided") + " here"}
            continue  # nothing decided here: the run's weights at the next check are the same
        h.lr, h.events = c.lr, []
        stop = cal.replay(c, h)
        if stop is None:
            return {**out, "outcome": "diverges", "step": c.step,
                    "why": "the rule measures the utility here; the run did not"}
        mine, theirs = _decisions(h.events), _decisions(events)
        if stop and last and not theirs:
            same = cal.reason == stopped["reason"] and cal.best is not None and cal.best.step == stopped["kept_step"]
            return {**out, "outcome": "same" if same else "diverges", "step": c.step,
                    "reason": cal.reason, "kept_step": cal.best.step if cal.best else None,
                    **({} if same else {"why": "stops here too, for another reason or keeping another check"})}
        if stop:
            return {**out, "outcome": "stops", "step": c.step, "reason": cal.reason,
                    "kept_step": cal.best.step if cal.best else checks[0][0]["step"]}
        if last:
            if stopped["reason"] == "budget" and mine == theirs:
                return {**out, "outcome": "same", "step": c.step, "reason": "budget",
                        "kept_step": cal.best.step if cal.best else None}
            return {**out, "outcome": "diverges", "step": c.step, "why": f"the run stopped here ({stopped['reason']}); "
                    f"the rule goes on" + (f" after {mine}" if mine else "")}
        if mine != theirs:
            return {**out, "outcome": "diverges", "step": c.step, "why": f"the run logged {theirs or 'no decision'}, "
                    f"the rule makes {mine or 'none'}"}
    raise AssertionError("unreachable: the last check returns")


def main(argv=None):
    from unlearnkit.calibrate import settings_from
    from unlearnkit.shell import assignments

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories (log.jsonl, calibration.json); a repair "
                                                       "round's is RUN/repair-K")
    ap.add_argument("--calibration", action="append", default=[], metavar="KEY=VALUE",
                    help="a calibration setting to replay under instead of the run's own (repeatable)")
    ap.add_argument("--json", action="store_true", help="one JSON object per run")
    args = ap.parse_args(argv)
    try:
        overrides = assignments(args.calibration, "--calibration")
        settings_from(overrides)  # a bad key or value fails here, in one line, before any run is read
    except ValueError as e:
        raise SystemExit(str(e)) from None
    if not args.json:
        print("| run | logged: stop, at, kept | replayed | at | kept | why |\n|---|---|---|---:|---:|---|")
    failed = 0
    for run in args.runs:
        if not (run / "log.jsonl").is_file():
            continue
        try:
            r = replay(run, overrides)
        except (ValueError, json.JSONDecodeError) as e:  # a run that died mid-way: said, and the others go on
            print(f"{run}: {str(e).splitlines()[0]}", file=sys.stderr)
            failed += 1
            continue
        if args.json:
            print(json.dumps(r), flush=True)
            continue
        lg = r["logged"]
        what = r["outcome"] + (f" ({r['reason']})" if r.get("reason") and r["outcome"] != "same" else "")
        print(f"| {run} | {lg['reason']}, {lg['stopped_at']}, {lg['kept_step']} | {what} | {r['step']} | "
              f"{r.get('kept_step', '–') if r.get('kept_step') is not None else '–'} | {r.get('why', '')} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
