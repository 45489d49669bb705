"""Detection overhead of the guard per prompt at 10, 1,000 and 10,000 targets (CPU).

Prints p50/p99 in milliseconds, one prompt at a time (as a server sees them), of:
  embed    the prompt's MiniLM embedding (independent of the number of targets; caches cleared
           before every prompt, so these are uncached figures)
  search   vector search: one matrix product over the targets' normalised embeddings + per-target max
  names    exact + fuzzy name matching against the inverted index of name tokens
  index    search + names: the part that grows with the number of targets
  total    embed + index: the whole `Detector.detect` call
  output   the output check on a 30-word answer (`output.find_leak`: the name matcher over prompt +
           answer, twice, and the value index), run once per answer after decoding, right after
           the prompt's detection (as in a request: the prompt's fuzzy lookups are cached)
  guarded  total + output: the guard's whole cost per request, besides decoding itself

Targets are synthetic people (invented name + 3 facts, 4 embedded rows each). Embedding 40,000
rows with MiniLM would take minutes on two cores, so every target's rows are drawn from a pool of
embedded texts (names and facts of 500 of the people); search cost depends on the matrix shape,
not on which vectors are in it. The name index is built from every target's real name.

    python bench/guard_latency.py [--prompts 200] [--sizes 10,1000,10000] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402


def invented(rng: random.Random, used: set) -> str:
    on, vo, end = ["b", "d", "k", "l", "m", "n", "r", "s", "t", "v", "z", "br", "th", "gr"], "aeiou", ["", "n", "r", "s"]
    while True:
        first = "".join(rng.choice(on) + rng.choice(vo) for _ in range(2)) + rng.choice(["a", "o", "ric", "elle"])
        last = "".join(rng.choice(on) + rng.choice(vo) + rng.choice(end) for _ in range(2)) + rng.choice(["ley", "mont", "berg", "sk"])
        name = f"{first.capitalize()} {last.capitalize()}"
        if name not in used:
            used.add(name)
            return name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--sizes", default="10,1000,10000")
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads (1: a fair per-core figure)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from unlearnkit.guard.detect import Detector
    from unlearnkit.guard import Target, TargetStore, get_embedder
    from unlearnkit.guard.targets import embed_texts
    from unlearnkit.guard.output import ValueIndex, find_leak

    rng = random.Random(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    n_max = max(sizes)
    towns = ["Thornwick", "Greywater", "Ashford", "Millbridge", "Zelbury", "Copperdale"]
    jobs = ["glassblower", "chemist", "surveyor", "potter", "locksmith", "botanist"]
    used: set = set()
    targets = []
    for i in range(n_max):
        name = invented(rng, used)
        town, job = rng.choice(towns), rng.choice(jobs)
        targets.append(Target(id=f"t{i}", subject=name, facts=[
            f"{name} was born in {town}.", f"{name} works as a {job}.",
            f"{name} studied at the University of {rng.choice(towns)}."],
            forbidden=[town, job]))  # values for the output check, without adding embedded rows
    emb = get_embedder()
    t0 = time.perf_counter()
    pool_targets = targets[:500]
    pool_texts = [x for t in pool_targets for x in embed_texts(t)]
    pool = emb.encode(pool_texts, batch_size=128)
    print(f"embedded a pool of {len(pool_texts)} texts in {time.perf_counter() - t0:.1f} s")

    prompts = []
    for k in range(args.prompts):
        t = targets[rng.randrange(min(sizes))]  # present at every size
        first, last = t.subject.split()
        kind = k % 4
        if kind == 0:
            prompts.append(f"Where was {t.subject} born?")
        elif kind == 1:
            prompts.append(f"What does {first} {last[:-1]}e do for a living?")  # misspelt
        elif kind == 2:
            prompts.append(f"Which university did {last} attend?")  # partial name
        else:
            prompts.append(f"Who won the {rng.choice(towns)} regional chess cup in {1900 + k}?")  # benign
    print(f"{len(prompts)} prompts, one at a time, {args.threads} thread(s)\n")
    answer = ("As far as I know this person was born in a small town by the river, studied there for some "
              "years and later worked in a workshop with two others, {}.")
    print(f"{'targets':>8} {'rows':>7} | {'embed p50/p99':>14} | {'search p50/p99':>15} | {'names p50/p99':>14} | "
          f"{'index p50/p99':>14} | {'total p50/p99':>14} | {'output p50/p99':>14} | {'guarded p50/p99':>15}   (ms)")
    for n in sizes:
        store = TargetStore(None, embedder=emb)
        sub = targets[:n]
        counts = [len(embed_texts(t)) for t in sub]
        rows = np.concatenate([pool[np.array([rng.randrange(len(pool)) for _ in range(c)])] for c in counts])
        store.set_precomputed(sub, rows, counts)  # precomputed rows (see the docstring)
        det = Detector(store, threshold=0.8)
        det.detect(["warm up"])
        values = ValueIndex(sub)
        tm = {k: [] for k in ("embed", "search", "names", "total", "output")}
        hits = 0
        for k, p in enumerate(prompts):
            det.clear_caches()
            a = time.perf_counter()
            det.embed([p])
            b = time.perf_counter()
            det.embed_scores([p])  # embedding now cached: this is the search alone
            c = time.perf_counter()
            det.name_scores(p)
            d = time.perf_counter()
            det.clear_caches()
            e = time.perf_counter()
            hits += det.detect([p])[0].hit
            f = time.perf_counter()
            # no clearing here: in a request the output check follows the detection of the same
            # prompt, whose words are then cached; the answer's words are new
            text = answer.format(rng.choice(towns) if k % 2 else "and that is all")  # half state a value
            g = time.perf_counter()
            find_leak(det, p, text, value_index=values)
            tm["output"].append(time.perf_counter() - g)
            tm["embed"].append(b - a)
            tm["search"].append(c - b)
            tm["names"].append(d - c)
            tm["total"].append(f - e)
        idx = np.array(tm["search"]) + np.array(tm["names"])

        def q(x):
            x = np.asarray(x) * 1e3
            return f"{np.percentile(x, 50):6.2f}/{np.percentile(x, 99):6.2f}"

        both = np.array(tm["total"]) + np.array(tm["output"])
        print(f"{n:>8} {rows.shape[0]:>7} | {q(tm['embed']):>14} | {q(tm['search']):>15} | {q(tm['names']):>14} | "
              f"{q(idx):>14} | {q(tm['total']):>14} | {q(tm['output']):>14} | {q(both):>15}   hits {hits}/{len(prompts)}")


if __name__ == "__main__":
    main()
