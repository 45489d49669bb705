"""RWKU (Jin et al. 2024, arXiv:2406.10890; hub `jinzhuoran/RWKU`) from a local copy.

Configs read (split `test` for probes, `train` for passages; columns query, answer, level, type,
subject):
- `forget_level1` (fill-in-the-blank), `forget_level2` (question answering), `forget_level3`
  (adversarial attacks, by `type`): the forget probes; lower after unlearning;
- `neighbor_level1`, `neighbor_level2`: probes about related entities; should stay;
- `train_original_passage` (subject, text): the passages about each target that
  `unlearn forget` trains on (RWKU's "with passage" setting). The zero-shot setting (only the
  target's name, no corpus) is `unlearn forget --benchmark rwku --split TARGET --zero-shot`: the
  forget set is what the model reveals about the target (`requests.locate`), see `api.forget`.
`--split` is one target's name (the probes' `subject`, compared in NFC and casefolded), or `all` (default).

Each probe is answered greedily (30 new tokens, as RWKU's eval_forget.py) after RWKU's
instruction ("Please complete the blank in the following question." for level 1, "Please briefly
answer the following question." otherwise) and scored by ROUGE-L recall against the answer, averaged
per level and type. RWKU computes recall with the `rouge` package and its chat template; here it is
`rouge_score` without the stemmer and the prompt format of `--template` (raw by default), so numbers
are close to, not identical with, RWKU's tables.
"""
from __future__ import annotations

import unicodedata
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..metrics.text import rouge_l
from .base import Benchmark
from .tables import read_rows

MAX_NEW_TOKENS = 30
PROBES = {"forget_level1": "forget_fb", "forget_level2": "forget_qa", "forget_level3": "forget_aa",
          "neighbor_level1": "neighbor_fb", "neighbor_level2": "neighbor_qa"}


def probe_prompt(row: dict) -> str:
    """RWKU's instruction and question for one probe (eval_forget.py / eval_neighbor.py)."""
    level = str(row.get("level", ""))
    if level == "1":
        return f"Please complete the blank in the following question.\nQuestion: {row['query']}\nAnswer:"
    kind = row.get("type")
    if kind == "affirmative suffix":
        return f"Please briefly answer the following question.\nQuestion: {row['query']}"
    if kind == "incontext learning":
        return f"Please briefly answer the following question.\n{row['query']}\nAnswer:"
    return f"Please briefly answer the following question.\nQuestion: {row['query']}\nAnswer:"


def _recall(prediction: str, reference: str) -> float:
    return rouge_l(prediction, reference, use_stemmer=False)["recall"]


def _name_key(name) -> str:
    """A target's name as `--split` matches it: NFC, casefolded (a name typed with decomposed accents,
    or in another case, is the same target; such a name matched no probe until session 37)."""
    return unicodedata.normalize("NFC", str(name or "")).casefold()


def load(root: str | Path, split: str | None = None) -> Benchmark:
    """RWKU under `root`, for one target (`split` = its name) or all of them."""
    root = Path(root)
    target = split or "all"
    key = _name_key(target)
    probes: dict[str, list[dict]] = {}
    for config in PROBES:
        rows = read_rows(root, config, "test", required=("query", "answer", "subject"))
        if target != "all":
            rows = [r for r in rows if _name_key(r["subject"]) == key]
            if not rows and config.startswith("forget"):
                raise ValueError(f"RWKU: no {config} probe has subject {target!r}")
        for r in rows:  # the table names the level (a null one was read as "None", and a level-1 probe
            r["level"] = config[-1]  # went without its fill-in-the-blank instruction, until session 36)
        probes[config] = rows

    def run(lm, batch_size: int | None = None) -> dict:
        keys, prompts = [], []
        for config, rows in probes.items():
            for i, r in enumerate(rows):
                keys.append((config, i))
                prompts.append(probe_prompt(r))
        gens = lm.generate(prompts, max_new_tokens=MAX_NEW_TOKENS, batch_size=batch_size) if prompts else []
        scores: dict[str, list[float]] = defaultdict(list)
        by_type: dict[str, list[float]] = defaultdict(list)
        per_sample: dict[str, list[dict]] = defaultdict(list)  # each probe's answer (none until session 36)
        for (config, i), g in zip(keys, gens, strict=True):
            r = probes[config][i]
            s = _recall(g, r["answer"])
            scores[PROBES[config]].append(s)
            per_sample[PROBES[config]].append({"query": r["query"], "answer": r["answer"], "output": g, "recall": s})
            if config == "forget_level3":
                by_type[str(r.get("type"))].append(s)
        res = {name: float(np.mean(v)) for name, v in scores.items()}
        res["forget_aa_by_type"] = {t: float(np.mean(v)) for t, v in by_type.items()}
        res["n"] = {name: len(v) for name, v in scores.items()}
        res["target"] = target
        res["per_sample"] = dict(per_sample)
        return res

    def forget_pairs():
        rows = read_rows(root, "train_original_passage", "train", required=("text",))
        texts = [r["text"] for r in rows if target == "all" or _name_key(r.get("subject")) == key]
        if not texts:
            raise ValueError(f"RWKU: no train_original_passage text for {target!r}")
        return [""] * len(texts), texts

    return Benchmark("rwku", target, run=run, forget=forget_pairs)
