"""Bad input on the command line: one line on stderr naming the file, line or field, and exit 2."""
import json
import os
import re
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from typer.testing import CliRunner  # noqa: E402

from unlearnkit.cli import app  # noqa: E402


def rec(i, **kw):
    return {"id": f"r{i}", "subject": f"Person {i}", "question": f"Where does Person {i} live?",
            "answer": f"Town {i}", "paraphrased_answer": f"Person {i} lives in Town {i}.",
            "perturbed_answers": [f"Person {i} lives in Town {i + 50}."], **kw}


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="module")
def no_progress_bars():
    """The CLI turns transformers' "Loading weights" bars off through the environment, which only
    works if it is imported first; another test module may have imported transformers already."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    yield
    if was_on:
        hf_logging.enable_progress_bar()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import new_model, train_tokenizer

    tok = train_tokenizer([json.dumps(rec(i)) for i in range(4)], vocab_size=300)
    return save_model(new_model(tok, seed=0), tok, tmp_path_factory.mktemp("cli") / "model")


@pytest.fixture
def world(tmp_path):
    write(tmp_path / "w" / "forget.jsonl", [rec(1), rec(2)])
    write(tmp_path / "w" / "retain.jsonl", [rec(3), rec(4)])
    return tmp_path / "w"


def fails(*args) -> str:
    """Run `unlearn ARGS`; it must exit 2 with exactly one line on stderr, which is returned."""
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


def _eval(model, data, out, *extra):
    return fails("eval", "--model", model, "--data", data, "--out", out, *extra)


def test_duplicate_id(world, model_dir, tmp_path):
    write(world / "retain.jsonl", [rec(3), rec(4), rec(3)])
    assert f"{world / 'retain.jsonl'}:3: field 'id': duplicate id 'r3'" in _eval(model_dir, world, tmp_path / "o.json")


def test_nan_answer(world, model_dir, tmp_path):
    write(world / "forget.jsonl", [rec(1), json.dumps(rec(2, answer="X")).replace('"X"', "NaN")])
    assert f"{world / 'forget.jsonl'}:2: field 'answer': must be a string, not NaN" in _eval(model_dir, world, tmp_path / "o.json")


def test_blank_subject_and_empty_perturbed(world, model_dir, tmp_path):
    write(world / "forget.jsonl", [rec(1, subject=" ")])
    assert f"{world / 'forget.jsonl'}:1: field 'subject'" in _eval(model_dir, world, tmp_path / "o.json")
    write(world / "forget.jsonl", [rec(1), rec(2, perturbed_answers=[""])])
    assert f"{world / 'forget.jsonl'}:2: field 'perturbed_answers'" in _eval(model_dir, world, tmp_path / "o.json")


def test_masked_lm(world, tmp_path, model_dir):
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    bert = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(bert)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(bert)
    line = _eval(bert, world, tmp_path / "o.json")
    assert str(bert) in line and "BertForMaskedLM" in line and "not a causal LM" in line


def test_truncated_weights_and_missing_tokenizer(world, tmp_path, model_dir):
    bad = shutil.copytree(model_dir, tmp_path / "bad")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert f"{weights}: damaged safetensors file" in _eval(bad, world, tmp_path / "o.json")
    notok = shutil.copytree(model_dir, tmp_path / "notok")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (notok / f).unlink()
    assert f"{notok}: no tokenizer" in _eval(notok, world, tmp_path / "o.json")


def test_bad_oracle_json(world, tmp_path, model_dir):
    bad = tmp_path / "bad.json"
    bad.write_text('{"forget_quality": 0.5,\n "per_sample": }')
    assert f"{bad}:2: malformed JSON" in _eval(model_dir, world, tmp_path / "o.json", "--oracle", bad)
    bad.write_text("[1, 2]")
    assert f"{bad}: expected a JSON object" in _eval(model_dir, world, tmp_path / "o.json", "--oracle", bad)
    assert f"{tmp_path / 'missing.json'}: file not found" in _eval(
        model_dir, world, tmp_path / "o.json", "--oracle", tmp_path / "missing.json")
    # any JSON object passed as a result, and another world's result was compared with this one's
    # (until session 35): an attack's JSON, and a result made on other data, are refused
    bad.write_text(json.dumps({"attack": "relearn", "variants": {}}))
    assert f"{bad}: not a results dict of `unlearn eval`" in _eval(model_dir, world, tmp_path / "o.json", "--oracle", bad)
    bad.write_text(json.dumps({"per_sample": {}, "info": {"data": "/elsewhere", "data_hash": "0123456789abcdef"}}))
    err = _eval(model_dir, world, tmp_path / "o.json", "--subject", bad)
    assert f"{bad}: the subject was evaluated on other data (/elsewhere" in err
    assert not (tmp_path / "o.json").exists()
    # a result whose questions were put in another prompt format (until session 36 the verdict
    # compared a raw evaluation with a chat one without a word)
    from unlearnkit.runinfo import data_hash

    bad.write_text(json.dumps({"per_sample": {}, "info": {"data_hash": data_hash(world),
                                                         "template": {"kind": "chat", "text": None, "system": None}}}))
    err = _eval(model_dir, world, tmp_path / "o.json", "--oracle", bad)
    assert "--oracle: evaluated with the prompt format 'chat', this evaluation uses 'raw'" in err
    # the subject cannot be the model itself (an AttributeError inside the verdict until session 36)
    assert "subject='self': only the oracle can be the model itself" in _eval(
        model_dir, world, tmp_path / "o.json", "--subject", "self")


def test_out_is_a_directory(world, tmp_path, model_dir):
    (tmp_path / "results").mkdir()
    assert f"{tmp_path / 'results'}: is a directory" in _eval(model_dir, world, tmp_path / "results")
    assert list((tmp_path / "results").iterdir()) == []


def test_api_names_the_file_too(world, tmp_path, model_dir):
    from unlearnkit import api
    from unlearnkit.data import DataError

    bad = tmp_path / "oracle.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="^" + re.escape(f"{bad}:1: malformed JSON")):
        api.evaluate(model_dir, world, oracle=bad)
    with pytest.raises(ValueError, match="is a directory"):
        api.evaluate(model_dir, world, out=tmp_path)
    with pytest.raises(ValueError, match="batch_size 0"):
        api.evaluate(model_dir, world, batch_size=0)


def test_finetune_never_replaces_the_source_or_a_folder_of_other_files(world, tmp_path, model_dir):
    """A checkpoint replaces its whole folder: `finetune --out` deleted a folder's other files (a
    run's outputs among them), and `--model X --out X` wrote over the source (until session 34).
    Both are refused before any work; an earlier checkpoint of this tool is still replaced."""
    import hashlib

    src = tmp_path / "src"
    shutil.copytree(model_dir, src)
    before = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    assert "it is the source model's folder" in fails("finetune", "--model", src, "--data", world, "--steps", 1,
                                                     "--out", src)
    assert hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest() == before
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    assert "holds other files (notes.txt, sub), and the checkpoint replaces the whole folder" in fails(
        "finetune", "--data", world, "--steps", 1, "--out", mine)
    assert (mine / "notes.txt").read_text() == "mine" and (mine / "sub").is_dir()
    (tmp_path / "afile").write_text("x")
    assert "is a file" in fails("finetune", "--data", world, "--steps", 1, "--out", tmp_path / "afile")
    assert "is a file; a run is a folder" in fails("forget", "--model", src, "--data", world, "--method", "ga",
                                                   "--steps", 1, "--out", tmp_path / "afile")
    assert "--merge goes with --lora" in fails("forget", "--model", src, "--data", world, "--method", "ga", "--steps", 1,
                                               "--merge", "--out", tmp_path / "m")
    # a run into a folder that holds an earlier run: refused (it was replaced without a word) unless told
    run = ["forget", "--model", str(src), "--data", str(world), "--method", "ga", "--steps", "1", "--out", str(tmp_path / "r")]
    assert CliRunner().invoke(app, run).exit_code == 0
    first = (tmp_path / "r" / "train.json").read_text()
    assert "holds an earlier run (model, log.jsonl, train.json): --resume it, --overwrite it" in fails(*run)
    assert (tmp_path / "r" / "train.json").read_text() == first
    assert CliRunner().invoke(app, [*run, "--overwrite"]).exit_code == 0
    ck = ["finetune", "--data", str(world), "--steps", "1", "--out", str(tmp_path / "ck")]
    res = CliRunner().invoke(app, ck)
    assert res.exit_code == 0, res.output
    # its own checkpoint: replaced with --overwrite only, as forget replaces a run (it was replaced without a
    # word until session 37)
    before = (tmp_path / "ck" / "unlearnkit.json").read_text()
    assert fails(*ck) == f"error: --out {tmp_path / 'ck'}: holds a checkpoint (unlearnkit.json): --overwrite it, or " \
                         f"choose another folder"
    assert (tmp_path / "ck" / "unlearnkit.json").read_text() == before
    res = CliRunner().invoke(app, [*ck, "--overwrite"])
    assert res.exit_code == 0 and (tmp_path / "ck" / "unlearnkit.json").read_text() != before


def test_a_second_finetune_into_a_folder_being_written_is_refused(world, tmp_path):
    """`finetune` holds its folder's lock from before training to after the save, as `forget` does:
    two runs into one folder both trained, and the later one replaced the other's checkpoint
    without --overwrite (until session 39). A folder made for the lock is taken away again when
    the run fails before writing anything, and one that was there stays."""
    from unlearnkit import runinfo

    out = tmp_path / "ck"
    out.mkdir()
    with runinfo.exclusive(out, "held"):  # as the first run holds it while it trains
        assert fails("finetune", "--data", world, "--steps", 1, "--out", out) == (
            f"error: --out {out}: another run is writing there now; wait for it to end, or choose another folder")
    assert out.is_dir() and not any(out.iterdir())
    (world / "retain.jsonl").unlink()  # the run fails after taking the lock: the folder it made goes
    assert "retain" in fails("finetune", "--data", world, "--steps", 1, "--out", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert CliRunner().invoke(app, ["finetune", "--data", str(tmp_path / "w"), "--steps", "1", "--out", str(out)]
                              ).exit_code != 0 and out.is_dir()


def test_finetune_never_replaces_a_run_kept_in_a_checkpoint_folder(world, tmp_path, model_dir):
    """`forget --out` takes a checkpoint folder; a later `finetune --out` there replaced the whole
    folder, the run with it, since the folder held unlearnkit.json (until session 37)."""
    ck = tmp_path / "ck"
    res = CliRunner().invoke(app, ["finetune", "--data", str(world), "--steps", "1", "--out", str(ck)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["forget", "--model", str(model_dir), "--data", str(world), "--method", "ga",
                                   "--steps", "1", "--out", str(ck)])
    assert res.exit_code == 0, res.output
    assert fails("finetune", "--data", world, "--steps", 1, "--out", ck, "--overwrite") == (
        f"error: --out {ck}: holds other files (config.yaml, log.jsonl, model, ...), and the checkpoint replaces the "
        f"whole folder: choose a new or empty folder")
    assert (ck / "model" / "model.safetensors").is_file() and (ck / "train.json").is_file()


def test_finetune_writes_its_record_with_the_weights(world, tmp_path, monkeypatch):
    """unlearnkit.json (the prompt format the checkpoint was trained in, its data) was written after
    the weights: a kill in between left a checkpoint that loaded in the raw format, and which a rerun
    called "other files" (until session 37). Both go into the folder in one rename, or neither."""
    from unlearnkit import api, runinfo

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runinfo, "versions", killed)  # the last thing the record needs
    with pytest.raises(KeyboardInterrupt):
        api.finetune(world, tmp_path / "ck", steps=1, progress=False)
    assert not (tmp_path / "ck").exists() and not list(tmp_path.glob(".ck*"))
    monkeypatch.undo()
    api.finetune(world, tmp_path / "ck", steps=1, progress=False)  # no --overwrite needed: nothing was there
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "unlearnkit.json"]


def test_finetune_needs_a_retain_split_and_one_budget(world, tmp_path):
    """A world with no retain split trained the subject on the forget set alone, and --steps beside
    --epochs dropped the epochs, both without a word (until session 35)."""
    (world / "retain.jsonl").unlink()
    assert "retain.jsonl: not found, and the subject trains on forget + retain" in fails(
        "finetune", "--data", world, "--out", tmp_path / "m")
    assert "give one budget" in fails("finetune", "--data", world, "--steps", 2, "--epochs", 1, "--out", tmp_path / "m")
    assert not (tmp_path / "m").exists()



def test_results_never_go_into_a_folder_the_command_reads(world, tmp_path, model_dir):
    """`eval --out` and `attack --out` wrote into the model's folder (a request home's version, which
    then failed its manifest check) until session 37: refused, as forget refuses, before any work."""
    src = shutil.copytree(model_dir, tmp_path / "m")
    oracle = shutil.copytree(model_dir, tmp_path / "o")
    before = sorted(p.name for p in src.iterdir())
    assert fails("eval", "--model", src, "--data", world, "--out", src / "metrics.json") == (
        f"error: --out {src / 'metrics.json'}: it lies inside the model's folder {src}; the model is never written "
        f"to: choose another folder")
    assert "lies inside the oracle's folder" in fails("eval", "--model", src, "--data", world, "--oracle", oracle,
                                                     "--out", oracle / "r" / "metrics.json")
    assert "lies inside the data's folder" in fails("eval", "--model", src, "--data", world, "--out",
                                                   world / "metrics.json")
    assert "lies inside the model's folder" in fails("attack", "--model", src, "--data", world, "--kind", "quantize",
                                                    "--subject", oracle, "--out", src / "q.json")
    assert sorted(p.name for p in src.iterdir()) == before and not (oracle / "r").exists()
    assert not (world / "metrics.json").exists()


def test_an_unknown_method_is_one_value_error(world, tmp_path, model_dir):
    """`api.forget(..., "gradascent", ...)` raised a bare KeyError, its message quoted; the API and
    the CLI now say the same one line."""
    from unlearnkit import api

    says = "unknown method 'gradascent'; valid methods: ga, graddiff, idk_dpo, npo, npo_rt, rmu, simnpo, twin_rmu"
    with pytest.raises(ValueError, match="^" + re.escape(says) + "$"):
        api.forget(model_dir, world, "gradascent", tmp_path / "r")
    assert fails("forget", "--model", model_dir, "--data", world, "--method", "gradascent",
                 "--out", tmp_path / "r") == f"error: {says}"
    assert not (tmp_path / "r").exists()


def test_a_string_where_a_number_belongs_is_named(world, tmp_path, model_dir):
    """Strings for numbers through the API ("1e-3", as YAML reads it) were refused as "not > 0" or
    were TypeErrors deep in training, scoring or an attack's plan: now one line naming the option."""
    from unlearnkit import api
    from unlearnkit.attacks import run_attack

    for kw, says in ((dict(lr="1e-3", steps=1), "--lr '1e-3': must be a number, not str"),
                     (dict(steps="10"), "--steps '10': must be a number, not str"),
                     (dict(epochs="2"), "--epochs '2': must be a number, not str"),
                     (dict(steps=1, warmup="0.1"), "--warmup '0.1': must be a number, not str")):
        with pytest.raises(ValueError, match="^" + re.escape(says) + "$"):
            api.forget(model_dir, world, "ga", tmp_path / "r", progress=False, **kw)
    assert not (tmp_path / "r").exists()
    with pytest.raises(ValueError, match="^" + re.escape("max_new_tokens '8': must be a number, not str") + "$"):
        api.evaluate(model_dir, world, max_new_tokens="8")
    with pytest.raises(ValueError, match="^" + re.escape("attack 'relearn', option steps='x': must be a number, not str") + "$"):
        run_attack("relearn", model_dir, world, steps="x")


