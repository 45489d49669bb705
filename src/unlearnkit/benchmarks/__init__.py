"""Published unlearning benchmarks read from a local directory in their hub layouts: TOFU, MUSE,
WMDP and RWKU (docs/benchmarks.md). `load_benchmark(name, dir, split)` returns a `Benchmark`: a
world for `unlearnkit.evaluate` (TOFU, MUSE) or an evaluation of its own (WMDP's multiple
choice, RWKU's probes), and the forget and retain sets `unlearn forget` trains on."""
from __future__ import annotations

from pathlib import Path

from . import muse, rwku, tofu, wmdp
from .base import Benchmark

LOADERS = {"tofu": tofu.load, "muse": muse.load, "wmdp": wmdp.load, "rwku": rwku.load}
BENCHMARKS = tuple(LOADERS)


def check_split(benchmark: str | None, split: str | None) -> None:
    """`--split` names a benchmark's forget set: without `--benchmark` it was ignored (session 35)."""
    if benchmark is None and split is not None:
        raise ValueError(f"--split {split!r} goes with --benchmark ({', '.join(BENCHMARKS)}); a world directory's "
                         f"forget set is its forget.jsonl")


def load_benchmark(name: str, root: str | Path, split: str | None = None) -> Benchmark:
    """The benchmark `name` (tofu | muse | wmdp | rwku) from its files under `root`."""
    if name not in LOADERS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return LOADERS[name](root, split)


__all__ = ["BENCHMARKS", "Benchmark", "check_split", "load_benchmark"]
