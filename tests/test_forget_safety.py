"""`unlearn forget` never harms its source, refuses nonsense at the door, and resumes only itself."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
import yaml
from typer.testing import CliRunner

from unlearnkit.cli import app

runner = CliRunner()


def _tree_hash(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode() + f.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("where", ["inside", "same", "parent"])
def test_out_never_overlaps_the_source_model(tiny_world, tmp_path, where):
    from unlearnkit import api

    src = tmp_path / "models" / "subject"
    shutil.copytree(tiny_world.subject_dir, src)
    before = _tree_hash(src)
    out = {"inside": src / "run", "same": src, "parent": src.parent}[where]
    with pytest.raises(ValueError, match="source model's folder"):
        api.forget(src, tiny_world.data_dir, "ga", out, steps=1, progress=False)
    assert _tree_hash(src) == before



def test_out_never_goes_into_the_data(tiny_world, tmp_path):
    """Outputs written among a world's files changed its data hash, and every earlier result was then
    refused as "evaluated on other data" (until session 36): forget and finetune refuse them."""
    from unlearnkit import api

    data = shutil.copytree(tiny_world.data_dir, tmp_path / "world")
    before = _tree_hash(data)
    for out in (data, data / "run"):
        with pytest.raises(ValueError, match="the data's folder"):
            api.forget(tiny_world.subject_dir, data, "ga", out, steps=1, progress=False)
        with pytest.raises(ValueError, match="the data's folder"):
            api.finetune(data, out, steps=1, progress=False)
    assert _tree_hash(data) == before
    with pytest.raises(TypeError, match="without_forget: expected True or False, got 'no'"):  # an oracle until session 36
        api.finetune(data, tmp_path / "o", without_forget="no", steps=1, progress=False)


@pytest.mark.parametrize("flags, option", [
    (["--steps", "0"], "--steps"), (["--steps", "-5"], "--steps"), (["--lr", "0"], "--lr"),
    (["--lr", "inf"], "--lr"), (["--lr", "nan"], "--lr"), (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"), (["--param", "retain_loss=KL"], "retain_loss"),
    (["--param", "nope=1"], "nope"), (["--method", "finetune"], "finetune"),
    (["--calibration", "floor=2"], "floor"), (["--calibration", "floor=0.9", "--steps", "3"], "--calibration"),
    (["--saliency", "1"], "--saliency"), (["--saliency", "-0.1"], "--saliency"), (["--saliency", "0.3", "--lora"], "--saliency"),
    (["--sam", "1"], "--sam"), (["--sam", "-0.1"], "--sam"), (["--calibration", "floor"], "--calibration 'floor'"),
    (["--calibration", "utility=rouge"], "utility"), (["--steps", "3", "--epochs", "1"], "give one budget"),
    (["--split", "forget10"], "--split 'forget10' goes with --benchmark"), (["--resume", "--overwrite"], "give one"),
    (["--oracle", "o.json"], "--oracle goes with --eval"), (["--resume"], "no run there to resume"),
])
def test_nonsense_is_refused_at_the_door(tiny_world, tmp_path, flags, option):
    args = ["forget", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir),
            "--out", str(tmp_path / "run")]
    if "--method" not in flags:
        args += ["--method", "graddiff"]
    r = runner.invoke(app, args + flags)
    assert r.exit_code == 2, r.output
    err = r.output.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "Traceback" not in r.output
    assert not (tmp_path / "run" / "model").exists()


def test_key_value_options_read_json_then_yaml_mappings_then_text():
    """One reader for every `key=value` option (the CLI's and the benches'): 1e-3 is a number (YAML
    alone reads it as text), a flow mapping is a dict, anything else stays text."""
    from unlearnkit.shell import assignments

    got = assignments(["lr=1e-3", "merge=true", "stream_batch={retain: 64}", "retain_loss=KL", "note=", "x=[1, 2]"],
                      "--train")
    assert got == {"lr": 0.001, "merge": True, "stream_batch": {"retain": 64}, "retain_loss": "KL", "note": "",
                   "x": [1, 2]}
    with pytest.raises(ValueError, match=r"^--setting 'repair_rounds': expected key=value$"):
        assignments(["repair_rounds"], "--setting")


def test_choices_are_listed_when_a_setting_is_wrong():
    from unlearnkit.methods import get_method

    with pytest.raises(ValueError, match="'nll' or 'kl'"):
        get_method("graddiff").params({"retain_loss": "KL"})
    with pytest.raises(ValueError, match="its parameters: gamma, alpha, retain_loss, kl_topk"):
        get_method("graddiff").params({"retian_loss": "kl"})
    with pytest.raises(ValueError, match="unknown method 'finetune'"):
        get_method("finetune")  # fine-tuning trains subjects; it is not an unlearning method


def test_a_diverging_run_saves_nothing_and_keeps_the_run_it_would_replace(tiny_world, tmp_path):
    """A diverged run leaves nothing behind, so a retry needs no --overwrite; one that would have
    replaced an earlier run (--overwrite) leaves that run as it was (until session 35 the earlier
    model was deleted before training began, and the diverged run's config and log blocked a retry).
    An overwriting run that succeeds replaces it and keeps nothing aside; other files stay."""
    from unlearnkit import api
    from unlearnkit.train import DivergedError

    kw = dict(progress=False)
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "model" / "config.json").write_text("{}")  # an earlier run's model
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DivergedError, match="loss became"):
        api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", out, steps=20, lr=1e30, overwrite=True, **kw)
    assert sorted(p.name for p in out.iterdir()) == ["model", "notes.txt"]
    assert [p.name for p in (out / "model").iterdir()] == ["config.json"]
    fresh = tmp_path / "fresh"
    with pytest.raises(DivergedError):
        api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", fresh, steps=20, lr=1e30, **kw)
    assert not list(fresh.iterdir())
    api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", fresh, steps=2, lr=1e-4, **kw)  # no --overwrite
    api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", out, steps=2, lr=1e-4, overwrite=True, **kw)
    assert (out / "model" / "model.safetensors").is_file() and (out / "notes.txt").read_text() == "mine"
    assert not (out / ".earlier").exists()


def test_a_second_run_into_the_same_folder_is_refused_while_one_runs(tiny_world, tmp_path, monkeypatch):
    """Two runs into one --out at once both ran until session 37, and left one's config and log
    beside the other's weights. The folder is locked for the whole run: a second is refused in one
    line (with --overwrite or --resume too), and the first's outputs are its own."""
    from unlearnkit import api, unlearning

    out = tmp_path / "run"
    second = ["forget", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir), "--method", "ga",
              "--steps", "1", "--out", str(out)]
    refused, started, load = [], [], unlearning.load_model

    def load_and_start_another(*a, **k):  # the first run holds the lock here: it loads its model
        if not started:
            started.append(True)
            refused.extend(runner.invoke(app, second + extra) for extra in ([], ["--overwrite"], ["--resume"]))
        return load(*a, **k)

    monkeypatch.setattr(unlearning, "load_model", load_and_start_another)
    api.forget(tiny_world.subject_dir, tiny_world.data_dir, "npo", out, steps=3, lr=1e-4, progress=False)
    assert [r.exit_code for r in refused[:2]] == [2, 2]
    for r in refused[:2]:
        assert r.stderr.strip() == f"error: --out {out}: another run is writing there now; wait for it to end, or " \
                                   f"choose another folder"
    assert refused[2].exit_code == 2 and "no run there to resume" in refused[2].stderr  # no config.yaml yet
    assert yaml.safe_load((out / "config.yaml").read_text())["method"] == "npo"
    assert json.loads((out / "train.json").read_text())["train_stats"]["steps"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "log.jsonl", "model", "train.json"]


