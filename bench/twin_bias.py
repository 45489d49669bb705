"""How far the twins sit from "never seen": the calibrator's statistic on real unseen people.

    python bench/twin_bias.py --cache runs/bench-methods      # the worlds and models of bench/methods.py

The calibrated run's target is the forget records' twins (`data.twins`): the same questions about
a name nobody has, recombined from other people's name words. This prints, per world, the gap in
the calibrator's own statistic (mean answer-token log-prob, the subject's name left out:
`calibrate.encode_records`, `calibrate.answer_scores`) between real people and their twins:
- `oracle: forget - twins`: the oracle never saw the forget people, so this is how far the twins
  sit from "never seen" as exact unlearning defines it (0 if the twins were unbiased);
- `holdout - twins` under the subject and the oracle: people neither model saw, against their own
  twins: the same bias, measured without the oracle;
- `subject: forget - twins`: where a calibrated run starts;
- the oracle's AUC (the calibrator's test: forget records as members) against the twins and against
  the holdout people: where exact unlearning stands against each reference (`--calibration
  reference=twins|holdout`); 0.5 would be a reference at the oracle's level.
Models come from `--cache` (bench/methods.py builds them; missing ones are trained here).

With `--truth-ratios`, a second table: TOFU's truth ratios (paraphrased against perturbed answers,
as the evaluation scores them) of the forget and the holdout people under the subject, the oracle
and, with `--run NAME[,NAME...]`, each model named: a calibrated run bench/methods.py saved
(`CACHE/WORLD/runs/NAME/model`) or one of its retrained oracles (`CACHE/WORLD/models/NAME`, from
`--retrained N`), a row each: each set's median log ratio and the KS p between pairs. Oracle
forget against oracle holdout is the oracle-free forget quality of exact unlearning itself;
oracle holdout against subject holdout, two trained models on the same people neither saw; the
run's forget against the oracle's forget is the evaluation's forget quality, and against the
run's own holdout the calibrator's truth-ratio check.

With `--truth-gap`, a third table: the truth-ratio gap against the twins (`evaluate`'s
`truth_gap_twins`, no oracle) of the oracle, each `--run` model and the subject: the mean over the
forget facts of log R(fact) - log R(its twin) under one model, its standard error and the Wilcoxon
p, beside the two-sample KS p of the same ratios (`forget_quality_twins`) and forget quality.
With `--by-attribute`, a further column: the same mean over each attribute's facts (which kinds of
fact the model still tells apart from a stranger's). With `--by-name`, two more: the mean share of
a forget person's name tokens that some retained person's name (retain, neighbours) also has, and
the gap over the people who share none, some and all of them (where a run forgets by rewriting the
name's tokens, bench/weight_change.py, retained people read the shared ones too). With
`--answer-wording`, each model's gap twice more, over the facts whose perturbed answers differ from
the paraphrased one in one span (the value) that the forget answer also holds: once as the
evaluation words them, once in the forget answer's own wording (the answer as trained against
itself with each perturbed value in the true one's place): whether what a run leaves is in the
wording it trained on or only in the paraphrase's.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_spec = importlib.util.spec_from_file_location("bench_methods", Path(__file__).parent / "methods.py")
methods = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(methods)


def scores(net, tok, records):
    import numpy as np
    import torch

    from unlearnkit.calibrate import answer_scores, encode_records
    from unlearnkit.data.batching import collate, length_batches

    enc = encode_records(tok, records)
    out = np.zeros(len(enc))
    with torch.no_grad():
        for idx in length_batches([len(e.input_ids) for e in enc], 8192, 128):
            out[idx] = answer_scores(net, collate([enc[i] for i in idx], tok.pad_token_id)).float().numpy()
    return out


TR_PAIRS = {"oracle f/h": ("oracle forget", "oracle holdout"), "oracle h/subject h": ("oracle holdout", "subject holdout"),
            "run f/oracle f": ("run forget", "oracle forget"), "run f/h": ("run forget", "run holdout"),
            "run h/subject h": ("run holdout", "subject holdout")}


def truth_ratio_row(shape, seed, label, w, models: dict, scored: dict) -> str:
    """The `--truth-ratios` table's row: median log ratio per model and split, KS p per pair.
    `scored`: each model path's ratios per split, filled here and kept across a world's rows."""
    import numpy as np
    from scipy.stats import ks_2samp

    from unlearnkit.evaluate import truth_ratios
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    r = {}
    for name, path in models.items():
        if path not in scored:
            net, tok = load_model(path)
            scored[path] = {split: truth_ratios(LM(net, tok), getattr(w, split)) for split in ("forget", "holdout")}
        r.update({f"{name} {split}": v for split, v in scored[path].items()})
    med = " | ".join(f"{np.median(np.log(r[k])):+.3f}" if k in r else "–"
                     for k in (f"{m} {s}" for m in ("subject", "oracle", "run") for s in ("forget", "holdout")))
    ks = " | ".join(f"{ks_2samp(r[a], r[b]).pvalue:.2g}" if a in r and b in r else "–" for a, b in TR_PAIRS.values())
    return f"| {shape} | {seed} | {label} | {med} | {ks} |"


def saved(cache: Path, shape: str, seed: int, name: str) -> Path:
    """`--run NAME`'s model: a saved run, else a retrained oracle; a one-line exit names both paths."""
    root = cache / f"{shape}-s{seed}"
    for path in (root / "runs" / name / "model", root / "models" / name):
        if path.is_dir():
            return path
    raise SystemExit(f"--run {name}: neither {root / 'runs' / name / 'model'} nor {root / 'models' / name} "
                     f"exists (bench/methods.py writes them)")


