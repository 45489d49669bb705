"""Data layer I/O: JSONL reading with one-line errors, atomic writes, datasets dirs, overlap."""

import json
import os
import re

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from unlearnkit.data import (  # noqa: E402
    DataError,
    DocRecord,
    QARecord,
    check_overlap,
    load_split,
    load_world,
    overlap,
    read_jsonl,
    require_split,
    write_jsonl,
)


def qa(i, q=None, a=None, **kw):
    return QARecord(id=f"r{i}", subject=f"S{i}", question=q or f"Q{i}?", answer=a or f"A{i}",
                    paraphrased_answer=f"It is A{i}.", perturbed_answers=[f"It is B{i}."], **kw)


def test_schema_basics():
    r = qa(1, alt_questions=["Other Q1?"])
    assert r.phrasings() == ["Q1?", "Other Q1?"]
    r2 = QARecord.model_validate({**r.model_dump(), "extra_field": 3})
    assert r2 == r and not hasattr(r2, "extra_field")
    with pytest.raises(ValueError):
        qa(1, q=" ")
    with pytest.raises(ValueError):
        QARecord.model_validate({**r.model_dump(), "perturbed_answers": []})
    assert QARecord.model_validate({**r.model_dump(), "answer": 1974}).answer == "1974"
    with pytest.raises(ValueError):
        DocRecord(id="d", subject="s", text="")


def test_roundtrip(tmp_path):
    recs = [qa(i) for i in range(3)]
    write_jsonl(tmp_path / "x.jsonl", recs)
    assert read_jsonl(tmp_path / "x.jsonl") == recs
    docs = [DocRecord(id="d1", subject="S", text="Some text.")]
    write_jsonl(tmp_path / "retain_docs.jsonl", docs)
    assert load_split(tmp_path, "retain_docs") == docs


def test_blank_lines_skipped(tmp_path):
    p = tmp_path / "forget.jsonl"
    p.write_text("\n" + qa(1).model_dump_json() + "\n\n  \n" + qa(2).model_dump_json() + "\n")
    assert [r.id for r in read_jsonl(p)] == ["r1", "r2"]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found") as e:
        read_jsonl(tmp_path / "forget.jsonl")
    assert "forget.jsonl" in str(e.value)


def test_malformed_json(tmp_path):
    p = tmp_path / "forget.jsonl"
    p.write_text(qa(1).model_dump_json() + "\n" + '{"id": "x" "subject": 1}\n')
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    msg = str(e.value)
    assert "forget.jsonl:2" in msg and "malformed JSON" in msg and "column" in msg
    assert "\n" not in msg
    # a line cut short: the column where it ends (it said "column 1", of the line break after it)
    p.write_text(qa(1).model_dump_json() + "\n" + '{"id": "x", "subject": "y"\n')
    with pytest.raises(DataError, match=r"forget.jsonl:2: malformed JSON \(Expecting ',' delimiter: column 27\)"):
        read_jsonl(p)


def test_not_an_object(tmp_path):
    p = tmp_path / "forget.jsonl"
    p.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"forget.jsonl:1: expected a JSON object"):
        read_jsonl(p)


def test_missing_answer(tmp_path):
    p = tmp_path / "forget.jsonl"
    bad = qa(3).model_dump()
    del bad["answer"]
    lines = [qa(1).model_dump_json(), "", json.dumps(bad)]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        read_jsonl(p)
    msg = str(e.value)
    assert "forget.jsonl:3" in msg and "field 'answer': missing" in msg
    assert "\n" not in msg


def test_empty_answer_names_field(tmp_path):
    p = tmp_path / "retain.jsonl"
    p.write_text(json.dumps({**qa(1).model_dump(), "answer": ""}) + "\n")
    with pytest.raises(DataError, match=r"retain.jsonl:1: field 'answer'"):
        read_jsonl(p)


def test_load_world(tmp_path):
    write_jsonl(tmp_path / "forget.jsonl", [qa(1)])
    write_jsonl(tmp_path / "retain.jsonl", [qa(2), qa(3)])
    write_jsonl(tmp_path / "forget_docs.jsonl", [DocRecord(id="d1", subject="S1", text="t")])
    w = load_world(tmp_path)
    assert w.path == tmp_path
    assert len(w.forget) == 1 and len(w.retain) == 2 and w.neighbours == [] and w.holdout_docs == []
    assert [r.id for r in w.training_records()] == ["r1", "r2", "r3"]
    assert [r.id for r in w.training_records(without_forget=True)] == ["r2", "r3"]
    assert len(w.training_docs()) == 1 and w.training_docs(without_forget=True) == []


