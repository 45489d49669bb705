"""Where an unlearning run moved the weights: each tensor's relative change, and how much of the
token embeddings' change went to the forget people's name tokens.

    python bench/weight_change.py RUN/model --start SUBJECT --data WORLD [--top 12]

RUN/model and SUBJECT are saved models (safetensors) of the same architecture; WORLD is the data
directory whose forget split names the people. Prints, per tensor, ||W_run − W_start|| / ||W_start||
(largest first), then for the input embeddings: the share of the squared change that falls on the
rows of tokens in a forget person's name (with and without a leading space), how many rows moved,
and the most-moved tokens. With tied embeddings (a head that shares the matrix) a moved row also
moves that token's output logit for every prompt.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def load_tensors(model_dir: Path) -> dict:
    """Every tensor of the safetensors files in `model_dir`."""
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SystemExit(f"{model_dir}: no .safetensors file")
    return {k: v for f in files for k, v in load_file(f).items()}


def main():
    from transformers import AutoTokenizer

    from unlearnkit.data.io import load_world

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the unlearned model's directory")
    ap.add_argument("--start", type=Path, required=True, help="the model the run started from")
    ap.add_argument("--data", type=Path, required=True, help="the world (its forget split names the people)")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    a, b = load_tensors(args.start), load_tensors(args.run)
    if a.keys() != b.keys():
        raise SystemExit(f"{args.run} and {args.start} hold different tensors: not the same architecture")
    rel = sorted(((k, float((b[k].float() - a[k].float()).norm() / a[k].float().norm().clamp_min(1e-12))) for k in a),
                 key=lambda kv: -kv[1])
    print("| tensor | relative change |\n|---|---:|")
    for k, v in rel[:args.top]:
        print(f"| {k} | {v:.3f} |")
    emb = next((k for k in a if k.endswith("embed_tokens.weight")), None)
    if emb is None:
        print("\nno embed_tokens tensor: the embedding share is not computed")
        return
    tok = AutoTokenizer.from_pretrained(args.start)
    people = {r.subject for r in load_world(args.data).forget}
    names = sorted({t for p in people for s in (p, " " + p) for t in tok(s, add_special_tokens=False)["input_ids"]})
    d = (b[emb].float() - a[emb].float()).norm(dim=1)
    total = float((d ** 2).sum())
    share = float((d[names] ** 2).sum()) / total if total else 0.0
    top = d.topk(min(args.top, d.numel())).indices.tolist()
    print(f"\nembeddings: {int((d > 0).sum())} of {d.numel()} rows moved; {share:.3f} of the squared change on the "
          f"{len(names)} tokens of the {len(people)} forget people's names; of the {len(top)} most-moved rows, "
          f"{sum(t in set(names) for t in top)} are such tokens: {tok.convert_ids_to_tokens(top)}")


if __name__ == "__main__":
    main()