def test_an_unknown_evaluation_option_is_named_at_the_door(tmp_path):
    """`api.evaluate(..., max_new_token=8)` was Python's TypeError from inside the evaluation, after
    the model and the world were loaded; now one line naming it and the valid options, before
    anything is read (the paths here do not exist)."""
    from unlearnkit import api

    with pytest.raises(ValueError) as e:
        api.evaluate(tmp_path / "no-model", tmp_path / "no-world", max_new_token=8)
    assert str(e.value).startswith("unknown evaluation option 'max_new_token'; valid options: ")
    assert "max_new_tokens" in str(e.value) and "\n" not in str(e.value)


def test_finetune_refuses_an_option_it_does_not_take(world, tmp_path):
    """`api.finetune(..., saliency=0.25)` was accepted and ignored (fine-tuning trains every weight)."""
    from unlearnkit import api

    options = ("lr, steps, epochs, batch_size, stream_batch, grad_accum, warmup, schedule, weight_decay, "
               "max_grad_norm, log_every, mixed_precision, group_by_length")
    for kw, says in ((dict(saliency=0.25), "finetune has no option 'saliency' (an unlearning setting: `forget` takes it)"),
                     (dict(learning_rate=1e-3), "finetune has no option 'learning_rate'")):
        with pytest.raises(ValueError) as e:
            api.finetune(world, tmp_path / "m", steps=1, progress=False, **kw)
        assert str(e.value) == f"{says}; its options: {options}"
    assert not (tmp_path / "m").exists()
