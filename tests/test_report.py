"""The HTML report (unlearnkit.report) on inputs in the real schema without training: `evaluate()` on the hand-made LMs of
test_evaluate (one that knows everything, an oracle that never saw the forget set, an unlearned
model that still knows a few forget facts), written as run directories like `unlearn demo` does.

The expected numbers of marks per figure for `demo_like_run` are worked out by hand in `MARKS`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_evaluate import UTIL, FakeLM, make_world

from unlearnkit.evaluate import evaluate

N = 8  # forget records (and holdout records) in make_world
STILL_KNOWN = 3  # forget facts the unlearned model still answers

# marks per figure of `demo_like_run` (one run: subject, oracle, unlearned)
MARKS = {
    "pareto": {"point": 3},  # the oracle beats both others on both axes: a front of one point, no line
    "truth": {"line": 4},  # one ECDF per model, and the unlearned model's twins' (dashed)
    "mia": {"point": 3 * 2 * N},  # QA source (3 documents < min_docs): 8 forget + 8 holdout per model
    "attack": {"bar": 3},  # relearn: model + oracle; quantize: model only (oracle recovery None)
    "train": {"line": 4, "stop": 2},  # loss, forget_nll, retain_loss + the checked statistic; stop on both panels
    "guard": {"point": 4 + 6 + 3, "threshold": 1},
}


def _unlearned_lm(world, seed: int):
    lm = FakeLM(world, UTIL)
    for r in world.forget[seed: seed + STILL_KNOWN]:  # still knows a few forget facts
        lm.facts[(r.question, r.answer)] = lm.facts[(r.question, r.paraphrased_answer)] = True
        lm.answers[r.question] = r.answer
    return lm


def results(seed: int = 0) -> dict:
    world = make_world(n=N)
    oracle = evaluate(FakeLM(world, UTIL), world, oracle="self")
    subject = evaluate(FakeLM(world, ("forget",) + UTIL), world, oracle=oracle)
    unlearned = evaluate(_unlearned_lm(world, seed), world, oracle=oracle, subject=subject)
    return {"oracle": oracle, "subject": subject, "unlearned": unlearned}


LOG = ([{"loss": -0.5 * s, "forget_nll": 0.5 * s, "retain_loss": 0.01 * s, "step": s, "lr": 1e-4} for s in (10, 20, 30)]
       + [{"step": s, "check": {"statistic": v}, "target": 0.2} for s, v in ((0, 0.9), (15, 0.5), (30, 0.21))]
       + [{"step": 30, "stopped": {"reason": "reached the target", "step": 30}}])

GUARD = {"threshold": 0.7, "calibration": {"false_refusal": 0.01, "achieved": 0.0, "n_benign": 9, "recall": 1.0,
                                           "n_positive": 4},
         "groups": {"forget": {"score": [1.0, 1.0, 0.9, 0.8], "hit": [True] * 4, "channel": ["name"] * 4},
                    "retain": {"score": [0.1, 0.2, 0.3, 0.4, 0.5, 0.75], "hit": [False] * 5 + [True],
                               "channel": [""] * 5 + ["embedding"]},
                    "neighbours": {"score": [0.3, 0.5, 0.6], "hit": [False] * 3, "channel": [""] * 3}}}


def demo_like_run(out: Path, *, method: str = "graddiff", seed: int = 0, models: dict | None = None) -> Path:
    """A run directory as `unlearn demo` writes it (metrics.json, unlearned/log.jsonl)."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "models": models or results(seed),
        "attacks": {"relearn": {"recovery": 0.25, "recovery_variant": "relearn-people", "oracle_recovery": 0.05,
                                "excess_recovery": 0.2, "plain_forget_rouge": 0.375, "attacked_forget_rouge": 0.5},
                    "quantize": {"recovery": 0.1, "recovery_variant": "int8", "oracle_recovery": None,
                                 "excess_recovery": None, "plain_forget_rouge": 0.375, "attacked_forget_rouge": 0.4}},
        "config": {"seed": seed, "method": method, "out": str(out)},
        "guard": GUARD,
        "seconds": {"eval": 1.0},
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "unlearned").mkdir(exist_ok=True)
    (out / "unlearned" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LOG))
    return out


