"""What every `unlearn` verb shares: an expected failure is one line on stderr and exit code 2."""
from __future__ import annotations

import functools
import json
import sys

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(msg: str) -> None:
    from rich.markup import escape

    # escaped: a message names tables as "dir[forget10_perturbed]", which rich took for a style and dropped
    console.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _expected() -> tuple[type[BaseException], ...]:
    from .data.io import DataError

    kinds = [DataError, ValueError, FileNotFoundError, KeyError]  # HomeError, LedgerError: ValueErrors
    if "unlearnkit.models.load" in sys.modules:  # only a verb that loaded a model can fail to load one;
        kinds.append(sys.modules["unlearnkit.models.load"].ModelLoadError)  # `request add` loads no torch
    return tuple(kinds)


def friendly(fn):
    """Expected failures (bad data, settings, paths, models) as one line; anything else raises."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not isinstance(e, _expected()):
                raise
            msg = (e.args[0] if isinstance(e, KeyError) and e.args else str(e)) or type(e).__name__
            fail(str(msg).splitlines()[0])
    return wrapper


def assignments(items, option: str) -> dict:
    """The `key=value` items of a repeatable option as a dict. A value is read as JSON where it is
    JSON (numbers, including 1e-3, true/false, null, lists), as YAML where it opens a flow mapping or
    list (`{retain: 64}`), else kept as text."""
    import yaml

    out = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"{option} {item!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            try:
                out[key] = yaml.safe_load(value) if value.lstrip()[:1] in ("{", "[") else value
            except yaml.YAMLError:
                out[key] = value
    return out
