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
    the forget people, side by side. ~50 s on two cores, shared by every test that needs them."""
    from unlearnkit import api

    root = tmp_path_factory.mktemp("tiny")
    data = api.world(root / "world", seed=TEST_SEED, n_people=TEST_PEOPLE, forget_fraction=TEST_FORGET)
    models = {"subject": root / "subject", "oracle": root / "oracle"}
    api.train_pair(data, models, seed=TEST_SEED, progress=False)
    return TinyWorld(data, models["subject"], models["oracle"])


@pytest.fixture(scope="session")
def tiny_results(tiny_world):
    """Evaluation results of the oracle (against itself) and the subject (against the oracle)."""
    from unlearnkit import api

    oracle = api.evaluate(tiny_world.oracle_dir, tiny_world.data_dir, oracle="self")
    subject = api.evaluate(tiny_world.subject_dir, tiny_world.data_dir, oracle=oracle)
    return {"oracle": oracle, "subject": subject}
