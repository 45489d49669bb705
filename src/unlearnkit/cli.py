"""`unlearn`: the command-line shell over `unlearnkit.api`."""
from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-file "Loading weights" bars; ours stay

app = typer.Typer(help="Make a causal LM forget on request, prove that it forgot, keep it useful.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)
out_console = Console()


def _fail(msg: str) -> None:
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def friendly(fn):
    """Turn expected failures into one line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .data.io import DataError
        from .models.load import ModelLoadError

        try:
            return fn(*args, **kwargs)
        except (DataError, ModelLoadError, ValueError, FileNotFoundError) as e:
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
        except KeyError as e:
            _fail(e.args[0] if e.args else str(e))
    return wrapper


def _parse_params(items: list[str] | None) -> dict:
    """`key=value` pairs; values parsed as JSON when they can be (numbers, true/false), else strings."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--param {item!r}: expected key=value")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _train_overrides(lr, steps, epochs, batch_size) -> dict:
    return {k: v for k, v in dict(lr=lr, steps=steps, epochs=epochs, batch_size=batch_size).items() if v is not None}


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more.")):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("unlearnkit").setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("transformers", "accelerate", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


@app.command()
@friendly
def demo(out: Path = typer.Option(Path("runs/demo"), help="Run directory (world, models, metrics.json, report.md)."),
         seed: int = typer.Option(0, help="Seed for the world, the models and unlearning."),
         method: str = typer.Option("graddiff", help="Unlearning method (see `unlearn methods`)."),
         people: int = typer.Option(60, help="Number of fictitious people in the world."),
         forget_fraction: float = typer.Option(0.10, help="Fraction of the people in the forget split."),
         attacks: str = typer.Option("relearn,quantize,probes,incontext",
                                     help="Comma-separated attacks to run on the unlearned model; empty: none."),
         guard: str = typer.Option("pseudonymise", help="Action of the demo's guard (refuse | forbid | pseudonymise "
                                                        "| icu), evaluated as the model 'guarded'; empty: no guard."),
         requests: bool = typer.Option(False, "--requests", help="Then carry the forget people through forget "
                                                                 "requests in OUT/home (locate, guard, process, certificates).")):
    """The whole job on the embedded default: world, subject and oracle, unlearning, a guard, evaluation, attacks, report."""
    from . import api
    from .report import fmt, headline_table

    kinds = tuple(a.strip() for a in attacks.split(",") if a.strip())
    metrics = api.demo(out, seed=seed, method=method, n_people=people, forget_fraction=forget_fraction, attacks=kinds,
                       guard=guard.strip() or None, console=console, requests=requests)
    table = Table(title="unlearnkit demo")
    table.add_column("metric")
    for name in metrics["models"]:
        table.add_column(name, justify="right")
    for row in headline_table(metrics["models"]):
        table.add_row(*row)
    out_console.print(table)
    if metrics["attacks"]:
        at = Table(title="attacks on the unlearned model (recovery: 0 = nothing comes back, 1 = all)")
        for col in ("attack", "strongest variant", "recovery", "oracle recovery"):
            at.add_column(col, justify="left" if col in ("attack", "strongest variant") else "right")
        for kind, a in metrics["attacks"].items():
            at.add_row(kind, a["recovery_variant"] or "–", fmt(a["recovery"]), fmt(a["oracle_recovery"]))
        out_console.print(at)
    if "requests" in metrics:
        rq = metrics["requests"]
        rt = Table(title=f"forget requests (home {rq['home']}, batch {rq['stage']}, current {rq['version']})")
        for col in ("request", "status", "inventory", "certificate verifies"):
            rt.add_column(col)
        for r in rq["requests"]:
            rt.add_row(r["id"], r["status"] + (f": {r['failure']}" if r["failure"] else ""), str(r["inventory"]),
                       "–" if r["certificate_ok"] is None else ("yes" if r["certificate_ok"] else "NO"))
        out_console.print(rt)
    out_console.print(f"metrics: {out / 'metrics.json'}   report: {out / 'report.md'}")
    if "guard" in metrics["config"]["paths"]:
        paths = metrics["config"]["paths"]
        out_console.print(f"serve the guarded subject: UNLEARN_GUARD_TOKEN=... unlearn guard serve "
                          f"--model {paths['subject']} --guard-dir {paths['guard']} --port 8000")


@app.command()
@friendly
def world(out: Path = typer.Option(..., help="Directory to write the JSONL splits into."),
          seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical files."),
          people: int = typer.Option(60, help="Number of fictitious people."),
          forget_fraction: float = typer.Option(0.10, help="Fraction of people in the forget split (e.g. 0.01, 0.05, 0.10).")):
    """Generate the fictitious world: forget/retain/neighbours/holdout/world_facts QA splits and biographies."""
    from . import api

    path = api.world(out, seed=seed, n_people=people, forget_fraction=forget_fraction)
    out_console.print(str(path))


@app.command()
@friendly
def finetune(data: Path = typer.Option(..., help="World directory (JSONL splits) to train on."),
             out: Path = typer.Option(..., help="Where to save the checkpoint."),
             model: Optional[str] = typer.Option(None, help="Checkpoint dir or hub id to fine-tune; omitted: train a small Llama from scratch."),
             without_forget: bool = typer.Option(False, "--without-forget", help="Leave the forget split out (the oracle)."),
             seed: int = typer.Option(0), size: str = typer.Option("tiny", help="Size of a from-scratch model: tiny|small."),
             lr: Optional[float] = typer.Option(None), epochs: Optional[float] = typer.Option(None),
             steps: Optional[int] = typer.Option(None), batch_size: Optional[int] = typer.Option(None)):
    """Train the subject (all training splits) or the oracle (--without-forget)."""
    from . import api

    path = api.finetune(data, out, model=model, without_forget=without_forget, seed=seed, size=size,
                        **_train_overrides(lr, steps, epochs, batch_size))
    out_console.print(str(path))


