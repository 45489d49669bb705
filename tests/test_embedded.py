"""The embedded default end to end: subject and oracle behave as the field expects, graddiff forgets,
and the CLI contract (verbs, files, errors) holds."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit import api
from unlearnkit.cli import app
from unlearnkit.data.io import load_world
from unlearnkit.models.load import ModelLoadError, load_model
from unlearnkit.scoring import LM

from conftest import TEST_FORGET, TEST_PEOPLE

runner = CliRunner()


def _tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _exact(lm, records) -> float:
    gens = lm.generate([r.question for r in records], max_new_tokens=16)
    return sum(g == r.answer for g, r in zip(gens, records)) / len(records)


def test_subject_memorises_and_oracle_does_not(tiny_world):
    w = load_world(tiny_world.data_dir)
    subject = LM(*load_model(tiny_world.subject_dir))
    oracle = LM(*load_model(tiny_world.oracle_dir))
    assert _exact(subject, w.training_records()) >= 0.95
    assert _exact(oracle, w.forget) <= 0.2          # close to guessing among ~30 values per attribute
    assert _exact(oracle, w.retain) >= 0.9


def test_forget_quality_orders_subject_and_oracle(tiny_results):
    assert tiny_results["oracle"]["forget_quality"] == pytest.approx(1.0)
    assert tiny_results["oracle"]["privleak"] == pytest.approx(0.0)
    assert tiny_results["subject"]["forget_quality"] < 0.01
    assert tiny_results["subject"]["forget_rouge"] > 0.9
    assert tiny_results["oracle"]["forget_rouge"] < 0.3


def test_truth_gap_against_twins_tells_the_subject_from_the_oracle(tiny_world, tiny_results):
    """`truth_gap_twins` (no oracle): the subject prefers its forget facts' true answers far more than
    for strangers; the oracle, which never saw them, hardly more, and it is the paired statistic
    of the per-sample truth ratios."""
    from unlearnkit.metrics import tofu

    gap = {}
    for name, r in tiny_results.items():
        ps = r["per_sample"]
        assert r["forget_quality_twins_n"] == len(ps["forget_truth_ratios"]) == len(ps["twin_truth_ratios"])
        gap[name] = tofu.paired_truth_gap(ps["forget_truth_ratios"], ps["twin_truth_ratios"])
        assert r["truth_gap_twins"] == pytest.approx(gap[name]["mean"])
    # measured over test-sized worlds (seeds stand in for CPUs, bench/twin_power.py): 0.19-0.47, p 5e-13-7e-4
    assert gap["subject"]["mean"] > 0.15 and gap["subject"]["p"] < 0.01
    # on its own (bench/twin_bias.py --truth-gap): the same figure from a scoring call of its own
    from unlearnkit.data.io import load_world
    from unlearnkit.evaluate import truth_gap_twins
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    world = load_world(tiny_world.data_dir)
    alone = truth_gap_twins(LM(*load_model(tiny_world.subject_dir)), world)
    assert alone["mean"] == pytest.approx(gap["subject"]["mean"], rel=1e-4) and alone["n"] == gap["subject"]["n"]
    # each pair's forget record, in order (bench/twin_bias.py --by-attribute groups by it)
    ids, by_id = alone["ids"], {r.id: r for r in world.forget}
    assert len(set(ids)) == len(ids) == alone["n"] and [i for i in by_id if i in set(ids)] == ids
    assert all(by_id[i].subject in by_id[i].question for i in ids)
    assert abs(gap["oracle"]["mean"]) < gap["subject"]["mean"] / 2  # measured: 0.0001-0.08


def test_graddiff_forgets_and_keeps_retain(tiny_world, tiny_results, tmp_path):
    before = _tree_hash(tiny_world.subject_dir)
    # the method's own claim, at its fixed default budget (calibrated runs: tests/test_methods.py)
    run = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "graddiff", tmp_path / "run", progress=False, epochs=4)
    assert _tree_hash(tiny_world.subject_dir) == before, "the source model was modified"
    for name in ("config.yaml", "log.jsonl", "model/config.json", "model/model.safetensors", "train.json"):
        assert (run / name).is_file(), name
    res = api.evaluate(run / "model", tiny_world.data_dir, oracle=tiny_results["oracle"], suites=("tofu",))
    subj = tiny_results["subject"]
    assert res["forget_rouge"] <= 0.5 * subj["forget_rouge"]
    assert res["retain_rouge"] >= 0.85 * subj["retain_rouge"]
    # KS p-values are coarse with 20 forget facts: the unlearned model must not be further from the oracle
    assert res["forget_quality"] >= subj["forget_quality"]


def test_local_checkpoint_loads_and_hub_id_fails_clearly(tiny_world):
    model, tok = load_model(str(tiny_world.subject_dir))
    assert model.config.model_type == "llama" and tok.eos_token == "<eos>"
    with pytest.raises(ModelLoadError, match="hub"):
        load_model("unlearnkit-test/no-such-model")
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load_model("./missing/model/dir")


@pytest.fixture()
def world_copy(tiny_world, tmp_path):
    """A copy of the world's JSONL files that a test may break."""
    d = tmp_path / "data"
    d.mkdir()
    for f in Path(tiny_world.data_dir).glob("*.jsonl"):
        (d / f.name).write_text(f.read_text())
    return d


