"""`unlearn`: the command-line shell over `unlearnkit.api`."""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import DEFAULT_METHOD, HOLDOUT_METHOD
from .shell import assignments, friendly

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # per-file "Loading weights" bars; ours stay

app = typer.Typer(help="Make a causal LM forget on request, prove that it forgot, keep it useful.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)
out_console = Console()


BENCHMARK_HELP = ("Read --data as a local copy of a published benchmark: tofu | muse | wmdp | rwku "
                  "(docs/benchmarks.md).")
TEMPLATE_HELP = ("Prompt format: raw (the question as is), chat (the tokenizer's chat template), or a format "
                 "string with {question}, e.g. TOFU's Llama-2 chat format (docs/benchmarks.md); default: the one "
                 "the checkpoint was trained in (its unlearnkit.json or run's config.yaml), else raw.")
SYSTEM_HELP = "System prompt, with --template chat."
DEFAULT_HELP = (f"{HOLDOUT_METHOD} calibrated against the holdout split where the data has one, else {DEFAULT_METHOD} "
                "(docs/methods-log.md, 'The default, chosen by the data')")
OWN_SCORES = ("wmdp", "rwku")  # benchmarks scored their own way: no oracle, no subject, no headline table
SPLIT_HELP = ("With --benchmark: tofu forget01|forget05|forget10; muse raw/forget|scal/forget_N|sust/forget_N; "
              "wmdp bio|cyber|chem; rwku a target's name or all.")


def _train_overrides(lr, steps, epochs, batch_size, saliency=None, sam=None) -> dict:
    given = dict(lr=lr, steps=steps, epochs=epochs, batch_size=batch_size, saliency=saliency, sam=sam)
    return {k: v for k, v in given.items() if v is not None}


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more.")):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("unlearnkit").setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("transformers", "accelerate", "sentence_transformers", "httpx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


@app.command()
@friendly
def demo(out: Path = typer.Option(Path("runs/demo"), help="Run directory (world, models, metrics.json, report.md, report.html)."),
         seed: int = typer.Option(0, help="Seed for the world, the models and unlearning."),
         method: Optional[str] = typer.Option(None, help=f"Unlearning method (see `unlearn methods`); default: {DEFAULT_HELP}."),
         people: int = typer.Option(60, help="Number of fictitious people in the world."),
         forget_fraction: float = typer.Option(0.10, help="Fraction of the people in the forget split (in (0, 1); one person at least)."),
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
        stages = ", ".join(b["stage"] for b in rq["batches"])
        rt = Table(title=f"forget requests (home {rq['home']}; batches of 2: {stages}; current {rq['version']})")
        for col in ("request", "status", "why", "inventory", "certificate verifies"):
            rt.add_column(col)
        for r in rq["requests"]:
            rt.add_row(r["id"], r["status"], r["failure"] or "", str(r["inventory"]),
                       "–" if r["certificate_ok"] is None else ("yes" if r["certificate_ok"] else "NO"))
        out_console.print(rt)
    out_console.print(f"metrics: {out / 'metrics.json'}   report: {out / 'report.md'}")
    out_console.print(f"html report: {out / 'report.html'}")
    if "guard" in metrics["config"]["paths"]:
        paths = metrics["config"]["paths"]
        out_console.print(f"serve the guarded subject: UNLEARN_GUARD_TOKEN=... unlearn guard serve "
                          f"--model {paths['subject']} --guard-dir {paths['guard']} --port 8000")


WORLD_OPTIONS = {"n_people": "people", "n_attributes": "attributes"}  # the API's names that the options shorten


@app.command()
@friendly
def world(out: Path = typer.Option(..., help="Directory to write the JSONL splits into."),
          seed: int = typer.Option(0, help="Seed: the same seed gives byte-identical files."),
          shape: Optional[str] = typer.Option(None, help="Named set of the options below: default | sentences | large | few_facts | unfamiliar | wide | wide_sentences | wide_few_facts | wide_alt_names; explicit options override it."),
          people: Optional[int] = typer.Option(None, help="Number of fictitious people (default: 60)."),
          forget_fraction: Optional[float] = typer.Option(None, help="Fraction of people in the forget split, e.g. 0.01, 0.05, 0.10 (default: 0.10; in (0, 1), one person at least)."),
          answer_style: Optional[str] = typer.Option(None, help="short: the answer is the value; sentence: a full sentence naming the person (default: short)."),
          docs: Optional[bool] = typer.Option(None, "--docs/--no-docs", help="Write biographies (*_docs.jsonl) (default: --docs)."),
          attributes: Optional[int] = typer.Option(None, help="Facts per person, 1-10: the first N attributes (default: 10)."),
          names: Optional[str] = typer.Option(None, help="Name syllables: default | alt (names unlike the embedded world's).")):
    """Generate the fictitious world: forget/retain/neighbours/holdout/world_facts QA splits and biographies."""
    from . import api

    try:
        path = api.world(out, seed=seed, shape=shape, n_people=people, forget_fraction=forget_fraction,
                         answer_style=answer_style, docs=docs, n_attributes=attributes, names=names)
    except ValueError as e:  # named by the API's arguments (n_people ...) until session 36
        raise ValueError(re.sub(r"^(n_people|n_attributes|forget_fraction|answer_style|docs|names|shape)\b",
                                lambda m: "--" + WORLD_OPTIONS.get(m[1], m[1]).replace("_", "-"), str(e))) from None
    out_console.print(str(path))


@app.command()
@friendly
def finetune(data: Path = typer.Option(..., help="World directory (JSONL splits) to train on."),
             out: Path = typer.Option(..., help="Where to save the checkpoint."),
             model: Optional[str] = typer.Option(None, help="Checkpoint dir or hub id to fine-tune; omitted: train a small Llama from scratch."),
             without_forget: bool = typer.Option(False, "--without-forget", help="Leave the forget split out (the oracle)."),
             seed: int = typer.Option(0), size: str = typer.Option("tiny", help="Size of a from-scratch model: tiny|small|wide (models/tiny.py)."),
             lr: Optional[float] = typer.Option(None), epochs: Optional[float] = typer.Option(None),
             steps: Optional[int] = typer.Option(None), batch_size: Optional[int] = typer.Option(None),
             template: Optional[str] = typer.Option(None, help=TEMPLATE_HELP),
             system: Optional[str] = typer.Option(None, help=SYSTEM_HELP),
             overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier checkpoint of `unlearn "
                                                                      "finetune` in OUT (refused without it).")):
    """Train the subject (all training splits) or the oracle (--without-forget)."""
    from . import api

    path = api.finetune(data, out, model=model, without_forget=without_forget, seed=seed, size=size,
                        template=template, system=system, overwrite=overwrite,
                        **_train_overrides(lr, steps, epochs, batch_size))
    if api.is_main():  # launched on several processes: the main one reports
        out_console.print(str(path))


@app.command()
@friendly
def forget(model: str = typer.Option(..., help="Checkpoint dir or hub id of the model to unlearn (never modified)."),
           data: Path = typer.Option(..., help="World directory with forget.jsonl (and retain.jsonl), or with "
                                                 "--benchmark a local copy of that benchmark."),
           method: Optional[str] = typer.Option(None, help=f"Method name; `unlearn methods` lists them. Default: {DEFAULT_HELP}."),
           out: Path = typer.Option(..., help="Run directory: config.yaml, log.jsonl, model/ ..."),
           seed: int = typer.Option(0),
           lora: bool = typer.Option(False, "--lora", help="Train a LoRA adapter instead of all weights."),
           merge: bool = typer.Option(False, "--merge", help="With --lora, also save the merged model."),
           saliency: Optional[float] = typer.Option(None, help="Train only this fraction of the weights, those most "
                                                              "salient to the forget set (SalUn); 0: all (default: "
                                                              "the method's)."),
           sam: Optional[float] = typer.Option(None, help="Sharpness-aware steps against relearning: the radius of "
                                                         "the weight perturbation along the forget term's gradient, "
                                                         "a fraction of the weights' norm; 0: plain steps (default: "
                                                         "the method's)."),
           resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in OUT."),
           overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier run's outputs in OUT "
                                                                    "(refused without it)."),
           save_every: int = typer.Option(0, help="Checkpoint every N steps (0: never)."),
           param: Optional[List[str]] = typer.Option(None, "--param", "-p", help="Method parameter key=value (repeatable; `unlearn methods` lists them)."),
           calibration: Optional[List[str]] = typer.Option(None, "--calibration", "-c", help="Calibration setting key=value (repeatable): reference=twins|holdout, floor, min_tolerance, mean_se, every, max_epochs, max_backtracks, speed_up=budget|patience, retain_sample, repair_rounds, repair_by=set|subject, repair_tolerance, repair_auc, repair_twins=twins|holdout, repair_stop=answers|auc (docs/methods.md, Settings)."),
           lr: Optional[float] = typer.Option(None, help="Learning rate (default: the method's)."),
           epochs: Optional[float] = typer.Option(None, help="Fixed budget in epochs over the forget set (turns calibration off)."),
           steps: Optional[int] = typer.Option(None, help="Fixed budget in optimizer steps (turns calibration off)."),
           batch_size: Optional[int] = typer.Option(None),
           eval: bool = typer.Option(False, "--eval", help="Evaluate the result and write OUT/metrics.json."),
           oracle: Optional[str] = typer.Option(None, help="Oracle checkpoint or results JSON, for --eval."),
           benchmark: Optional[str] = typer.Option(None, help=BENCHMARK_HELP),
           split: Optional[str] = typer.Option(None, help=SPLIT_HELP),
           template: Optional[str] = typer.Option(None, help=TEMPLATE_HELP),
           system: Optional[str] = typer.Option(None, help=SYSTEM_HELP),
           zero_shot: bool = typer.Option(False, "--zero-shot", help="RWKU with --split TARGET and no corpus: forget "
                                                                     "what the model reveals about the target (located by probes).")):
    """Unlearn the forget set from a copy of MODEL.

    With no --steps/--epochs the run is calibrated: it stops when the forget set looks like data the
    model never saw (counterfactual twins, or the holdout split), keeps model utility (TOFU's, on
    retain, neighbours and world facts) at or above the floor, and prints why it stopped."""
    from . import api

    if oracle is not None and not eval:  # ignored until session 35
        raise ValueError("--oracle goes with --eval: it is what the evaluation compares the result with")
    if oracle is not None and benchmark in OWN_SCORES:
        raise ValueError(f"--oracle: the {benchmark} benchmark scores the model on its own, against no other model")
    try:
        run = api.forget(model, data, method, out, seed=seed, lora=lora, merge=merge, resume=resume, overwrite=overwrite,
                         save_every=save_every, params=assignments(param, "--param"),
                         calibration=assignments(calibration, "--calibration") or None,
                         benchmark=benchmark, split=split, template=template, system=system, zero_shot=zero_shot,
                         **_train_overrides(lr, steps, epochs, batch_size, saliency, sam))
    except KeyboardInterrupt:  # exit 130 without a word until session 37
        if api.is_main():
            console.print("\n" + _interrupted(out), highlight=False, markup=False, soft_wrap=True)  # below a cut bar
        raise typer.Exit(130) from None
    if not api.is_main():  # launched on several processes: the main one reports, and evaluates
        return
    console.print(api.run_summary(run), highlight=False)
    out_console.print(str(run))
    if eval:
        target = run / "model" if (run / "model").exists() else run / "adapter"
        # the source model is the subject: the verdict checks its power against it
        res = api.evaluate(target, data, oracle=oracle, subject=None if benchmark in OWN_SCORES else model,
                           out=run / "metrics.json", benchmark=benchmark, split=split, template=template, system=system)
        _print_results("unlearned", res, benchmark)


def _interrupted(out: Path) -> str:
    """What an interrupted `forget` says: whether the run in `out` can be continued (its checkpoints)."""
    steps = [int(p.name.split("-")[1]) for p in out.glob("checkpoints/step-*")]
    if steps:
        return f"interrupted: {out} keeps the run's checkpoint at step {max(steps)}; continue it with --resume"
    return f"interrupted: no checkpoint in {out} to continue from (--save-every N saves them)"


@app.command("eval")
@friendly
def eval_(model: str = typer.Option(..., help="Checkpoint dir or hub id."),
          data: Path = typer.Option(..., help="World directory or `datasets` directory."),
          oracle: Optional[str] = typer.Option(None, help="Oracle checkpoint or its results JSON (forget quality, "
                                               "PrivLeak). Without it the verdict judges forgetting against the "
                                               "forget questions' twins (forget_quality_twins)."),
          subject: Optional[str] = typer.Option(None, help="Subject checkpoint or results JSON (the verdict's power "
                                                "checks and utility reference)."),
          reference: Optional[str] = typer.Option(None, help="Reference model for the reference-based MIA."),
          suite: str = typer.Option("all", help="Comma-separated suites: tofu,muse,mia or all."),
          guard: Optional[Path] = typer.Option(None, help="Evaluate the model behind this guard directory."),
          out: Path = typer.Option(..., help="Results JSON to write."),
          seed: int = typer.Option(0),
          benchmark: Optional[str] = typer.Option(None, help=BENCHMARK_HELP),
          split: Optional[str] = typer.Option(None, help=SPLIT_HELP),
          template: Optional[str] = typer.Option(None, help=TEMPLATE_HELP),
          system: Optional[str] = typer.Option(None, help=SYSTEM_HELP)):
    """Evaluate a model: TOFU, MUSE and membership-inference metrics, with a verdict."""
    from . import api

    suites = ("tofu", "muse", "mia") if suite == "all" else tuple(s.strip() for s in suite.split(",") if s.strip())
    bad = set(suites) - {"tofu", "muse", "mia"}
    if bad:
        raise ValueError(f"--suite: unknown suite {sorted(bad)[0]!r}; valid: tofu, muse, mia, all")
    res = api.evaluate(model, data, oracle=oracle, subject=subject, reference=reference, suites=suites, out=out,
                       benchmark=benchmark, split=split, template=template, system=system, guard=guard)
    _print_results("model", res, benchmark)


def _print_results(name: str, res: dict, benchmark: str | None) -> None:
    """A benchmark's own results (WMDP's accuracies, RWKU's probes) as JSON; else the headline table
    (forget --eval printed an empty table for WMDP and RWKU until session 35)."""
    if benchmark in OWN_SCORES:
        out_console.print_json(data={k: v for k, v in res.items() if k not in ("info", "per_sample")})  # in --out
    else:
        _print_headline({name: res})


@app.command()
def methods(as_json: bool = typer.Option(False, "--json", help="JSON output.")):
    """List the unlearning methods: each setting (--param) with its type, default and meaning."""
    from .methods import list_methods

    if as_json:
        out_console.print_json(json.dumps([{"name": m.name, "description": m.description, "needs_retain": m.needs_retain,
                                            "train": m.train_defaults,
                                            "params": [dict(zip(("name", "type", "default", "doc"), f)) for f in m.fields()]}
                                           for m in list_methods()]))
        return
    table = Table(title="methods (settings: --param name=value; lr and budget: --lr, --steps/--epochs)")
    for col in ("name", "description", "setting", "type", "default", "meaning"):
        table.add_column(col)
    for m in list_methods():
        rows = [(n, t, str(d), doc) for n, t, d, doc in m.fields()] or [("–", "", "", "")]
        extra = "".join(f", {k} {m.train_defaults[k]}" for k in ("saliency", "sam") if m.train_defaults.get(k))
        lr = (f" (lr {m.train_defaults.get('lr')}{extra}"
              f"{', needs retain' if m.needs_retain else ''})")
        for i, row in enumerate(rows):
            table.add_row(m.name if i == 0 else "", m.description + lr if i == 0 else "", *row,
                          end_section=i == len(rows) - 1)
    out_console.print(table)


@app.command()
@friendly
def report(inputs: List[Path] = typer.Argument(..., help="Run directories or metrics JSON files (`unlearn demo`, "
                                                         "`unlearn forget --eval`, `unlearn eval`)."),
           html: Optional[Path] = typer.Option(None, help="Write the self-contained HTML report (plots, per-record "
                                                          "table) of every input here."),
           out: Optional[Path] = typer.Option(None, help="Markdown report path (default without --html: report.md "
                                                         "beside the JSON).")):
    """Write a human-readable report: an HTML page with plots (--html) and/or a Markdown summary.
    A deployment home (`unlearn home init`) gives its ledger and one page per certificate."""
    from . import api
    from .report import load_run, write_report

    if html is not None and len(inputs) == 1 and api.is_home(inputs[0]):
        out_console.print(str(api.report_home(inputs[0], html)))
        return
    if out is not None and len(inputs) > 1:  # before the page is written (it was, then this failed)
        raise ValueError("a Markdown report takes one input; pass --html OUT.html alone for several")
    if html is not None:
        out_console.print(str(api.report(inputs, html)))
    if out is not None or html is None:
        if len(inputs) > 1:
            raise ValueError("a Markdown report takes one input; pass --html OUT.html for several")
        run = load_run(inputs[0])
        data = {"models": run.models, "attacks": run.attacks, "config": run.config}
        if out is not None and out.resolve() == run.source.resolve():
            raise ValueError(f"--out {out}: is the report's input; write the report to another file")
        out_console.print(str(write_report(data, out or run.source.with_name("report.md"),
                                           source=f"`{run.source.resolve()}`", rerun=None)))


@app.command()
@friendly
def compare(runs: List[Path] = typer.Argument(..., help="Run directories or metrics JSON files to put side by side."),
            html: Path = typer.Option(..., help="The HTML page to write.")):
    """Compare methods or seeds side by side in one HTML page (each run's unlearned model, one subject and oracle)."""
    from . import api

    out_console.print(str(api.compare(runs, html)))


def _print_headline(models: dict) -> None:
    """The headline metrics of each model, and each model's verdict below them."""
    from .report import headline_table
    from .report.markdown import verdict_rows

    table = Table()
    table.add_column("metric")
    for n in models:
        table.add_column(n, justify="right")
    for row in headline_table(models):
        table.add_row(*row)
    out_console.print(table)
    for n, res in models.items():
        for aspect, mark, why in verdict_rows(res.get("verdict") or {}):
            out_console.print(f"verdict ({n}) {aspect}: {mark}" + (f" — {why}" if why else ""), highlight=False,
                              markup=False)


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
