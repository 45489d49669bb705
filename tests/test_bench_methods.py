"""bench/methods.py's judgement: the issue's targets, and the same targets widened to exact
retraining's own spread (what oracles retrained from other seeds score against the oracle)."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_methods", Path(__file__).parents[1] / "bench" / "methods.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def row(model, answer_rate=0.10, oracle_answer_rate=0.10, privleak=0.0, forget_quality=0.5, utility=1.0):
    return {"shape": "default", "seed": 0, "model": model, "answer_rate": answer_rate,
            "oracle_answer_rate": oracle_answer_rate, "privleak": privleak, "forget_quality": forget_quality,
            "utility_ratio": utility}


def test_fixed_targets():
    assert bench.meets(row("m"))
    assert not bench.meets(row("m", answer_rate=0.16))      # 0.06 from the oracle's
    assert bench.meets(row("m", answer_rate=0.05))          # 0.05 below: within
    assert not bench.meets(row("m", privleak=-10.5))
    assert not bench.meets(row("m", privleak=None))
    assert not bench.meets(row("m", forget_quality=0.04))
    assert not bench.meets(row("m", utility=0.949))


def test_spread_only_widens_the_targets():
    tight = bench.retraining_spread([row("retrained", answer_rate=0.11, privleak=3.0, forget_quality=0.9)])
    assert tight == bench.TARGETS
    wide = bench.retraining_spread([row("retrained", answer_rate=0.02, privleak=-30.0, forget_quality=0.2),
                                    row("retrained-2", privleak=12.0, forget_quality=0.01, utility=0.91)])
    assert wide == pytest.approx({"answer_gap": 0.08, "privleak": 30.0, "forget_quality": 0.01, "utility": 0.91})


def test_within_retraining_judges_each_retrained_oracle_by_the_others():
    rows = [row("subject", answer_rate=1.0, privleak=-100.0, forget_quality=1e-4),
            row("retrained", privleak=25.0),
            row("retrained-2", privleak=-18.0, utility=0.93),
            row("graddiff", privleak=20.0, utility=0.94),
            row("simnpo", privleak=26.0)]
    assert not bench.meets(rows[3])                            # the issue's |PrivLeak| <= 10 and utility >= 0.95
    assert bench.within_retraining(rows[3], rows)              # inside what retraining itself scores
    assert not bench.within_retraining(rows[4], rows)          # 26 > 25: past the farthest retrained oracle
    assert not bench.within_retraining(rows[1], rows)          # by the other's spread: 25 > 18
    assert not bench.within_retraining(rows[2], rows)          # 18 <= 25, but utility 0.93: the other's is 1.0
    fixed = rows[:2] + [{**rows[2], "utility_ratio": 0.95}] + rows[3:]
    assert bench.within_retraining(fixed[2], fixed)
    assert not bench.within_retraining(row("x", utility=0.92), rows)
    table = bench.table(rows, "graddiff")
    assert "| default | 0 | 2 | ≤ 0.05 | ≤ 25.0 | ≥ 0.05 | ≥ 0.930 |" in table
    assert "| default | 0 | graddiff |  | 0.5 | – | 0.10 (0.10) | 20.0 | 0.940 | **no** | **yes** |" in table


def test_the_fixed_budget_run_is_judged_beside_the_calibrated_one():
    """The cost ratio's other side gets a row of its own, judged by the same targets."""
    rows = [row("subject", answer_rate=1.0, privleak=-100.0, forget_quality=1e-4),
            {**row("simnpo"), "stop": "matched", "wall_s": 6.0, "fixed_wall_s": 4.0},
            {**row(bench.fixed_name("simnpo"), answer_rate=0.0, privleak=40.0), "stop": "budget", "wall_s": 4.0}]
    table = bench.table(rows, "simnpo")
    assert "| default | 0 | simnpo | matched | 0.5 | – | 0.10 (0.10) | 0.0 | 1.000 | **yes** | **yes** |  | 6.0 (4.0) |" in table
    assert "| default | 0 | simnpo, fixed budget | budget | 0.5 | – | 0.00 (0.10) | 40.0 | 1.000 | no | no |  | 4.0 (–) |" in table


