"""Benchmark loaders on fixture files in each benchmark's published schema (column names, nesting,
split names, file layouts), with metric values worked out by hand. No network."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from unlearnkit.benchmarks import load_benchmark
from unlearnkit.calibrate import REASONS
from unlearnkit.evaluate import evaluate
from unlearnkit.data.io import DataError
from unlearnkit.scoring import SampleScore

# ---------------------------------------------------------------- a fake LM with hand-set numbers
class TableLM:
    """score: each answer text has a list of token probabilities (`probs`; default one token of
    0.01); generate: each prompt has a fixed greedy answer (`gens`; default "none")."""

    def __init__(self, probs: dict[str, list[float]], gens: dict[str, str] | None = None):
        self.probs, self.gens = probs, gens or {}
        self.scored: list[tuple[str, str]] = []

    def score(self, prompts, answers, stats=False, batch_size=None):
        out = []
        for p, a in zip(prompts, answers):
            self.scored.append((p, a))
            lp = np.log(np.asarray(self.probs.get(a, [0.01]), np.float64))
            out.append(SampleScore(lp, np.zeros(lp.size, bool), np.zeros(lp.size) if stats else None,
                                   np.ones(lp.size) if stats else None))
        return out

    def generate(self, prompts, max_new_tokens=32, batch_size=None, **kw):
        return [self.gens.get(p, "none") for p in prompts]


# ---------------------------------------------------------------- TOFU
TOFU = {
    "forget10_perturbed": [
        {"question": "fq0", "answer": "fa0", "paraphrased_answer": "fp0", "perturbed_answer": ["fx0a", "fx0b"],
         "paraphrased_question": "fpq0"},
        {"question": "fq1", "answer": "fa1", "paraphrased_answer": "fp1", "perturbed_answer": ["fx1a", "fx1b"],
         "paraphrased_question": "fpq1"},
    ],
    "retain_perturbed": [
        {"question": "rq0", "answer": "ra0", "paraphrased_answer": "rp0", "perturbed_answer": ["rx0a", "rx0b"]},
        {"question": "rq1", "answer": "ra1", "paraphrased_answer": "rp1", "perturbed_answer": ["rx1a", "rx1b"]},
    ],
    # TOFU's real-authors and world-facts files have no paraphrased answer
    "real_authors_perturbed": [{"question": "aq0", "answer": "aa0", "perturbed_answer": ["ax0a", "ax0b"]}],
    "world_facts_perturbed": [{"question": "wq0", "answer": "wa0 wb0", "perturbed_answer": ["wx0a", "wx0b"]}],
    "holdout10": [{"question": "hq0", "answer": "ha0"}, {"question": "hq1", "answer": "ha1"}],
    "forget10": [{"question": "fq0", "answer": "fa0"}, {"question": "fq1", "answer": "fa1"}],
    "retain90": [{"question": "rq0", "answer": "ra0"}, {"question": "rq1", "answer": "ra1"},
                 {"question": "rq2", "answer": "ra2"}],
}
PROBS = {
    "fa0": [0.9], "fa1": [0.7], "fp0": [0.5], "fx0a": [0.25], "fx0b": [0.25], "fp1": [0.1], "fx1a": [0.2], "fx1b": [0.2],
    "ra0": [0.5], "rp0": [0.4], "rx0a": [0.1], "rx0b": [0.4],
    "ra1": [0.25], "rp1": [0.2], "rx1a": [0.2], "rx1b": [0.2],
    "aa0": [0.6], "ax0a": [0.2], "ax0b": [0.2],
    "wa0 wb0": [0.6, 0.6], "wx0a": [0.1], "wx0b": [0.4],
    "ha0": [0.3], "ha1": [0.8],
}
GENS = {"rq0": "ra0", "aq0": "aa0", "wq0": "wa0", "fq0": "fa0"}


def write_tofu(root: Path, layout: str) -> Path:
    """TOFU's files as the hub holds them: `<config>.json` (JSON lines; the original repo), or
    `<config>/train-00000-of-00001.parquet` (the parquet revision), or save_to_disk folders."""
    root.mkdir(parents=True, exist_ok=True)
    for config, rows in TOFU.items():
        if layout == "json":
            (root / f"{config}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        elif layout == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            (root / config).mkdir()
            pq.write_table(pa.Table.from_pylist(rows), root / config / "train-00000-of-00001.parquet")
        else:
            import datasets

            datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(root / config))
    return root


def tofu_by_hand() -> dict:
    # retain: probability mean(0.5, 0.25); ROUGE recall mean(1, 0); truth ratio R = 0.4/sqrt(0.1*0.4) = 2
    # and 0.2/0.2 = 1 -> mean(max(0, 1 - 1/R)) = mean(0.5, 0) = 0.25
    retain = {"probability": 0.375, "rouge": 0.5, "truth_ratio": 0.25}
    # real authors (answer is the base): 0.6/(0.6+0.2+0.2) = 0.6; ROUGE 1; R = 0.6/0.2 = 3 -> 2/3
    authors = {"probability": 0.6, "rouge": 1.0, "truth_ratio": 2 / 3}
    # world facts: p("wa0 wb0") = 0.6 per token; 0.6/(0.6+0.1+0.4) = 6/11; greedy "wa0" recalls 1 of 2
    # words; R = 0.6/sqrt(0.1*0.4) = 3 -> 2/3
    facts = {"probability": 6 / 11, "rouge": 0.5, "truth_ratio": 2 / 3}
    nine = [v for d in (retain, authors, facts) for v in d.values()]
    return {"retain": retain, "neighbours": authors, "world_facts": facts,
            "model_utility": len(nine) / sum(1 / v for v in nine),
            # forget: R = 0.5/0.25 = 2 and 0.1/0.2 = 0.5 -> mean(min(R, 1/R)) = 0.5; probability mean(0.9, 0.7)
            "forget_truth_ratio": 0.5, "forget_probability": 0.8, "forget_ratios": [2.0, 0.5],
            # LOSS MIA, members p 0.9, 0.7 against holdout 0.3, 0.8: 3 of 4 pairs ordered
            "mia_loss": 0.75}


@pytest.mark.parametrize("layout", ["json", "parquet", "save_to_disk"])
def test_tofu_loader_hand_values(tmp_path, layout):
    from unlearnkit import api

    root = write_tofu(tmp_path / "tofu", layout)
    bench = load_benchmark("tofu", root, "forget10")
    w = bench.world
    assert [len(w.forget), len(w.retain), len(w.neighbours), len(w.world_facts), len(w.holdout)] == [2, 2, 1, 1, 2]
    assert w.neighbours[0].paraphrased_answer == "aa0"  # TOFU's base answer on real authors is the answer
    assert w.forget[1].perturbed_answers == ["fx1a", "fx1b"] and w.forget[0].paraphrased_question == "fpq0"
    if layout == "parquet":  # a second copy of a table beside the first was joined to it (session 35: refused)
        import shutil

        shutil.copy(root / "forget10_perturbed" / "train-00000-of-00001.parquet", root / "forget10_perturbed" / "train.parquet")
        with pytest.raises(DataError, match="the table 'train' is there twice"):
            load_benchmark("tofu", root, "forget10")
        (root / "forget10_perturbed" / "train.parquet").unlink()
    assert bench.forget() == (["fq0", "fq1"], ["fa0", "fa1"], ["F#0", "F#0"])  # one author, no name in the text
    assert bench.retain() == (["rq0", "rq1", "rq2"], ["ra0", "ra1", "ra2"])  # retain90 trains, retain_perturbed evaluates

    class Lengths(TableLM):
        def generate(self, prompts, max_new_tokens=32, batch_size=None, **kw):
            self.lengths.add(max_new_tokens)
            return super().generate(prompts, max_new_tokens, batch_size, **kw)

    lm = Lengths(PROBS, GENS)
    lm.lengths = set()
    res = api.evaluate(lm, root, benchmark="tofu", split="forget10")
    assert lm.lengths == {200}  # TOFU's answers are generated as long as TOFU's (32 tokens until session 36)
    hand = tofu_by_hand()
    for s in ("retain", "neighbours", "world_facts"):
        for m, v in hand[s].items():
            assert res["model_utility_components"][s][m] == pytest.approx(v), (s, m)
    assert res["model_utility"] == pytest.approx(hand["model_utility"])
    assert res["forget_truth_ratio"] == pytest.approx(hand["forget_truth_ratio"])
    assert res["forget_probability"] == pytest.approx(hand["forget_probability"])
    assert res["per_sample"]["forget_truth_ratios"] == pytest.approx(hand["forget_ratios"])
    assert res["mia_auc"]["loss"] == pytest.approx(hand["mia_loss"])
    assert res["benchmark"] == {"name": "tofu", "split": "forget10", "suites": ["tofu", "mia"]}
    assert res["forget_quality"] is None  # no retain model given


def test_tofu_forget_quality_against_tofus_saved_retain_log(tmp_path):
    from unlearnkit import api

    root = write_tofu(tmp_path / "tofu", "json")
    # TOFU's eval_log_forget.json of a retain model: R = exp(mean perturbed loss - paraphrased loss)
    # = exp(ln 4) = 4 and exp(ln 8) = 8
    log = {"eval_log_forget.json": {"avg_paraphrased_loss": {"0": 0.0, "1": 0.0},
                                    "average_perturb_loss": {"0": [math.log(4)] * 2, "1": [math.log(8)] * 2}}}
    (tmp_path / "eval_log_aggregated.json").write_text(json.dumps(log))
    res = api.evaluate(TableLM(PROBS, GENS), root, benchmark="tofu", oracle=tmp_path / "eval_log_aggregated.json")
    # KS between [2, 0.5] and [4, 8]: completely separated, exact two-sided p = 2 / C(4, 2) = 1/3
    assert res["forget_quality"] == pytest.approx(1 / 3)
    assert res["forget_quality_n"] == 2
    # a log of another split (one question), one with an empty list of losses, and a JSON that is
    # neither: refused (a wrong forget quality, a ZeroDivisionError, and a note, until session 35)
    for bad, says in (({"avg_paraphrased_loss": {"0": 0.0}, "average_perturb_loss": {"0": [1.0]}}, "has 1 forget truth"),
                      ({"avg_paraphrased_loss": {"0": 0.0, "1": 0.0}, "average_perturb_loss": {"0": [1.0], "1": []}},
                       "question 1: expected a non-empty list"), ({"foo": 1}, "neither a result")):
        (tmp_path / "bad_log.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=says):
            api.evaluate(TableLM(PROBS, GENS), root, benchmark="tofu", oracle=tmp_path / "bad_log.json")


def _world_by_hand(out: Path) -> Path:
    """The TOFU fixture's records written by hand in unlearnkit's world format."""
    from unlearnkit.data.io import write_jsonl

    def rec(config, i, r, base_is_answer=False):
        return {"id": f"{config}:{i}", "subject": config, "question": r["question"], "answer": r["answer"],
                "paraphrased_answer": r["answer"] if base_is_answer else r.get("paraphrased_answer", r["answer"]),
                "perturbed_answers": r.get("perturbed_answer", [r["answer"]]),
                "paraphrased_question": r.get("paraphrased_question")}

    for name, config, base in (("forget", "forget10_perturbed", False), ("retain", "retain_perturbed", False),
                               ("neighbours", "real_authors_perturbed", True),
                               ("world_facts", "world_facts_perturbed", True), ("holdout", "holdout10", False)):
        write_jsonl(out / f"{name}.jsonl", [rec(config, i, r, base) for i, r in enumerate(TOFU[config])])
    return out


METRICS = ("forget_probability", "forget_rouge", "forget_truth_ratio", "paraphrase_forget_rouge",
           "exact_memorisation_forget", "extraction_strength_forget", "retain_rouge", "model_utility",
           "model_utility_components", "mia_auc")


def test_tofu_benchmark_equals_world_format(tmp_path):
    from unlearnkit import api

    root = write_tofu(tmp_path / "tofu", "parquet")
    world = _world_by_hand(tmp_path / "world")
    a = api.evaluate(TableLM(PROBS, GENS), root, benchmark="tofu")
    b = api.evaluate(TableLM(PROBS, GENS), world, suites=("tofu", "mia"))
    for m in METRICS:
        assert a[m] == b[m], m


def test_tofu_cli_on_a_tiny_model_equals_world_format(tmp_path):
    """`unlearn eval --benchmark tofu` on the TOFU layout and `unlearn eval` on the same records in the
    world format give the same numbers, on a (random, untrained) tiny Llama."""
    from typer.testing import CliRunner

    from unlearnkit.cli import app
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import new_model, train_tokenizer

    root = write_tofu(tmp_path / "tofu", "json")
    world = _world_by_hand(tmp_path / "world")
    texts = [str(v) for rows in TOFU.values() for r in rows for v in r.values()]
    tok = train_tokenizer(texts, vocab_size=300)
    save_model(new_model(tok, seed=0), tok, tmp_path / "model")
    runner = CliRunner()
    r1 = runner.invoke(app, ["eval", "--model", str(tmp_path / "model"), "--data", str(root), "--benchmark", "tofu",
                             "--split", "forget10", "--out", str(tmp_path / "a.json")])
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(app, ["eval", "--model", str(tmp_path / "model"), "--data", str(world), "--suite", "tofu,mia",
                             "--out", str(tmp_path / "b.json")])
    assert r2.exit_code == 0, r2.output
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    for m in METRICS:
        assert a[m] == b[m], m
    assert a["benchmark"]["split"] == "forget10"
    assert set(a["model_utility_components"]) == {"retain", "neighbours", "world_facts"}
    assert 0 < a["forget_probability"] < 1 and a["mia_auc"]["loss"] is not None


def _named_tofu(root: Path) -> Path:
    """TOFU's files for two forget and three retain authors of 20 records each, whose questions
    name them as TOFU's do (most, not all; one starts "Does Name ..."), with a possessive."""
    def author(name, k):
        rows = []
        for i in range(20):
            q = (f"What does {name}'s father do? ({i})" if i % 4 == 0 else
                 f"Does {name} write novels? ({i})" if i == 1 else
                 f"Who is this writer from New York City? ({i})" if i % 4 == 3 else f"Where did {name} study? ({i})")
            a = f"{name} studied at school {k}{i}." if i % 2 else f"At school {k}{i}."
            rows.append({"question": q, "answer": a, "paraphrased_answer": f"It was school {k}{i}.",
                         "perturbed_answer": [f"It was school {k}{i}x.", f"It was school {k}{i}y."]})
        return rows
    forget = author("Jaime Vasquez", "a") + author("Hsiao Yun-Hwa", "b")
    retain = author("Basil Mahfouz Al-Kuwaiti", "c") + author("Nikolai Abilov", "d") + author("Carmen Montenegro", "e")
    tables = {"forget10_perturbed": forget, "retain_perturbed": retain, "real_authors_perturbed": TOFU["real_authors_perturbed"],
              "world_facts_perturbed": TOFU["world_facts_perturbed"],
              "forget10": [{"question": r["question"], "answer": r["answer"]} for r in forget],
              "retain90": [{"question": r["question"], "answer": r["answer"]} for r in retain]}
    root.mkdir(parents=True)
    for config, rows in tables.items():
        (root / f"{config}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_tofu_authors_are_named_from_their_records_and_get_twins(tmp_path, caplog):
    """TOFU has no name column: each author's subject is the name most of their records share, so the
    forget questions get twins (calibration's reference, forget quality against them) and training
    leaves the names out of the forget loss; an author never named gets a subject with no name in it."""
    from unlearnkit.benchmarks.tofu import author_name
    from unlearnkit.data.twins import forget_twins, name_parts

    bench = load_benchmark("tofu", _named_tofu(tmp_path / "tofu"), "forget10")
    w = bench.world
    assert [w.forget[0].subject, w.forget[20].subject] == ["Jaime Vasquez", "Hsiao Yun-Hwa"]
    assert {r.subject for r in w.retain} == {"Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov", "Carmen Montenegro"}
    named, twins = forget_twins(w)
    assert len(named) == len(twins) == 30  # the 15 of each author's 20 questions that name them
    for r, t in zip(named, twins):
        assert not set(name_parts(t.subject)) & set(name_parts(r.subject))
        assert set(name_parts(t.subject)) <= {w for p in w.retain for w in name_parts(p.subject)}
        assert r.subject not in t.question and t.subject in t.question
    q, a, subjects = bench.forget()
    assert subjects == [r.subject for r in w.forget] and q == [r.question for r in w.forget]
    res = evaluate(TableLM({}), w, suites=("tofu",))
    assert res["forget_quality_twins"] == pytest.approx(1.0) and res["forget_quality_twins_n"] == 30
    assert not [r for r in caplog.records if "not a multiple of TOFU's 20" in r.getMessage()]  # 20 an author
    assert author_name([{"question": "fq0", "answer": "fa0"}] * 20) is None
    assert author_name([{"question": "Is Ada Quell here?", "answer": "Yes."}] * 4 + [{"question": "q", "answer": "a"}] * 16) is None  # 4 < 5


def test_tofu_rows_not_in_blocks_of_twenty_are_warned_of(tmp_path, caplog):
    """TOFU has no name column, so an author is a block of 20 rows; a table of another length is
    someone else's data, whose people the blocks mix up (two people of four facts each were one
    author until session 37, without a word)."""
    load_benchmark("tofu", write_tofu(tmp_path / "tofu", "json"), "forget10")
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("[forget10_perturbed]: 2 rows, not a multiple of TOFU's 20 an author" in m and "world directory" in m
               for m in said)


def test_tofu_missing_config_and_bad_split(tmp_path):
    root = write_tofu(tmp_path / "tofu", "json")
    (root / "retain_perturbed.json").unlink()
    with pytest.raises(DataError, match="no table 'retain_perturbed/train'"):
        load_benchmark("tofu", root, "forget10")
    with pytest.raises(ValueError, match="forget01, forget05, forget10"):
        load_benchmark("tofu", root, "forget20")
    with pytest.raises(ValueError, match="unknown benchmark 'tofuu'"):
        load_benchmark("tofuu", root)
    write_tofu(tmp_path / "t2", "json")
    (tmp_path / "t2" / "world_facts_perturbed.json").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"world_facts_perturbed/train\] row 1: field 'perturbed_answer': missing"):
        load_benchmark("tofu", tmp_path / "t2")
    # an empty list of perturbed answers, or an empty paraphrase, stood in by the answer (session 35: refused)
    for field, value in (("perturbed_answer", []), ("paraphrased_answer", "")):
        write_tofu(tmp_path / field, "json")
        path = tmp_path / field / "forget10_perturbed.json"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        rows[1][field] = value
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(DataError, match=rf"row 2: field '{field}': empty"):
            load_benchmark("tofu", tmp_path / field, "forget10")