def test_load_world_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_world(tmp_path / "nope")
    with pytest.raises(DataError, match=r"forget.jsonl: file not found"):
        load_world(tmp_path)
    (tmp_path / "forget.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"forget.jsonl: empty forget set"):
        load_world(tmp_path)


def test_twin_of_names_a_forget_record(tmp_path):
    """`twin_of` pairs a holdout record with the forget record it mirrors; loading checks both ends."""
    write_jsonl(tmp_path / "forget.jsonl", [qa(1)])
    write_jsonl(tmp_path / "holdout.jsonl", [qa(2, twin_of="r1"), qa(3)])
    w = load_world(tmp_path)
    assert [r.twin_of for r in w.holdout] == ["r1", None]
    write_jsonl(tmp_path / "holdout.jsonl", [qa(2, twin_of="r9")])
    with pytest.raises(DataError, match=r"holdout.jsonl: record 'r2': field 'twin_of': no forget record has id 'r9'"):
        load_world(tmp_path)
    (tmp_path / "holdout.jsonl").unlink()
    write_jsonl(tmp_path / "retain.jsonl", [qa(2, twin_of="r1")])
    with pytest.raises(DataError, match=r"retain.jsonl: record 'r2': field 'twin_of': only a holdout record is a twin"):
        load_world(tmp_path)


def test_overlap():
    forget = [qa(1), qa(2), qa(3, alt_questions=["Q9?"])]
    retain = [qa(1), qa(4), qa(9), qa(5, q="Q2?", a="other")]
    # r1 same pair; r2 same question but different answer: no; r3 alt "Q9?"/"A3" vs retain "Q9?"/"A9": no
    assert overlap(forget, retain) == 1
    assert overlap(forget, [qa(7, q="Q9?", a="A3")]) == 1
    assert overlap(forget, []) == 0


def test_atomic_write_no_temp_files(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [qa(1)])
    write_jsonl(tmp_path / "a.jsonl", [qa(2)])  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]
    assert read_jsonl(tmp_path / "a.jsonl")[0].id == "r2"

    def boom():
        yield qa(3).model_dump()
        raise RuntimeError("fail mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "a.jsonl", boom())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]
    assert read_jsonl(tmp_path / "a.jsonl")[0].id == "r2"  # old content intact


def test_datasets_directory_roundtrip(tmp_path):
    datasets = pytest.importorskip("datasets")
    forget = [qa(1), qa(2, alt_questions=["Other?"], paraphrased_question="Para?")]
    retain = [qa(3)]
    docs = [DocRecord(id="d1", subject="S1", text="A bio.")]

    def ds(recs):
        return datasets.Dataset.from_list([r.model_dump() for r in recs])

    dd = datasets.DatasetDict({"forget": ds(forget), "retain": ds(retain), "forget_docs": ds(docs)})
    dd.save_to_disk(str(tmp_path / "hf"))
    assert load_split(tmp_path / "hf", "forget") == forget
    w = load_world(tmp_path / "hf")
    assert w.forget == forget and w.retain == retain and w.forget_docs == docs and w.holdout == []
    with pytest.raises(DataError, match="no split 'neighbours'"):
        load_split(tmp_path / "hf", "neighbours")

    bad = [{k: v for k, v in r.model_dump().items() if k != "answer"} for r in retain]
    datasets.DatasetDict({"forget": datasets.Dataset.from_list(bad)}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError) as e:
        load_split(tmp_path / "bad", "forget")
    msg = str(e.value)
    assert "[forget] row 1" in msg  # rows count from 1, as lines do (from 0 until session 36) and "field 'answer': missing" in msg


def test_a_single_dataset_or_an_empty_split_given_for_a_world_is_named(tmp_path):
    """A folder of `Dataset.save_to_disk` (no splits) given for a world was "forget.jsonl: file not
    found", and a DatasetDict with an empty split failed whole ("cannot load datasets directory (list
    index out of range)", for any split asked for), until session 38."""
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list([qa(1).model_dump()]).save_to_disk(str(tmp_path / "one"))
    for load in (load_world, lambda d: load_split(d, "forget")):
        with pytest.raises(DataError) as e:
            load(tmp_path / "one")
        assert str(e.value) == (f"{tmp_path / 'one'}: a single Dataset (Dataset.save_to_disk), not a world: expected "
                                "forget.jsonl (retain.jsonl, ...) or a DatasetDict with splits forget (retain, ...), "
                                "e.g. DatasetDict({'forget': ds}).save_to_disk(...)")
    empty = datasets.Dataset.from_list([qa(1).model_dump()]).select([])
    datasets.DatasetDict({"forget": datasets.Dataset.from_list([qa(1).model_dump()]), "retain": empty}).save_to_disk(
        str(tmp_path / "hf"))
    w = load_world(tmp_path / "hf")
    assert [r.id for r in w.forget] == ["r1"] and w.retain == []
    with pytest.raises(DataError, match=r"^" + re.escape(f"{tmp_path / 'hf'}[retain]: empty, and method npo needs")):
        require_split(w, "retain", why="method npo needs a retain set")
    datasets.DatasetDict({"forget": empty, "retain": datasets.Dataset.from_list([qa(2).model_dump()])}).save_to_disk(
        str(tmp_path / "hf2"))
    with pytest.raises(DataError) as e:
        load_world(tmp_path / "hf2")
    assert str(e.value) == f"{tmp_path / 'hf2'}[forget]: empty forget set"


# --- input safety (issue 12): every bad record is a one-line error naming file, line and field


def _write_lines(path, objs):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


def _one_line_error(path, match):
    with pytest.raises(DataError, match=match) as e:
        read_jsonl(path)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_duplicate_id_names_both_lines(tmp_path):
    p = _write_lines(tmp_path / "forget.jsonl", [qa(1).model_dump(), qa(2).model_dump(), qa(1, q="Other?").model_dump()])
    msg = _one_line_error(p, r"forget.jsonl:3: field 'id': duplicate id 'r1'")
    assert "first on line 1" in msg


def test_duplicate_id_in_datasets_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [qa(1).model_dump(), qa(1).model_dump()]
    datasets.DatasetDict({"forget": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match=r"\[forget\] row 2: field 'id': duplicate id 'r1' \(first on row 1\)"):
        load_split(tmp_path / "hf", "forget")


def test_datasets_split_with_an_optional_list_on_some_rows(tmp_path):
    """save_to_disk gives every row every column: `alt_questions` on one row was null on the other
    and refused ("Input should be a valid list") until session 37; a null required field still is."""
    datasets = pytest.importorskip("datasets")
    rows = [qa(1, alt_questions=["Other?"]).model_dump(exclude={"paraphrased_question", "attribute", "twin_of"}),
            qa(2).model_dump(exclude={"alt_questions", "paraphrased_question", "attribute", "twin_of"})]
    datasets.DatasetDict({"forget": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    assert [r.alt_questions for r in load_split(tmp_path / "hf", "forget")] == [["Other?"], []]
    rows[1]["answer"] = None
    datasets.DatasetDict({"forget": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"\[forget\] row 2: field 'answer': Input should be a valid string"):
        load_split(tmp_path / "bad", "forget")


def test_blank_subject(tmp_path):
    p = _write_lines(tmp_path / "retain.jsonl", [qa(1).model_dump(), {**qa(2).model_dump(), "subject": "  "}])
    _one_line_error(p, r"retain.jsonl:2: field 'subject': must be a non-empty string")
    d = _write_lines(tmp_path / "forget_docs.jsonl", [{"id": "d1", "subject": "", "text": "A bio."}])
    with pytest.raises(DataError, match=r"forget_docs.jsonl:1: field 'subject'"):
        read_jsonl(d, DocRecord)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_answer_literal(tmp_path, literal):
    line = json.dumps({**qa(1).model_dump(), "answer": "PLACEHOLDER"}).replace('"PLACEHOLDER"', literal)
    p = _write_lines(tmp_path / "forget.jsonl", [qa(0).model_dump(), line])
    _one_line_error(p, r"forget.jsonl:2: field 'answer': must be a string, not (NaN|inf|-inf)")


def test_nan_in_other_fields_and_python_floats(tmp_path):
    line = json.dumps(qa(1).model_dump()).replace('["It is B1."]', '["It is B1.", NaN]')
    p = _write_lines(tmp_path / "forget.jsonl", [line])
    _one_line_error(p, r"forget.jsonl:1: field 'perturbed_answers': must be a string, not NaN")
    with pytest.raises(ValueError, match="not NaN"):
        QARecord.model_validate({**qa(1).model_dump(), "paraphrased_answer": float("nan")})
    # finite numbers are still read as strings
    assert QARecord.model_validate({**qa(1).model_dump(), "answer": 2.5}).answer == "2.5"


def test_a_whole_float_answer_is_read_as_an_integer(tmp_path):
    """A year read as a float (pandas with a gap in the column, a JSON writer's 1961.0) was the
    answer "1961.0", trained and scored so, until session 38; a fraction is kept as written."""
    rec = {**qa(1).model_dump(), "answer": 1961.0, "paraphrased_answer": 3.5, "perturbed_answers": [1962.0, -4.0, 1e20]}
    p = _write_lines(tmp_path / "forget.jsonl", [rec])
    assert '"answer": 1961.0' in p.read_text()
    r = read_jsonl(p)[0]
    assert (r.answer, r.paraphrased_answer, r.perturbed_answers) == ("1961", "3.5", ["1962", "-4", "1e+20"])
    datasets = pytest.importorskip("datasets")
    rows = [{**qa(1).model_dump(), "answer": 1961.0}, {**qa(2).model_dump(), "answer": 0.5}]  # one float column
    datasets.DatasetDict({"forget": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "hf"))
    assert [r.answer for r in load_split(tmp_path / "hf", "forget")] == ["1961", "0.5"]
    assert DocRecord.model_validate({"id": 7.0, "subject": "S", "text": 2024.0}).text == "2024"


def test_empty_perturbed_answer(tmp_path):
    p = _write_lines(tmp_path / "forget.jsonl", [{**qa(1).model_dump(), "perturbed_answers": ["It is B1.", " "]}])
    _one_line_error(p, r"forget.jsonl:1: field 'perturbed_answers': item 1 must be a non-empty string")
    p = _write_lines(tmp_path / "forget.jsonl", [{**qa(1).model_dump(), "perturbed_answers": []}])
    _one_line_error(p, r"forget.jsonl:1: field 'perturbed_answers'")
    p = _write_lines(tmp_path / "forget.jsonl", [{**qa(1).model_dump(), "paraphrased_answer": ""}])
    _one_line_error(p, r"forget.jsonl:1: field 'paraphrased_answer'")


@pytest.mark.parametrize("field, value", [("answer", "A \ud800"), ("paraphrased_question", "Q\udfff?"),
                                          ("alt_questions", ["Other?", "\ud800"])])
def test_lone_surrogate_names_file_line_and_field(tmp_path, field, value):
    """JSON's "\\ud800" was read into a record, and crashed the tokenizer (forget) or a UTF-8 write
    naming no file (finetune), until session 37."""
    p = _write_lines(tmp_path / "forget.jsonl", [qa(1).model_dump(), {**qa(2).model_dump(), field: value}])
    _one_line_error(p, rf"forget.jsonl:2: field '{field}': text is not valid Unicode \(a lone surrogate\)")
    d = _write_lines(tmp_path / "forget_docs.jsonl", [{"id": "d1", "subject": "S1", "text": "A bio \udc00."}])
    with pytest.raises(DataError, match=r"forget_docs.jsonl:1: field 'text': text is not valid Unicode"):
        read_jsonl(d, DocRecord)


def test_utf8_bom_accepted(tmp_path):
    p = tmp_path / "forget.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + (qa(1).model_dump_json() + "\n" + qa(2).model_dump_json() + "\n").encode())
    assert [r.id for r in read_jsonl(p)] == ["r1", "r2"]
    # a BOM anywhere but the start is still an error
    p.write_bytes((qa(1).model_dump_json() + "\n").encode() + b"\xef\xbb\xbf" + qa(2).model_dump_json().encode())
    _one_line_error(p, r"forget.jsonl:2: malformed JSON")


def test_world_remembers_sources(tmp_path):
    write_jsonl(tmp_path / "forget.jsonl", [qa(1)])
    write_jsonl(tmp_path / "retain.jsonl", [qa(2)])
    w = load_world(tmp_path)
    assert w.sources == {"forget": str(tmp_path / "forget.jsonl"), "retain": str(tmp_path / "retain.jsonl")}
    assert w.source("neighbours") == str(tmp_path / "neighbours.jsonl")  # where it would be read from


def test_require_split_names_the_file(tmp_path):
    write_jsonl(tmp_path / "forget.jsonl", [qa(1)])
    w = load_world(tmp_path)
    with pytest.raises(DataError) as e:
        require_split(w, "retain", why="method graddiff needs a retain set")
    assert str(e.value) == f"{tmp_path / 'retain.jsonl'}: not found, and method graddiff needs a retain set"
    (tmp_path / "retain.jsonl").write_text("\n")
    w = load_world(tmp_path)
    with pytest.raises(DataError, match=r"retain.jsonl: empty, and method graddiff needs a retain set"):
        require_split(w, "retain", why="method graddiff needs a retain set")
    write_jsonl(tmp_path / "retain.jsonl", [qa(2)])
    assert [r.id for r in require_split(load_world(tmp_path), "retain", why="x")] == ["r2"]
    with pytest.raises(ValueError, match="unknown split"):
        require_split(w, "retian", why="x")


def test_require_split_in_datasets_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"forget": datasets.Dataset.from_list([qa(1).model_dump()])}).save_to_disk(str(tmp_path / "hf"))
    with pytest.raises(DataError, match=r"hf\[retain\]: not found, and method npo needs"):
        require_split(load_world(tmp_path / "hf"), "retain", why="method npo needs a retain set")


def test_check_overlap(tmp_path):
    write_jsonl(tmp_path / "forget.jsonl", [qa(1), qa(2)])
    write_jsonl(tmp_path / "retain.jsonl", [qa(2), qa(3)])
    assert check_overlap(load_world(tmp_path)) == 1  # partial: a count for a warning
    (tmp_path / "retain.jsonl").write_bytes((tmp_path / "forget.jsonl").read_bytes())
    with pytest.raises(DataError) as e:
        check_overlap(load_world(tmp_path))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'retain.jsonl'}: holds every record of {tmp_path / 'forget.jsonl'} (2)")
    write_jsonl(tmp_path / "retain.jsonl", [qa(3), qa(2), qa(1)])  # every forget record, and more
    with pytest.raises(DataError, match="the forget and retain sets must differ"):
        check_overlap(load_world(tmp_path))
    (tmp_path / "retain.jsonl").unlink()
    assert check_overlap(load_world(tmp_path)) == 0


def test_generated_world_passes_the_checks(tmp_path):
    from unlearnkit.data import build_world

    w = load_world(build_world(tmp_path / "w", seed=0, n_people=20))
    assert w.forget and w.retain
    assert 0 <= check_overlap(w) < len(w.forget)


def test_data_hash_covers_every_data_file_of_any_format(tmp_path):
    """A cached attack and a reused checkpoint are keyed on `runinfo.data_hash`: until session 34 it
    read a directory's top-level JSONL files only, so every TOFU (JSON), parquet or `save_to_disk`
    directory hashed as the same empty input."""
    from unlearnkit.runinfo import data_hash

    a, b = tmp_path / "a", tmp_path / "b"
    for d, answer in ((a, "Paris"), (b, "Rome")):
        (d / "sub").mkdir(parents=True)
        (d / "forget10.json").write_text(json.dumps([{"question": "Where?", "answer": answer}]))
        (d / "sub" / "data.arrow").write_bytes(b"\x00\x01")
    assert data_hash(a) != data_hash(b) != data_hash(tmp_path / "empty")
    h = data_hash(a)
    (a / ".cache").mkdir()
    (a / ".cache" / "x").write_text("scratch")  # hidden: no data
    assert data_hash(a) == h
    (a / "sub" / "data.arrow").write_bytes(b"\x00\x02")  # at any depth
    assert data_hash(a) != h
    assert data_hash(a / "forget10.json") != data_hash(b / "forget10.json")  # one data file
