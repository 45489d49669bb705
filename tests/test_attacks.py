"""Attacks and the recovery score: the pure parts by hand, then on the embedded 20-person world."""
from __future__ import annotations

import json

import pytest
import torch

from unlearnkit.attacks import ATTACKS, make_plan, run_attack
from unlearnkit.attacks.probes import KINDS, option_value
from unlearnkit.attacks.quantize import fake_quantize, quantize_model
from unlearnkit.attacks.recovery import recovery
from unlearnkit.attacks.relearn import split


def _m(rouge, prob):
    return {"forget_rouge": rouge, "forget_probability": prob}


# ------------------------------------------------------------------------------ recovery, by hand

def test_recovery_by_hand():
    # model 0.2 -> 0.5 under attack; the attacked subject reaches 0.8: (0.5 - 0.2) / (0.8 - 0.2) = 0.5
    r = recovery(_m(0.2, 0.1), _m(0.5, 0.1), _m(1.0, 0.9), _m(0.8, 0.9))
    assert r["recovery"]["forget_rouge"] == pytest.approx(0.5)
    assert r["recovery"]["forget_probability"] == 0.0
    assert r["score"] == pytest.approx(0.25)
    assert r["raw"]["forget_rouge"]["gap"] == pytest.approx(0.8)
    assert r["raw"]["forget_rouge"]["ceiling"] == pytest.approx(0.6)
    assert not r["notes"]
    # clipped to [0, 1]: beyond the attacked subject, and below the unattacked model
    assert recovery(_m(0.2, 0.1), _m(0.95, 0.0), _m(1.0, 0.9), _m(0.8, 0.9))["recovery"] == {"forget_rouge": 1.0, "forget_probability": 0.0}


def test_excess_recovery_puts_both_gains_on_the_models_scale():
    """ROUGE: the model gains 0.3 under the attack (0.2 -> 0.5), the oracle 0.1 (0.0 -> 0.1), the
    attacked subject reaches 0.8: excess 0.3 / 0.6 - 0.1 / 0.6 = 1/3 (probability: no gain on
    either side, 0). Each over its own ceiling (until session 42) ROUGE's read 0.5 - 0.1 / 0.8 =
    0.375: the oracle, starting lower, had the larger ceiling."""
    from unlearnkit.attacks.recovery import excess

    subject, subject_attacked = _m(1.0, 0.9), _m(0.8, 0.9)
    model = recovery(_m(0.2, 0.1), _m(0.5, 0.1), subject, subject_attacked)
    oracle = recovery(_m(0.0, 0.1), _m(0.1, 0.1), subject, subject_attacked)
    assert excess(model, oracle) == pytest.approx((0.5 - 1 / 6 + 0.0 - 0.0) / 2)  # probability: no gain, either
    assert model["score"] - oracle["score"] == pytest.approx(0.25 - 0.0625)  # the old, mixed form
    # an oracle that loses under the attack counts as gaining nothing; a metric undefined for the
    # model is left out, and none defined is None
    worse = recovery(_m(0.0, 0.1), _m(0.0, 0.0), subject, subject_attacked)
    assert excess(model, worse) == pytest.approx(model["score"])
    same = recovery(subject, subject, subject, subject_attacked)
    assert excess(same, oracle) is None


def test_recovery_undefined_with_a_note_when_nothing_to_recover():
    same = _m(0.9, 0.8)
    r = recovery(same, _m(0.5, 0.99), same, _m(0.7, 0.99))  # the subject attacked against itself
    assert r["recovery"] == {"forget_rouge": None, "forget_probability": None} and r["score"] is None
    assert len(r["notes"]) == 2 and all("nothing to recover" in n for n in r["notes"])
    # the attack does not elicit the knowledge from the subject either: that metric is left out of
    # the score (until session 37 it counted as 0, halving the other's recovery)
    r = recovery(_m(0.1, 0.1), _m(0.3, 0.5), _m(0.9, 0.9), _m(0.12, 0.9))
    assert r["recovery"]["forget_rouge"] is None
    assert r["recovery"]["forget_probability"] == pytest.approx(0.5) == r["score"]
    assert any("does not elicit" in n for n in r["notes"])


# ------------------------------------------------------------------------------ pieces without a model

