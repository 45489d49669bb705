"""The embedded fictitious world: determinism, splits, perturbations, held-out templates."""

import json
import os
import re

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from unlearnkit.data import DocRecord, QARecord, build_world, generate_world, load_world  # noqa: E402
from unlearnkit.data.world import (  # noqa: E402
    N_TRAIN_TEMPLATES,
    TEMPLATES,
    check_heldout,
    heldout_fragments,
    training_texts,
)

QA = ("forget", "retain", "neighbours", "holdout", "world_facts")
PEOPLE = ("forget", "retain", "neighbours", "holdout")
FILES = [f"{s}.jsonl" for s in QA] + [f"{s}_docs.jsonl" for s in PEOPLE] + ["world.json"]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("w") / "world", seed=0)


@pytest.fixture(scope="module")
def splits():
    return generate_world(seed=0)


@pytest.fixture(scope="module")
def meta(world_dir):
    return json.loads((world_dir / "world.json").read_text())


def _read_all(d):
    return {f: (d / f).read_bytes() for f in FILES}


def test_files_written(world_dir):
    assert sorted(p.name for p in world_dir.iterdir()) == sorted(FILES)
    assert not [p for p in world_dir.parent.iterdir() if p.name.startswith(".")]  # no temp dirs


def test_same_seed_byte_identical(world_dir, tmp_path):
    again = build_world(tmp_path / "again", seed=0)
    assert _read_all(again) == _read_all(world_dir)


def test_different_seed_differs(world_dir, tmp_path):
    other = build_world(tmp_path / "other", seed=1)
    a, b = _read_all(world_dir), _read_all(other)
    assert all(a[f] != b[f] for f in FILES)


def test_existing_same_config_left_alone(world_dir):
    before = (world_dir / "world.json").stat().st_mtime_ns
    assert build_world(world_dir, seed=0) == world_dir
    assert (world_dir / "world.json").stat().st_mtime_ns == before


def test_existing_other_config_replaced(tmp_path):
    d = build_world(tmp_path / "w", seed=0, n_people=10)
    build_world(d, seed=3, n_people=10)
    assert json.loads((d / "world.json").read_text())["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_generate_matches_files(world_dir, splits):
    w = load_world(world_dir)
    for name, recs in splits.items():
        assert getattr(w, name) == recs


def test_default_counts(splits):
    counts = {k: len(v) for k, v in splits.items()}
    # 60 people: 6 forget, 6 holdout, 6 neighbours, 42 retain; 10 facts each (+1 relation for neighbours)
    assert counts == {"forget": 60, "retain": 420, "neighbours": 66, "holdout": 60, "world_facts": 30,
                      "forget_docs": 6, "retain_docs": 42, "neighbours_docs": 6, "holdout_docs": 6}


def test_splits_disjoint_by_person(splits, meta):
    subjects = {s: {r.subject for r in splits[s]} for s in PEOPLE}
    for i, a in enumerate(PEOPLE):
        for b in PEOPLE[i + 1:]:
            assert not subjects[a] & subjects[b], (a, b)
    ids = {s: {r.id.split("-")[0] for r in splits[s]} for s in PEOPLE}
    for p in meta["people"]:
        assert p["id"] in ids[p["split"]]
    for s in PEOPLE:  # docs cover exactly the people of their split
        assert {d.subject for d in splits[f"{s}_docs"]} == subjects[s]


def test_ids_unique(splits):
    ids = [r.id for recs in splits.values() for r in recs]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"(p\d{3}|w\d{2})-[a-z_]+", i) for i in ids)
    assert all(d.id.endswith("-bio") for s in PEOPLE for d in splits[f"{s}_docs"])


def test_names_unique_and_not_substrings(meta):
    names = [p["name"] for p in meta["people"]]
    assert len(set(names)) == len(names)
    for a in names:
        for b in names:
            if a != b:
                assert a not in b
    for p in meta["people"]:
        assert p["gender"] in ("f", "m")


def test_pronouns_consistent(splits, meta):
    gender = {p["name"]: p["gender"] for p in meta["people"]}
    for s in PEOPLE:
        for d in splits[f"{s}_docs"]:
            words = set(re.findall(r"[A-Za-z]+", d.text))
            wrong = {"He", "His", "he", "his"} if gender[d.subject] == "f" else {"She", "Her", "she", "her"}
            assert not words & wrong, d.text


def test_records_well_formed(splits):
    for s in QA:
        for r in splits[s]:
            assert isinstance(r, QARecord)
            assert len(r.alt_questions) == N_TRAIN_TEMPLATES - 1
            assert r.paraphrased_question and r.attribute
            assert len(r.phrasings()) == 3 and len(set(r.phrasings())) == 3
            assert all(len(q.split()) <= 12 for q in r.phrasings() + [r.paraphrased_question])
            assert r.answer in r.paraphrased_answer
            assert len(r.answer.split()) <= 4  # short: the value itself


