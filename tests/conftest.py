"""Session-wide fixtures: the embedded world and its tiny subject and oracle, trained once per session."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # workers side by side: one thread each, and for what they spawn
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# A smaller world than the demo's 60 people, with as many forget facts (6 people x 10 facts: the
# KS test behind forget quality needs them), trained with the default recipe.
TEST_PEOPLE = 30
TEST_FORGET = 0.2
TEST_SEED = 0


@dataclass
class TinyWorld:
    data_dir: Path
    subject_dir: Path
    oracle_dir: Path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> TinyWorld:
    """A 30-person world (6 forget people), a subject trained on it and an oracle trained without
    the forget people, side by side. ~40 s on two cores, built once per run: the first xdist worker
    to need it builds it in the workers' common temp dir while the other waits on the lock."""
    import shutil

    from filelock import FileLock

    from unlearnkit import api

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "tiny"
    models = {"subject": root / "subject", "oracle": root / "oracle"}
    with FileLock(f"{root}.lock"):
        if not (root / "built").is_file():
            shutil.rmtree(root, ignore_errors=True)
            data = api.world(root / "world", seed=TEST_SEED, n_people=TEST_PEOPLE, forget_fraction=TEST_FORGET)
            api.train_pair(data, models, seed=TEST_SEED, progress=False)
            (root / "built").touch()
    return TinyWorld(root / "world", models["subject"], models["oracle"])


@pytest.fixture(scope="session")
def simnpo_run(tiny_world, tmp_path_factory) -> Path:
    """SimNPO's calibrated run on `tiny_world` with a checkpoint every 3 steps, made once per test
    run (as `tiny_world` is): its method's test and the resume test read it; neither writes to it."""
    from filelock import FileLock

    from unlearnkit import api

    base = tmp_path_factory.getbasetemp()
    out = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "simnpo_run"
    with FileLock(f"{out}.lock"):
        if not (out / "calibration.json").is_file():
            api.forget(tiny_world.subject_dir, tiny_world.data_dir, "simnpo", out, save_every=3, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_results(tiny_world):
    """Evaluation results of the oracle (against itself) and the subject (against the oracle)."""
    from unlearnkit import api

    oracle = api.evaluate(tiny_world.oracle_dir, tiny_world.data_dir, oracle="self")
    subject = api.evaluate(tiny_world.subject_dir, tiny_world.data_dir, oracle=oracle)
    return {"oracle": oracle, "subject": subject}


def bench_script(name: str):
    """bench/NAME.py as a module: the benches are scripts, not a package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).parents[1] / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def load_bench():
    """`bench_script`: a test's way to load bench/NAME.py."""
    return bench_script


def past_output_check(guard, prompt: str, text: str, handled=frozenset()) -> str:
    """What a guard whose targets all `refuse` returns when the model answers `prompt` with `text`.
    The untrained test models' greedy answers hang on near-ties, so they differ between CPUs, and
    on some CPU one names a target (CI's once said "Bonsk Bonsk ...", a surname of the world): the
    output check then refuses, as it must."""
    from unlearnkit.guard import REFUSAL
    from unlearnkit.guard.output import find_leak

    return REFUSAL if find_leak(guard.detector, prompt, text, set(handled), "", guard.value_index()) else text


@pytest.fixture(scope="session")
def through_guard():
    """`past_output_check`, for the guard's tests."""
    return past_output_check