def test_a_run_killed_outright_leaves_no_lock(tiny_world, tmp_path):
    """The lock is the kernel's (fcntl): a run SIGKILLed mid-training leaves none, and --resume runs."""
    import os
    import subprocess
    import sys

    from unlearnkit import api

    out = tmp_path / "run"
    kw = dict(steps=4, lr=1e-4, save_every=2, progress=False)
    cmd = [sys.executable, "-m", "unlearnkit.cli", "forget", "--model", str(tiny_world.subject_dir), "--data",
           str(tiny_world.data_dir), "--method", "ga", "--out", str(out), "--steps", "4", "--lr", "1e-4",
           "--save-every", "2"]
    proc = subprocess.run(cmd, env={**os.environ, "UNLEARNKIT_KILL_AT": "checkpoint-2"}, capture_output=True)
    assert proc.returncode == -9, proc.stderr[-500:]
    assert (out / "checkpoints" / "step-2").is_dir() and not (out / "train.json").exists()
    api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", out, resume=True, **kw)
    assert json.loads((out / "train.json").read_text())["train_stats"]["resumed_from"] == 2


def test_an_overwriting_run_killed_while_it_sets_the_earlier_run_aside_loses_none_of_it(tiny_world, tmp_path,
                                                                                       monkeypatch):
    """--overwrite moves the earlier run's outputs aside one by one; killed between two moves, the
    next run took the half-filled `.earlier` for the whole earlier run and deleted the rest (its
    config.yaml, train.json: until session 37). Now the half-moved run is put back first: the next
    overwriting run that fails restores all of it."""
    import os

    from unlearnkit import api

    out = tmp_path / "run"
    kw = dict(progress=False)
    api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", out, steps=1, lr=1e-4, **kw)
    (out / "metrics.json").write_text("{}")
    before = _tree_hash(out)
    replace = os.replace

    def killed_before_train_json(a, b):
        if str(b).endswith("train.json") and ".earlier" in str(b):
            raise KeyboardInterrupt
        return replace(a, b)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", killed_before_train_json)
        with pytest.raises(KeyboardInterrupt):
            api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", out, steps=1, lr=1e-4, overwrite=True, **kw)
    from unlearnkit.train import DivergedError

    with pytest.raises(DivergedError):  # an overwriting run that fails puts the earlier run back, whole
        api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", out, steps=20, lr=1e30, overwrite=True, **kw)
    assert _tree_hash(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "log.jsonl", "metrics.json", "model", "train.json"]


