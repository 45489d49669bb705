"""Read what a report shows: a run directory or a results JSON, into one `Run`.

Accepted inputs (errors name the file and what is missing):
- a demo run directory (`metrics.json` with {"models": {name: results}, "attacks", "config", ...},
  `attacks/<kind>.json`, `unlearned/log.jsonl`);
- an unlearning run directory (`unlearn forget --eval`: `metrics.json` holding one results dict,
  `config.yaml`, `log.jsonl`);
- a `metrics.json` / results JSON file of either shape (`unlearn demo` or `unlearn eval`).
The report renders these as they are; it never recomputes a metric.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

REFERENCES = ("subject", "oracle")  # the models every unlearned model is measured against


class ReportInputError(ValueError):
    """A report input that cannot be read: the message names the file and the problem."""


@dataclass
class Run:
    """One input of a report: its models' results and whatever else its directory holds."""
    name: str
    source: Path
    models: dict[str, dict]  # model name -> results dict of `evaluate`
    attacks: dict[str, dict] = field(default_factory=dict)  # kind -> headline (recovery, oracle_recovery, ...)
    log: list[dict] = field(default_factory=list)  # training log records (log.jsonl)
    log_path: Path | None = None
    guard: dict | None = None  # detection scores per prompt group and the threshold (api.guard_detections)
    config: dict = field(default_factory=dict)

    @property
    def setup(self) -> str | None:
        """The run's method and what else sets it apart from another run of that method: LoRA, the
        fraction of weights trained (saliency), a fixed budget (else calibrated), a prompt format
        other than raw. A comparison groups runs by it (until session 36 by the method alone, so a
        LoRA run and a calibrated one were averaged together)."""
        c = self.config
        if c.get("method") is None:
            return None
        parts = [str(c["method"])]
        train = c.get("train") if isinstance(c.get("train"), dict) else {}
        if c.get("lora"):
            parts.append("lora" + (" merged" if c.get("merge") else ""))
        if isinstance(sal := train.get("saliency"), (int, float)) and sal:  # a method's own default too: the
            parts.append(f"saliency {sal:g}")  # report imports no method (and no torch) to tell them apart
        if c.get("calibration") is None and "calibration" in c:
            parts.append(f"{train['steps']} steps" if train.get("steps") else f"{train.get('epochs', '?')} epochs")
        kind = (c.get("template") or {}).get("kind") if isinstance(c.get("template"), dict) else None
        if kind not in (None, "raw"):
            parts.append(str(kind))
        return ", ".join(parts)

    @property
    def label(self) -> str:
        """What a comparison calls this run: its setup and seed when known, else its name."""
        setup, seed = self.setup, self.config.get("seed")
        if setup is not None:
            return f"{setup} seed {seed}" if seed is not None else setup
        return self.name


def _read_json(path: Path) -> dict:
    from ..runinfo import read_json

    return read_json(path, ReportInputError)


def read_log(path: Path) -> list[dict]:
    """The records of a `log.jsonl` (one JSON object per line; blank lines skipped)."""
    from ..data.io import iter_jsonl

    return [rec for _, _, rec in iter_jsonl(path, ReportInputError, objects=True)]


def _check_results(results: dict, where: str) -> None:
    from ..evaluate import is_result

    if not isinstance(results, dict):
        raise ReportInputError(f"{where}: expected a results object, got {type(results).__name__}")
    if not is_result(results):
        raise ReportInputError(f"{where}: not a results dict of `unlearn eval` (no verdict, per_sample or "
                               "forget_quality field)")
    from .markdown import ROWS

    def bad(field: str, why: str):
        raise ReportInputError(f"{where}: field '{field}' {why}")

    for key, *_ in ROWS:  # the headline numbers (a string there raised a TypeError deep in a plot)
        if not (results.get(key) is None or isinstance(results[key], (int, float)) and not isinstance(results[key], bool)):
            bad(key, f"must be a number or null, not {results[key]!r:.40}")
    if "verdict" in results and not isinstance(results["verdict"], dict):
        bad("verdict", "must be an object of checks")
    ps = results.get("per_sample")
    if ps is None:
        return
    if not isinstance(ps, dict):
        bad("per_sample", "must be an object")
    n = len(ps.get("forget_ids") or [])
    for key in ("forget_rouge", "forget_answers", "forget_questions", "forget_true_answers", "forget_truth_ratios"):
        v = ps.get(key)
        if v is not None and (not isinstance(v, list) or (n and len(v) != n)):
            bad(f"per_sample.{key}", f"must be a list of one value per forget record ({n})")
    for key in ("forget_rouge", "forget_truth_ratios"):
        if any(not isinstance(x, (int, float)) or isinstance(x, bool) for x in ps.get(key) or []):
            bad(f"per_sample.{key}", "must hold numbers only")