def _forget_cli(model, data, out, *extra):
    return runner.invoke(app, ["forget", "--model", str(model), "--data", str(data), "--out", str(out), "--steps", "1", *extra])


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_cli_errors_name_file_line_and_field(tiny_world, world_copy, tmp_path):
    forget = world_copy / "forget.jsonl"
    rows = forget.read_text().splitlines()
    forget.write_text(rows[0] + "\n{not json\n")
    msg = _one_line_error(_forget_cli(tiny_world.subject_dir, world_copy, tmp_path / "r"))
    assert "forget.jsonl:2" in msg and "malformed JSON" in msg

    rec = json.loads(rows[0])
    del rec["answer"]
    forget.write_text(rows[0] + "\n" + json.dumps(rec) + "\n")
    msg = _one_line_error(_forget_cli(tiny_world.subject_dir, world_copy, tmp_path / "r"))
    assert "forget.jsonl:2" in msg and "answer" in msg

    forget.write_text("")
    msg = _one_line_error(_forget_cli(tiny_world.subject_dir, world_copy, tmp_path / "r"))
    assert "empty forget set" in msg

    forget.unlink()
    msg = _one_line_error(_forget_cli(tiny_world.subject_dir, world_copy, tmp_path / "r"))
    assert "forget.jsonl" in msg and "not found" in msg


def test_cli_unknown_method_lists_valid_ones(tiny_world, tmp_path):
    msg = _one_line_error(_forget_cli(tiny_world.subject_dir, tiny_world.data_dir, tmp_path / "r", "--method", "nope"))
    assert "unknown method 'nope'" in msg and "graddiff" in msg and "ga" in msg


def test_cli_missing_model_is_one_line(tiny_world, tmp_path):
    msg = _one_line_error(_forget_cli(tmp_path / "no-model", tiny_world.data_dir, tmp_path / "r"))
    assert "no such model directory" in msg or "not a model checkpoint" in msg


def test_overlap_is_a_warning_with_count(tiny_world, world_copy, tmp_path, caplog):
    w = load_world(world_copy)
    with open(world_copy / "retain.jsonl", "a") as f:
        for r in w.forget[:3]:
            f.write(r.model_dump_json() + "\n")
    with caplog.at_level("WARNING", logger="unlearnkit"):
        api.forget(tiny_world.subject_dir, world_copy, "ga", tmp_path / "r", steps=1, progress=False)
    assert any("3 forget records also appear in the retain set" in r.message for r in caplog.records)