# ---------------------------------------------------------------- tests without a browser

import re  # noqa: E402

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from unlearnkit import api  # noqa: E402
from unlearnkit.cli import app  # noqa: E402
from unlearnkit.metrics import mia  # noqa: E402
from unlearnkit.report import ReportInputError, load_run, render, write_html  # noqa: E402
from unlearnkit.report.page import SECTIONS  # noqa: E402


@pytest.fixture(scope="module")
def models():
    return results(0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, models):
    return demo_like_run(tmp_path_factory.mktemp("report") / "demo", models=models)


def figure_marks(html: str) -> dict[str, dict]:
    """{figure name: marks it declares} from the page's <figure data-figure=... data-marks=...>."""
    import html as h

    return {m[0]: json.loads(h.unescape(m[1]))
            for m in re.findall(r'<figure class="fig" data-figure="(\w+)" data-marks="([^"]*)"', html)}


def test_evaluate_records_per_record_answers_and_mia_scores(models):
    ps = models["unlearned"]["per_sample"]
    assert len(ps["forget_questions"]) == len(ps["forget_true_answers"]) == len(ps["forget_answers"]) == N
    # the unlearned model answers exactly the facts it still knows
    hits = [a == t for a, t in zip(ps["forget_answers"], ps["forget_true_answers"])]
    assert sum(hits) == STILL_KNOWN
    s = ps["mia_scores"]
    assert s["source"] == "qa" and s["attack"] == "min_k" and len(s["members"]) == len(s["nonmembers"]) == N
    # the per-sample scores are the ones behind the headline AUC
    assert mia.auc(s["members"], s["nonmembers"]) == pytest.approx(ps["mink_auc"]["qa"])


def test_page_has_every_section_figure_and_mark(run_dir):
    html = render([load_run(run_dir)])
    for sid, _ in SECTIONS:
        assert f'<section id="{sid}">' in html
    assert figure_marks(html) == MARKS
    assert 'class="missing"' not in html  # every section has data
    # the headline table: the direction of each metric and the verdict's reasons
    assert "higher: closer to the oracle" in html and "near 0" in html
    assert "Verdict: unlearned" in html and "forget quality" in html
    # each check's mark as the command line prints it ("n/a" stood for CANNOT DECIDE until session 35)
    marks = re.findall(r'<span class="(PASS|FAIL|na)">([A-Z ]+)</span>', html)
    assert marks and all((c, m) in {("PASS", "PASS"), ("FAIL", "FAIL"), ("na", "CANNOT DECIDE")} for c, m in marks)
    # the record table: one row per forget record, hits counted per model
    assert html.count("<tr data-hits=") == N
    assert f"unlearned {STILL_KNOWN}/{N}" in html and f"subject {N}/{N}" in html and f"oracle 0/{N}" in html
    assert "stopped at step 30: reached the target" in html


def test_page_holds_no_url_and_loads_nothing(run_dir, tmp_path):
    out = write_html([run_dir], tmp_path / "r.html")
    html = out.read_text()
    assert "http://" not in html and "https://" not in html and "://" not in html
    assert not re.search(r"<(link|img|iframe|object|embed)\b", html)
    assert not re.search(r"\s(src|srcset)=", html) and "@import" not in html and "url(http" not in html
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', html))  # in-page anchors only
    assert out.stat().st_size < 3_000_000