def test_many_shot_needs_a_shot():
    from types import SimpleNamespace

    with pytest.raises(ValueError, match="--shots -1"):
        make_plan("probes", SimpleNamespace(forget=[], retain=[]), kinds=["many_shot"], shots=-1)


def test_fake_quantize_grid_and_error():
    torch.manual_seed(0)
    w = torch.randn(16, 64)
    errs = {}
    for bits in (8, 4, 2):
        q = fake_quantize(w, bits)
        for row, qrow in zip(w, q):  # values on a symmetric grid of 2^(b-1)-1 steps each side
            assert len(torch.unique(qrow)) <= 2 ** bits - 1
            assert qrow.abs().max() == pytest.approx(row.abs().max().item(), rel=1e-5)
        errs[bits] = float((q - w).norm() / w.norm())
    assert errs[8] < 0.01 < errs[4] < errs[2]
    assert float((fake_quantize(w, 4, 16) - w).norm() / w.norm()) < errs[4]  # per group is finer
    lin = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Linear(16, 4))
    info = quantize_model(lin, 4)
    assert info["n_tensors"] == 2 and 0 < info["mean_relative_error"] < 0.2
    # groups of 16 fit the first layer's rows (64 wide), not the second's (16 wide: one group, per channel);
    # groups of 7 fit neither, and the result says so (a variant named -g7 said "group 7" until session 35)
    assert quantize_model(torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Linear(16, 4)), 4, 16)["per_channel"] == ["1"]
    assert quantize_model(torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Linear(16, 4)), 4, 7)["per_channel"] == ["0", "1"]
    assert quantize_model(lin, 4)["per_channel"] == []
    # GPT-2's Conv1D (weight (in, out)) is quantized per output channel, as a Linear of the same map is
    # (skipped until session 36); a model with nothing to quantize is refused, not reported robust
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(16, 64)  # 64 in, 16 out
    lin = torch.nn.Linear(64, 16)
    with torch.no_grad():
        lin.weight.copy_(conv.weight.T)
    assert quantize_model(torch.nn.Sequential(conv), 4)["n_tensors"] == 1
    quantize_model(lin, 4)
    assert torch.equal(conv.weight.T, lin.weight)
    with pytest.raises(ValueError, match="no Linear or Conv1D weights"):
        quantize_model(torch.nn.Sequential(torch.nn.LayerNorm(4)), 4)


def test_plans(tiny_world):
    from unlearnkit.data.io import load_world

    w = load_world(tiny_world.data_dir)
    for source in ("people", "facts", "neighbours", "retain"):
        train, ev = split(w, source, 0.5, seed=0)
        assert train and ev
        assert not {r.id for r in train} & {r.id for r in ev}
        assert [r.id for r in train] == [r.id for r in split(w, source, 0.5, seed=0)[0]]  # deterministic
    train, ev = split(w, "retain", 0.5, seed=0)  # benign data, as many records as forget facts
    assert len(train) == len(w.forget) and {r.id for r in train} <= {r.id for r in w.retain} and ev == list(w.forget)
    train, ev = split(w, "people", 0.5, seed=0)
    assert not {r.subject for r in train} & {r.subject for r in ev}
    p = make_plan("probes", w)
    assert list(p.variants) == list(KINDS)
    assert all(len(v.prompts) == len(p.records) for v in p.variants.values())
    assert p.variants["paraphrase"].prompts == [r.paraphrased_question for r in w.forget]
    assert all("___" in x for x in p.variants["fill_blank"].prompts)
    p = make_plan("incontext", w, fraction=0.5)
    ctx = set(p.info["context_ids"])
    assert p.records and not ctx & {r.id for r in p.records}
    assert option_value("She works as a potter.", "potter", "She works as an architect.") == "architect"
    assert option_value("She wrote Foxglove Summer.", "Foxglove Summer", "She wrote The Hollow Crown.") == "The Hollow Crown"
    with pytest.raises(ValueError, match="^unknown attack 'jailbreak'; valid attacks: relearn, quantize, probes, incontext$"):
        make_plan("jailbreak", w)
    with pytest.raises(ValueError, match="has no option 'bits'"):
        make_plan("relearn", w, bits=4)
    with pytest.raises(ValueError, match="valid kinds"):
        make_plan("probes", w, kinds="riddle")
    assert make_plan("quantize", w, bits="8, 4").options["bits"] == [8, 4] == make_plan("quantize", w).options["bits"]
    for bad, msg in (("", "give at least one width"), (",", "give at least one width"), ([], "at least one"),
                     ("8,x", r"quantize bits '8,x': expected widths")):
        with pytest.raises(ValueError, match=msg):
            make_plan("quantize", w, bits=bad)
    assert set(ATTACKS) == {"relearn", "quantize", "probes", "incontext"}