def test_cli_world_finetune_eval_roundtrip(tiny_world, tiny_results, tmp_path):
    r = runner.invoke(app, ["world", "--out", str(tmp_path / "w"), "--seed", "3", "--people", "20"])
    assert r.exit_code == 0, r.output
    for split in ("forget", "retain", "holdout", "world_facts", "neighbours"):
        assert (tmp_path / "w" / f"{split}.jsonl").is_file()
    oracle_json = tmp_path / "oracle.json"
    oracle_json.write_text(json.dumps(tiny_results["oracle"]))
    r = runner.invoke(app, ["eval", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir),
                            "--oracle", str(oracle_json), "--suite", "tofu", "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["forget_quality"] == pytest.approx(tiny_results["subject"]["forget_quality"])
    assert len(res["info"]["fingerprint"]) == 16 and res["info"]["versions"]["torch"]


def test_cli_eval_without_an_oracle_judges_forgetting_against_twins(tiny_world, tiny_results, tmp_path):
    """No --oracle: the verdict's forgetting check uses forget quality against the model's own twins,
    with the subject's result for its power. The oracle model, standing in for a model that forgot,
    passes; the subject fails. The KS test against the twins has little power on this tiny world
    (the subject's p is 0.002-0.4 over seeds and CPUs, bench/twin_power.py): where the subject's
    facts are not told apart, both cannot decide and say why; the oracle's pass is then checked
    with a subject result that has the power."""
    sub = tiny_results["subject"]
    told = sub["forget_quality_twins"] < 0.05
    subjects = {"real": sub, "apart": {**sub, "forget_quality_twins": 1e-4}}
    got = {}
    for given, result in subjects.items():
        (tmp_path / f"{given}.json").write_text(json.dumps(result))
        for name, path in (("oracle", tiny_world.oracle_dir), ("subject", tiny_world.subject_dir)):
            if given == "apart" and (name == "subject" or told):
                continue
            out = tmp_path / f"{given}-{name}.json"
            r = runner.invoke(app, ["eval", "--model", str(path), "--data", str(tiny_world.data_dir),
                                    "--subject", str(tmp_path / f"{given}.json"), "--suite", "tofu", "--out", str(out)])
            assert r.exit_code == 0, r.output
            got[given, name] = json.loads(out.read_text())
            assert got[given, name]["forget_quality"] is None
            assert got[given, name]["verdict"]["forgetting"]["reference"] == "twins"
    assert got["real", "subject"]["forget_quality_twins"] == pytest.approx(sub["forget_quality_twins"])
    status = {k: v["verdict"]["forgetting"]["status"] for k, v in got.items()}
    if told:
        assert status == {("real", "oracle"): "pass", ("real", "subject"): "fail"}
    else:
        assert status == {("real", "oracle"): "cannot decide", ("real", "subject"): "cannot decide",
                          ("apart", "oracle"): "pass"}
        assert "does not tell the subject's forget facts from their twins'" in got["real", "oracle"]["verdict"]["forgetting"]["why"]


def test_cli_eval_with_a_subject_checkpoint_scores_it_against_the_oracle(tiny_world, tiny_results, tmp_path):
    """`--subject` as a checkpoint (as `forget --eval` passes the source model): the subject is
    evaluated against the oracle, so the verdict has its forget quality and can fail the subject
    itself, as with the subject's results JSON (until session 34: "cannot decide ... the subject
    has no forget quality")."""
    oracle_json = tmp_path / "oracle.json"
    oracle_json.write_text(json.dumps(tiny_results["oracle"]))
    r = runner.invoke(app, ["eval", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir),
                            "--oracle", str(oracle_json), "--subject", str(tiny_world.subject_dir), "--suite", "tofu",
                            "--out", str(tmp_path / "e.json")])
    assert r.exit_code == 0, r.output
    v = json.loads((tmp_path / "e.json").read_text())["verdict"]["forgetting"]
    assert v["status"] == "fail", v
    assert f"verdict (model) forgetting: FAIL — {v['why']}" in " ".join(r.stdout.split())  # printed, not only in the JSON


def test_cli_help_explains_every_flag():
    for verb in ("demo", "world", "finetune", "forget", "eval", "methods"):
        r = runner.invoke(app, [verb, "--help"])
        assert r.exit_code == 0 and "--" in r.output, verb


