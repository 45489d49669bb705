"""The self-contained HTML report: one file, styles, script and figures inline, no URL anywhere.

`write_html(inputs, out)` renders every model of every input (a run directory or a metrics JSON);
`write_html(inputs, out, compare=True)` puts runs (methods or seeds) side by side: each run's
unlearned model labelled by its method and seed, the subject and oracle once, and a summary of
each method over its seeds. The page is a Jinja2 template (`page.html.j2`) filled with the tables
computed here and the figures of `plots`.
"""
from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from pathlib import Path

from .. import runinfo
from ..attacks.recovery import holds_answer
from . import plots
from .load import REFERENCES, ReportInputError, Run, load_runs
from .markdown import ROWS, fmt, verdict_rows
from .plots import Entry

SECTIONS = [  # (id, title): the page's order
    ("headline", "Headline metrics"),
    ("pareto", "Forget quality against model utility"),
    ("truth", "Forget truth ratios (the KS test behind forget quality)"),
    ("mia", "Membership inference, per sample"),
    ("records", "Forget records, one by one"),
    ("attacks", "Attacks: how much comes back"),
    ("training", "Training curves"),
    ("guard", "Guard: detection scores against the threshold"),
]


def entries_for(runs: list[Run], compare: bool = False) -> tuple[list[Entry], list[str]]:
    """The models to show, subject and oracle first (taken once, from the first run that has them),
    and notes on anything the reader must know (a later run measured against another oracle)."""
    refs: dict[str, Entry] = {}
    models: list[Entry] = []
    notes: list[str] = []
    for run in runs:
        own = [n for n in run.models if n not in REFERENCES]
        for name, res in run.models.items():
            if name in REFERENCES:
                first = refs.get(name)
                if first is None:
                    refs[name] = Entry(name, name, res, run.name)
                elif (first.per_sample.get("forget_truth_ratios") != (res.get("per_sample") or {}).get(
                        "forget_truth_ratios")):
                    notes.append(f"run {run.name} has another {name} than run {first.run}: its models are "
                                 f"measured against its own {name}, shown here is {first.run}'s")
                continue
            if compare:
                label = run.label if len(own) == 1 else f"{run.label} · {name}"
            else:
                label = name if len(runs) == 1 else f"{run.name}/{name}"
            models.append(Entry(label, "model", res, run.name))
    everyone = [*refs.values(), *models]
    hashes = _first_input_by(everyone, lambda info: info.get("data_hash"))
    if len(hashes) > 1:  # joined by record id in one table until session 35, without a word
        notes.append(f"the inputs were evaluated on {len(hashes)} different data sets (first in "
                     f"{', '.join(hashes.values())}): their metrics and records are not on the same questions")
    formats = _first_input_by(everyone, lambda info: (info.get("template") or {}).get("kind")
                              if isinstance(info.get("template"), dict) else None)
    if len(formats) > 1:  # unsaid until session 36
        notes.append(f"the inputs put their questions in {len(formats)} prompt formats "
                     f"({', '.join(f'{k} in {v}' for k, v in formats.items())}): their numbers do not compare")
    if models and not refs:  # the page's star and reference curves are the subject's and oracle's
        notes.append("no subject or oracle among the inputs: what is drawn against them (the oracle's star and "
                     "truth-ratio curve, the subject's records) is left out; `unlearn demo` and `forget --eval` "
                     "runs hold them")
    seen: dict[str, int] = defaultdict(int)
    for e in models:  # two runs with the same method and seed: keep the labels apart
        seen[e.label] += 1
        if seen[e.label] > 1:
            e.label = f"{e.label} ({e.run})"
    return [refs[k] for k in REFERENCES if k in refs] + models, notes


def headline(entries: list[Entry]) -> list[dict]:
    rows = []
    for key, label, direction in ROWS:
        values = [e.results.get(key) for e in entries]
        if any(v is not None for v in values):
            rows.append({"label": label.split(" (")[0], "key": key, "direction": direction,
                         "cells": [fmt(v) for v in values]})
    return rows


