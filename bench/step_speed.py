"""Optimizer steps/s, tokens/s and peak memory per unlearning method, beside a reference step.

    python bench/step_speed.py                                   # tiny model, CPU
    python bench/step_speed.py --device cuda --shape llama-1b    # Llama-3.2-1B shape, random init, bf16

Each step sees `--batch` forget sequences and `--batch` retain sequences of `--seq` tokens (half
prompt, half answer; random ids: speed does not depend on what the tokens say). Every method runs
through the one loop (`unlearnkit.train.train`) with its caches built by its own `prepare`. The
reference rows (`ref:graddiff`, `ref:npo`) are written the way the field's reference code does it:
`model(...).logits` over the whole vocabulary for every position, upcast to float32, and for NPO a
resident frozen copy of the model run every step. Each row runs in a fresh process, so peak memory
(GPU: max allocated; CPU: max resident set size) is that row's own.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

METHODS = ["ga", "graddiff", "npo", "npo_rt", "simnpo", "idk_dpo", "rmu"]
REFERENCE = ["ref:graddiff", "ref:npo"]
SHAPES = {
    # the embedded tiny model (models/tiny.py) with a 2k vocabulary
    "tiny": dict(vocab_size=2048, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, intermediate_size=512),
    # meta-llama/Llama-3.2-1B's config, randomly initialised (no download)
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, intermediate_size=8192, rope_theta=500000.0, head_dim=64),
}


class _Tok:
    """Enough of a tokenizer for idk_dpo's prepare: refusals become fixed-length random ids."""

    def __init__(self, vocab, n):
        self.vocab, self.n, self.eos_token_id = vocab, n, 2

    def __call__(self, texts, add_special_tokens=False):
        import torch

        g = torch.Generator().manual_seed(1)
        return {"input_ids": [torch.randint(3, self.vocab, (self.n - 1,), generator=g).tolist() for _ in texts]}


def _model(shape, device, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(**SHAPES[shape], tie_word_embeddings=True, max_position_embeddings=4096,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype)


def _stream(n, seq, vocab, seed):
    import torch
    from unlearnkit.data.batching import Encoded

    g = torch.Generator().manual_seed(seed)
    return [Encoded(torch.randint(3, vocab, (seq,), generator=g).tolist(), seq // 2) for _ in range(n)]


def _reference_loss(name, ref_model):
    """Reference-code style: full float32 logits over the vocabulary; NPO keeps a frozen model."""
    import torch
    import torch.nn.functional as F

    def seq_logp(model, b):
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        lab = b["labels"][:, 1:]
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, lab.clamp_min(0)[..., None]).squeeze(-1)
        return (logp * (lab != -100)).sum(-1), (lab != -100).sum()

    def nll(model, b):
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), ignore_index=-100)

    def loss(model, batch, ctx):
        if name == "ref:graddiff":
            return -nll(model, batch["forget"]) + 5.0 * nll(model, batch["retain"]), {}
        lp, _ = seq_logp(model, batch["forget"])
        with torch.no_grad():
            ref, _ = seq_logp(ref_model, batch["forget"])
        return -20 * F.logsigmoid(-0.1 * (lp - ref)).mean(), {}
    return loss


def run_one(name, args):
    import torch
    from unlearnkit.methods import Context, get_method
    from unlearnkit.train import TrainConfig, train

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = _model(args.shape, args.device, dtype)
    vocab = SHAPES[args.shape]["vocab_size"]
    n = args.batch * args.steps
    streams = {"forget": _stream(n, args.seq, vocab, 1), "retain": _stream(n, args.seq, vocab, 2)}
    ctx = Context(params=None, pad_id=0, tokenizer=_Tok(vocab, args.seq // 2))
    if name == "ref:npo" or (not name.startswith("ref:") and not get_method(name).needs_retain):
        del streams["retain"]
    if name.startswith("ref:"):
        ref = _model(args.shape, args.device, dtype).eval() if name == "ref:npo" else None
        loss = _reference_loss(name, ref)
    else:
        m = get_method(name)
        ctx.params = m.params()
        if m.trainable:
            m.trainable(model, ctx.params)
        if m.prepare:
            ctx.cache = m.prepare(model, streams, ctx)
        loss = m.loss
    if args.device == "cuda":
        torch.cuda.synchronize()
    cfg = TrainConfig(lr=1e-5, steps=args.warmup, batch_size=args.batch, log_every=10**9)
    model = train(model, loss, streams, cfg, pad_id=0, ctx=ctx, progress=False).model  # warm-up (allocator, kernels)
    model.train()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    cfg.steps = args.steps
    t0 = time.perf_counter()
    res = train(model, loss, streams, cfg, pad_id=0, ctx=ctx, progress=False)
    if args.device == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    tokens = res.tokens
    return {"method": name, "steps_per_s": args.steps / sec, "tokens_per_s": tokens / sec, "peak_gib": peak / 2**30}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=16, help="sequences per stream per step")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (default: 256 on cuda, 64 on cpu)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 on cuda, 5 on cpu)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--methods", default=",".join(METHODS + REFERENCE))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for name in ("batch", "seq", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name} {getattr(args, name)}: must be >= 1")
    if args.warmup < 0:
        ap.error(f"--warmup {args.warmup}: must be >= 0")
    if unknown := [m for m in args.methods.split(",") if m not in METHODS + REFERENCE]:
        ap.error(f"--methods: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(METHODS + REFERENCE)}")
    if args.device == "cuda" and not _cuda():
        ap.error("--device cuda: torch sees no CUDA device on this machine")
    args.seq = args.seq or (256 if args.device == "cuda" else 64)
    args.steps = args.steps or (10 if args.device == "cuda" else 5)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args)))
        return
    print(f"device={args.device} shape={args.shape} batch={args.batch}x{args.seq} forget + {args.batch}x{args.seq} retain "
          f"tokens/step, {args.steps} timed steps\n")
    print("| method | steps/s | tokens/s | peak memory (GiB) |\n|---|---:|---:|---:|")
    base = [sys.executable, __file__, "--device", args.device, "--shape", args.shape, "--batch", str(args.batch),
            "--seq", str(args.seq), "--steps", str(args.steps), "--warmup", str(args.warmup)]
    for name in args.methods.split(","):
        r = subprocess.run(base + ["--one", name], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        line = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
        if r.returncode or not line:
            print(f"| {name} | failed: {(r.stderr.strip().splitlines() or ['?'])[-1][:80]} | | |")
            continue
        x = json.loads(line[0][7:])
        print(f"| {name} | {x['steps_per_s']:.2f} | {x['tokens_per_s']:.0f} | {x['peak_gib']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
