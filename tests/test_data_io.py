"""Data layer I/O: JSONL reading with one-line errors, atomic writes, datasets dirs, overlap."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from unlearnkit.data import (  # noqa: E402
    DataError,
    DocRecord,
    QARecord,
    load_split,
    load_world,
    overlap,
    read_jsonl,
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
    assert "[forget] row 0" in msg and "field 'answer': missing" in msg
