"""Registry of unlearning methods. A method is a loss with typed settings; everything else is shared.

A method module declares its hyper-parameters as one `Params` subclass (pydantic: types, bounds,
choices and a description per field, validated once, where the settings enter) and registers its
loss:

    class GAParams(Params):
        '''Gradient ascent has no settings of its own.'''

    @register("ga", GAParams, "Gradient ascent on the forget set", train=dict(lr=2e-4))
    def loss(model, batch, ctx): ...

A loss returns `(loss, logs, forget)`: the loss to minimise, detached numbers for the log, and its
forget term alone, the part a sharpness-aware step (`--sam`, `train.TrainConfig.sam`) ascends.

`batch["forget"]` (and `batch["retain"]` when `needs_retain`) hold `input_ids`, `attention_mask`,
`labels` and `index`. `ctx` is a `Context`: the validated `params`, the run's `seed`, `pad_id`, the
`tokenizer`, the forget stream as text with each person's strangers (`forget_text`, `strangers`,
`template`: for a method that asks the model about someone else), and `cache`, whatever the
method's `prepare(model, streams, ctx)` returned (reference log-probs, frozen activations),
computed once before training so no second model stays in memory.
"""
from __future__ import annotations

import importlib
import pkgutil
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError


class Params(BaseModel):
    """A method's hyper-parameters. Unknown names and values of the wrong type or outside their
    choices are errors that list what is valid."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Context:
    """What a loss sees besides the model and the batch."""
    params: Params
    seed: int = 0
    pad_id: int = 0
    tokenizer: Any = None
    cache: Any = None
    # the forget stream as text, example by example (prompts, answers, subjects), and each subject's
    # strangers: names nobody in the data has, made as the calibration's twins are but from the run's
    # seed + 1 (`unlearning._strangers`). None for data without people (a benchmark's documents).
    forget_text: tuple | None = None
    strangers: dict | None = None
    template: Any = None


@dataclass(frozen=True)
class Method:
    name: str
    loss: Callable
    description: str
    params_type: type[Params]
    train_defaults: dict = field(default_factory=dict)   # TrainConfig fields (lr, batch_size, ...)
    needs_retain: bool = False
    prepare: Callable | None = None                      # (model, streams, ctx) -> cache
    trainable: Callable | None = None                    # (model, params) -> None: freeze what must not train

    def params(self, overrides: dict | None = None) -> Params:
        """The method's settings with `overrides` applied, validated; a bad one is a one-line ValueError."""
        try:
            return self.params_type(**(overrides or {}))
        except ValidationError as e:
            raise ValueError(describe(f"method {self.name!r}", self.params_type, e)) from None

    def fields(self) -> list[tuple[str, str, Any, str]]:
        """(name, type, default, description) of every setting, for `unlearn methods`."""
        return [(n, _type_name(f.annotation), f.default, f.description or "")
                for n, f in self.params_type.model_fields.items()]


def _type_name(tp) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(map(str, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def describe(owner: str, params_type: type[BaseModel], err: ValidationError) -> str:
    """One line for the first error of a settings model: which setting, what was wrong, what is valid."""
    e = err.errors()[0]
    name = ".".join(str(x) for x in e["loc"]) or "?"
    fields = params_type.model_fields
    if e["type"] == "extra_forbidden":
        valid = ", ".join(fields) or "none"
        return f"{owner} has no parameter {name!r}; its parameters: {valid}"
    f = fields.get(name)
    expected = f" (expected {_type_name(f.annotation)})" if f is not None else ""
    return f"{owner}, parameter {name}={e.get('input')!r}: {e['msg']}{expected}"


REGISTRY: dict[str, Method] = {}


def register(name: str, params: type[Params], description: str, *, train: dict | None = None,
             needs_retain: bool = False, prepare=None, trainable=None):
    def deco(fn):
        REGISTRY[name] = Method(name, fn, description, params, dict(train or {}), needs_retain, prepare, trainable)
        return fn
    return deco


def _load_all() -> None:
    from . import __path__ as pkg_path

    for mod in pkgutil.iter_modules(pkg_path):
        if mod.name not in {"registry", "cache"}:
            importlib.import_module(f"{__package__}.{mod.name}")


def get_method(name: str) -> Method:
    """The registered method `name`; else a one-line ValueError listing the valid ones, the one message
    for the API, the CLI and a home's settings (a KeyError came quoted, and was no ValueError)."""
    _load_all()
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def list_methods() -> list[Method]:
    _load_all()
    return [REGISTRY[k] for k in sorted(REGISTRY)]