def test_what_the_calibrator_saw_is_tabled_beside_the_evaluation():
    rows = [{**row("simnpo", answer_rate=0.15, oracle_answer_rate=0.0), "kept_forget_exact": 0.133,
             "kept_reference_exact": 0.0, "kept_truth_ks_p": 0.0012, "forget_quality_twins": 0.0011},
            {**row("graddiff"), "kept_forget_exact": 0.3, "kept_reference_exact": 0.05, "repairs": [[18, 2]]},
            row("simnpo, fixed budget")]                                    # no calibrator: no row
    table = bench.table(rows, "simnpo")
    assert "| default | 0 | simnpo | 0.133 | – | 0.150 | 0.000 | 0.000 | 0.0012 | 0.0011 |" in table
    assert "| default | 0 | graddiff | 0.300 | 18 → 2 | 0.100 | 0.050 | 0.100 | – | – |" in table
    assert table.count("| default | 0 | simnpo") == 3                     # the main table's two, this one


def test_forget_quality_against_twins_is_tabled_and_its_agreement_counted():
    """The oracle-free estimate stands beside forget quality; the table counts the rows where both
    fall on the same side of the 0.05 target, the oracle's own row (1 by definition) left out."""
    rows = [{**row("subject", forget_quality=1e-4), "forget_quality_twins": 3e-4},
            {**row("oracle", forget_quality=1.0), "forget_quality_twins": 0.01},   # left out
            {**row("retrained", forget_quality=0.6), "forget_quality_twins": 0.3},
            {**row("simnpo", forget_quality=0.04), "forget_quality_twins": 0.2},   # disagree
            row("graddiff")]                                                       # no estimate: left out
    assert bench.twins_agreement(rows) == (2, 3)
    table = bench.table(rows, "simnpo")
    assert "| default | 0 | simnpo |  | 0.04 | 0.2 | 0.10 (0.10) |" in table
    assert "against the oracle fall on the same side of 0.05 on 2 of 3 rows" in table
    assert bench.twins_agreement([row("simnpo")]) is None and "same side" not in bench.table([row("simnpo")], "simnpo")


def test_value_slot_splits_the_value_from_its_wording(tiny_world, load_bench):
    """bench/value_slot.py: the value is where the paraphrased answer and a perturbed one differ; the
    subject, which memorised the forget facts, prefers the true value far more than the oracle does."""
    vs = load_bench("value_slot")
    assert vs.value_of("Ashmere is the hometown of Ada Lee.", "Westerholm is the hometown of Ada Lee.") == (
        "Ashmere", "Westerholm")
    assert vs.value_of("The year is 1942.", "The year is 1990.") == ("42", "90")

    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    w = load_world(tiny_world.data_dir)
    got = {name: vs.measure(LM(*load_model(path)), w.forget)
           for name, path in (("subject", tiny_world.subject_dir), ("oracle", tiny_world.oracle_dir))}
    assert got["subject"]["value"] > -0.5 > got["oracle"]["value"]
    assert got["subject"]["trained"] > got["oracle"]["trained"] + 3


def test_the_default_row_names_its_method_and_is_in_bold():
    """A run with no method named (`--methods default`) is judged in bold under its own name, which
    says what the data chose; a named run of the same method is not."""
    rows = [{**row("default (twin_rmu, holdout)"), "stop": "matched"}, {**row("twin_rmu"), "stop": "matched"}]
    table = bench.table(rows)
    assert "| default | 0 | default (twin_rmu, holdout) | matched | 0.5 | – | 0.10 (0.10) | 0.0 | 1.000 | **yes** | **yes** |" in table
    assert "| default | 0 | twin_rmu | matched | 0.5 | – | 0.10 (0.10) | 0.0 | 1.000 | yes | yes |" in table
    assert bench.METHODS[0] == bench.DEFAULT


