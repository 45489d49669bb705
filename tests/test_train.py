"""The one loop in one process: bit-for-bit resume, determinism, LoRA output layout, sharpness-aware
steps (several processes: tests/test_distributed.py)."""
from __future__ import annotations

import json

import pytest
import torch


def _streams(tiny_world, method):
    from unlearnkit.data.batching import encode_pairs, forget_pairs
    from unlearnkit.data.batching import qa_pairs as _pairs
    from unlearnkit.data.io import load_world
    from unlearnkit.methods import Context, get_method
    from unlearnkit.models.load import load_model

    net, tok = load_model(tiny_world.subject_dir)
    w, m = load_world(tiny_world.data_dir), get_method(method)
    prompts, answers, subjects = forget_pairs(w)
    streams = {"forget": encode_pairs(tok, prompts, answers, subjects=subjects)}
    if m.needs_retain:
        streams["retain"] = encode_pairs(tok, *_pairs(w.retain))
    ctx = Context(m.params(), seed=0, pad_id=tok.pad_token_id, tokenizer=tok)
    if m.prepare:
        ctx.cache = m.prepare(net, streams, ctx)
    return net, m, streams, ctx, tok


def _run(tiny_world, out=None, stop=None, resume=False, method="npo_rt", steps=6):
    from unlearnkit.train import TrainConfig, train

    net, m, streams, ctx, tok = _streams(tiny_world, method)
    cfg = TrainConfig(lr=1e-3, steps=steps, batch_size=8, save_every=2, schedule="cosine", warmup=0.2, seed=3)
    return train(net, m.loss, streams, cfg, pad_id=tok.pad_token_id, ctx=ctx, out_dir=out, resume=resume,
                 stop=stop, progress=False).model


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_is_bit_for_bit(tiny_world, tmp_path):
    """Stopped at a checkpoint and resumed, a run ends with exactly the uninterrupted run's weights."""
    full = _run(tiny_world, tmp_path / "full")
    _run(tiny_world, tmp_path / "cut", stop=lambda step, logs: step == 4)
    assert [p.name for p in (tmp_path / "cut/checkpoints").iterdir()] == ["step-4"]
    resumed = _run(tiny_world, tmp_path / "cut", resume=True)
    assert _same(full, resumed)
    log = [json.loads(line) for line in (tmp_path / "cut/log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 6


def test_deterministic_for_a_seed(tiny_world):
    assert _same(_run(tiny_world, method="rmu", steps=3), _run(tiny_world, method="rmu", steps=3))


def test_progress_to_a_log_is_drawn_seldom(tiny_world, capfd):
    """The loop's bar, written to a file or pipe (CI, `make demo > log`), is drawn once in 10 s, not
    twice a step (the step, then its loss): 320 KB of bars in one `make demo` log until session 39."""
    from unlearnkit.train import TrainConfig, train

    net, m, streams, ctx, tok = _streams(tiny_world, "ga")
    train(net, m.loss, streams, TrainConfig(lr=1e-4, steps=20, batch_size=4), pad_id=tok.pad_token_id, ctx=ctx,
          progress=True, desc="quiet")
    err = capfd.readouterr().err
    assert 1 <= err.count("quiet") <= 3, err  # each drawing names the bar: 40 of them before


def test_lora_and_merge_layout(tiny_world, tmp_path):
    """--lora writes the adapter; --merge also a plain merged model; both load and agree."""
    from unlearnkit import api
    from unlearnkit.models.load import load_model

    run = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "npo", tmp_path / "run", lora=True, merge=True,
                     steps=3, lr=1e-3, progress=False)
    assert (run / "adapter/adapter_config.json").is_file()
    assert (run / "model/config.json").is_file() and not (run / "model/adapter_config.json").exists()
    assert (run / "config.yaml").is_file() and (run / "log.jsonl").is_file()
    assert not list(run.glob(".*"))  # no temp dirs left behind
    adapter, tok = load_model(run / "adapter")
    merged, _ = load_model(run / "model")
    ids = torch.tensor([[tok.bos_token_id] + tok("Where was", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(adapter(ids).logits, merged(ids).logits, atol=1e-4)
    source = load_model(tiny_world.subject_dir)[0]
    with torch.no_grad():
        assert not torch.allclose(source(ids).logits, merged(ids).logits, atol=1e-4)


def test_a_sharpness_aware_step_takes_the_gradient_beside_the_weights(tiny_world):
    """`--sam r`: the gradient the optimiser gets is the whole loss's at w + r|w| g_f/|g_f| (g_f: the
    forget term's gradient at w), computed here independently; the weights are put back exactly."""
    from accelerate import Accelerator

    from unlearnkit.data.batching import collate
    from unlearnkit.shards import sharpness_aware_backward
    from unlearnkit.train import _LossModule

    net, m, streams, ctx, tok = _streams(tiny_world, "simnpo")
    batch = {k: collate(streams[k][:4], tok.pad_token_id) for k in ("forget", "retain")}
    params = [p for p in net.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    # by hand: the forget term's gradient, the move, the loss's gradient there
    _, _, f = m.loss(net, batch, ctx)
    g_f = torch.autograd.grad(f, params)
    w_norm = torch.sqrt(sum((p ** 2).sum() for p in start))
    g_norm = torch.sqrt(sum((g ** 2).sum() for g in g_f))
    with torch.no_grad():
        for p, g in zip(params, g_f):
            p.add_(g * (0.01 * w_norm / g_norm))
    loss, _, _ = m.loss(net, batch, ctx)
    expected = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, s in zip(params, start):
            p.copy_(s)
    module = _LossModule(net, m.loss, ctx)
    got_loss, _ = sharpness_aware_backward(Accelerator(cpu=True), module, batch, list(module(batch)[2:]), 0.01)
    assert torch.allclose(got_loss, loss.detach(), rtol=1e-5, atol=1e-6)
    assert all(torch.allclose(p.grad, e, rtol=1e-4, atol=1e-7) for p, e in zip(params, expected))
    assert all(torch.allclose(p, s, atol=1e-7) for p, s in zip(params, start))  # put back
    plain = torch.autograd.grad(m.loss(net, batch, ctx)[0], params)
    assert not all(torch.allclose(a, b, rtol=1e-3) for a, b in zip(plain, expected))  # a step of its own


def test_sharpness_aware_steps_need_a_forget_term_and_one_micro_step(tiny_world):
    from unlearnkit.sft import sft_loss
    from unlearnkit.train import TrainConfig, train

    with pytest.raises(ValueError, match="--sam"):
        TrainConfig(sam=0.01, grad_accum=2)
    with pytest.raises(ValueError, match="--sam"):
        TrainConfig(sam=1.5)
    net, m, streams, ctx, tok = _streams(tiny_world, "ga")
    with pytest.raises(ValueError, match="forget term"):
        train(net, sft_loss(), {"train": streams["forget"]}, TrainConfig(steps=1, sam=0.01), pad_id=tok.pad_token_id,
              ctx=ctx, progress=False)
