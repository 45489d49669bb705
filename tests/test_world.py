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


# ----------------------------------------------------------------------------- other shapes

from unlearnkit.data.world import PERSON_ATTRIBUTES, SENTENCES, SHAPES, shape_options  # noqa: E402


def _person_splits(w):
    return [r for s in PEOPLE for r in w[s]]


def test_default_shape_is_todays_world(world_dir, tmp_path):
    from unlearnkit import api

    explicit = build_world(tmp_path / "explicit", seed=0, answer_style="short", docs=True, n_attributes=10,
                           names="default")
    assert _read_all(explicit) == _read_all(world_dir)
    before = (world_dir / "world.json").stat().st_mtime_ns
    assert api.world(world_dir, seed=0, shape="default") == world_dir  # recognised, left alone
    assert (world_dir / "world.json").stat().st_mtime_ns == before
    config = json.loads((world_dir / "world.json").read_text())["config"]
    assert not set(config) & {"answer_style", "docs", "n_attributes", "names"}


def test_sentence_answers_name_the_person_in_several_frames():
    short = generate_world(seed=0, n_people=20)
    sent = generate_world(seed=0, n_people=20, answer_style="sentence")
    frames = {}
    for s in QA:
        assert len(sent[s]) == len(short[s])
        for r, v in zip(sent[s], short[s]):
            value = v.answer  # the same seed gives the same people and values in either style
            assert (r.id, r.subject, r.attribute, r.question) == (v.id, v.subject, v.attribute, v.question)
            assert r.subject in r.answer and value in r.answer and r.answer.endswith(".")
            assert r.answer != value and r.answer != r.paraphrased_answer
            assert r.subject in r.paraphrased_answer and value in r.paraphrased_answer
            frames.setdefault(r.attribute, set()).add(r.answer.replace(r.subject, "{name}").replace(value, "{value}"))
    # no one fixed frame: every person attribute is answered in more than one wording
    for a in PERSON_ATTRIBUTES:
        assert len(frames[a]) >= 2, a
    assert all(len(SENTENCES[a]) >= 3 for a in SENTENCES)


def test_sentence_perturbed_answers_share_the_paraphrased_wording():
    short = generate_world(seed=2, n_people=20)
    sent = generate_world(seed=2, n_people=20, answer_style="sentence")
    for s in QA:
        for r, v in zip(sent[s], short[s]):
            def a_an(t):  # "a potter" / "an archivist": the article goes with the value
                return t.replace(" an ", " a ")

            pre, post = a_an(r.paraphrased_answer).split(v.answer, 1)
            assert len(set(r.perturbed_answers)) == len(r.perturbed_answers) == 3
            for p in map(a_an, r.perturbed_answers):
                assert p.startswith(pre) and p.endswith(post), (r.paraphrased_answer, p)
                other = p[len(pre):len(p) - len(post)]
                assert other and other != v.answer and v.answer not in p


def test_no_docs(tmp_path):
    d = build_world(tmp_path / "w", seed=0, n_people=12, docs=False)
    assert not list(d.glob("*_docs.jsonl"))
    w = load_world(d)
    assert w.forget and w.training_docs() == [] and w.holdout_docs == []
    meta = json.loads((d / "world.json").read_text())
    assert meta["config"]["docs"] is False and not [k for k in meta["counts"] if k.endswith("_docs")]
    # the QA splits are those of the world with biographies
    full = generate_world(seed=0, n_people=12)
    assert all(getattr(w, s) == full[s] for s in QA)


def test_replacing_a_world_with_docs_by_one_without_removes_them(tmp_path):
    d = build_world(tmp_path / "w", seed=0, n_people=12)
    assert list(d.glob("*_docs.jsonl"))
    build_world(d, seed=0, n_people=12, docs=False)
    assert not list(d.glob("*_docs.jsonl"))


@pytest.mark.parametrize("n", [1, 3, 7])
def test_n_attributes(n):
    w = generate_world(seed=1, n_people=20, n_attributes=n)
    wanted = set(PERSON_ATTRIBUTES[:n])  # the first n, in PERSON_ATTRIBUTES order
    by_person = {}
    for r in _person_splits(w):
        by_person.setdefault(r.subject, set()).add(r.attribute)
    assert len(by_person) == 20
    for name, attrs in by_person.items():
        assert attrs - {"sibling", "mentor", "colleague"} == wanted, name
    for s in ("forget", "retain", "holdout"):
        assert len(w[s]) == n * len({r.subject for r in w[s]})
    for d in w["forget_docs"]:  # biographies state exactly those facts
        assert len(re.findall(r"\.(?:\s|$)", d.text)) == n


