"""`unlearn guard`: manage forget targets, calibrate the detector, serve a guarded model."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..shell import fail as _fail

app = typer.Typer(help="Inference-time unlearning: forget targets, detector calibration, an OpenAI-compatible server.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

GUARD_DIR = typer.Option(..., "--guard-dir", envvar="UNLEARN_GUARD_DIR",
                         help="Where targets and settings persist (env UNLEARN_GUARD_DIR).")


def _open(guard_dir: Path):
    from .guarded import Guard

    try:
        return Guard(guard_dir)
    except ValueError as e:
        _fail(str(e).splitlines()[0])


def _qa(items: list[str]) -> list[dict]:
    out = []
    for it in items:
        if "=>" not in it:
            _fail(f"--qa {it!r}: expected 'question => answer'")
        q, a = it.split("=>", 1)
        out.append({"question": q.strip(), "answer": a.strip()})
    return out


@app.command()
def add(guard_dir: Path = GUARD_DIR,
        subject: Optional[str] = typer.Option(None, help="Person or entity name."),
        alias: List[str] = typer.Option([], help="Another name for the subject (repeatable)."),
        fact: List[str] = typer.Option([], help="A fact sentence (repeatable)."),
        qa: List[str] = typer.Option([], help="'question => answer' (repeatable)."),
        document: List[Path] = typer.Option([], help="A text file to forget (repeatable)."),
        forbid: List[str] = typer.Option([], help="A string the model must never produce for this target."),
        action: Optional[str] = typer.Option(None, help="refuse | forbid | pseudonymise | icu (default: the guard's)."),
        world: Optional[Path] = typer.Option(None, help="Add one target per person of a world directory split."),
        split: str = typer.Option("forget", help="With --world: which split's people."),
        jsonl: Optional[Path] = typer.Option(None, "--jsonl", help="A JSONL file of targets (Target fields)."),
        target_id: Optional[str] = typer.Option(None, "--id", help="Id for the new target (default: generated).")):
    """Add forget targets; prints their ids."""
    from .from_world import targets_from_world
    from .targets import ACTIONS, as_target

    if action is not None and action not in ACTIONS:
        _fail(f"--action {action!r}: choose one of {', '.join(ACTIONS)}")
    targets: list = []
    if world is not None:
        from ..data.io import DataError, load_world

        try:
            targets += targets_from_world(load_world(world), action=action, split=split)
        except (DataError, ValueError) as e:
            _fail(str(e))
    if jsonl is not None:
        from ..data.io import DataError, iter_jsonl

        first_on: dict[str, int] = {}
        try:  # as a world's JSONL is read (bad UTF-8 was a traceback, a byte-order mark or a U+2028
            for where, n, obj in iter_jsonl(jsonl, objects=True):  # in a string "malformed", until session 37)
                try:  # here, where the line is known (the store's checks name no line)
                    t = as_target(obj)
                except ValueError as e:
                    _fail(f"{where}: {e}")
                if (first := first_on.setdefault(t.id, n)) != n:
                    _fail(f"{where}: field 'id': duplicate target id {t.id!r} (first on line {first})")
                targets.append(t)
        except DataError as e:
            _fail(str(e))
    if subject is not None or alias or fact or qa or document:  # an empty --subject is named as such
        # ("nothing to add" until session 36), by the target's own check
        docs = []
        for d in document:
            if not d.is_file():
                _fail(f"{d}: file not found")
            docs.append(d.read_text())
        t = {"subject": subject, "aliases": alias, "facts": fact, "qa": _qa(qa), "documents": docs,
             "forbidden": forbid, "action": action}
        if target_id:
            t["id"] = target_id
        targets.append({k: v for k, v in t.items() if v is not None})
    if not targets:
        _fail("nothing to add: give --subject/--fact/--qa/--document, --world or --jsonl")
    g = _open(guard_dir)
    had = {t.subject.casefold(): t.id for t in g.list() if t.subject}
    try:
        added = g.add_many(targets)
    except ValueError as e:
        _fail(str(e))
    except KeyError as e:
        _fail(e.args[0])
    for t in added:
        typer.echo(t.id)
        if t.subject and t.subject.casefold() in had:  # allowed (other facts, another action), but said
            typer.echo(f"note: {t.subject!r} was a target already ({had[t.subject.casefold()]}); both are kept", err=True)


@app.command()
def remove(target_id: List[str] = typer.Argument(..., help="Target id(s)."), guard_dir: Path = GUARD_DIR):
    """Remove targets by id."""
    g = _open(guard_dir)
    for tid in target_id:
        try:
            g.remove(tid)
        except KeyError as e:
            _fail(e.args[0])
        typer.echo(f"removed {tid}")


@app.command("list")
def list_(guard_dir: Path = GUARD_DIR, as_json: bool = typer.Option(False, "--json", help="JSONL output.")):
    """List targets (id, action, subject, counts)."""
    if not (guard_dir / "targets.jsonl").exists():
        if not guard_dir.is_dir():
            _fail(f"{guard_dir}: guard directory not found")
    g = _open(guard_dir)
    for t in g.list():
        if as_json:
            typer.echo(t.model_dump_json())
        else:
            typer.echo(f"{t.id}\t{g.action_for(t)}\t{t.label}\tqa={len(t.qa)} facts={len(t.facts)} docs={len(t.documents)}")


@app.command()
def calibrate(guard_dir: Path = GUARD_DIR,
              world: Optional[Path] = typer.Option(None, help="Benign = retain + neighbour questions (and their "
                                                              "held-out paraphrases); positives = forget paraphrases."),
              benign: Optional[Path] = typer.Option(None, help="A text file of benign prompts, one per line."),
              false_refusal: float = typer.Option(0.01, help="Target false-refusal rate on the benign prompts."),
              action: Optional[str] = typer.Option(None, help="Also set the default action: refuse | forbid | pseudonymise | icu.")):
    """Set the detection threshold to a false-refusal rate on benign prompts."""
    from .targets import ACTIONS

    groups: dict[str, list[str]] = {}
    positives = None
    if world is not None:
        from ..data.io import DataError, load_world

        try:
            w = load_world(world)
        except DataError as e:
            _fail(str(e))
        for split in ("retain", "neighbours"):  # the rate must hold in each
            recs = getattr(w, split)
            groups[split] = [r.question for r in recs] + [r.paraphrased_question for r in recs if r.paraphrased_question]
        positives = [r.paraphrased_question for r in w.forget if r.paraphrased_question]
    if benign is not None:
        if not benign.is_file():
            _fail(f"{benign}: file not found")
        groups[benign.name] = [ln.strip() for ln in benign.read_text().splitlines() if ln.strip()]
    prompts = {k: v for k, v in groups.items() if v}
    if not prompts:
        _fail("no benign prompts: give --world or --benign")
    if not 0 <= false_refusal < 1:
        _fail(f"--false-refusal must be in [0, 1), got {false_refusal}")
    if not guard_dir.is_dir():  # as `list` says (it made an empty guard there)
        _fail(f"{guard_dir}: guard directory not found")
    g = _open(guard_dir)
    if not g.list():  # it reported recall 0.0 and a threshold against nothing
        _fail(f"{guard_dir}: the guard has no targets to calibrate against; add them first (`unlearn guard add`)")
    if action is not None:
        if action not in ACTIONS:
            _fail(f"--action {action!r}: choose one of {', '.join(ACTIONS)}")
        g.settings.default_action = action
    cal = g.calibrate(prompts, false_refusal, positives=positives)
    typer.echo(json.dumps(cal.__dict__, indent=2))


@app.command()
def serve(model: str = typer.Option(..., help="Checkpoint dir or hub id."),
          port: int = typer.Option(8000, help="TCP port."),
          host: str = typer.Option("127.0.0.1", help="Interface to bind (loopback by default)."),
          guard_dir: Optional[Path] = typer.Option(None, "--guard-dir", envvar="UNLEARN_GUARD_DIR",
                                                   help="Where targets persist (in memory if omitted)."),
          name: Optional[str] = typer.Option(None, help="Model name in /v1/models (default: the directory name)."),
          log_level: str = typer.Option("info"),
          template: Optional[str] = typer.Option(None, help="Prompt format: raw | chat (the tokenizer's chat template) | a format string with {question}; default: the one the checkpoint was trained in, else raw."),
          system: Optional[str] = typer.Option(None, help="System prompt, with --template chat.")):
    """Serve the guarded model with an OpenAI-compatible API (admin token: UNLEARN_GUARD_TOKEN)."""
    from .server import serve as _serve

    if not os.environ.get("UNLEARN_GUARD_TOKEN"):
        typer.echo("warning: UNLEARN_GUARD_TOKEN is not set; the /v1/forget admin routes are disabled", err=True)
    try:
        from ..data.templates import parse_template

        _serve(model, port=port, host=host, guard_dir=str(guard_dir) if guard_dir else None,
               model_name=name, log_level=log_level, template=parse_template(template, system, model))
    except Exception as e:  # noqa: BLE001 - model load errors etc. as one line
        from ..models.load import ModelLoadError

        if isinstance(e, (ModelLoadError, FileNotFoundError, ValueError, OSError)):
            _fail(str(e).splitlines()[0])
        raise


if __name__ == "__main__":
    sys.exit(app())
