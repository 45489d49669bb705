"""`unlearn attack`: try to bring forgotten knowledge back and report how much came back.

Mounted by `unlearnkit.cli` as `app.command("attack")(friendly(attack))`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer




# the options of one attack kind or two (fraction), and which: given to another kind, an error
OWNERS = {"steps": ("relearn",), "lr": ("relearn",), "fraction": ("relearn", "incontext"), "source": ("relearn",),
          "bits": ("quantize",), "group_size": ("quantize",), "embeddings": ("quantize",), "probes": ("probes",), "shots": ("probes",)}


def _check_kind_options(ctx: typer.Context, kind: str) -> None:
    """An option of another attack, given on the command line, is refused: `--kind quantize --steps
    50` ran without a word about the steps until session 36."""
    for name, kinds in OWNERS.items():
        if kind not in kinds and getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE":
            raise ValueError(f"--{name.replace('_', '-')} is an option of the {' and '.join(kinds)} attack"
                             f"{'s' if len(kinds) > 1 else ''}, not of --kind {kind}")


def attack(ctx: typer.Context,
           model: str = typer.Option(..., help="Checkpoint dir (e.g. RUN/model) or hub id of the unlearned model; never modified."),
           data: Path = typer.Option(..., help="World directory with forget.jsonl."),
           kind: str = typer.Option(..., help="Attack: relearn | quantize | probes | incontext."),
           oracle: Optional[str] = typer.Option(None, help="Oracle checkpoint, attacked the same way: the baseline of what the attack itself teaches."),
           subject: Optional[str] = typer.Option(None, help="Subject checkpoint (before unlearning); default: the `model` of RUN/config.yaml, or with --guard the model without its guard."),
           guard: Optional[Path] = typer.Option(None, help="Attack the model behind this guard directory (`unlearn guard`); "
                                                "weight attacks change the weights behind the guard."),
           out: Path = typer.Option(..., help="Results JSON to write."),
           seed: int = typer.Option(0, help="Seed for the data split, option order and relearning."),
           steps: int = typer.Option(20, help="relearn: optimizer steps."),
           lr: float = typer.Option(3e-4, help="relearn: learning rate."),
           fraction: float = typer.Option(0.5, help="relearn: fraction of forget people/facts (or neighbours) relearned; incontext: fraction of each person's facts put in the prompt."),
           source: str = typer.Option("people", help="relearn: people | facts | neighbours | retain."),
           bits: str = typer.Option("8,4", help="quantize: comma-separated bit widths."),
           group_size: int = typer.Option(0, help="quantize: input columns per scale (0: one scale per output channel)."),
           embeddings: bool = typer.Option(False, "--embeddings", help="quantize: the input embedding (and an output head tied to it) too."),
           probes: str = typer.Option("all", help="probes: comma-separated kinds (paraphrase, fill_blank, multiple_choice, conversation, many_shot, step_by_step) or all."),
           shots: int = typer.Option(8, help="probes: retain examples in the many-shot prompt."),
           template: Optional[str] = typer.Option(None, help="Prompt format: raw | chat (the tokenizer's chat template) | a format string with {question}; default: the one the checkpoint was trained in, else raw."),
           system: Optional[str] = typer.Option(None, help="System prompt, with --template chat.")):
    """Attack an unlearned model (relearning, quantization, probes, facts in context) and report the forget
    metrics after the attack and the recovery: the share of the subject-vs-model gap the attack closes."""
    from rich.console import Console
    from rich.table import Table

    from .. import runinfo
    from . import check_attack, run_attack
    from .probes import KINDS as PROBE_KINDS

    from ..data.templates import parse_template

    check_attack(kind)
    _check_kind_options(ctx, kind)
    from ..models.load import check_results_out

    check_results_out(out, model=model, subject=subject, oracle=oracle, guard=guard, data=data)
    tpl = parse_template(template, system, model)
    opts: dict = {
        "relearn": dict(steps=steps, lr=lr, fraction=fraction, source=source),
        "quantize": dict(bits=bits, group_size=group_size, embeddings=embeddings),
        "probes": dict(kinds=list(PROBE_KINDS) if probes == "all" else probes, shots=shots),
        "incontext": dict(fraction=fraction),
    }[kind]
    target = model
    if guard is not None:
        from ..guard.guarded import guarded_lm

        target = guarded_lm(model, guard, template=tpl)
    res = run_attack(kind, target, data, subject=subject if subject is not None or guard is None else model,
                     oracle=oracle, seed=seed, template=tpl, **opts)
    runinfo.write_json(out, res)
    table = Table(title=f"attack: {kind}")
    for col in ("variant", "rouge before", "rouge after", "prob before", "prob after", "recovery", "oracle recovery"):
        table.add_column(col, justify="right", overflow="fold")  # a variant's name cut short says nothing
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for name, v in res["variants"].items():
        table.add_row(name, f(res["plain"]["model"]["forget_rouge"]), f(v["model"]["forget_rouge"]),
                      f(res["plain"]["model"]["forget_probability"]), f(v["model"]["forget_probability"]),
                      f((v.get("recovery") or {}).get("score")), f((v.get("oracle_recovery") or {}).get("score")))
    Console().print(table)
    for note in res["notes"]:
        Console(stderr=True).print(f"note: {note}", highlight=False)
    Console().print(f"recovery {f(res['recovery'])} ({res['recovery_variant']})   results: {out}")