def test_compare_puts_runs_side_by_side(tmp_path, models):
    runs = [demo_like_run(tmp_path / "g0", method="graddiff", seed=0, models=models),
            demo_like_run(tmp_path / "g1", method="graddiff", seed=1),
            demo_like_run(tmp_path / "n0", method="npo", seed=0, models=models)]
    out = api.compare(runs, tmp_path / "cmp.html")
    html = out.read_text()
    for label in ("graddiff seed 0", "graddiff seed 1", "npo seed 0"):
        assert f'<th class="num">{label}</th>' in html
    # subject and oracle once, each run's unlearned model: 5 points; each run's ECDF
    marks = figure_marks(html)
    assert marks["pareto"]["point"] == 5 and marks["truth"] == {"line": 5 + 3}  # + each run's twins' ECDF
    assert marks["attack"] == {"bar": 3 * 2 + 1}  # relearn: 3 runs + oracle; quantize: 3 runs
    assert marks["train"] == {"line": 3 * 4, "stop": 3 * 2}
    # per method over its seeds: graddiff from 2 runs with a spread, npo from 1
    assert re.search(r"<td>graddiff</td><td class=\"num\">2</td>", html)
    assert re.search(r"<td>npo</td><td class=\"num\">1</td>", html)
    assert " ± " in html


def test_a_comparison_tells_runs_of_one_method_apart_by_their_setup(tmp_path):
    """LoRA, a saliency of one's own, a fixed budget and a prompt format set runs of one method apart:
    a comparison labelled them all "simnpo seed 0" and averaged them as one method (until session 36)."""
    from unlearnkit.report.load import Run
    from unlearnkit.report.page import method_summary

    def run(name, **config):
        return Run(name, tmp_path, {"unlearned": {"forget_quality": 0.5}},
                   config={"method": "simnpo", "seed": 0, "calibration": {}, "train": {"saliency": 0.25}, **config})

    runs = [run("a"), run("b", lora=True, merge=True, train={"saliency": 0.0}),
            run("c", calibration=None, train={"saliency": 0.5, "steps": 30}),
            run("d", template={"kind": "chat"}), run("e", seed=1)]
    assert [r.label for r in runs] == ["simnpo, saliency 0.25 seed 0", "simnpo, lora merged seed 0",
                                       "simnpo, saliency 0.5, 30 steps seed 0", "simnpo, saliency 0.25, chat seed 0",
                                       "simnpo, saliency 0.25 seed 1"]
    assert [(m["method"], m["n"]) for m in method_summary(runs)] == [
        ("simnpo, saliency 0.25", 2), ("simnpo, lora merged", 1), ("simnpo, saliency 0.5, 30 steps", 1),
        ("simnpo, saliency 0.25, chat", 1)]


def test_results_json_alone(tmp_path, models):
    """`unlearn eval` output: one results dict, no run directory around it; missing parts say why."""
    p = tmp_path / "unlearned.json"
    p.write_text(json.dumps(models["unlearned"]))
    html = render([load_run(p)])
    # its forget quality (against the oracle it was evaluated with) and utility are in it: one point
    assert figure_marks(html) == {"pareto": {"point": 1}, "truth": {"line": 2}, "mia": {"point": 2 * N}}  # + its twins
    assert "No attacks were run" in html and "No training log" in html and "No guard in this run" in html
    # said, not left for the reader to find out (session 36): no references, and two prompt formats
    assert "no subject or oracle among the inputs" in html
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps({**models["unlearned"], "info": {**(models["unlearned"].get("info") or {}),
                                                              "template": {"kind": "chat"}}}))
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({**models["unlearned"], "info": {**(models["unlearned"].get("info") or {}),
                                                             "template": {"kind": "raw"}}}))
    assert "the inputs put their questions in 2 prompt formats" in render([load_run(chat), load_run(raw)])
    # a result dict is no input: said, where it was read as its keys, each "no such file" (session 36)
    with pytest.raises(TypeError, match="inputs: run directories or results JSON files, not dict"):
        api.report(models["unlearned"], tmp_path / "r.html")


@pytest.mark.parametrize("content, message", [
    ("{not json", r"bad\.json:1: malformed JSON"),
    ("[1, 2]", r"bad\.json: expected a JSON object"),
    ('{"models": {"a": {"x": 1}}}', r"bad\.json: models\.a: not a results dict"),
    ('{"x": 1}', r"bad\.json: not a results dict"),
])
def test_bad_input_names_the_file(tmp_path, content, message):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(ReportInputError, match=message):
        load_run(p)