def test_the_default_row_takes_the_settings_of_the_method_it_runs(tiny_world):
    """`--param twin_rmu.alpha=5` reaches the default's run where the data makes it Twin RMU (a
    holdout split), and not where it makes it SimNPO (a fixed budget); `default.KEY=V` always does."""
    p = {"twin_rmu": {"alpha": 5.0}, "simnpo": {"beta": 2.0}}
    assert bench.method_params("default", p, tiny_world.data_dir, None, None) == {"alpha": 5.0}
    assert bench.method_params("default", p, tiny_world.data_dir, {"reference": "twins"}, None) == {"beta": 2.0}
    assert bench.method_params("default", p, tiny_world.data_dir, None, {"steps": 3}) == {"beta": 2.0}
    assert bench.method_params("default", {**p, "default": {"x": 1}}, tiny_world.data_dir, None, None) == {"x": 1}
    assert bench.method_params("ga", p, tiny_world.data_dir, None, None) is None


def test_twin_bias_scores_truth_ratios_as_the_evaluation_does(tiny_world, tiny_results, load_bench):
    """`evaluate.truth_ratios` (behind bench/twin_bias.py's `--truth-ratios` table) gives the
    evaluation's truth ratios, record for record, and the table's forget quality column is the
    evaluation's forget quality."""
    tb = load_bench("twin_bias")
    from unlearnkit.data.io import load_world
    from unlearnkit.evaluate import truth_ratios
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    w = load_world(tiny_world.data_dir)
    mine = truth_ratios(LM(*load_model(tiny_world.subject_dir)), w.forget)
    theirs = tiny_results["subject"]["per_sample"]["forget_truth_ratios"]
    assert len(mine) == len(theirs) == len(w.forget) and mine == pytest.approx(theirs, rel=1e-4)
    row = tb.truth_ratio_row("default", 0, "subject", w, {"subject": tiny_world.subject_dir, "oracle": tiny_world.oracle_dir,
                                                          "run": tiny_world.subject_dir}, {})
    cells = [c.strip() for c in row.strip("|").split("|")]
    fq = float(cells[3 + 6 + list(tb.TR_PAIRS).index("run f/oracle f")])
    assert fq == pytest.approx(tiny_results["subject"]["forget_quality"], rel=0.05)


def test_requests_bench_counts_candidates_and_retrained_oracles_within_the_oracle(load_bench):
    """bench/requests.py's closing line: batches deployed, candidates within 0.05 of the oracle's
    forget answer rate, and the same count for each oracle retrained from another seed (`--retrained`)."""
    rb = load_bench("requests")
    batches = [{"stage": "deployed", "answer_rate": 0.10, "answer_rate_oracle": 0.05, "answer_rate_retrained": [0.00, 0.15]},
               {"stage": "rejected", "answer_rate": 0.10, "answer_rate_oracle": 0.00, "answer_rate_retrained": [0.05, 0.00]}]
    line = rb.within_line(batches)
    assert line.startswith("1 of 2 batches deployed; candidates within 0.05 of the oracle's answer rate: 1 of 2")
    assert "retrained oracle 1: 2 of 2 (answer rates 0.00, 0.05)" in line
    assert "retrained oracle 2: 1 of 2 (answer rates 0.15, 0.00)" in line
    assert "retrained" not in rb.within_line([{k: v for k, v in b.items() if k != "answer_rate_retrained"} for b in batches])
    # a batch not deployed says which checks failed (the table did not say, until session 40)
    summary = rb._summary({"batch_checks": [{"check": "utility", "value": 0.88, "passed": False}],
                           "request_checks": {"r-1": [{"check": "answers", "value": 0.1, "passed": False},
                                                      {"check": "mia_auc", "value": 0.5, "passed": True}]}})
    assert summary["passed"] is False  # a batch's results (what `process` returns) do not say
    row = {"batch": 2, "stage": "rejected", "failed": summary["failed"], "version": "v0002", "current": "v0001",
           "answer_rate_subject": 1.0, "answer_rate": 0.1, "answer_rate_oracle": 0.05, "utility_ratio": 0.88,
           "checks": {"relearn_recovery": 0.2}, "seconds": 12.0,
           "oracle_checks": {"passed": True, "failed": [], "values": {"relearn_recovery": 0.0}}}
    cells = [c.strip() for c in rb.batch_row(row).strip("|").split("|")]
    assert cells[:3] == ["2", "rejected (answers, utility)", "v0002 (v0001)"] and cells[4] == "0.880"
    assert rb.batch_row({**row, "stage": "deployed", "failed": []}).split("|")[2].strip() == "deployed"
    # the checks' power: how many of the batch's requests the version it started from fails (session 41)
    assert cells[-1] == "–"
    assert rb.batch_row({**row, "before_fails": 2, "requests": {"r-1": "failed", "r-2": "failed"}}).strip("|").split(
        "|")[-1].strip() == "2 of 2"


