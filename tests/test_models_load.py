"""Loading checkpoints safely: only causal LMs, damaged files and missing tokenizers as one-line
errors naming the path, and LoRA adapters that load from any working directory."""
import json
import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from unlearnkit.models.load import (  # noqa: E402
    ModelLoadError,
    apply_lora,
    check_causal_lm,
    load_model,
    save_model,
)
from unlearnkit.models.tiny import new_model, train_tokenizer  # noqa: E402

TEXTS = ["Who is Linine Vigormont? A painter from Osterby.", "Where was she born? In Osterby, in 1974."]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS * 4, vocab_size=300)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tok):
    """A randomly initialised tiny Llama with its tokenizer, saved once for the module."""
    return save_model(new_model(tok, seed=0), tok, tmp_path_factory.mktemp("m") / "llama")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _one_line(e) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_loads_a_causal_lm(llama_dir, capsys, tmp_path):
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    save_model(*load_model(llama_dir), tmp_path / "again")
    model, tok = load_model(tmp_path / "again")
    assert type(model).__name__ == "LlamaForCausalLM" and tok.pad_token == "<pad>"
    # no "Loading weights" or "Writing model shards" bar for a local checkpoint (drawn even behind
    # progress=False until session 36), and transformers' own bars are left as they were
    err = capsys.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err
    assert hf_logging.is_progress_bar_enabled() == bars


def test_masked_lm_is_refused_naming_the_architecture(tmp_path, tok):
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError) as e:
        load_model(tmp_path / "bert")
    msg = _one_line(e)
    assert msg.startswith(str(tmp_path / "bert")) and "BertForMaskedLM" in msg and "not a causal LM" in msg


def test_model_type_decides_without_architectures():
    from transformers import LlamaConfig, T5Config

    with pytest.raises(ModelLoadError, match=r"x: model type 't5' is not a causal LM"):
        check_causal_lm(T5Config(), "x")
    check_causal_lm(LlamaConfig(), "x")  # no architectures saved, but llama is a causal LM


def test_truncated_safetensors_names_the_file(tmp_path, llama_dir):
    d = _copy(llama_dir, tmp_path / "trunc")
    weights = d / "model.safetensors"
    data = weights.read_bytes()
    for cut in (len(data) // 2, 5):
        weights.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError) as e:
            load_model(d)
        assert _one_line(e).startswith(f"{weights}: damaged safetensors file")


def test_missing_tokenizer_names_the_directory(tmp_path, llama_dir):
    d = _copy(llama_dir, tmp_path / "notok")
    (d / "tokenizer.json").unlink()  # tokenizer_config.json alone cannot build this tokenizer
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert _one_line(e).startswith(f"{d}: could not load the tokenizer")
    (d / "tokenizer_config.json").unlink()
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert _one_line(e).startswith(f"{d}: no tokenizer in the checkpoint")


def test_not_a_directory(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="a file, not a directory"):
        load_model(tmp_path / "weights.bin")


def _adapter(tmp_path, monkeypatch, llama_dir):
    """An adapter saved from `tmp_path/work`, whose base was given as the relative path `base`."""
    work = tmp_path / "work"
    _copy(llama_dir, work / "base")
    monkeypatch.chdir(work)
    net, tok = load_model("base")
    net = apply_lora(net)
    torch.manual_seed(0)
    for n, p in net.named_parameters():
        if "lora_B" in n:  # LoRA starts as the identity: make the adapter change the outputs
            torch.nn.init.normal_(p, std=0.5)
    save_model(net, tok, "adapter")
    ids = tok("Who is Linine Vigormont?", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = net(ids).logits
    return work, ids, logits


def test_adapter_records_an_absolute_base(tmp_path, monkeypatch, llama_dir):
    work, ids, logits = _adapter(tmp_path, monkeypatch, llama_dir)
    cfg = json.loads((work / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str((work / "base").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model, _ = load_model(work / "adapter")
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, logits, atol=1e-5)


def test_adapter_base_relative_to_the_adapter(tmp_path, monkeypatch, llama_dir):
    work, ids, logits = _adapter(tmp_path, monkeypatch, llama_dir)
    cfg_path = work / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": "../base"}))
    monkeypatch.chdir(tmp_path)
    model, _ = load_model(work / "adapter")
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, logits, atol=1e-5)
    cfg_path.write_text(json.dumps({**cfg, "base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(ModelLoadError) as e:
        load_model(work / "adapter")
    assert _one_line(e).startswith(f"{cfg_path}: base model {tmp_path / 'gone'} not found")


def test_a_text_is_scored_as_far_as_the_model_takes_it(tok):
    """Every text was cut at 512 tokens whatever the model (a news article's Min-K% and PrivLeak
    too) until session 36: now up to the model's positions, at most `scoring.MAX_LENGTH`."""
    from unlearnkit.scoring import LM, MAX_LENGTH

    doc = " ".join(TEXTS * 25)
    n = len(tok(doc, add_special_tokens=False).input_ids)
    assert 512 < n < 1024
    wide = LM(new_model(tok, seed=0, max_positions=4 * MAX_LENGTH), tok)
    assert wide.max_length == MAX_LENGTH and wide.score([""], [doc])[0].logprobs.size == n + 1  # and its eos
    assert LM(new_model(tok, seed=0), tok).score([""], [doc])[0].logprobs.size < 512  # the tiny model's 512


def test_a_tokenizer_without_eos_is_refused_in_one_line(tmp_path, llama_dir):
    """Every answer ends with eos: a tokenizer without one failed deep in the batching (a TypeError
    from torch.full) until session 36."""
    d = _copy(llama_dir, tmp_path / "noeos")
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg["eos_token"] = None
    cfg["pad_token"] = None
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError) as e:
        load_model(d)
    assert "the tokenizer has no eos_token" in _one_line(e)