def _model_name(results: dict, directory: Path, metrics_file: Path) -> str:
    """What a report calls the model of one results file: "oracle" for the oracle's own result
    (evaluated with `--oracle self`, whatever the file is called: TOFU's `retain90.json`), "unlearned"
    in a run directory, else the file's stem. A stem that names a reference is taken at its word
    only where the result does not say otherwise (until session 35 any file called `oracle.json` was
    drawn as the oracle, and the real oracle's result, called otherwise, as an unlearned model)."""
    self_oracle = (results.get("config") or {}).get("self_oracle")
    if self_oracle:
        return "oracle"
    if (directory / "log.jsonl").is_file():
        return "unlearned"
    stem = metrics_file.stem
    return f"{stem}.json" if stem == "oracle" and self_oracle is False else stem


def _read_config(path: Path) -> dict:
    """A run's `config.yaml` as a mapping; a damaged one is a ReportInputError naming it."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ReportInputError(f"{path}: malformed YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ReportInputError(f"{path}: expected a mapping of settings, got a {type(config).__name__}")
    return config


def load_run(path: str | Path) -> Run:
    """A `Run` from a run directory or a metrics/results JSON file."""
    path = Path(path)
    if path.is_dir():
        directory, metrics_file = path, path / "metrics.json"
        if (path / "home.json").is_file():
            raise ReportInputError(f"{path}: a deployment home: its report is the ledger's HTML page "
                                   f"(`unlearn report {path} --html OUT.html`)")
        if not metrics_file.is_file():
            raise ReportInputError(f"{path}: no metrics.json in this directory (a run directory of `unlearn "
                                   "demo` or `unlearn forget --eval`, or pass a results JSON)")
    elif path.is_file():
        directory, metrics_file = path.parent, path
    else:
        raise ReportInputError(f"{path}: no such file or directory")
    data = _read_json(metrics_file)
    if "models" in data:
        if not isinstance(data["models"], dict) or not data["models"]:
            raise ReportInputError(f"{metrics_file}: field 'models' must be a non-empty object of results")
        models = data["models"]
        for name, res in models.items():
            _check_results(res, f"{metrics_file}: models.{name}")
        config = dict(data.get("config") or {})
    else:
        _check_results(data, str(metrics_file))
        models = {_model_name(data, directory, metrics_file): data}
        config = _read_config(directory / "config.yaml") if (directory / "config.yaml").is_file() else {}
    attacks = dict(data.get("attacks") or {})
    for kind, a in attacks.items():
        if not isinstance(a, dict):
            raise ReportInputError(f"{metrics_file}: attacks.{kind} must be an object")
    log_path = next((p for p in (directory / "log.jsonl", directory / "unlearned" / "log.jsonl") if p.is_file()), None)
    name = directory.name if metrics_file.name == "metrics.json" else metrics_file.stem
    return Run(name=name or str(directory), source=metrics_file, models=models, attacks=attacks,
               log=read_log(log_path) if log_path else [], log_path=log_path, guard=data.get("guard"),
               config=config)


def load_runs(paths) -> list[Run]:
    """Every input, in order; names made unique (a comparison of `seed0/metrics.json` and `seed1/...`)."""
    paths = list(paths)
    runs = [load_run(p) for p in paths]
    if not runs:
        raise ReportInputError("no input given: pass run directories or metrics JSON files")
    given: dict[Path, str] = {}
    for p, r in zip(paths, runs):  # a run given twice was compared with itself until session 35
        if (key := r.source.resolve()) in given:
            raise ReportInputError(f"{p}: the same run as {given[key]} (both are {r.source}); pass each run once")
        given[key] = str(p)
    seen: dict[str, int] = {}
    for r in runs:
        if r.name in seen:
            seen[r.name] += 1
            r.name = f"{r.name}-{seen[r.name]}"
        else:
            seen[r.name] = 1
    return runs