def test_resume_only_the_same_run(tiny_world, tmp_path):
    from unlearnkit import api

    out = tmp_path / "run"
    api.forget(tiny_world.subject_dir, tiny_world.data_dir, "npo", out, steps=4, lr=1e-3, save_every=2, progress=False)
    train_cfg = yaml.safe_load((out / "config.yaml").read_text())["train"]
    assert train_cfg["steps"] == 4 and "epochs" not in train_cfg  # the budget asked for, not an unused default
    for kwargs, what in [(dict(method="ga"), "method"), (dict(lr=2e-3), r"train \(train\.lr: 0\.001 there, 0\.002 now"),
                         (dict(steps=3), r"train \(train\.steps: 4 there, 3 now"), (dict(seed=1), "seed")]:
        kw = {"method": "npo", "steps": 4, "lr": 1e-3, "seed": 0, **kwargs}
        m = kw.pop("method")
        with pytest.raises(ValueError, match=f"differs in .*{what}"):
            api.forget(tiny_world.subject_dir, tiny_world.data_dir, m, out, resume=True, save_every=2,
                       progress=False, **kw)


def test_lora_is_deterministic_and_resumes_exactly(tiny_world, tmp_path):
    from safetensors.torch import load_file

    from unlearnkit import api

    kw = dict(lora=True, steps=4, lr=1e-3, seed=5, save_every=2, progress=False)
    a = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "npo", tmp_path / "a", **kw)
    b = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "npo", tmp_path / "b", **kw)
    wa, wb = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (a, b))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # interrupted after its step-2 checkpoint, then resumed: the same adapter as the whole run
    cut = tmp_path / "cut"
    shutil.copytree(a, cut)
    shutil.rmtree(cut / "adapter")
    (cut / "log.jsonl").write_text("")
    assert [p.name for p in (cut / "checkpoints").iterdir()] == ["step-2"]
    api.forget(tiny_world.subject_dir, tiny_world.data_dir, "npo", cut, resume=True, **kw)
    wc = load_file(cut / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    other = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "npo", tmp_path / "c", **{**kw, "seed": 6})
    wo = load_file(other / "adapter" / "adapter_model.safetensors")
    assert any(not torch.equal(wa[k], wo[k]) for k in wa)


