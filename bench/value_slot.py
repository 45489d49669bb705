"""Where a calibrated run leaves the facts: the answer's value against the rest of its words.

    python bench/value_slot.py --cache runs/bench-methods     # the worlds and runs of bench/methods.py

The calibrated run stops when the forget answers' mean token log-prob matches their twins'
(docs/methods.md). That mean pools two kinds of token: the answer's value (the town, the year:
the fact) and the words around it. This splits it, per forget record, with the value located as
TOFU's truth ratio locates it (where the paraphrased answer and a perturbed one differ), and prints
for each model, beside the same figures on the twins (the forget questions about a name nobody has):
- `value`: the mean log-prob of the value's tokens in the trained answer;
- `other`: of the answer's other tokens (the subject's name left out, as the calibration does);
- `true over false, as trained`: log p(answer) - log p(answer with a perturbed value), summed over
  the answer, averaged over the perturbed values: how far the model still prefers the true value;
- `true over false, reworded`: the same on the paraphrased answer against the perturbed ones (what
  TOFU's truth ratio compares, before its length normalisation).
A model that never saw the person prefers the true value about as little as it does for a twin.
Models come from `--cache`: the subject, the default method's calibrated run (`runs/<method>`),
the oracle and one retrained oracle (bench/methods.py builds them; run it first).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_spec = importlib.util.spec_from_file_location("bench_methods", Path(__file__).parent / "methods.py")
methods = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(methods)


def value_of(paraphrased: str, perturbed: str) -> tuple[str, str]:
    """(the true value, the false one): where the two wordings differ, in characters."""
    p = len(os.path.commonprefix([paraphrased, perturbed]))
    s = len(os.path.commonprefix([paraphrased[::-1], perturbed[::-1]]))
    s = min(s, len(paraphrased) - p, len(perturbed) - p)
    return paraphrased[p:len(paraphrased) - s], perturbed[p:len(perturbed) - s]


def measure(lm, records) -> dict[str, float]:
    """The four figures of the module docstring, over `records` (those whose value is found in the
    trained answer)."""
    import numpy as np

    pairs = []  # (record, value, trained answer with a false value, perturbed answer)
    for r in records:
        for wrong in r.perturbed_answers:
            v, u = value_of(r.paraphrased_answer, wrong)
            if v.strip() and v in r.answer:
                pairs.append((r, v, r.answer.replace(v, u), wrong))
    n = len(pairs)
    answers = ([r.answer for r, *_ in pairs] + [a for _, _, a, _ in pairs]
               + [r.paraphrased_answer for r, *_ in pairs] + [w for *_, w in pairs])
    scores = lm.score([r.question for r, *_ in pairs] * 4, answers)
    total = np.array([s.logprobs[:-1].sum() for s in scores])  # the end of sequence left out
    value, other, seen = [], [], set()
    for (r, v, *_), s in zip(pairs, scores[:n]):
        if r.id in seen:
            continue
        seen.add(r.id)
        enc = lm.tokenizer(r.answer, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) != len(s.logprobs) - 1:  # tokenised differently in context: skip
            continue
        v0 = r.answer.find(v)
        name = [(m.start(), m.end()) for w in r.subject.split() for m in re.finditer(re.escape(w), r.answer)]
        for (a, b), x in zip(enc["offset_mapping"], s.logprobs[:-1]):
            if not any(a < e and b > s0 for s0, e in name):
                (value if a < v0 + len(v) and b > v0 else other).append(x)
    return {"value": float(np.mean(value)), "other": float(np.mean(other)) if other else float("nan"),
            "trained": float((total[:n] - total[n:2 * n]).mean()),
            "reworded": float((total[2 * n:3 * n] - total[3 * n:]).mean())}


def main():
    import torch

    from unlearnkit import DEFAULT_METHOD
    from unlearnkit.data.io import load_world
    from unlearnkit.data.twins import forget_twins
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(methods.SHAPES))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-methods"))
    ap.add_argument("--method", default=DEFAULT_METHOD, help="the calibrated run to read (runs/<method>)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    print("Mean log-prob of the value's tokens and of the answer's other tokens; the true value's lead over "
          "false ones (nats), as trained and reworded. Forget records, and (in brackets) their twins.\n")
    print("| world | seed | model | value | other | true over false, as trained | true over false, reworded |\n"
          "|---|---:|---|---:|---:|---:|---:|")
    for shape in args.shapes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            root = args.cache / f"{shape}-s{seed}"
            w = load_world(root / "world")
            named, twins = forget_twins(w)
            for label, path in (("subject", root / "models" / "subject"),
                                (args.method, root / "runs" / args.method / "model"),
                                ("oracle", root / "models" / "oracle"), ("retrained", root / "models" / "retrained")):
                if not path.is_dir():
                    raise SystemExit(f"{path}: not found; run bench/methods.py --cache {args.cache} first")
                net, tok = load_model(path)
                f, t = measure(LM(net, tok), named), measure(LM(net, tok), twins)
                print(f"| {shape} | {seed} | {label} | " + " | ".join(f"{f[k]:.2f} ({t[k]:.2f})" for k in
                                                                    ("value", "other", "trained", "reworded")) + " |",
                      flush=True)


if __name__ == "__main__":
    main()