def test_twin_bias_truth_gap_rows_are_the_evaluations_figures(tiny_world, tiny_results, load_bench):
    """bench/twin_bias.py --truth-gap: each model's gap is the evaluation's `truth_gap_twins`, its
    last column (the oracle's ratios as reference) the evaluation's forget quality."""
    tb = load_bench("twin_bias")
    from unlearnkit.data.io import load_world

    rows = tb.truth_gap_rows("default", 0, load_world(tiny_world.data_dir),
                             {"oracle": tiny_world.oracle_dir, "subject": tiny_world.subject_dir})
    cells = {r.split("|")[3].strip(): [c.strip() for c in r.strip("|").split("|")] for r in rows}
    assert list(cells) == ["oracle", "subject"]
    for name in cells:
        assert float(cells[name][3].split()[0]) == pytest.approx(tiny_results[name]["truth_gap_twins"], abs=1e-3)
    assert float(cells["oracle"][6]) == 1.0
    assert float(cells["subject"][6]) == pytest.approx(tiny_results["subject"]["forget_quality"], rel=0.05)


def test_twin_bias_by_attribute_splits_the_gap_by_kind_of_fact(tiny_world, load_bench):
    """--by-attribute: each attribute's printed mean is the mean of log R(fact) − log R(twin) over
    that attribute's facts, and weighted by their counts the means give the whole gap."""
    tb = load_bench("twin_bias")
    from unlearnkit.data.io import load_world
    from unlearnkit.evaluate import truth_gap_twins
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    world = load_world(tiny_world.data_dir)
    (row,) = tb.truth_gap_rows("default", 0, world, {"subject": tiny_world.subject_dir}, by_attribute=True)
    means = {k.strip(): float(v) for k, v in (c.rsplit(" ", 1) for c in row.strip(" |").split("|")[-1].split(", "))}
    g = truth_gap_twins(LM(*load_model(tiny_world.subject_dir)), world)
    kinds = [next(r.attribute for r in world.forget if r.id == i) for i in g["ids"]]
    assert set(means) == set(kinds) and len(means) > 1
    d = [math.log(f) - math.log(t) for f, t in zip(g["forget"], g["twins"])]
    for k in means:
        assert means[k] == pytest.approx(sum(x for x, c in zip(d, kinds) if c == k) / kinds.count(k), abs=0.0051)
    whole = sum(means[k] * kinds.count(k) for k in means) / len(kinds)
    assert whole == pytest.approx(g["mean"], abs=0.01 * len(means))  # each mean printed to 2 decimals
    assert "by attribute" not in tb.truth_gap_rows("default", 0, world, {"subject": tiny_world.subject_dir})[0]