def _first_input_by(entries: list[Entry], key) -> dict:
    """{`key(info)`: the first input whose results' `info` gives it}, None left out."""
    out = {}
    for e in entries:
        if (k := key(e.results.get("info") or {})) is not None:
            out.setdefault(str(k), e.run)
    return out


def verdicts(entries: list[Entry]) -> list[dict]:
    out = []
    for e in entries:
        v = e.results.get("verdict")
        if not v or e.role == "oracle":
            continue
        # the marks the command line and the Markdown print (the page said "n/a" for CANNOT DECIDE)
        checks = [{"aspect": k, "mark": mark, "why": why} for k, mark, why in verdict_rows(v)]
        out.append({"label": e.label, "checks": checks})
    return out


def records(entries: list[Entry]) -> dict | None:
    """The per-record table: question, true answer, each model's greedy answer and hit or miss (the
    answer holds the whole true answer, `attacks.recovery.holds_answer`), rows matched across
    models by forget id."""
    base = next((e for e in entries if e.per_sample.get("forget_questions")), None)
    if base is None:
        return None
    ids = base.per_sample.get("forget_ids") or list(range(len(base.per_sample["forget_questions"])))
    cols = []
    for e in entries:
        ps = e.per_sample
        if not ps.get("forget_answers"):
            continue
        pos = {i: n for n, i in enumerate(ps.get("forget_ids") or range(len(ps["forget_answers"])))}
        cols.append((e, pos))
    rows = []
    for n, rid in enumerate(ids):
        cells, hits = [], []
        for e, pos in cols:
            k = pos.get(rid)
            if k is None:
                cells.append({"answer": "–", "hit": None})
                continue
            rouge = (e.per_sample.get("forget_rouge") or [None] * (k + 1))[k]
            true = (e.per_sample.get("forget_true_answers") or [None] * (k + 1))[k]
            # the answer rate's rule: ROUGE-L recall >= 0.5 made "Kingsreach University" a hit for
            # "Aldermoor University" until session 39
            hit = None if true is None else holds_answer(e.per_sample["forget_answers"][k], true)
            cells.append({"answer": e.per_sample["forget_answers"][k], "hit": hit,
                          "rouge": fmt(rouge) if rouge is not None else "–"})
            if hit:
                hits.append(e.label)
        rows.append({"id": rid, "question": base.per_sample["forget_questions"][n],
                     "answer": (base.per_sample.get("forget_true_answers") or [""] * len(ids))[n],
                     "cells": cells, "hits": "|".join(hits)})
    totals = [sum(1 for r in rows if r["cells"][c]["hit"]) for c in range(len(cols))]
    return {"models": [e.label for e, _ in cols], "rows": rows, "totals": totals}


def run_labels(runs: list[Run], compare: bool) -> dict[str, str]:
    """What the attack bars, attack table and training curves call each run: method and seed in a
    comparison (its name where two runs share them), else the run's name."""
    if not compare:
        return {r.name: r.name for r in runs}
    n = defaultdict(int)
    for r in runs:
        n[r.label] += 1
    return {r.name: r.label if n[r.label] == 1 else f"{r.label} ({r.name})" for r in runs}


def attack_groups(runs: list[Run], compare: bool) -> list:
    """[(attack, [(bar label, recovery)])]: each run's recovery, then the oracle's under that attack."""
    kinds = list(dict.fromkeys(k for r in runs for k in r.attacks))
    names = run_labels(runs, compare)
    groups = []
    for kind in kinds:
        bars = []
        for r in runs:
            if kind in r.attacks:
                label = names[r.name] if compare or len(runs) > 1 else "unlearned"
                bars.append((label, r.attacks[kind].get("recovery")))
        oracle = next((r.attacks[kind].get("oracle_recovery") for r in runs
                       if kind in r.attacks and r.attacks[kind].get("oracle_recovery") is not None), None)
        bars.append(("oracle (same attack)", oracle))
        groups.append((kind, bars))
    return groups


