"""Evaluation speed: the full suite (one batched scoring call + batched greedy generation) side by
side with a plain per-sample reference scorer (one forward per sample, full float32 logits).

    python bench/eval_speed.py                                  # tiny embedded model, CPU
    python bench/eval_speed.py --device cuda --shape llama-1b --pairs 4000   # GPU machine

Prints samples/s for both and the full-suite wall time. With `--shape llama-1b` the model is a
randomly initialised Llama of the Llama-3.2-1B shape in bf16 (weights do not change the cost).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from unlearnkit import api  # noqa: E402
from unlearnkit.data.batching import encode_pairs  # noqa: E402
from unlearnkit.data.io import load_world  # noqa: E402
from unlearnkit.evaluate import evaluate  # noqa: E402
from unlearnkit.scoring import LM  # noqa: E402

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=2048, tie_word_embeddings=True,
                rope_theta=500000.0)


def reference_score(model, tok, prompts, answers):
    """The per-sample way: one forward per sample, full float32 logits, log_softmax over all of them."""
    out = []
    for e in encode_pairs(tok, prompts, answers):
        ids = torch.tensor([e.input_ids], device=model.device)
        logits = model(input_ids=ids).logits.float()
        logp = torch.log_softmax(logits[0, :-1], -1)
        tgt = ids[0, 1:]
        out.append(logp.gather(-1, tgt[:, None])[e.n_prompt - 1:, 0].cpu().numpy())
    return out


def scale_world(w, pairs: int):
    """Repeat the world's records until the forget+retain QA pairs reach `pairs` (TOFU size: 4,000)."""
    import dataclasses

    base = w.retain + w.forget
    reps = max(1, -(-pairs // len(base)))
    retain = [r.model_copy(update={"id": f"{r.id}-{k}"}) for k in range(reps) for r in w.retain]
    return dataclasses.replace(w, retain=retain[: max(1, pairs - len(w.forget))])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--shape", default="tiny", choices=["tiny", "llama-1b"])
    ap.add_argument("--pairs", type=int, default=0, help="scale the QA splits to this many pairs (0: as generated)")
    ap.add_argument("--reference-samples", type=int, default=200, help="samples timed with the per-sample scorer")
    ap.add_argument("--people", type=int, default=60)
    args = ap.parse_args()
    if not (args.device == "cpu" or args.device.startswith("cuda")):
        ap.error(f"--device {args.device}: choose cpu, cuda or cuda:N")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch sees no CUDA device on this machine")
    if args.pairs < 0 or args.reference_samples < 1 or args.people < 2:
        ap.error("--pairs must be >= 0, --reference-samples >= 1 and --people >= 2")

    tmp = Path(tempfile.mkdtemp(prefix="ukbench-"))
    data = api.world(tmp / "world", n_people=args.people)
    w = load_world(data)
    if args.pairs:
        w = scale_world(w, args.pairs)
    if args.shape == "tiny":
        ckpt = api.finetune(data, tmp / "subject", epochs=1, progress=False)
        from unlearnkit.models.load import load_model

        model, tok = load_model(ckpt)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM
        from unlearnkit.models.tiny import train_tokenizer

        tok = train_tokenizer([r.question + " " + r.answer for r in w.retain])
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_1B)).to(torch.bfloat16)
    model.to(args.device).eval()
    lm = LM(model, tok)

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    recs = (w.forget + w.retain)[: args.reference_samples]
    sync(); t = time.perf_counter()
    with torch.no_grad():
        reference_score(model, tok, [r.question for r in recs], [r.answer for r in recs])
    sync(); ref_s = time.perf_counter() - t

    sync(); t = time.perf_counter()
    ours = lm.score([r.question for r in recs], [r.answer for r in recs])
    sync(); our_s = time.perf_counter() - t
    assert len(ours) == len(recs)

    sync(); t = time.perf_counter()
    res = evaluate(lm, w, oracle="self")
    sync(); suite_s = time.perf_counter() - t
    n_qa = sum(res["n"][s] for s in ("forget", "retain", "neighbours", "world_facts", "holdout"))
    print(f"device={args.device} shape={args.shape} qa_pairs={n_qa} scored_pairs={res['n']['scored_pairs']} generated={res['n']['generated']}")
    print(f"per-sample reference scorer: {len(recs) / ref_s:9.1f} samples/s  ({len(recs)} samples, {ref_s:.2f} s)")
    print(f"batched scorer (ours):       {len(recs) / our_s:9.1f} samples/s  ({our_s:.2f} s, {ref_s / our_s:.1f}x)")
    print(f"full suite (tofu+muse+mia):  {res['n']['scored_pairs'] / suite_s:9.1f} scored pairs/s, {suite_s:.2f} s total")
    print("stage timings (s):", {k: round(v, 2) for k, v in res["timings_s"].items()})


if __name__ == "__main__":
    main()