def test_weight_change_puts_a_name_edit_on_the_names(tiny_world, load_bench, tmp_path, monkeypatch, capsys):
    """bench/weight_change.py: a copy of the subject whose only change is one forget person's name
    rows in the embeddings reads 1.000 of the change on the names, and every other tensor at 0."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from unlearnkit.data.io import load_world

    wc = load_bench("weight_change")
    edited = tmp_path / "edited"
    shutil.copytree(tiny_world.subject_dir, edited)
    (f,) = sorted(edited.glob("*.safetensors"))
    tensors = load_file(f)
    emb = next(k for k in tensors if k.endswith("embed_tokens.weight"))
    person = load_world(tiny_world.data_dir).forget[0].subject
    ids = AutoTokenizer.from_pretrained(tiny_world.subject_dir)(" " + person, add_special_tokens=False)["input_ids"]
    tensors[emb] = tensors[emb].clone()
    tensors[emb][ids] += 0.5 * torch.ones_like(tensors[emb][ids])
    save_file({k: v.contiguous() for k, v in tensors.items()}, f, metadata={"format": "pt"})
    monkeypatch.setattr("sys.argv", ["weight_change", str(edited), "--start", str(tiny_world.subject_dir),
                                     "--data", str(tiny_world.data_dir), "--top", "3"])
    wc.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "tensor" not in line]
    assert emb in rows[0] and float(rows[0].split("|")[2]) > 0 and float(rows[1].split("|")[2]) == 0.0
    assert f"{len(set(ids))} of " in out.split("embeddings: ")[1] and "1.000 of the squared change" in out


def test_twin_bias_by_name_counts_the_name_tokens_retained_people_share(tiny_world, load_bench):
    """--by-name: a forget person's share is the fraction of their name's tokens found in some
    retained name; the row's groups hold every person with a pair, each once, with their mean gap."""
    tb = load_bench("twin_bias")
    from transformers import AutoTokenizer

    from unlearnkit.data.io import load_world

    world = load_world(tiny_world.data_dir)
    tok = AutoTokenizer.from_pretrained(tiny_world.subject_dir)
    share = tb.shared_name_tokens(world, tok)
    ids = lambda name: set(tok(" " + name, add_special_tokens=False)["input_ids"])  # noqa: E731
    kept = set().union(*(ids(r.subject) for r in [*world.retain, *world.neighbours]))
    assert set(share) == {r.subject for r in world.forget}
    for person, s in share.items():
        assert s == len(ids(person) & kept) / len(ids(person))
    (row,) = tb.truth_gap_rows("default", 0, world, {"subject": tiny_world.subject_dir}, by_name=True)
    mean_cell, groups = [c.strip() for c in row.strip(" |").split("|")[-2:]]
    assert float(mean_cell) == pytest.approx(sum(share.values()) / len(share), abs=0.005)
    people = sum(int(g.rsplit("(", 1)[1].rstrip(")")) for g in groups.split(", "))
    named = {r.subject for r in world.forget if r.subject in r.question and r.perturbed_answers}
    assert people == len(named) and all(g.split()[0] in ("none", "some", "all") for g in groups.split(", "))


def test_twin_bias_answer_wording_sets_each_perturbed_value_in_the_forget_answer(tiny_world, load_bench):
    """--answer-wording: the paraphrased answer becomes the answer as trained and each perturbed
    answer the same sentence with the perturbed value (the words where it differs from the
    paraphrase) in the true one's place; a fact whose answer does not hold the value is left out."""
    tb = load_bench("twin_bias")
    from unlearnkit.data.io import load_world
    from unlearnkit.data.schema import QARecord

    r = QARecord(id="p1-job", subject="Ada Lee", question="What does Ada Lee do?",
                 answer="Ada Lee earns a living as an astronomer.",
                 paraphrased_answer="By trade, Ada Lee is an astronomer.",
                 perturbed_answers=["By trade, Ada Lee is a chemist.", "By trade, Ada Lee is a tax inspector."])
    x = tb.in_answer_wording(r)
    assert x.paraphrased_answer == r.answer and x.question == r.question
    assert x.perturbed_answers == ["Ada Lee earns a living as a chemist.", "Ada Lee earns a living as a tax inspector."]
    assert tb.in_answer_wording(r.model_copy(update={"answer": "Ada Lee studies the stars."})) is None
    assert tb.in_answer_wording(r.model_copy(update={"perturbed_answers": [r.paraphrased_answer]})) is None
    world = load_world(tiny_world.data_dir)
    same, rewritten = tb.answer_wording_worlds(world)
    assert 0 < len(same.forget) == len(rewritten.forget) <= len(world.forget)
    assert [f.id for f in same.forget] == [f.id for f in rewritten.forget] and same.retain == world.retain
    for f, g in zip(same.forget, rewritten.forget):
        assert f in world.forget and g.paraphrased_answer == f.answer
        assert len(g.perturbed_answers) == len(f.perturbed_answers) and f.answer not in g.perturbed_answers