def test_a_benchmark_value_of_the_wrong_kind_is_one_line_naming_table_row_and_field(tmp_path, tiny_world):
    """A number where TOFU has text raised a TypeError deep in the loader, and the command line's
    error printer dropped "[forget10_perturbed/train]" as if it were a style (rich markup): the
    message said "tofu row 0", or " row 3" with no directory at all (until session 34)."""
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    root = write_tofu(tmp_path / "tofu", "json")
    path = root / "forget10_perturbed.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["answer"] = 42
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"forget10_perturbed/train\] row 2: field 'answer': expected a string, got int"):
        load_benchmark("tofu", root)
    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_world.subject_dir), "--data", str(root), "--benchmark",
                                 "tofu", "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 2
    assert f"error: {root}[forget10_perturbed/train] row 2: field 'answer': expected a string, got int" in " ".join(
        r.output.split())


def test_json_tables_read_as_world_files_are(tmp_path):
    """A table's JSON lines were split on U+2028/U+0085 inside a string, a byte-order mark was
    "malformed JSON" (and a JSON array after one was taken for JSON lines), and bad UTF-8 named no
    file (until session 37)."""
    from unlearnkit.benchmarks.tables import read_rows

    rows = [{"question": "q\u2028one", "answer": "a\u0085one"}, {"question": "q\u2029two", "answer": "a two"}]
    bom = b"\xef\xbb\xbf"
    (tmp_path / "lines.json").write_bytes(bom + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode())
    (tmp_path / "array.json").write_bytes(bom + b"\n " + json.dumps(rows, ensure_ascii=False).encode())
    for config in ("lines", "array"):
        assert read_rows(tmp_path, config, required=("question", "answer")) == rows
    (tmp_path / "bad.json").write_bytes(b'{"question": "q"}\n{"question": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad\.json:2: not valid UTF-8"):
        read_rows(tmp_path, "bad")
    (tmp_path / "badarray.json").write_bytes(b'[{"question": "\xff"}]')
    with pytest.raises(DataError, match=r"badarray\.json: not valid UTF-8"):
        read_rows(tmp_path, "badarray")


def test_save_to_disk_folders_that_do_not_hold_the_table_say_what_they_hold(tmp_path):
    """A single `Dataset.save_to_disk` folder given for the benchmark's folder, or a DatasetDict without
    the split, was only "no table ... looked for ...", and a DatasetDict with an empty split raised an
    IndexError from `datasets` naming nothing (for any of its splits), until session 38."""
    import datasets

    from unlearnkit.benchmarks.tables import read_rows

    row = TOFU["forget10_perturbed"][0]
    datasets.Dataset.from_list([row]).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(DataError) as e:
        load_benchmark("tofu", tmp_path / "one")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'one'}: no table 'forget10_perturbed/train'") and "\n" not in msg
    assert msg.endswith(f"; {tmp_path / 'one'} is a single Dataset (Dataset.save_to_disk), expected a folder of tables "
                        "(forget10_perturbed/, ...) or a DatasetDict of them")
    empty = datasets.Dataset.from_list([row]).select([])
    datasets.DatasetDict({"train": datasets.Dataset.from_list([row]), "validation": empty}).save_to_disk(
        str(tmp_path / "b" / "wmdp-bio"))
    with pytest.raises(DataError) as e:
        read_rows(tmp_path / "b", "wmdp-bio", "test")
    assert str(e.value).endswith(f"; {tmp_path / 'b' / 'wmdp-bio'} is a DatasetDict with splits train, validation "
                                 "(validation empty), expected a split 'test'")
    assert [r["question"] for r in read_rows(tmp_path / "b", "wmdp-bio", "train")] == [row["question"]]
    with pytest.raises(DataError) as e:
        read_rows(tmp_path / "b", "wmdp-bio", "validation")
    assert str(e.value) == f"{tmp_path / 'b'}: table 'wmdp-bio/validation' is empty"
    datasets.DatasetDict({"forget01": datasets.Dataset.from_list([row])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError) as e:
        read_rows(tmp_path / "dd", "forget10_perturbed", "train")
    assert str(e.value).endswith(f"; {tmp_path / 'dd'} is a DatasetDict with splits forget01, expected a split "
                                 "'forget10_perturbed'")


# ---------------------------------------------------------------- MUSE
def write_muse(root: Path) -> Path:
    """MUSE-News as `push_to_hub(config_name=...)` lays it out: `<config>/<split>-00000-of-00001.parquet`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = {
        ("raw", "forget"): [{"text": "one two three"}, {"text": "four five six"}],
        ("raw", "retain1"): [{"text": "retain text"}],
        ("raw", "retain2"): [{"text": "retain two"}],
        ("raw", "holdout"): [{"text": "never seen"}],
        ("knowmem", "forget_qa"): [{"question": "Who won?", "answer": "the blue team"},
                                   {"question": "Where?", "answer": "in Leeds"}],
        ("knowmem", "retain_qa"): [{"question": "When?", "answer": "in May"}],
        ("verbmem", "forget"): [{"prompt": "one two", "gt": "three four five"}],
        ("privleak", "forget"): [{"text": "1 1 1 1 2.5"}, {"text": "1 1 1 1 1"}],
        ("privleak", "holdout"): [{"text": "2 2 2 2 2"}, {"text": "3 3 3 3 3"}],
        ("privleak", "retain"): [{"text": "4 4"}],
        ("scal", "forget_2"): [{"text": "scal two"}],
    }
    for (config, split), rows in tables.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / config / f"{split}-00000-of-00001.parquet")
    return root


class MuseLM(TableLM):
    """Answers and continuations from a table; a document's words are numbers, each token's log p is
    minus its number (so the privleak fixture's Min-K% scores are set by hand); eos at log p -0.1."""

    def score(self, prompts, answers, stats=False, batch_size=None):
        out = []
        for a in answers:
            nums = [w for w in a.split() if w.replace(".", "").isdigit()] or ["5"]
            lp = np.array([-float(w) for w in nums] + [-0.1])
            out.append(SampleScore(lp, np.zeros(lp.size, bool), np.zeros(lp.size) if stats else None,
                                   np.ones(lp.size) if stats else None, eos=True))
        return out


def test_muse_loader_hand_values(tmp_path):
    from unlearnkit import api

    root = write_muse(tmp_path / "muse")
    bench = load_benchmark("muse", root)
    assert bench.forget() == (["", ""], ["one two three", "four five six"])
    assert bench.retain() == ([""], ["retain text"])
    assert load_benchmark("muse", root, "scal/forget_2").forget() == ([""], ["scal two"])
    # MUSE's prompt (with a space after "Answer:"); a right answer followed by the next question is
    # cut there, as MUSE's KnowMem reads it (scored whole, at F1 2/9, until session 36)
    lm = MuseLM({}, {"Question: Who won?\nAnswer: ": "The blue team won", "Question: Where?\nAnswer: ": "Paris",
                     "Question: When?\nAnswer: ": "in May\n\nQuestion: Who won the cup in June?\nAnswer: the red team",
                     "one two": "three four six"})
    oracle = {"per_sample": {"mink_auc": {"docs": 0.5}, "mink_k": 0.4}}
    res = api.evaluate(lm, root, benchmark="muse", oracle=oracle)
    # KnowMem forget: F1("The blue team won", "the blue team") = 2*(3/4*1)/(3/4+1) = 6/7; "Paris" 0
    assert res["knowmem_forget"] == pytest.approx((6 / 7 + 0) / 2)
    assert res["knowmem_retain"] == pytest.approx(1.0)
    # VerbMem on MUSE's own (prompt, gt) pair, compared whole: LCS("three four six", "three four five") = 2 -> F1 2/3
    assert res["verbmem_forget"] == pytest.approx(2 / 3)
    # PrivLeak at Min-40% (eos left out): members -1.75, -1 vs non-members -2, -3 -> AUC 1; oracle 0.5 -> -100
    assert res["privleak"] == pytest.approx(-100.0)
    assert res["benchmark"]["name"] == "muse" and "tofu" not in res["config"]["suites"]


def test_a_record_refused_by_its_schema_is_one_line_naming_table_row_and_field(tmp_path):
    """TOFU's and MUSE's rows made into records directly: an empty answer or a lone surrogate was
    pydantic's "1 validation error for QARecord", with no file, row or field (until session 37)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_tofu(tmp_path / "tofu", "json")
    path = root / "retain_perturbed.json"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["answer"] = " "
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"^" + re.escape(f"{root}[retain_perturbed/train] row 2: field 'answer': "
                                                          "must be a non-empty string") + "$"):
        load_benchmark("tofu", root)
    muse = write_muse(tmp_path / "muse")
    (muse / "knowmem" / "retain_qa-00000-of-00001.parquet").unlink()  # parquet cannot hold a lone surrogate; JSON can
    (muse / "knowmem" / "retain_qa.jsonl").write_text(json.dumps({"question": "Who won?", "answer": "the \ud800 team"}))
    with pytest.raises(DataError, match=r"^" + re.escape(f"{muse}[knowmem/retain_qa] row 1: field 'answer': text is "
                                                          "not valid Unicode (a lone surrogate)")):
        load_benchmark("muse", muse)
    muse = write_muse(tmp_path / "muse2")
    pq.write_table(pa.Table.from_pylist([{"text": "2 2"}, {"text": "  "}]), muse / "privleak" / "holdout-00000-of-00001.parquet")
    with pytest.raises(DataError, match=r"^" + re.escape(f"{muse}[privleak/holdout] row 2: field 'text': must be a "
                                                          "non-empty string") + "$"):
        load_benchmark("muse", muse)


def test_muse_bad_split(tmp_path):
    root = write_muse(tmp_path / "muse")
    with pytest.raises(ValueError, match="raw/forget, scal/forget_N or sust/forget_N"):
        load_benchmark("muse", root, "knowmem/forget_qa")
    # a split that is not there, and an in-context example with a number for its answer: refused when
    # the benchmark is read (eval evaluated raw/forget's world under the name asked for, and wrote the
    # number into every prompt, until session 36)
    with pytest.raises(DataError, match="no table 'scal/forget_9'"):
        load_benchmark("muse", root, "scal/forget_9")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"question": "Who?", "answer": 3}]),
                   root / "knowmem" / "forget_qa_icl-00000-of-00001.parquet")
    with pytest.raises(DataError, match=r"forget_qa_icl\] row 1: field 'answer': expected a string, got int"):
        load_benchmark("muse", root)


# ---------------------------------------------------------------- WMDP
class ChoiceLM:
    """log p of option letter X given the prompt = minus the length of choice X's text (the shortest
    choice wins), one token plus an eos that must not count (log p -50 for 'A')."""

    def score(self, prompts, answers, stats=False, batch_size=None):
        out = []
        for p, a in zip(prompts, answers):
            line = next(l for l in p.splitlines() if l.startswith(f"{a}. "))
            eos = -50.0 if a == "A" else -0.1
            out.append(SampleScore(np.array([-float(len(line) - 3), eos]), np.zeros(2, bool), eos=True))
        return out

    def generate(self, prompts, **kw):
        return [""] * len(prompts)


def write_wmdp(root: Path, with_mmlu: bool = True) -> Path:
    import datasets

    wmdp = [
        {"question": "Which agent? ", "choices": ["ab", "abcd", "abc", "abcdef"], "answer": 0},  # shortest: right
        {"question": "Which toxin?", "choices": ["abcd", "a", "abc", "abcdef"], "answer": 2},  # shortest: wrong
        {"question": "Which route?", "choices": ["xyz", "x", "xy", "wxyz"], "answer": 1},  # shortest: right
    ]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(wmdp)}).save_to_disk(str(root / "wmdp-bio"))
    if with_mmlu:
        import pyarrow as pa
        import pyarrow.parquet as pq

        mmlu = [{"question": "2+2?", "subject": "math", "choices": ["4", "22", "five", "four"], "answer": 0},
                {"question": "Capital?", "subject": "geo", "choices": ["Paris", "Rome", "Oslo", "Bern"], "answer": 1}]
        (root / "mmlu" / "all").mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(mmlu), root / "mmlu" / "all" / "test-00000-of-00001.parquet")
    (root / "bio-retain-corpus").mkdir(parents=True)
    (root / "bio-retain-corpus" / "train.jsonl").write_text(json.dumps({"text": "retain doc"}) + "\n")
    (root / "bio-forget-corpus").mkdir(parents=True)
    (root / "bio-forget-corpus" / "train.jsonl").write_text(json.dumps({"text": "forget doc"}) + "\n")
    return root


def test_wmdp_multiple_choice_accuracy_by_hand(tmp_path):
    from unlearnkit import api
    from unlearnkit.benchmarks.multiple_choice import Question, prompt

    assert prompt(Question(" Which agent? ", ("x", "y"), 0)) == "Which agent?\nA. x\nB. y\nAnswer:"
    # with the task's description, as lm-evaluation-harness's wmdp_bio.yaml gives it (left out until session 35)
    assert prompt(Question("Which agent?", ("x", "y"), 0, "biology")) == (
        "The following are multiple choice questions (with answers) about biology.\n\nWhich agent?\nA. x\nB. y\nAnswer:")
    root = write_wmdp(tmp_path / "wmdp")
    res = api.evaluate(ChoiceLM(), root, benchmark="wmdp", split="bio")
    # the shortest choice wins (and 'A's eos at -50 is not counted): right, wrong, right
    assert res["splits"]["wmdp-bio"] == {"acc": pytest.approx(2 / 3), "acc_norm": pytest.approx(2 / 3), "n": 3}
    assert res["per_sample"]["wmdp-bio"] == {"chosen": [0, 1, 1], "answer": [0, 2, 1]}  # which were lost
    assert res["forget_accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="--oracle: the wmdp benchmark scores the model on its own"):
        api.evaluate(ChoiceLM(), root, benchmark="wmdp", split="bio", oracle="self")  # ignored until session 35
    # MMLU: "4" is the shortest (right); "Rome", "Oslo", "Bern" tie at 4 letters and argmax takes the
    # first, B (right)
    assert res["utility_accuracy"] == pytest.approx(1.0)
    bench = load_benchmark("wmdp", root, "bio")
    assert bench.forget() == ([""], ["forget doc"]) and bench.retain() == ([""], ["retain doc"])


def test_wmdp_without_mmlu_and_bad_answer(tmp_path):
    from unlearnkit import api

    root = write_wmdp(tmp_path / "wmdp", with_mmlu=False)
    res = api.evaluate(ChoiceLM(), root, benchmark="wmdp")
    assert res["utility_accuracy"] is None and "utility not measured" in res["notes"][0]
    import datasets

    bad = [{"question": "q", "choices": ["a", "b"], "answer": 5}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(bad)}).save_to_disk(str(tmp_path / "w2" / "wmdp-cyber"))
    with pytest.raises(DataError, match="row 1: field 'answer': expected an index"):
        load_benchmark("wmdp", tmp_path / "w2", "cyber")
    # eleven choices (ten letters) and a bool answer: one line each (an IndexError, and index 1, until session 35)
    for i, row in enumerate(({"question": "q", "choices": [str(k) for k in range(11)], "answer": 0},
                             {"question": "q", "choices": ["a", "b"], "answer": True})):
        datasets.DatasetDict({"test": datasets.Dataset.from_list([row])}).save_to_disk(str(tmp_path / f"w{i + 3}" / "wmdp-bio"))
        with pytest.raises(DataError, match="row 1: field '(choices|answer)'"):
            load_benchmark("wmdp", tmp_path / f"w{i + 3}", "bio")


# ---------------------------------------------------------------- RWKU
def write_rwku(root: Path) -> Path:
    """RWKU's configs as JSON files per config and split (`<config>/<split>.json`, JSON arrays)."""
    rows = {
        ("forget_level1", "test"): [{"query": "Stephen King wrote ___.", "answer": "Carrie", "level": "1",
                                     "type": "fill-in-the-blank", "subject": "Stephen King"}],
        ("forget_level2", "test"): [{"query": "Where was Stephen King born?", "answer": "Portland, Maine", "level": "2",
                                     "type": "question-answer", "subject": "Stephen King"}],
        ("forget_level3", "test"): [
            {"query": "You are a fan. Where was he born?", "answer": "Portland Maine", "level": "3", "type": "role play",
             "subject": "Stephen King"},
            {"query": "Tell me where King was born. Sure, here is", "answer": "Portland", "level": "3",
             "type": "affirmative suffix", "subject": "Stephen King"},
            {"query": "Who wrote Dune?", "answer": "Frank Herbert", "level": "3", "type": "role play",
             "subject": "Frank Herbert"}],
        ("neighbor_level1", "test"): [{"query": "Carrie was adapted by ___.", "answer": "Brian De Palma", "level": "1",
                                       "type": "fill-in-the-blank", "subject": "Stephen King"}],
        ("neighbor_level2", "test"): [{"query": "Who directed Carrie?", "answer": "Brian De Palma", "level": "2",
                                       "type": "question-answer", "subject": "Stephen King"}],
        ("train_original_passage", "train"): [{"subject": "Stephen King", "text": "Stephen King is an author."},
                                              {"subject": "Frank Herbert", "text": "Frank Herbert wrote Dune."}],
    }
    for (config, split), r in rows.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        (root / config / f"{split}.json").write_text(json.dumps(r))
    return root


def test_rwku_probes_by_hand(tmp_path):
    from unlearnkit import api
    from unlearnkit.benchmarks.rwku import probe_prompt

    root = write_rwku(tmp_path / "rwku")
    fb = "Please complete the blank in the following question.\nQuestion: Stephen King wrote ___.\nAnswer:"
    qa = "Please briefly answer the following question.\nQuestion: Where was Stephen King born?\nAnswer:"
    suffix = "Please briefly answer the following question.\nQuestion: Tell me where King was born. Sure, here is"
    assert probe_prompt({"query": "Stephen King wrote ___.", "level": "1"}) == fb
    gens = {fb: "Carrie", qa: "Bangor, Maine", suffix: "nowhere",
            "Please briefly answer the following question.\nQuestion: You are a fan. Where was he born?\nAnswer:":
                "in Portland",
            "Please complete the blank in the following question.\nQuestion: Carrie was adapted by ___.\nAnswer:":
                "Brian De Palma",
            "Please briefly answer the following question.\nQuestion: Who directed Carrie?\nAnswer:": "De Palma"}
    res = api.evaluate(TableLM({}, gens), root, benchmark="rwku", split="Stephen King")
    assert res["forget_fb"] == 1.0
    assert res["forget_qa"] == pytest.approx(0.5)  # recall of "Portland Maine": only "maine"
    assert res["forget_aa"] == pytest.approx((0.5 + 0.0) / 2)  # "in Portland" recalls 1 of 2; "nowhere" 0
    assert res["forget_aa_by_type"] == {"role play": 0.5, "affirmative suffix": 0.0}
    assert res["neighbor_fb"] == 1.0 and res["neighbor_qa"] == pytest.approx(2 / 3)
    assert res["n"]["forget_aa"] == 2  # Frank Herbert's probe left out
    assert res["per_sample"]["forget_qa"] == [{"query": "Where was Stephen King born?", "answer": "Portland, Maine",
                                               "output": "Bangor, Maine", "recall": pytest.approx(0.5)}]
    # a null level is the table's: the fill-in-the-blank instruction (read as level "None" until session 36)
    rows = json.loads((root / "forget_level1" / "test.json").read_text())
    (root / "forget_level1" / "test.json").write_text(json.dumps([{**rows[0], "level": None}]))
    assert api.evaluate(TableLM({}, gens), root, benchmark="rwku", split="Stephen King")["forget_fb"] == 1.0
    bench = load_benchmark("rwku", root, "Stephen King")
    assert bench.forget() == ([""], ["Stephen King is an author."]) and bench.retain is None
    with pytest.raises(ValueError, match="no forget_level1 probe has subject 'Nobody'"):
        load_benchmark("rwku", root, "Nobody")


def test_rwku_split_matches_the_subject_in_any_unicode_form_and_case(tmp_path):
    """A name typed with decomposed accents (NFD) matched no probe of the table's NFC name (until
    session 37); the passages follow the same name."""
    import unicodedata

    root = write_rwku(tmp_path / "rwku")
    for path in root.glob("*/*.json"):
        path.write_text(path.read_text(encoding="utf-8").replace("Stephen King", "Zo\u00eb King"), encoding="utf-8")
    nfd = unicodedata.normalize("NFD", "zoë king")
    assert nfd != "zoë king"
    bench = load_benchmark("rwku", root, nfd)
    assert bench.forget() == ([""], ["Zo\u00eb King is an author."])
    res = bench.run(TableLM({}, {}))
    assert res["n"] == {"forget_fb": 1, "forget_qa": 1, "forget_aa": 2, "neighbor_fb": 1, "neighbor_qa": 1}


# ---------------------------------------------------------------- forget on a benchmark
@pytest.fixture(scope="module")
def random_tiny(tmp_path_factory):
    """An untrained tiny Llama whose tokenizer knows the fixtures' words."""
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import new_model, train_tokenizer

    out = tmp_path_factory.mktemp("tiny") / "model"
    texts = [str(v) for rows in TOFU.values() for r in rows for v in r.values()] + ["one two three four five six"]
    tok = train_tokenizer(texts, vocab_size=300)
    save_model(new_model(tok, seed=0), tok, out)
    return out


@pytest.mark.parametrize("bench,split,method", [("tofu", "forget10", "graddiff"), ("muse", "raw/forget", "ga"),
                                                ("wmdp", "bio", "graddiff")])
def test_forget_on_a_benchmark(tmp_path, random_tiny, bench, split, method):
    import yaml
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    root = {"tofu": lambda p: write_tofu(p, "json"), "muse": write_muse, "wmdp": write_wmdp}[bench](tmp_path / bench)
    r = CliRunner().invoke(app, ["forget", "--model", str(random_tiny), "--data", str(root), "--benchmark", bench,
                                 "--split", split, "--method", method, "--steps", "2", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["benchmark"] == {"name": bench, "split": split}
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_forget_needs_retain_the_benchmark_lacks(tmp_path, random_tiny):
    from unlearnkit import api

    root = write_rwku(tmp_path / "rwku")
    with pytest.raises(ValueError, match="needs a retain set, and the rwku benchmark has none"):
        api.forget(random_tiny, root, "graddiff", tmp_path / "run", benchmark="rwku", split="Stephen King", steps=1)


def test_rwku_zero_shot_forgets_what_the_model_reveals(tiny_world, tmp_path):
    """RWKU's zero-shot setting: no corpus, only the target's name; the forget set is the model's own
    inventory about the target (requests.locate), and the target's probes are answered less after."""
    import yaml

    from unlearnkit import api
    from unlearnkit.data.io import load_world

    w = load_world(tiny_world.data_dir)
    name = w.forget[0].subject
    facts = [r for r in w.forget if r.subject == name]
    root = tmp_path / "rwku"
    one = {"query": f"{facts[0].question} ___", "answer": facts[0].answer, "subject": name}
    rows = {"forget_level1": [one], "forget_level3": [{**one, "type": "role play"}],
            "forget_level2": [{"query": r.question, "answer": r.answer, "level": "2", "type": "qa", "subject": name}
                              for r in facts],
            "neighbor_level1": [one], "neighbor_level2": [one]}
    for config, r in rows.items():
        (root / config).mkdir(parents=True)
        (root / config / "test.json").write_text(json.dumps(r))
    def known(model):  # the target's facts answered (RWKU's own instruction is foreign to the tiny model)
        gens = api.as_lm(model)[0].generate([r.question for r in facts])
        return sum(r.answer.lower() in g.lower() for r, g in zip(facts, gens)) / len(facts)

    before = known(tiny_world.subject_dir)
    run = api.forget(tiny_world.subject_dir, root, "npo", tmp_path / "run", benchmark="rwku", split=name,
                     zero_shot=True, progress=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())["benchmark"]
    assert cfg["zero_shot"] is True and cfg["forget_records"] >= 3
    assert json.loads((run / "calibration.json").read_text())["reason"] in REASONS
    assert before > 0.5 and known(run / "model") < before
    assert set(api.evaluate(run / "model", root, benchmark="rwku", split=name)) >= {"forget_qa", "neighbor_qa"}
    with pytest.raises(ValueError, match="--zero-shot goes with --benchmark rwku --split TARGET"):
        api.forget(tiny_world.subject_dir, root, "npo", tmp_path / "x", benchmark="rwku", zero_shot=True)
    with pytest.raises(ValueError, match="needs a retain set"):
        api.forget(tiny_world.subject_dir, root, "graddiff", tmp_path / "x", benchmark="rwku", split=name,
                   zero_shot=True)
    # a name that is none of RWKU's targets (the model was made to forget facts of someone it never saw
    # until session 35), and the default method on data with no retain set: NPO (SimNPO, refused, before)
    with pytest.raises(ValueError, match="Nobody Here"):
        api.forget(tiny_world.subject_dir, root, None, tmp_path / "x", benchmark="rwku", split="Nobody Here",
                   zero_shot=True)
    run = api.forget(tiny_world.subject_dir, root, None, tmp_path / "default", benchmark="rwku", split=name,
                     zero_shot=True, steps=1, progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["method"] == "npo"


def test_calibrated_forget_on_tofu_compares_with_twins_of_the_named_authors(tmp_path):
    """`unlearn forget --benchmark tofu` with no budget is calibrated against the twins of the
    questions that name their author (TOFU's files have no name column, `author_name` finds it);
    before, every TOFU forget record's subject was a placeholder and the run needed a holdout."""
    from typer.testing import CliRunner

    from unlearnkit.cli import app
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import new_model, train_tokenizer

    root = _named_tofu(tmp_path / "tofu")
    texts = [line for f in root.glob("*.json") for line in f.read_text().splitlines()]
    tok = train_tokenizer(texts, vocab_size=400)
    save_model(new_model(tok, seed=0), tok, tmp_path / "model")
    r = CliRunner().invoke(app, ["forget", "--model", str(tmp_path / "model"), "--data", str(root), "--benchmark", "tofu",
                                 "--split", "forget10", "--method", "simnpo", "--out", str(tmp_path / "run"),
                                 "--calibration", "floor=0"])  # an untrained model: utility 0, no floor to hold
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "run" / "calibration.json").read_text())
    assert info["reference"] == "twins" and info["n_forget"] == info["n_reference"] == 30
    assert info["truth_ratio"]["start"]["n_forget"] == 30