# ------------------------------------------------------------------------------ on the embedded world

@pytest.fixture(scope="module")
def weak(tiny_world, tmp_path_factory):
    """A weakly unlearned model: a few gradient-ascent steps."""
    from unlearnkit import api

    run = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", tmp_path_factory.mktemp("weak") / "run",
                     steps=10, lr=5e-4, progress=False)
    return run / "model"


def test_subject_has_nothing_to_recover(tiny_world):
    res = run_attack("quantize", tiny_world.subject_dir, tiny_world.data_dir, subject=tiny_world.subject_dir, bits="4")
    assert res["recovery"] is None and res["recovery_variant"] is None  # not "0: robust"
    v = res["variants"]["int4"]
    assert v["recovery"]["recovery"] == {"forget_rouge": None, "forget_probability": None}
    assert all("nothing to recover" in n for n in v["recovery"]["notes"])
    assert any(n.startswith("recovery undefined under every variant: forget_rouge: nothing to recover")
               for n in res["notes"])
    assert 0 < v["model"]["info"]["mean_relative_error"] < 0.2


def _digest(path):
    import hashlib

    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir()) if f.is_file()}


def test_relearn_recovers_hidden_knowledge_not_taught_knowledge(tiny_world, weak):
    """The weakly unlearned model gets the held-out forget people back; the oracle, which never knew
    them, only gets what relearning the other people teaches (close to nothing)."""
    before = _digest(weak)
    res = run_attack("relearn", weak, tiny_world.data_dir, oracle=tiny_world.oracle_dir, seed=0,
                     steps=20, lr=3e-4, fraction=0.5, source="people")
    assert _digest(weak) == before  # the source checkpoint is never written
    assert any("config.yaml" in n for n in res["notes"])  # subject found in the run directory
    assert len(res["plan"]["relearn_people"]) == 3 and res["n_eval"] == 30  # half of the 6 forget people
    plain, after = res["plain"]["model"], res["variants"]["relearn-people"]["model"]
    subj = res["plain"]["subject"]
    assert subj["forget_rouge"] - plain["forget_rouge"] > 0.2  # unlearning did remove something
    assert after["forget_rouge"] > plain["forget_rouge"] + 0.1  # and relearning brings it back
    # measured on three test-sized worlds (seeds stand in for CPUs, where training rounds differently):
    # recovery 0.22-0.69, the oracle's 0-0.05, excess 0.17-0.66
    assert res["recovery"] > 0.15
    assert res["oracle_recovery"] < 0.1
    assert res["excess_recovery"] > 0.1
    json.dumps(res)  # serialisable


def test_prompt_attacks_run_on_any_lm(tiny_world, weak):
    from unlearnkit.api import as_lm

    lm, _ = as_lm(weak)

    class Wrapped:  # an LM-like object without weights, e.g. a guard
        def score(self, *a, **k):
            return lm.score(*a, **k)

        def generate(self, *a, **k):
            return lm.generate(*a, **k)

    res = run_attack("probes", Wrapped(), tiny_world.data_dir, subject=tiny_world.subject_dir,
                     oracle=tiny_world.oracle_dir, kinds=["paraphrase", "multiple_choice"])
    for name in ("paraphrase", "multiple_choice"):
        v = res["variants"][name]
        defined = [r for r in v["recovery"]["recovery"].values() if r is not None]  # the others: a note each
        assert len(v["recovery"]["notes"]) == 2 - len(defined)
        assert v["recovery"]["score"] == (pytest.approx(sum(defined) / len(defined)) if defined else None)
        assert {"forget_rouge", "forget_probability", "forget_truth_ratio", "forget_exact_match"} <= set(v["model"])
    assert 0.0 <= res["variants"]["multiple_choice"]["model"]["mc_accuracy"] <= 1.0
    res = run_attack("incontext", Wrapped(), tiny_world.data_dir, subject=tiny_world.subject_dir)
    assert res["n_eval"] == len(res["eval_ids"]) > 0 and res["recovery"] is not None
    with pytest.raises(ValueError, match="weight attacks"):
        run_attack("quantize", Wrapped(), tiny_world.data_dir, subject=tiny_world.subject_dir)