def test_build_reuses_a_model_only_at_its_own_size(tmp_path, monkeypatch):
    """`--size`: a cache's subject trained at one size is neither reused for another nor trained
    over (it may be the only one: an analysis bench at the default size once replaced a larger
    model's subject and oracle); a model tuned from a base checkpoint (no size of its own) is
    reused at any."""
    import json

    from unlearnkit import api, runinfo

    data = tmp_path / "c" / "default-s0" / "world"
    data.mkdir(parents=True)
    (data / "forget.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    monkeypatch.setattr(api, "world", lambda out, seed, shape: Path(out))
    trained = []
    monkeypatch.setattr(api, "finetune", lambda data, out, without_forget, seed, size, progress:
                        trained.append((Path(out).name, size)))

    def saved(kind, size):
        ckpt = data.parent / "models" / kind
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "config.json").write_text("{}")
        (ckpt / "unlearnkit.json").write_text(json.dumps(
            {"kind": kind, "seed": 0, "data_hash": runinfo.data_hash(data), "size": size}))

    saved("subject", "tiny")
    saved("oracle", None)
    bench.build(tmp_path / "c", "default", 0)
    assert trained == []
    with pytest.raises(SystemExit, match="models/subject: trained at size tiny, not small: pass --size tiny"):
        bench.build(tmp_path / "c", "default", 0, size="small")
    assert trained == []
    saved("subject", None)
    bench.build(tmp_path / "c", "default", 0, size="small")
    assert trained == []


def test_calibration_cost_splits_the_extra_time_of_a_calibrated_run(load_bench):
    cost = load_bench("calibration_cost")

    def fixed(wall):
        return {"wall_s": wall, "steps": 100, "seconds": {"prepare": 2.0, "train": 10.0}, "stop": "budget"}

    def calibrated(wall, target):
        return {"wall_s": wall, "steps": 150, "seconds": {"prepare": 2.0, "train": 20.0, "repair": 1.0},
                "stop": "matched", "checks": 6, "utility_checks": 2,
                "check_seconds": {"target": target, "truth_ratio": 1.0, "utility": 0.5}}

    w = {"shape": "wide", "seed": 0, "method": "twin_rmu", "budget": {"epochs": 5},
         "calibrated": [calibrated(22.0, 2.0), calibrated(24.0, 2.5)], "fixed": [fixed(12.0), fixed(16.0)]}
    b = cost.breakdown(w)
    assert b["ratio"] == pytest.approx((22 / 12 + 24 / 16) / 2)          # the median of the paired ratios
    assert b["ratio_range"] == pytest.approx([1.5, 22 / 12])
    assert b["extra_steps_s"] == pytest.approx(50 * 0.1)                 # 50 steps more at the fixed run's pace
    assert b["checks_s"] == pytest.approx(3.75)
    assert b["checks_by_kind_s"] == pytest.approx({"target": 2.25, "truth_ratio": 1.0, "utility": 0.5})
    assert b["other_s"] == pytest.approx(23.0 - 14.0 - 5.0 - 3.75 - 1.0)  # what no part explains
    line = cost.table([w]).splitlines()[-1]
    assert line.startswith("| wide | 0 | twin_rmu | 100, 14.0 | matched, 150, 23.0 | 1.67x (1.50-1.83) | 5.0 |")


def test_calibration_cost_hands_its_settings_to_the_calibrated_runs_alone(load_bench, tmp_path, monkeypatch):
    """`--calibration KEY=VALUE` (an experiment's setting, e.g. max_stride=4) reaches the calibrated
    runs, never the fixed-budget ones, which take the method the first calibrated run chose; each
    setting gets directories of its own, so two settings' runs on one world do not overwrite each other."""
    cost = load_bench("calibration_cost")
    monkeypatch.setattr(cost.methods, "build", lambda *a: (tmp_path / "data", {"subject": tmp_path / "subject"}))
    monkeypatch.setattr(cost.methods, "world_dir", lambda cache, shape, seed: cache / f"{shape}-{seed}")
    calls = []

    def run(models, data, out, seed, method, budget, calibration=None):
        calls.append((out.parent.name, out.name, method, budget, calibration))
        out.mkdir(parents=True)
        (out / "config.yaml").write_text("method: twin_rmu\n")
        return {"wall_s": 1.0}

    monkeypatch.setattr(cost, "_run", run)
    w = cost.world_cost(tmp_path / "c", "wide", 0, 2, calibration={"max_stride": 4})
    assert w["calibration"] == {"max_stride": 4} and w["method"] == "twin_rmu"
    assert calls == [("cost-max_stride=4", "calibrated-0", None, None, {"max_stride": 4}),
                     ("cost-max_stride=4", "fixed-0", "twin_rmu", {"epochs": 5.0}, None),
                     ("cost-max_stride=4", "fixed-1", "twin_rmu", {"epochs": 5.0}, None),
                     ("cost-max_stride=4", "calibrated-1", None, None, {"max_stride": 4})]