def test_demo_end_to_end_reuses_checkpoints(tiny_world, tmp_path):
    """`unlearn demo` on the test-sized world: the trained subject/oracle are picked up (same world,
    same seed), the rest of the pipeline runs and writes the contract files."""
    import shutil

    out = tmp_path / "demo"
    for kind, src in (("subject", tiny_world.subject_dir), ("oracle", tiny_world.oracle_dir)):
        shutil.copytree(src, out / "models" / kind)
    r = runner.invoke(app, ["demo", "--out", str(out), "--people", str(TEST_PEOPLE), "--forget-fraction", str(TEST_FORGET)])
    assert r.exit_code == 0, r.output
    assert "reusing" in r.output
    metrics = json.loads((out / "metrics.json").read_text())
    models = metrics["models"]
    assert set(models) >= {"subject", "oracle", "unlearned"}
    for m in models.values():
        for key in ("forget_quality", "model_utility", "forget_rouge", "retain_rouge", "forget_truth_ratio"):
            assert key in m
    assert models["oracle"]["forget_quality"] == pytest.approx(1.0)
    # the references judged as any model, both known: the untouched subject fails (it said "cannot decide:
    # give --subject" in the demo that had evaluated it, until session 35), the oracle forgets
    assert models["subject"]["verdict"]["forgetting"]["status"] == "fail"
    assert models["oracle"]["verdict"]["forgetting"]["status"] == "pass"
    stop = metrics["unlearning"]["stop"]
    if stop["reason"] == "matched":  # else it says where it stopped (utility floor first on this small world)
        assert models["unlearned"]["forget_rouge"] <= 0.5 * models["subject"]["forget_rouge"]
    assert stop["kept"]["utility"] >= 0.95
    assert metrics["config"]["seed"] == 0 and metrics["versions"]["transformers"]
    # the method the run used, the data's default included (null, and "method None" in the report, until session 36)
    assert metrics["config"]["method"] == yaml.safe_load((out / "unlearned" / "config.yaml").read_text())["method"]
    assert {"world", "subject+oracle", "forget", "guard", "eval"} <= set(metrics["seconds"])
    assert (out / "report.md").read_text().startswith("# unlearnkit report")
    assert (out / "world" / "forget.jsonl").is_file() and (out / "unlearned" / "model" / "config.json").is_file()
    # unlearning was calibrated: it says why it stopped, and the HTML report is there
    from unlearnkit.calibrate import REASONS

    assert metrics["unlearning"]["stop"]["reason"] in REASONS and "stopped:" in r.output
    assert (out / "report.html").is_file() and (out / "unlearned" / "calibration.json").is_file()
    # the attack stage: every attack's full result on disk, its headline in metrics.json and the report
    assert set(metrics["attacks"]) == {"relearn", "quantize", "probes", "incontext"}
    for kind, a in metrics["attacks"].items():
        full = json.loads((out / "attacks" / f"{kind}.json").read_text())
        if a["recovery"] is None:  # nothing to recover, or the attack has no power here: said, not 0
            assert full["recovery"] is None and any(n.startswith("recovery undefined") for n in full["notes"])
            continue
        assert a["recovery"] == pytest.approx(full["recovery"]) and 0.0 <= a["recovery"] <= 1.0
        assert a["oracle_recovery"] is not None
    assert "## Attacks on the unlearned model" in (out / "report.md").read_text()
    # the guard stage: the subject behind a guard of the forget people, weights untouched, answers like the oracle's
    g = models["guarded"]
    assert g["forget_rouge"] <= models["oracle"]["forget_rouge"] + 0.05 and g["retain_rouge"] >= 0.98
    assert g["forget_quality"] > 10 * models["subject"]["forget_quality"]
    assert len((out / "guard" / "targets.jsonl").read_text().splitlines()) == 6
    assert json.loads((out / "guard" / "guard.json").read_text())["calibration"]["false_refusal"] == 0.01
    assert "## Verdict: guarded" in (out / "report.md").read_text() and "guard serve" in r.output
    r = runner.invoke(app, ["demo", "--out", str(out), "--people", str(TEST_PEOPLE), "--forget-fraction", str(TEST_FORGET),
                            "--guard", "erase"])
    assert r.exit_code == 2 and "guard action 'erase'" in r.output