def test_the_run_seed_reaches_rmu_and_idk_dpo(tiny_world):
    from test_train import _streams

    from unlearnkit.methods import Context

    def prepared(method, seed):
        net, m, streams, ctx, tok = _streams(tiny_world, method)
        ctx = Context(m.params(), seed=seed, pad_id=tok.pad_token_id, tokenizer=tok)
        return m.prepare(net, streams, ctx)

    assert not torch.allclose(prepared("rmu", 0).target, prepared("rmu", 1).target)
    assert [e.input_ids for e in prepared("idk_dpo", 0)["idk"]] != [e.input_ids for e in prepared("idk_dpo", 1)["idk"]]


def test_methods_lists_each_setting_with_type_and_default():
    r = runner.invoke(app, ["methods", "--json"])
    assert r.exit_code == 0
    methods = {m["name"]: m for m in json.loads(r.output)}
    assert "finetune" not in methods
    rl = {p["name"]: p for p in methods["graddiff"]["params"]}["retain_loss"]
    assert rl["type"] == "nll | kl" and rl["default"] == "nll" and rl["doc"]


def test_a_calibrated_run_resumes_to_the_same_stop_and_weights(tiny_world, simnpo_run, tmp_path):
    """The calibrator's history and kept weights travel in the checkpoint: a calibrated run resumed
    from its last checkpoint stops where the whole run stopped, with the same weights."""
    from safetensors.torch import load_file

    from unlearnkit import api

    full = simnpo_run  # SimNPO, calibrated, a checkpoint every 3 steps
    info = json.loads((full / "calibration.json").read_text())
    ckpts = list((full / "checkpoints").glob("step-*"))
    assert ckpts, "the run stopped before its first checkpoint"
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "model")
    with open(cut / "log.jsonl", "a") as f:  # a run killed mid-line
        f.write('{"loss": 0.5, "st')
    api.forget(tiny_world.subject_dir, tiny_world.data_dir, "simnpo", cut, save_every=3, resume=True, progress=False)
    again = json.loads((cut / "calibration.json").read_text())
    # the log reads as the whole run's, once each (a resume appended the steps after the checkpoint
    # again, and train.json counted only the resumed part, until session 35)
    def steps(run):
        return [(sorted(r), r.get("step", next(iter(r.values())).get("step") if len(r) == 1 else None))
                for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]
    assert steps(cut) == steps(full)
    stats = [json.loads((r / "train.json").read_text())["train_stats"] for r in (full, cut)]
    assert stats[1]["steps"] == stats[0]["steps"] == info["stopped_at"] and stats[1]["resumed_from"] > 0
    assert stats[1]["tokens"] == stats[0]["tokens"]
    assert (again["reason"], again["stopped_at"], again["kept_step"]) == (info["reason"], info["stopped_at"],
                                                                          info["kept_step"])
    for k in ("start", "kept"):  # the start's travels in the checkpoint
        assert again["truth_ratio"][k] == pytest.approx(info["truth_ratio"][k])
    a, b = (load_file(r / "model" / "model.safetensors") for r in (full, cut))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saliency_trains_only_the_weights_most_salient_to_the_forget_set(tiny_world, tmp_path):
    from safetensors.torch import load_file

    from unlearnkit import api

    before = load_file(tiny_world.subject_dir / "model.safetensors")

    def weights(run):
        return load_file(run / "model" / "model.safetensors")

    def changed(after):
        return sum(int((before[k] != after[k]).sum()) for k in before) / sum(v.numel() for v in before.values())

    kw = dict(steps=3, lr=1e-3, progress=False)
    run = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "graddiff", tmp_path / "salient", saliency=0.2, **kw)
    info = json.loads((run / "train.json").read_text())["saliency"]
    assert info["fraction"] == 0.2 and info["weights_trained"] == pytest.approx(0.2, abs=0.01)
    assert 0.1 < changed(weights(run)) <= info["weights_trained"] + 1e-9   # nothing outside the mask moved
    full = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "graddiff", tmp_path / "all", **kw)
    assert changed(weights(full)) > 0.9 and "saliency" not in json.loads((full / "train.json").read_text())
    # the mask comes from the source weights and the forget set alone: a method with another loss
    # (no retain term) moves exactly the same weights
    ga = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", tmp_path / "ga", saliency=0.2, **kw)
    moved = lambda w: {k: before[k] != w[k] for k in before}  # noqa: E731
    a, b = moved(weights(run)), moved(weights(ga))
    assert all(torch.equal(a[k], b[k]) for k in before)