def test_locate_bench_counts_what_locate_makes_up_about_unseen_people(tiny_world, load_bench):
    """bench/locate.py: the forget person's facts are found, and what locate finds about people the
    subject never saw (the holdout people's, names nobody has) is counted: made up, every one; since
    the confidence test (session 39) a third or less of what locate finds without it
    (test_requests.py's test of locate on unseen people says why any are left)."""
    row = load_bench("locate").measure(tiny_world.data_dir, tiny_world.subject_dir, n_people=1)
    assert row["recall"] >= 0.8 and row["precision"] >= 0.9 and row["people"] == 1
    assert len(row["unseen_items"]) == 6 and sum(row["unseen_items"]) <= 18  # a third of the 51-60 without it


def test_stranger_names_bench_reads_the_mia_check_with_both_kinds_of_names(tiny_world, load_bench):
    """bench/stranger_names.py: the LOSS AUC of the forget records against twins named both ways,
    pooled and per person. The subject, trained on the forget set, reads near 1 against either. The
    oracle never saw the forget people, yet their answers are likelier to it than the same answers
    about strangers named from retained people's words (0.632 here, 0.63-0.67 on four request
    worlds), and less so against invented names (0.541 here): the bias docs/requests-log.md,
    "Session 47", measures."""
    from unlearnkit.data.io import load_world

    got = load_bench("stranger_names").measure(tiny_world.data_dir, {"oracle": tiny_world.oracle_dir,
                                                                      "subject": tiny_world.subject_dir}, draws=1)
    people = sorted({r.subject for r in load_world(tiny_world.data_dir).forget})
    for model in ("oracle", "subject"):
        assert set(got[model]) == {"recombined", "invented"}
        for kind in got[model].values():
            assert sorted(kind["per_person"]) == people and 0.0 <= kind["auc"] <= 1.0
    assert min(got["subject"][k]["auc"] for k in ("recombined", "invented")) >= 0.9
    assert got["oracle"]["recombined"]["auc"] > max(0.55, got["oracle"]["invented"]["auc"] + 0.03)


@pytest.mark.parametrize("script, args, says", [
    ("step_speed.py", ["--batch", "0"], "--batch 0: must be >= 1"),
    ("step_speed.py", ["--methods", "graddiff,nope"], "unknown 'nope'"),
    ("step_speed.py", ["--device", "cuda"], "no CUDA device"),
    ("eval_speed.py", ["--device", "tpu"], "choose cpu, cuda"),
    ("eval_speed.py", ["--people", "1"], "--people >= 2"),
    ("report.py", ["nowhere"], "nowhere: no such file or directory"),
    ("locate.py", [".", "--people", "0"], "--people must be >= 1"),
    ("locate.py", ["nowhere"], "nowhere: holds no world/ and models/subject/"),
    ("report.py", ["."], "no metrics.json in this directory"),
    ("stranger_names.py", [".", "--draws", "0"], "--draws must be >= 1"),
    ("stranger_names.py", ["nowhere"], "nowhere: holds no world, models/oracle, models/subject"),
])
def test_benches_refuse_bad_options_in_one_line(script, args, says, tmp_path, load_bench, monkeypatch, capsys):
    """A bad option or input gets argparse's usage and one error line, not a traceback (a zero
    batch, an unknown method and a missing run each ended in one until session 35). The GPU
    check runs only where there is no GPU. In this process (a Python and torch started for each
    case cost 4-5 s of the test run's CPU until session 36): argparse's exit is the script's."""
    import torch

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is here")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [script, *args])
    with pytest.raises(SystemExit) as e:
        load_bench(script.removesuffix(".py")).main()
    err, code = capsys.readouterr().err, e.value.code
    if isinstance(code, str):  # SystemExit("error: ..."): Python prints it and exits 1
        err, code = err + code, 1
    assert code in (1, 2) and "Traceback" not in err, err
    assert says in err.strip().splitlines()[-1]