def test_perturbed_answers_distinct(splits):
    for s in QA:
        for r in splits[s]:
            assert len(r.perturbed_answers) == 3
            assert len(set(r.perturbed_answers)) == 3
            for p in r.perturbed_answers:
                assert p != r.answer and p != r.paraphrased_answer
                assert r.answer not in p  # the true value never appears in a false answer


def test_n_perturbed_configurable():
    w = generate_world(seed=0, n_people=12, n_perturbed=5)
    assert all(len(set(r.perturbed_answers)) == 5 for r in w["forget"] + w["neighbours"])


def test_heldout_templates_never_in_training_text(splits):
    corpus = "\n".join(training_texts(splits)).lower()
    frags = heldout_fragments()
    assert len(frags) >= len(TEMPLATES)
    for f in frags:
        assert f.lower() not in corpus, f
    for s in QA:
        for r in splits[s]:
            assert r.paraphrased_question.lower() not in corpus
            assert r.paraphrased_question not in r.phrasings()
    check_heldout(splits)  # the generator's own check agrees


def test_heldout_check_catches_leak(splits):
    leaked = dict(splits)
    r = splits["retain"][0]
    leaked["retain"] = [r.model_copy(update={"alt_questions": [r.paraphrased_question]})] + splits["retain"][1:]
    with pytest.raises(ValueError):
        check_heldout(leaked)


def test_neighbours_reference_forget_people(splits, meta):
    forget_names = {r.subject for r in splits["forget"]}
    people = {p["name"]: p for p in meta["people"]}
    by_subject = {}
    for r in splits["neighbours"]:
        by_subject.setdefault(r.subject, []).append(r)
    assert by_subject
    for name, recs in by_subject.items():
        rel = [r for r in recs if r.attribute in ("sibling", "mentor", "colleague")]
        assert len(rel) == 1
        target = rel[0].answer
        assert target in forget_names
        assert name in rel[0].question
        # shares birthplace and employer with that forget person
        for attr in ("birthplace", "employer"):
            assert people[name]["attributes"][attr] == people[target]["attributes"][attr]
        # and the biography names them
        doc = next(d for d in splits["neighbours_docs"] if d.subject == name)
        assert target in doc.text


def test_holdout_people_never_in_training_text(splits):
    corpus = "\n".join(training_texts(splits))
    for name in {r.subject for r in splits["holdout"]}:
        assert name not in corpus
        assert name.split()[0] not in corpus and name.split()[1] not in corpus


def test_docs(splits):
    for s in PEOPLE:
        for d in splits[f"{s}_docs"]:
            assert isinstance(d, DocRecord)
            assert 60 <= len(d.text.split()) <= 150
            assert d.text.startswith(d.subject)


def test_docs_state_the_facts(splits):
    facts = {}
    for s in PEOPLE:
        for r in splits[s]:
            facts.setdefault(r.subject, []).append(r.answer)
    for s in PEOPLE:
        for d in splits[f"{s}_docs"]:
            assert all(a in d.text for a in facts[d.subject])


def test_world_facts(splits):
    wf = splits["world_facts"]
    assert len(wf) == 30
    assert {r.attribute for r in wf} == {"capital", "river", "currency"}
    people = {r.subject for s in PEOPLE for r in splits[s]}
    assert not {r.subject for r in wf} & people


def test_world_json(meta):
    assert meta["seed"] == 0 and meta["config"]["n_people"] == 60
    assert len(meta["people"]) == 60
    for p in meta["people"]:
        assert set(p) >= {"id", "name", "gender", "split", "attributes", "relations"}
        assert len(p["attributes"]) == 10
    for attr, t in meta["templates"].items():
        flags = [q["held_out"] for q in t["questions"]]
        assert flags.count(True) >= 1 and flags.count(False) == 3, attr


def test_small_and_tiny_worlds():
    w = generate_world(seed=5, n_people=20, forget_fraction=0.05)
    assert len({r.subject for r in w["forget"]}) == 1
    assert len({r.subject for r in w["neighbours"]}) == 2
    w = generate_world(seed=5, n_people=4, forget_fraction=0.01, holdout_fraction=0.25,
                       neighbour_fraction=0.25)
    assert len({r.subject for r in w["retain"]}) == 1
    with pytest.raises(ValueError):
        generate_world(n_people=3, holdout_fraction=0.5, neighbour_fraction=0.5)
