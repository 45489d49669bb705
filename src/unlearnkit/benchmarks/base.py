"""What a benchmark loader returns: what to evaluate and what to unlearn on."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..data.io import WorldData

Pairs = tuple  # (prompts, answers[, subjects]); an empty prompt means a document; subjects name each pair's
               # person, whose name training leaves out of the forget loss (`data.batching.encode_pairs`)


@dataclass
class Benchmark:
    """One benchmark split, read from a local copy of its published files.

    world: the evaluation set as a world, run through `unlearnkit.evaluate.evaluate` with `suites`
      and `eval_options`; None where the world model does not fit (WMDP's multiple choice), which
      `run(lm)` evaluates instead.
    forget / retain: the (prompt, answer) pairs `unlearn forget` trains on, read on demand (a
      benchmark can be evaluated without its training files).
    """

    name: str
    split: str
    world: WorldData | None = None
    suites: tuple[str, ...] = ()
    eval_options: dict[str, Any] = field(default_factory=dict)
    run: Callable[[Any], dict] | None = None
    forget: Callable[[], Pairs] | None = None
    retain: Callable[[], Pairs] | None = None
    convert_oracle: Callable[[dict], dict] | None = None  # a published retain model's saved results -> a result dict

    def describe(self) -> dict:
        """What to record beside the results."""
        return {"name": self.name, "split": self.split, "suites": list(self.suites)}