def test_damaged_fields_and_config_name_the_file(tmp_path, models):
    """Fields of the wrong type or length, a verdict that is no object, and a damaged config.yaml:
    one ReportInputError naming the file and field (each ended in a traceback until session 35)."""
    def one(name, **fields):
        res = json.loads(json.dumps(models["unlearned"]))
        for k, v in fields.items():
            if k.startswith("ps_"):
                res["per_sample"][k[3:]] = v
            else:
                res[k] = v
        (p := tmp_path / f"{name}.json").write_text(json.dumps(res))
        return p

    for p, field in ((one("a", forget_quality="abc"), "forget_quality"), (one("b", verdict="oops"), "verdict"),
                     (one("c", ps_forget_rouge=[0.5] * 2), "per_sample.forget_rouge"),
                     (one("d", ps_forget_truth_ratios=[None] * N), "per_sample.forget_truth_ratios")):
        with pytest.raises(ReportInputError, match=rf"{re.escape(str(p))}: field '{re.escape(field)}'"):
            load_run(p)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(models["unlearned"]))
    for text, says in (("method: [unclosed", "malformed YAML"), ("- a list", "expected a mapping")):
        (run / "config.yaml").write_text(text)
        with pytest.raises(ReportInputError, match=rf"config\.yaml: {says}"):
            load_run(run)


def test_the_oracle_is_known_by_its_result_not_its_file_name(tmp_path, models):
    """The oracle's own result (evaluated with oracle "self") is the report's oracle whatever the file
    is called (TOFU's retain90.json), and a file called oracle.json whose result says it is not one
    is shown as a model (until session 35 the file name alone decided)."""
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "retain90.json").write_text(json.dumps(models["oracle"]))
    (lab / "oracle.json").write_text(json.dumps(models["unlearned"]))
    assert models["oracle"]["config"]["self_oracle"] and models["unlearned"]["config"]["self_oracle"] is False
    runs = [load_run(lab / "retain90.json"), load_run(lab / "oracle.json")]
    assert [list(r.models) for r in runs] == [["oracle"], ["oracle.json"]]
    from unlearnkit.report.page import entries_for

    entries, notes = entries_for(runs)
    assert [(e.role, e.results["forget_quality"]) for e in entries] == [
        ("oracle", models["oracle"]["forget_quality"]), ("model", models["unlearned"]["forget_quality"])]
    # results measured on other data are said to be (they were joined by record id without a word)
    other = json.loads(json.dumps(models["unlearned"]))
    other["info"], mine = {"data_hash": "aaaa"}, {**models["unlearned"], "info": {"data_hash": "bbbb"}}
    (lab / "x.json").write_text(json.dumps(other))
    (lab / "y.json").write_text(json.dumps(mine))
    _, notes = entries_for([load_run(lab / "x.json"), load_run(lab / "y.json")])
    assert any("2 different data sets" in n for n in notes)


def test_bad_log_line_names_file_and_line(run_dir, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run_dir, d)
    with open(d / "unlearned" / "log.jsonl", "a") as f:
        f.write("{oops\n")
    with pytest.raises(ReportInputError, match=rf"log\.jsonl:{len(LOG) + 1}: malformed JSON"):
        load_run(d)