def attack_table(runs: list[Run], compare: bool) -> list[dict]:
    names = run_labels(runs, compare)
    return [{"run": names[r.name], "kind": k, "variant": a.get("recovery_variant") or "–",
             "recovery": fmt(a.get("recovery")), "oracle": fmt(a.get("oracle_recovery")),
             "rouge": f"{fmt(a.get('plain_forget_rouge'))} → {fmt(a.get('attacked_forget_rouge'))}"}
            for r in runs for k, a in r.attacks.items()]


def method_summary(runs: list[Run]) -> list[dict]:
    """Per method, mean ± sd over its runs (seeds) of each headline metric of the unlearned model."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        own = [res for n, res in r.models.items() if n not in REFERENCES]
        main = r.models.get("unlearned") or (own[0] if own else None)
        if main is not None:
            by[r.setup or r.name].append(main)
    out = []
    for method, results in by.items():
        cells = []
        for key, _, _ in ROWS:
            vals = [x[key] for x in results if isinstance(x.get(key), (int, float))]
            if not vals:
                cells.append("–")
            elif len(vals) == 1:
                cells.append(fmt(float(vals[0])))
            else:
                cells.append(f"{fmt(statistics.mean(vals))} ± {fmt(statistics.stdev(vals))}")
        out.append({"method": method, "n": len(results), "cells": cells})
    return out


def guard_scores(runs: list[Run]) -> dict | None:
    """The guard's detection scores of the first run that has a guard."""
    return next((r.guard for r in runs if r.guard), None)


def _template():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("unlearnkit.report", "."),
                             autoescape=jinja2.select_autoescape(["j2", "html"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template("page.html.j2")


def render(runs: list[Run], compare: bool = False, title: str | None = None) -> str:
    """The page as a string."""
    from markupsafe import Markup

    entries, notes = entries_for(runs, compare)
    guard = guard_scores(runs)
    figures = {
        "pareto": plots.pareto(entries),
        "truth": plots.truth_ratios(entries),
        "mia": plots.mia(entries),
        "attacks": plots.attacks(attack_groups(runs, compare)),
        "training": plots.training([(run_labels(runs, compare)[r.name], r.log) for r in runs]),
        "guard": plots.guard(guard) if guard else None,
    }
    figs = {k: (None if p is None else {"name": p.name, "svg": Markup(p.svg),
                                         "marks": json.dumps(p.marks)}) for k, p in figures.items()}
    ctx = {
        "title": title or ("unlearnkit comparison" if compare else "unlearnkit report"),
        "compare": compare,
        "sections": SECTIONS,
        "runs": [{"name": r.name, "label": r.label, "source": str(r.source), "config": r.config,
                  "log": str(r.log_path) if r.log_path else None} for r in runs],
        "notes": notes,
        "labels": [e.label for e in entries],
        "roles": [e.role for e in entries],
        "headline": headline(entries),
        "verdicts": verdicts(entries),
        "summary": method_summary(runs) if compare else [],
        "rows_labels": [label.split(" (")[0] for _, label, _ in ROWS],
        "records": records(entries),
        "attack_rows": attack_table(runs, compare),
        "guard": guard,
        "figs": figs,
    }
    return _template().render(**ctx)


def write_html(inputs, out: str | os.PathLike, *, compare: bool = False, title: str | None = None) -> Path:
    """Write the report of `inputs` (run directories, metrics JSON paths or loaded `Run`s) to `out`."""
    inputs, out = list(inputs), Path(out)
    runs = inputs if inputs and all(isinstance(x, Run) for x in inputs) else load_runs(inputs)
    if out.is_dir():
        raise ReportInputError(f"{out}: is a directory; the report goes to a file (e.g. {out / 'report.html'})")
    if clash := next((r.source for r in runs if r.source.resolve() == out.resolve()), None):
        # the page was written over the results it read until session 35
        raise ReportInputError(f"{out}: is an input of the report ({clash}); write the page to another file")
    try:
        page = render(runs, compare=compare, title=title)
    except ReportInputError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as e:  # a field `load_run` does not check
        raise ReportInputError(f"{', '.join(str(r.source) for r in runs)}: a field is not as `unlearn eval` writes it "
                               f"({type(e).__name__}: {e})") from None
    return runinfo.write_text(out, page)