def test_shapes_registry():
    assert SHAPES["default"] == {}
    for name in SHAPES:
        w = generate_world(seed=0, **shape_options(name))
        check_heldout(w)
    large = generate_world(seed=0, **shape_options("large"))
    people = {r.subject for r in _person_splits(large)}
    assert len(people) == 200 and len({r.subject for r in large["forget"]}) == 20
    wide = generate_world(seed=0, **shape_options("wide"))  # membership inference on 1000 answers
    assert len(wide["forget"]) == 1000 and len({r.subject for r in wide["forget"]}) == 100
    assert "forget_docs" not in wide
    alt = generate_world(seed=0, **shape_options("wide_alt_names"))  # the same size, the other names
    assert len(alt["forget"]) == 1000 and "forget_docs" not in alt
    assert not {r.subject for r in alt["forget"]} & {r.subject for r in wide["forget"]}
    assert shape_options("sentences", docs=True, n_people=None) == {"answer_style": "sentence", "docs": True}
    with pytest.raises(ValueError, match="shape must be one of"):
        shape_options("huge")


def test_shape_determinism_and_other_names(tmp_path):
    opts = dict(n_people=16, answer_style="sentence", docs=False, n_attributes=4, names="alt")
    a = build_world(tmp_path / "a", seed=4, **opts)
    b = build_world(tmp_path / "b", seed=4, **opts)
    c = build_world(tmp_path / "c", seed=5, **opts)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert all((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    def name_words(d):
        return {w for p in json.loads((d / "world.json").read_text())["people"] for w in p["name"].split()}

    assert not name_words(a) & name_words(build_world(tmp_path / "d", seed=4, n_people=16))


def test_numpy_numbers_are_numbers(tmp_path):
    """A notebook's numpy integers: a TypeError from random.Random, or "must be between 1 and 10, got
    np.int64(3)", until session 36; the world is the one of the plain ints."""
    import numpy as np

    a = build_world(tmp_path / "a", seed=np.int64(1), n_people=np.int64(12), n_attributes=np.int64(3))
    b = build_world(tmp_path / "b", seed=1, n_people=12, n_attributes=3)
    assert (a / "forget.jsonl").read_bytes() == (b / "forget.jsonl").read_bytes()


@pytest.mark.parametrize("kwargs,field", [
    ({"answer_style": "long"}, "answer_style"), ({"n_attributes": 0}, "n_attributes"),
    ({"n_attributes": 11}, "n_attributes"), ({"docs": "no"}, "docs"), ({"names": "klingon"}, "names"),
    # named, not a TypeError from a comparison deep inside (until session 36)
    ({"n_people": "10"}, "n_people must be a whole"), ({"forget_fraction": "0.2"}, "forget_fraction must be a"),
    ({"seed": 1.5}, "seed must be a whole"),
])
def test_bad_shape_options(kwargs, field, tmp_path):
    with pytest.raises(ValueError, match=f"^{field} "):
        build_world(tmp_path / "w", **kwargs)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("args,field", [  # named as the options are (as the API's arguments until session 36)
    (["--answer-style", "long"], "--answer-style must"), (["--attributes", "0"], "--attributes must"),
    (["--attributes", "12"], "--attributes must"), (["--shape", "huge"], "--shape must"), (["--names", "x"], "--names must"),
    (["--forget-fraction", "1.5"], "--forget-fraction must"), (["--forget-fraction", "0"], "--forget-fraction must"),
    (["--people", "0"], "--people must be at least 2"), (["--people", "-5"], "--people must be at least 2"),
])
def test_cli_bad_values_are_one_line(args, field, tmp_path):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    r = CliRunner().invoke(app, ["world", "--out", str(tmp_path / "w"), *args])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and field in lines[0], r.output


def test_cli_shape_with_override(tmp_path):
    from typer.testing import CliRunner

    from unlearnkit import api
    from unlearnkit.cli import app

    out = tmp_path / "w"
    r = CliRunner().invoke(app, ["world", "--out", str(out), "--shape", "sentences", "--people", "14", "--docs",
                                 "--attributes", "5", "--seed", "3"])
    assert r.exit_code == 0, r.output
    config = json.loads((out / "world.json").read_text())["config"]
    assert (config["n_people"], config["answer_style"], config["n_attributes"], config["seed"]) == (14, "sentence", 5, 3)
    assert "docs" not in config and list(out.glob("*_docs.jsonl"))  # --docs overrode the shape's docs=False
    same = api.world(tmp_path / "api", seed=3, shape="sentences", n_people=14, docs=True, n_attributes=5)
    assert all((out / f.name).read_bytes() == f.read_bytes() for f in same.glob("*.jsonl"))
    r = CliRunner().invoke(app, ["world", "--out", str(tmp_path / "nd"), "--answer-style", "sentence", "--no-docs",
                                 "--people", "12"])
    assert r.exit_code == 0 and not list((tmp_path / "nd").glob("*_docs.jsonl")), r.output


def test_sentence_world_without_docs_trains_and_evaluates(tmp_path):
    """The pipeline copes with sentence answers and no documents: finetune (no docs stream), eval."""
    import math

    from unlearnkit import api

    data = api.world(tmp_path / "w", seed=0, shape="sentences", n_people=12)
    subject = api.finetune(data, tmp_path / "subject", steps=3, progress=False)
    oracle = api.finetune(data, tmp_path / "oracle", without_forget=True, steps=3, progress=False)
    meta = json.loads((subject / "unlearnkit.json").read_text())
    assert set(meta["examples"]) == {"train"} and meta["train_stats"]["steps"] == 3
    o = api.evaluate(oracle, data, oracle="self")
    res = api.evaluate(subject, data, oracle=o)
    assert "no forget documents: VerbMem skipped" in res["notes"]
    for key in ("forget_quality", "model_utility", "privleak"):
        assert math.isfinite(res[key]), (key, res[key])


def test_world_help_names_every_shape():
    """`unlearn world --shape`'s help lists the shapes by hand (the CLI does not import the data
    layer at start-up): it must name each of SHAPES."""
    import typer

    from unlearnkit.cli import app

    cmd = typer.main.get_command(app).commands["world"]
    help_text = next(p.help for p in cmd.params if p.name == "shape")
    listed = help_text.split(":", 1)[1].split(";", 1)[0]
    assert {s.strip() for s in listed.split("|")} == set(SHAPES)


def test_names_outlast_the_short_ones():
    """The one-syllable first names run out near 4,000 people: "could not invent a unique name" came
    as a traceback at 5,000. The namer goes on with a syllable more, for the words of that kind only
    and from then on, so worlds too small to get there keep their names (a 2,000-person world's
    files are byte for byte session 33's)."""
    import random

    from unlearnkit.data.world import NAME_STYLES, _NameMaker

    namer = _NameMaker(random.Random(0), NAME_STYLES["default"])
    first = [namer.make((1, 1), "female") for _ in range(300)]
    assert namer.longer == {}
    namer._ok = lambda w, ok=namer._ok: ok(w) and bool(namer.longer)  # the short ones have run out
    more = [namer.make((1, 1), "female") for _ in range(20)]
    assert namer.longer == {((1, 1), "female"): 1} and len(set(first + more)) == 320
    assert namer.make((1, 2), "last") and set(namer.longer) == {((1, 1), "female")}  # other kinds as before


def test_written_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through private temp files (mode 600, folders 700); what they become takes
    the umask, as a plain open or mkdir would (until session 35 a world, a checkpoint and every
    results file were unreadable to the other users of a machine)."""
    from unlearnkit import api
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import new_model, train_tokenizer
    from unlearnkit.runinfo import write_json

    old = os.umask(0o022)
    try:
        w = api.world(tmp_path / "w", n_people=12)
        tok = train_tokenizer(["a b c"], vocab_size=300)
        m = save_model(new_model(tok, seed=0), tok, tmp_path / "m")
        write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (w, w / "forget.jsonl", m, m / "model.safetensors", tmp_path / "r.json")}
    assert modes == {"w": 0o755, "forget.jsonl": 0o644, "m": 0o755, "model.safetensors": 0o644, "r.json": 0o644}

