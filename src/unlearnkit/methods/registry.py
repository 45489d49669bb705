"""Registry of unlearning methods. A method is a loss; everything else is shared.

A method module defines `loss(model, batch, ctx) -> (scalar, logs)` and registers it:

    @register("ga", "Gradient ascent on the forget set", lr=1e-5)
    def loss(model, batch, ctx): ...

`batch["forget"]` (and `batch["retain"]` when `needs_retain`) hold `input_ids`, `attention_mask`,
`labels` and `index`. `ctx["params"]` holds the method's hyper-parameters (defaults overridable from
the CLI with `--param key=value`); `prepare(model, streams, ctx)` may fill caches in `ctx` once, before
training (reference log-probs, frozen activations), so no second model stays in memory.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

TRAIN_KEYS = {"lr", "steps", "epochs", "batch_size", "grad_accum", "warmup", "schedule", "weight_decay", "max_grad_norm"}


@dataclass
class Method:
    name: str
    loss: Callable
    description: str
    needs_retain: bool = False
    prepare: Callable | None = None
    train_defaults: dict = field(default_factory=dict)   # TrainConfig fields
    params: dict = field(default_factory=dict)           # the loss's own hyper-parameters
    trainable: Callable | None = None                    # model -> None: freeze what must not train


REGISTRY: dict[str, Method] = {}


def register(name: str, description: str, *, needs_retain: bool = False, prepare=None, trainable=None, **defaults):
    def deco(fn):
        train = {k: v for k, v in defaults.items() if k in TRAIN_KEYS}
        params = {k: v for k, v in defaults.items() if k not in TRAIN_KEYS}
        REGISTRY[name] = Method(name, fn, description, needs_retain, prepare, train, params, trainable)
        return fn
    return deco


def _load_all() -> None:
    from . import __path__ as pkg_path

    for mod in pkgutil.iter_modules(pkg_path):
        if mod.name not in {"registry"}:
            importlib.import_module(f"{__package__}.{mod.name}")


def get_method(name: str) -> Method:
    _load_all()
    if name not in REGISTRY:
        raise KeyError(f"unknown method {name!r}; valid methods: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def list_methods() -> list[Method]:
    _load_all()
    return [REGISTRY[k] for k in sorted(REGISTRY)]