@app.command()
@friendly
def forget(model: str = typer.Option(..., help="Checkpoint dir or hub id of the model to unlearn (never modified)."),
           data: Path = typer.Option(..., help="World directory with forget.jsonl (and retain.jsonl)."),
           method: str = typer.Option("graddiff", help="Method name; `unlearn methods` lists them."),
           out: Path = typer.Option(..., help="Run directory: config.yaml, log.jsonl, model/ ..."),
           seed: int = typer.Option(0),
           lora: bool = typer.Option(False, "--lora", help="Train a LoRA adapter instead of all weights."),
           merge: bool = typer.Option(False, "--merge", help="With --lora, also save the merged model."),
           resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUT."),
           save_every: int = typer.Option(0, help="Checkpoint every N steps (0: never)."),
           param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="Method parameter key=value (repeatable)."),
           lr: Optional[float] = typer.Option(None), epochs: Optional[float] = typer.Option(None),
           steps: Optional[int] = typer.Option(None), batch_size: Optional[int] = typer.Option(None),
           eval: bool = typer.Option(False, "--eval", help="Evaluate the result and write OUT/metrics.json."),
           oracle: Optional[str] = typer.Option(None, help="Oracle checkpoint or results JSON, for --eval.")):
    """Unlearn the forget set from a copy of MODEL."""
    from . import api

    run = api.forget(model, data, method, out, seed=seed, lora=lora, merge=merge, resume=resume, save_every=save_every,
                     params=_parse_params(param), **_train_overrides(lr, steps, epochs, batch_size))
    out_console.print(str(run))
    if eval:
        target = run / "model" if (run / "model").exists() else run / "adapter"
        res = api.evaluate(target, data, oracle=oracle, out=run / "metrics.json")
        _print_headline({"unlearned": res})


@app.command("eval")
@friendly
def eval_(model: str = typer.Option(..., help="Checkpoint dir or hub id."),
          data: Path = typer.Option(..., help="World directory or `datasets` directory."),
          oracle: Optional[str] = typer.Option(None, help="Oracle checkpoint or its results JSON (forget quality, PrivLeak)."),
          subject: Optional[str] = typer.Option(None, help="Subject checkpoint or results JSON (utility verdict)."),
          reference: Optional[str] = typer.Option(None, help="Reference model for the reference-based MIA."),
          suite: str = typer.Option("all", help="Comma-separated suites: tofu,muse,mia or all."),
          guard: Optional[Path] = typer.Option(None, help="Evaluate the model behind this guard directory."),
          out: Path = typer.Option(..., help="Results JSON to write."),
          seed: int = typer.Option(0)):
    """Evaluate a model: TOFU, MUSE and membership-inference metrics, with a verdict."""
    from . import api

    suites = ("tofu", "muse", "mia") if suite == "all" else tuple(s.strip() for s in suite.split(",") if s.strip())
    bad = set(suites) - {"tofu", "muse", "mia"}
    if bad:
        raise ValueError(f"--suite: unknown suite {sorted(bad)[0]!r}; valid: tofu, muse, mia, all")
    target = model
    if guard is not None:
        from .guard.guarded import guarded_lm

        target = guarded_lm(model, guard)
    res = api.evaluate(target, data, oracle=oracle, subject=subject, reference=reference, suites=suites, out=out)
    _print_headline({"model": res})


@app.command()
def methods():
    """List the unlearning methods with their defaults."""
    from .methods import list_methods

    table = Table(title="methods")
    for col in ("name", "description", "defaults"):
        table.add_column(col)
    for m in list_methods():
        if m.name == "finetune":
            continue
        defaults = ", ".join(f"{k}={v}" for k, v in {**m.train_defaults, **m.params}.items())
        table.add_row(m.name, m.description, defaults)
    out_console.print(table)


@app.command()
@friendly
def report(metrics: Path = typer.Argument(..., help="A metrics.json written by `unlearn demo` or `unlearn eval`."),
           out: Optional[Path] = typer.Option(None, help="Report path (default: report.md beside the JSON).")):
    """Write a human-readable report of a results JSON."""
    from .report import write_report

    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: file not found")
    data = json.loads(metrics.read_text())
    if "models" not in data:
        data = {"models": {metrics.stem: data}}
    path = write_report(data, out or metrics.with_name("report.md"))
    out_console.print(str(path))


def _print_headline(models: dict) -> None:
    from .report import headline_table

    table = Table()
    table.add_column("metric")
    for n in models:
        table.add_column(n, justify="right")
    for row in headline_table(models):
        table.add_row(*row)
    out_console.print(table)


def _mount_subapps() -> None:
    from .attacks.cli import attack
    from .guard.cli import app as guard_app
    from .requests.cli import home_app, request_app, serve

    app.command("attack")(friendly(attack))
    app.add_typer(guard_app, name="guard")
    app.add_typer(home_app, name="home")
    app.add_typer(request_app, name="request")
    app.command("serve")(serve)


_mount_subapps()

if __name__ == "__main__":
    sys.exit(app())