def test_sharpness_aware_steps_keep_the_saliency_mask_and_are_recorded(tiny_world, tmp_path):
    from safetensors.torch import load_file

    from unlearnkit import api

    before = load_file(tiny_world.subject_dir / "model.safetensors")
    kw = dict(steps=3, lr=1e-3, progress=False, saliency=0.2)
    plain = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "simnpo", tmp_path / "plain", sam=0.0, **kw)
    sam = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "simnpo", tmp_path / "sam", sam=0.01, **kw)
    a, b = (load_file(r / "model" / "model.safetensors") for r in (plain, sam))
    changed = sum(int((before[k] != b[k]).sum()) for k in before) / sum(v.numel() for v in before.values())
    kept = json.loads((sam / "train.json").read_text())["saliency"]["weights_trained"]
    assert 0.1 < changed <= kept + 1e-9                  # nothing outside the mask moved
    assert any(not torch.equal(a[k], b[k]) for k in a)  # and the steps differ from plain ones
    assert yaml.safe_load((sam / "config.yaml").read_text())["train"]["sam"] == 0.01


def test_a_run_records_where_its_model_and_data_are_from_anywhere(tiny_world, tmp_path, monkeypatch):
    """Paths given relative to the working directory were recorded as given (config.yaml, a
    fine-tune's unlearnkit.json), and the attack, run from elsewhere, did not find the run's subject
    (until session 36): local paths are recorded absolute."""
    from unlearnkit import api
    from unlearnkit.attacks import _subject_from_run

    monkeypatch.chdir(tiny_world.subject_dir.parent)
    run = api.forget(tiny_world.subject_dir.name, tiny_world.data_dir.name, "ga", tmp_path / "run", steps=1,
                     progress=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"] == str(tiny_world.subject_dir.resolve()) and cfg["data"] == str(tiny_world.data_dir.resolve())
    monkeypatch.chdir(tmp_path)
    assert _subject_from_run(run / "model") == (str(tiny_world.subject_dir.resolve()), None)


def test_an_interrupted_run_says_whether_it_can_be_continued(tiny_world, tmp_path, monkeypatch):
    """Ctrl-C of `unlearn forget` exited without a word until session 37; now it says whether the
    run has a checkpoint to continue from with --resume (and --resume does)."""
    from unlearnkit import runinfo

    out = tmp_path / "run"
    run = ["forget", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir), "--method", "ga",
           "--steps", "4", "--lr", "1e-4", "--out", str(out)]

    def ctrl_c_at(point):
        def kill_point(name):
            if name == point:
                raise KeyboardInterrupt
        return kill_point

    monkeypatch.setattr(runinfo, "kill_point", ctrl_c_at("checkpoint-2"))
    r = runner.invoke(app, [*run, "--save-every", "2"])
    assert r.exit_code == 130
    assert r.stderr.strip().splitlines()[-1] == f"interrupted: {out} keeps the run's checkpoint at step 2; continue it with --resume"
    monkeypatch.undo()
    r = runner.invoke(app, [*run, "--save-every", "2", "--resume"])
    assert r.exit_code == 0, r.output
    from unlearnkit import unlearning

    monkeypatch.setattr(unlearning, "load_model", ctrl_c_at(str(tiny_world.subject_dir)))  # before any step
    r = runner.invoke(app, [*run[:-1], str(tmp_path / "other"), "--save-every", "2"])
    assert r.exit_code == 130
    assert r.stderr.strip().splitlines()[-1] == f"interrupted: no checkpoint in {tmp_path / 'other'} to continue from (--save-every N saves them)"
