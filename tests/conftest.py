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

TEST_PEOPLE = 20
TEST_SEED = 0
TEST_TRAIN = dict(epochs=30, batch_size=16)  # a smaller world needs more passes to memorise


@dataclass
class TinyWorld:
    data_dir: Path
    subject_dir: Path
    oracle_dir: Path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> TinyWorld:
    """A 20-person world (2 forget people), a subject trained on it and an oracle trained without
    the forget people. ~1 minute on two cores, shared by every test that needs trained models."""
    from unlearnkit import api

    root = tmp_path_factory.mktemp("tiny")
    data = api.world(root / "world", seed=TEST_SEED, n_people=TEST_PEOPLE)
    subject = api.finetune(data, root / "subject", seed=TEST_SEED, progress=False, **TEST_TRAIN)
    oracle = api.finetune(data, root / "oracle", seed=TEST_SEED, without_forget=True, progress=False, **TEST_TRAIN)
    return TinyWorld(data, subject, oracle)


@pytest.fixture(scope="session")
def tiny_results(tiny_world):
    """Evaluation results of the oracle (against itself) and the subject (against the oracle)."""
    from unlearnkit import api

    oracle = api.evaluate(tiny_world.oracle_dir, tiny_world.data_dir, oracle="self")
    subject = api.evaluate(tiny_world.subject_dir, tiny_world.data_dir, oracle=oracle)
    return {"oracle": oracle, "subject": subject}