def in_answer_wording(record):
    """`record` with its paraphrased answer replaced by its answer, and each perturbed answer by the
    answer with that perturbed value in the true value's place (the value: the words where the
    perturbed answer differs from the paraphrased one); None where a perturbed answer differs in
    no word or the answer does not hold the true value."""
    from os.path import commonprefix  # of any two sequences: here, lists of words

    para, out = record.paraphrased_answer, []
    for pert in record.perturbed_answers:
        a, b = para.split(), pert.split()
        i = len(commonprefix([a, b]))  # words the two share at the start, then at the end (not overlapping)
        j = min(len(commonprefix([a[::-1], b[::-1]])), min(len(a), len(b)) - i)
        true, new = " ".join(a[i:len(a) - j]), " ".join(b[i:len(b) - j])
        true, new = true.rstrip(".,;!?"), new.rstrip(".,;!?")
        if not true or not new or true not in record.answer:
            return None
        out.append(record.answer.replace(true, new, 1))
    return record.model_copy(update={"paraphrased_answer": record.answer, "perturbed_answers": out})


def answer_wording_worlds(w):
    """(the world with only the forget facts `in_answer_wording` can rewrite, as they are; the same
    facts rewritten)."""
    from dataclasses import replace

    pairs = [(r, in_answer_wording(r)) for r in w.forget]
    kept = [(r, x) for r, x in pairs if x is not None]
    return replace(w, forget=[r for r, _ in kept]), replace(w, forget=[x for _, x in kept])


def shared_name_tokens(w, tok) -> dict[str, float]:
    """Each forget person's share of name tokens (the name after a space, as in a question) that
    are also tokens of a retained person's name (retain and neighbours)."""
    ids = lambda name: set(tok(" " + name, add_special_tokens=False)["input_ids"])  # noqa: E731
    kept = set().union(*(ids(r.subject) for split in (w.retain, w.neighbours) for r in split))
    return {p: len(ids(p) & kept) / len(ids(p)) for p in {r.subject for r in w.forget}}


def truth_gap_rows(shape, seed, w, models: dict, by_attribute: bool = False, by_name: bool = False) -> list[str]:
    """The `--truth-gap` table's rows, one per model (the oracle first: forget quality's reference);
    with `by_attribute`, each attribute's mean gap in a further column; with `by_name`, the mean
    share of the forget people's name tokens that a retained person's name also has, and the gap of
    the people who share none, some and all of them."""
    import numpy as np
    from scipy.stats import ks_2samp

    from unlearnkit.evaluate import truth_gap_twins
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    record = {r.id: r for r in w.forget}
    rows, oracle = [], None
    for name, path in models.items():
        net, tok = load_model(path)
        g = truth_gap_twins(LM(net, tok), w)
        oracle = oracle or g["forget"]
        row = (f"| {shape} | {seed} | {name} | {g['mean']:+.3f} ({g['se']:.3f}) | {g['p']:.2g} "
               f"| {ks_2samp(g['forget'], g['twins']).pvalue:.2g} | {ks_2samp(g['forget'], oracle).pvalue:.2g} |")
        d = np.log(g["forget"]) - np.log(g["twins"])
        if by_attribute:
            kinds = np.array([record[i].attribute or "–" for i in g["ids"]])
            row += " " + ", ".join(f"{k} {d[kinds == k].mean():+.2f}" for k in sorted(set(kinds))) + " |"
        if by_name:
            share = shared_name_tokens(w, tok)
            person = np.array([share[record[i].subject] for i in g["ids"]])
            cells = [f"{label} {d[m].mean():+.2f} ({len({record[i].subject for i, k in zip(g['ids'], m) if k})})"
                     for label, m in (("none", person == 0), ("some", (person > 0) & (person < 1)),
                                      ("all", person == 1)) if m.any()]
            row += f" {np.mean(list(share.values())):.2f} | " + ", ".join(cells) + " |"
        rows.append(row)
    return rows