def test_cli_report_compare_and_errors(run_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(run_dir), "--html", str(out)])
    assert r.exit_code == 0, r.output
    assert str(out) in r.output and figure_marks(out.read_text()) == MARKS
    other = shutil.copytree(run_dir, tmp_path / "other")
    r = runner.invoke(app, ["compare", str(run_dir), str(other / "metrics.json"), "--html", str(tmp_path / "c.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "c.html").is_file()
    # a run and its own metrics.json are one run: a comparison with itself is refused in one line
    r = runner.invoke(app, ["compare", str(run_dir), str(run_dir / "metrics.json"), "--html", str(tmp_path / "d.html")])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "the same run as" in r.output and not (tmp_path / "d.html").exists()
    # the Markdown report, as before, from a metrics JSON
    r = runner.invoke(app, ["report", str(run_dir / "metrics.json"), "--out", str(tmp_path / "r.md")])
    md = (tmp_path / "r.md").read_text()
    assert r.exit_code == 0 and md.startswith("# unlearnkit report")
    assert "`None`" not in md  # a config without a run directory names none
    # it names the file its numbers come from (it said metrics.json and `unlearn demo` for any input)
    assert md.rstrip().endswith(f"Numbers come from `{(run_dir / 'metrics.json').resolve()}`.")
    # the page or the Markdown written over the results it reads was refused by nothing until session 35
    metrics = run_dir / "metrics.json"
    before = metrics.read_bytes()
    for flag in ("--html", "--out"):
        r = runner.invoke(app, ["report", str(metrics), flag, str(metrics)])
        assert r.exit_code == 2 and "input" in r.output and metrics.read_bytes() == before, r.output
    r = runner.invoke(app, ["report", str(run_dir), "--html", str(tmp_path)])
    assert r.exit_code == 2 and "is a directory" in r.output
    # several inputs with a Markdown --out: refused before the page is written (it was written, then refused)
    r = runner.invoke(app, ["report", str(run_dir), str(other), "--html", str(tmp_path / "two.html"), "--out",
                            str(tmp_path / "two.md")])
    assert r.exit_code == 2 and not (tmp_path / "two.html").exists()
    r = runner.invoke(app, ["report", str(tmp_path / "nowhere"), "--html", str(out)])
    assert r.exit_code == 2 and "nowhere: no such file or directory" in r.output
    r = runner.invoke(app, ["report", str(tmp_path), "--html", str(out)])
    assert r.exit_code == 2 and "no metrics.json in this directory" in r.output


def test_muse_results_have_headline_rows():
    """A MUSE benchmark's results (KnowMem, VerbMem, no TOFU metric) printed an empty table."""
    from unlearnkit.report import headline_table

    rows = headline_table({"model": {"knowmem_forget": 0.0, "knowmem_retain": 1.0, "verbmem_forget": 0.495,
                                     "privleak": None}})
    assert [(r[0].split(" (")[0], r[1]) for r in rows] == [("VerbMem on forget", "0.495"), ("KnowMem on forget", "0.000"),
                                                          ("KnowMem on retain", "1.000")]


def test_markdown_report_says_only_what_the_config_holds(tmp_path):
    """An eval's config names no run directory: the report said "run directory `None`"."""
    from unlearnkit.report import write_report

    md = write_report({"models": {"model": {"forget_rouge": 0.5}}, "config": {"method": "simnpo", "seed": 0}},
                      tmp_path / "r.md").read_text()
    assert "Method `simnpo`, seed 0.\n" in md and "None" not in md


def test_a_record_hits_where_the_answer_holds_the_whole_true_answer():
    """The record table's hit is the answer rate's rule (`attacks.recovery.holds_answer`): with
    ROUGE-L recall >= 0.5 (until session 39) "Kingsreach University" was a hit for "Aldermoor
    University", and a right answer in a long sentence could be a miss."""
    from unlearnkit.report.page import records
    from unlearnkit.report.plots import Entry

    ps = {"forget_ids": ["a", "b", "c"], "forget_questions": ["q1", "q2", "q3"],
          "forget_true_answers": ["Aldermoor University", "1961", "a red fox named Pip"],
          "forget_answers": ["Kingsreach University", "She was born in 1961.", "a red fox"],
          "forget_rouge": [0.5, 1.0, 0.6]}
    table = records([Entry("m", "model", {"per_sample": ps})])
    assert [row["cells"][0]["hit"] for row in table["rows"]] == [False, True, False] and table["totals"] == [1]