def test_cli(tiny_world, weak, tmp_path):
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    out = tmp_path / "q.json"
    r = CliRunner().invoke(app, ["attack", "--model", str(weak), "--data", str(tiny_world.data_dir), "--kind", "quantize",
                                 "--oracle", str(tiny_world.oracle_dir), "--bits", "4", "--group-size", "16",
                                 "--embeddings", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert list(res["variants"]) == ["int4-g16"] and res["recovery"] is not None
    # the embedding too, where asked (the API's `embeddings`, not on the command line until session 39)
    from unlearnkit.models.load import load_model

    net = load_model(weak)[0]
    weights = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Linear)} | {id(net.get_input_embeddings().weight)}
    assert res["options"]["embeddings"] is True and res["variants"]["int4-g16"]["model"]["info"]["n_tensors"] == len(weights)
    r = CliRunner().invoke(app, ["attack", "--model", str(weak), "--data", str(tiny_world.data_dir), "--kind", "nope",
                                 "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2 and "valid attacks" in r.output
    # another kind's option is an error, not ignored (until session 36)
    for kind, extra, says in (("quantize", ["--steps", "50"], "--steps is an option of the relearn attack, not of "
                                                                "--kind quantize"),
                              ("relearn", ["--embeddings"], "--embeddings is an option of the quantize attack"),
                              ("probes", ["--fraction", "0.2"], "the relearn and incontext attacks")):
        r = CliRunner().invoke(app, ["attack", "--model", str(weak), "--data", str(tiny_world.data_dir), "--kind", kind,
                                     *extra, "--out", str(tmp_path / "x.json")])
        assert r.exit_code == 2 and says in " ".join(r.output.split()) and not (tmp_path / "x.json").exists()


def test_a_run_whose_subject_is_gone_says_so(tmp_path):
    """A run directory's config.yaml names the subject an attack measures recovery against; one that
    is gone, or a config that does not read, is said (both read "no subject given" until session 35)."""
    from unlearnkit.attacks import _subject_from_run

    (tmp_path / "model").mkdir()
    (tmp_path / "config.yaml").write_text(f"model: {tmp_path / 'gone'}\n")
    assert _subject_from_run(tmp_path / "model") == (None, f"{tmp_path / 'config.yaml'} names the subject "
                                                           f"'{tmp_path / 'gone'}', which is not there")
    (tmp_path / "config.yaml").write_text("model: [unclosed\n")
    assert "does not read" in _subject_from_run(tmp_path / "model")[1]
    (tmp_path / "gone").mkdir()
    (tmp_path / "config.yaml").write_text(f"model: {tmp_path / 'gone'}\n")
    assert _subject_from_run(tmp_path / "model") == (str(tmp_path / "gone"), None)
    assert _subject_from_run(tmp_path / "elsewhere.bin") == (None, None)


def test_an_attack_needs_a_model(tiny_world):
    """`run_attack(kind, None, data)` returned a result with nothing measured (until session 36)."""
    from unlearnkit.attacks import run_attack

    with pytest.raises(TypeError, match="model: the model to attack is required"):
        run_attack("incontext", None, tiny_world.data_dir)


def test_reuse_key_changes_with_the_checkpoint_and_the_prompt_format(tmp_path):
    """A subject's measurements are reused only for the same checkpoint files and prompt format
    (until session 37 the path alone: a subject trained again in place was reused stale)."""
    import os

    from unlearnkit.attacks import _key
    from unlearnkit.data.templates import parse_template

    ck, data = tmp_path / "subject", tmp_path / "w"
    ck.mkdir(), data.mkdir()
    (ck / "model.safetensors").write_bytes(b"one")
    (data / "forget.jsonl").write_text("{}\n")
    key = lambda tpl=None: _key("quantize", {"bits": [4]}, 0, data, ck, tpl)  # noqa: E731
    first = key()
    assert key() == first and key(parse_template("chat")) != first
    os.utime(ck / "model.safetensors", ns=(1, 1))  # written again
    assert key() != first