def main():
    import torch

    from unlearnkit.calibrate import auc
    from unlearnkit.data.io import load_world
    from unlearnkit.data.twins import forget_twins, world_twins
    from unlearnkit.models.load import load_model
    from unlearnkit.models.tiny import SIZES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(methods.SHAPES))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench-methods"))
    ap.add_argument("--truth-ratios", action="store_true", help="also the truth-ratio table (module docstring)")
    ap.add_argument("--run", default=None, help="with --truth-ratios or --truth-gap: models to score beside the subject and oracle, "
                                                "comma-separated: saved runs (CACHE/WORLD/runs/NAME/model) or "
                                                "retrained oracles (CACHE/WORLD/models/NAME)")
    ap.add_argument("--truth-gap", action="store_true", help="also the truth-ratio gap table (module docstring)")
    ap.add_argument("--by-attribute", action="store_true", help="with --truth-gap: each attribute's mean gap too")
    ap.add_argument("--by-name", action="store_true", help="with --truth-gap: the forget names' tokens that retained "
                                                         "names share, and the gap by that share")
    ap.add_argument("--answer-wording", action="store_true", help="with --truth-gap: each model's gap again over the "
                                                                "facts that can be set in the forget answer's own "
                                                                "wording, in the evaluation's and in that wording")
    ap.add_argument("--size", default="tiny", choices=sorted(SIZES),
                    help="the models' size in --cache (bench/methods.py --size)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    print("| world | seed | oracle: forget − twins | holdout − twins (subject) | holdout − twins (oracle) "
          "| subject: forget − twins | oracle AUC vs twins | oracle AUC vs holdout |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    tr_rows, gap_rows = [], []
    for shape in args.shapes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            data, models = methods.build(args.cache, shape, seed, size=args.size)
            w = load_world(data)
            (fn, ft), (hn, ht) = forget_twins(w), world_twins(w, w.holdout)
            gaps = {}
            for name in ("subject", "oracle"):
                net, tok = load_model(models[name])
                s = {k: scores(net, tok, r) for k, r in {"fn": fn, "ft": ft, "hn": hn, "ht": ht}.items() if r}
                gaps[name] = {k: float(s[a].mean() - s[b].mean())
                              for k, (a, b) in {"forget": ("fn", "ft"), "holdout": ("hn", "ht")}.items() if a in s}
                if name == "oracle":  # its AUC against each reference; `reference=holdout` takes the whole splits
                    every = s["fn"] if len(fn) == len(w.forget) else scores(net, tok, w.forget)
                    aucs = {"twins": auc(s["fn"], s["ft"]),
                            "holdout": auc(every, scores(net, tok, w.holdout)) if w.holdout else None}
            h = lambda m: f"{gaps[m]['holdout']:+.2f}" if "holdout" in gaps[m] else "–"  # noqa: E731
            print(f"| {shape} | {seed} | {gaps['oracle']['forget']:+.2f} | {h('subject')} | {h('oracle')} | "
                  f"{gaps['subject']['forget']:+.2f} | {aucs['twins']:.3f} | "
                  + (f"{aucs['holdout']:.3f} |" if aucs["holdout"] is not None else "– |"),
                  flush=True)
            if args.truth_gap:
                names = ["oracle", *(args.run.split(",") if args.run else []), "subject"]
                paths = {n: models[n] if n in ("subject", "oracle") else saved(args.cache, shape, seed, n)
                         for n in names}
                gap_rows += truth_gap_rows(shape, seed, w, paths, args.by_attribute, args.by_name)
                if args.answer_wording:
                    same, rewritten = answer_wording_worlds(w)
                    for label, wk in ((f"the evaluation's wording, {len(same.forget)} facts", same),
                                      ("the forget answer's wording", rewritten)):
                        gap_rows += truth_gap_rows(shape, seed, wk, {f"{n} ({label})": p for n, p in paths.items()},
                                                   args.by_attribute, args.by_name)
            if args.truth_ratios:
                base, scored = {"subject": models["subject"], "oracle": models["oracle"]}, {}
                for name in (args.run.split(",") if args.run else [None]):
                    tr_rows.append(truth_ratio_row(shape, seed, name or "–", w, {**base, **(
                        {"run": saved(args.cache, shape, seed, name)} if name else {})}, scored))
    if args.truth_ratios:
        print("\nMedian log truth ratio (subject, oracle, run; forget, holdout) and KS p:\n\n"
              "| world | seed | run | subject forget | subject holdout | oracle forget | oracle holdout | run forget "
              "| run holdout | " + " | ".join(TR_PAIRS) + " |\n|---|---:|---|" + "---:|" * 11)
        print("\n".join(tr_rows), flush=True)
    if args.truth_gap:
        print("\nTruth-ratio gap against the twins, fact by fact (mean log R(fact) − log R(twin), SE):\n\n"
              "| world | seed | model | gap (SE) | Wilcoxon p | KS p against the twins | forget quality |"
              + (" by attribute |" if args.by_attribute else "")
              + (" name tokens a retained name shares | gap by that share (people) |" if args.by_name else "")
              + "\n|---|---:|---|---:|---:|---:|---:|" + ("---|" if args.by_attribute else "")
              + ("---:|---|" if args.by_name else ""))
        print("\n".join(gap_rows), flush=True)


if __name__ == "__main__":
    main()
