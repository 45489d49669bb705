"""The evaluation suite: TOFU, MUSE and membership inference on one model and one world.

`evaluate(lm, world)` needs only two methods of `lm`: `score(prompts, answers, stats=, batch_size=)
-> list[SampleScore]` and `generate(prompts, max_new_tokens=, batch_size=) -> list[str]`
(`unlearnkit.scoring.LM`, a guard, a quantised model...). It gathers every (prompt, answer) pair
it needs into one `score` call, every greedy answer into one `generate` call (plus one for the
document continuations of MUSE VerbMem), then computes the metrics of `unlearnkit.metrics` from
those outputs. The result is a flat, JSON-serialisable dict; its `per_sample` section is what a
later evaluation needs from this one, so an oracle's result can be passed back as `oracle=` (forget
quality, PrivLeak, the verdict's ROUGE and utility references).

Which text is scored or generated (prompts are the plain question; tokenisation is scoring's job):
- TOFU, per QA split (forget, retain, world_facts, neighbours): the true answer (probability, exact
  memorisation, extraction strength), the paraphrased answer and every perturbed answer (truth
  ratio), the greedy answer to `question` (ROUGE-L recall), and on forget also the greedy answer to
  the held-out `paraphrased_question`. On the utility sets world_facts and neighbours the
  normalised probability compares the paraphrased answer with the perturbed ones, because the
  perturbed answers are written in the paraphrased answer's wording (TOFU compares options of the
  same form; comparing the short answer with full sentences would measure wording, not truth).
  The forget questions' twins (`data.twins.forget_twins`: the person's name swapped for one nobody
  has) get their paraphrased and perturbed answers scored too: `forget_quality_twins` is the KS p
  of the forget truth ratios against the twins', forget quality with this model's own
  "never seen" in the oracle's place (docs/methods.md, "Facts that survive").
- MUSE: VerbMem continues the first `verbmem_prompt_words` words of each forget document (or the
  given `verbmem_pairs`, e.g. MUSE's own prompt/continuation pairs); KnowMem is ROUGE-L F1 of the
  greedy answers on forget and retain QA; PrivLeak uses the Min-K% AUC at k = 0.4
  (`metrics.muse.PRIVLEAK_K`), recorded beside it, and is None with a note when the oracle's AUC
  was computed at another k.
- MIA: members = forget, non-members = holdout, both as documents (scored with an empty prompt)
  and as QA answers (scored given the question). `mia_source="auto"` picks documents when each
  side has at least `min_docs` of them (else the QA answers, which are many more) for the
  headline `mia_auc` and PrivLeak; both are always reported under `splits["mia"]`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .data.twins import forget_twins
from .metrics import mia, muse, tofu
from .metrics.text import rouge_l, split_words
from .runinfo import Timer, is_number, json_safe

SUITES = ("tofu", "muse", "mia")
UTILITY_SPLITS = ("retain", "world_facts", "neighbours")
QA_SPLITS = ("forget",) + UTILITY_SPLITS


class _Requests:
    """(prompt, answer) pairs to score in one call, each kept under a key."""

    def __init__(self):
        self.prompts: list[str] = []
        self.answers: list[str] = []
        self.index: dict[tuple, int] = {}

    def add(self, key: tuple, prompt: str, answer: str) -> None:
        self.index[key] = len(self.prompts)
        self.prompts.append(prompt)
        self.answers.append(answer)

    def __len__(self):
        return len(self.prompts)


def _twin_requests(world, forget: list, req: _Requests) -> list[tuple[int, Any]]:
    """Queue in `req` the paraphrased and perturbed answers of the twins (`data.twins.forget_twins`:
    the same questions about people nobody saw) of the forget questions that name their subject;
    returns (index in `forget`, twin) pairs. Their truth ratios are forget quality's reference
    when there is no oracle (`forget_quality_twins`)."""
    twin_of = _twins_of(world, forget)
    for i, t in twin_of:
        _queue_truth(req, ("twin", i), t)
    return twin_of


def _twins_of(world, forget: list) -> list[tuple[int, Any]]:
    """(index in `forget`, twin) of the forget questions that name their subject and have perturbed
    answers (`data.twins.forget_twins`)."""
    named, tw = forget_twins(world)
    index = {id(r): i for i, r in enumerate(forget)}
    return [(index[id(r)], t) for r, t in zip(named, tw) if t.perturbed_answers]


def _queue_truth(req: _Requests, key: tuple, record) -> None:
    """Queue what a record's truth ratio needs: its paraphrased answer under `key + ("para",)` and
    each perturbed answer under `key + ("pert", j)` (read back by `_truth_ratio`)."""
    req.add((*key, "para"), record.question, record.paraphrased_answer)
    for j, p in enumerate(record.perturbed_answers):
        req.add((*key, "pert", j), record.question, p)


def _truth_ratio(sc, key: tuple, record) -> float:
    """TOFU's truth ratio of a record queued by `_queue_truth`, `sc` mapping a key to its score."""
    return tofu.truth_ratio(sc((*key, "para")), [sc((*key, "pert", j)) for j in range(len(record.perturbed_answers))])


def truth_ratios(lm, records, batch_size: int | None = None) -> list[float]:
    """TOFU's truth ratio of each record that has perturbed answers, scored as `evaluate` scores
    them (one `lm.score` call)."""
    recs = [r for r in records if r.perturbed_answers]
    req = _Requests()
    for i, r in enumerate(recs):
        _queue_truth(req, (i,), r)
    scores = lm.score(req.prompts, req.answers, batch_size=batch_size) if len(req) else []
    return [_truth_ratio(lambda k: scores[req.index[k]], (i,), r) for i, r in enumerate(recs)]


def truth_gap_twins(lm, world, batch_size: int | None = None) -> dict | None:
    """`truth_gap_twins` of `evaluate` on its own (`metrics.tofu.paired_truth_gap` of the forget
    questions that name their subject against their twins), with the forget and twin truth ratios
    ("forget", "twins") and the forget records' ids ("ids"), pair by pair. None with fewer than two
    such questions."""
    forget = list(world.forget)
    pairs = _twins_of(world, forget)
    if len(pairs) < 2:
        return None
    both = truth_ratios(lm, [forget[i] for i, _ in pairs] + [t for _, t in pairs], batch_size)  # one pass
    f, t = both[:len(pairs)], both[len(pairs):]
    return {**tofu.paired_truth_gap(f, t), "forget": f, "twins": t, "ids": [forget[i].id for i, _ in pairs]}


def is_result(obj) -> bool:
    """Whether `obj` is a results dict of `evaluate` (`unlearn eval`), as an oracle, a subject or a
    report reads one: it holds a verdict, per-sample scores or a forget quality."""
    return isinstance(obj, dict) and any(k in obj for k in ("verdict", "per_sample", "forget_quality"))


def _mean(xs) -> float | None:
    xs = list(xs)
    return float(np.mean(xs)) if xs else None


def _pick_source(world, mia_source: str, min_docs: int) -> str | None:
    has_docs = min(len(world.forget_docs), len(world.holdout_docs))
    has_qa = min(len(world.forget), len(world.holdout))
    if mia_source == "docs":
        return "docs" if has_docs else None
    if mia_source == "qa":
        return "qa" if has_qa else None
    if mia_source != "auto":
        raise ValueError(f"mia_source must be 'auto', 'docs' or 'qa', got {mia_source!r}")
    if has_docs >= min_docs or (has_docs and not has_qa):
        return "docs"
    return "qa" if has_qa else ("docs" if has_docs else None)


def evaluate(lm, world, *, oracle: dict | None = None, suites: Sequence[str] = SUITES, reference_lm=None,
             subject: dict | None = None, max_new_tokens: int = 32, batch_size: int | None = None,
             k: float = mia.MIN_K, mia_source: str = "auto", min_docs: int = 10, verbmem_prompt_words: int = 12,
             verbmem_continuation_words: int = 24, verbmem_max_new_tokens: int = 64,
             verdict_options: dict | None = None, verbmem_pairs: Sequence[tuple[str, str]] | None = None) -> dict:
    """Evaluate `lm` on `world` (a `unlearnkit.data.io.WorldData`).

    oracle: the result dict of `evaluate` on the oracle model (same world), or "self" when `lm` is
      the oracle (its forget quality is then 1 and its PrivLeak 0 by construction). Without it,
      `forget_quality` and `privleak` are None (they compare with the oracle by definition; the
      model is never compared with itself). `forget_quality_twins` needs none: the same KS test,
      the forget truth ratios against those of their twins (the questions about invented people,
      `data.twins`) under this model. subject: the subject model's result, the reference for
      the utility verdict (else the oracle's). reference_lm: a model with `score`, for the reference
      MIA attack. k: the Min-K% fraction of the MIA table (PrivLeak uses its own, 0.4).
      verdict_options: keyword arguments for `verdict`. verbmem_pairs: (prompt, true continuation)
      pairs for VerbMem instead of cutting the forget documents.
    Returns a JSON-serialisable dict: flat headline metrics, `splits` (per-split sub-dicts), `mia_auc`,
    `verdict`, `per_sample`, `n`, `timings_s`, `config`, `notes`.
    """
    suites = (suites,) if isinstance(suites, str) else tuple(suites)  # "tofu" was read as four letters
    unknown = set(suites) - set(SUITES)
    if unknown:
        raise ValueError(f"unknown suites {sorted(unknown)}; choose from {SUITES}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size {batch_size!r}: a whole number >= 1, or None (the scorer's own)")
    for name, value in (("max_new_tokens", max_new_tokens), ("k", k), ("min_docs", min_docs),
                        ("verbmem_prompt_words", verbmem_prompt_words),
                        ("verbmem_continuation_words", verbmem_continuation_words),
                        ("verbmem_max_new_tokens", verbmem_max_new_tokens)):  # a string was a TypeError deep in scoring
        if not is_number(value):
            raise ValueError(f"{name} {value!r}: must be a number, not {type(value).__name__}")
    if not world.forget:
        raise ValueError("the world has no forget records")
    t_start = time.perf_counter()
    timer = Timer()
    notes: list[str] = []
    do_tofu, do_muse, do_mia = ("tofu" in suites), ("muse" in suites), ("mia" in suites)
    source = _pick_source(world, mia_source, min_docs) if (do_mia or do_muse) else None  # PrivLeak is Min-K% AUC
    if (do_mia or do_muse) and source is None:
        notes.append("no holdout documents or holdout QA: membership inference and PrivLeak skipped")
    splits_qa = {s: list(getattr(world, s)) for s in QA_SPLITS}

    # 1. everything to score, in one call (and the reference model's pass for its attack)
    req = _Requests()
    twin_of = _queue_tofu(req, world, splits_qa) if do_tofu else []
    mia_sets = _queue_mia(req, world) if source is not None else {}
    sc = _Scores.of(lm, req, do_mia, batch_size, timer)
    if do_mia and reference_lm is not None and mia_sets:
        sc.reference = _reference_scores(reference_lm, req, mia_sets, batch_size, timer)
    # 2. every greedy answer in one call; document continuations in another
    gens, n_gen = _greedy_answers(lm, splits_qa, do_tofu, do_muse, max_new_tokens, batch_size, timer)
    verbmem = (_Verbmem.of(lm, world, verbmem_pairs, verbmem_prompt_words, verbmem_continuation_words,
                           verbmem_max_new_tokens, batch_size, timer, notes) if do_muse else None)

    # 3. metrics
    t_metrics = time.perf_counter()
    res: dict[str, Any] = {}
    per_sample: dict[str, Any] = {"forget_ids": [r.id for r in splits_qa["forget"]]}
    self_oracle = isinstance(oracle, str) and oracle == "self"
    if self_oracle:  # this model is the oracle: compare it with itself
        res["per_sample"] = per_sample
        oracle = res
    split_out = {s: _split_metrics(s, recs, sc, gens, do_tofu, do_muse, per_sample) for s, recs in splits_qa.items()}
    if do_tofu:
        res.update(_tofu_headline(split_out, per_sample, sc, twin_of, oracle, notes))
    if do_muse:
        res.update(_muse_headline(split_out, verbmem, len(world.forget_docs)))
    mia_out, mink_auc = _membership(mia_sets, sc, source, k, do_mia, do_muse, per_sample)
    if do_mia:
        res["mia_auc"] = mia_out[source]["auc"] if source in mia_out else None
        res["mia_source"] = source
    if do_muse:
        res["privleak"] = _privleak(mink_auc, source, oracle, notes)
        mia_out["privleak_source"] = source
    if mia_out.keys() - {"source", "k"}:
        split_out["mia"] = mia_out

    res["splits"] = split_out
    res["per_sample"] = per_sample
    res["config"] = {"suites": list(suites), "max_new_tokens": max_new_tokens, "k": k,
                     "privleak_k": muse.PRIVLEAK_K if do_muse else None, "mia_source": mia_source,
                     "min_docs": min_docs, "verbmem_prompt_words": verbmem_prompt_words,
                     "verbmem_continuation_words": verbmem_continuation_words,
                     "verbmem_max_new_tokens": verbmem_max_new_tokens, "reference_lm": reference_lm is not None,
                     "oracle": oracle is not None, "subject": subject is not None,
                     "self_oracle": self_oracle}  # the oracle's own result (a report shows it as the oracle)
    res["verdict"] = verdict(res, oracle=oracle, subject=subject, **(verdict_options or {}))
    timer.seconds["metrics"] = round(time.perf_counter() - t_metrics, 3)
    timer.seconds["total"] = round(time.perf_counter() - t_start, 3)
    res["n"] = {**{s: len(v) for s, v in splits_qa.items()}, "holdout": len(world.holdout),
                "forget_docs": len(world.forget_docs), "holdout_docs": len(world.holdout_docs),
                "scored_pairs": len(req), "generated": n_gen + (len(verbmem.pairs) if verbmem else 0)}
    res["timings_s"] = timer.seconds
    res["notes"] = notes
    return json_safe(res)


def _queue_tofu(req: _Requests, world, splits_qa: dict) -> list[tuple[int, Any]]:
    """Queue each record's true answer and truth-ratio answers, then the forget questions' twins';
    returns the twins (`_twin_requests`)."""
    for s, recs in splits_qa.items():
        for i, r in enumerate(recs):
            req.add((s, i, "true"), r.question, r.answer)
            _queue_truth(req, (s, i), r)
    return _twin_requests(world, splits_qa["forget"], req)


def _queue_mia(req: _Requests, world) -> dict[str, dict[str, tuple[list, list]]]:
    """Queue the membership-inference texts (forget against holdout answers, forget against holdout
    documents), reusing the answers the TOFU suite queued; source -> side -> (keys, texts)."""
    sets: dict[str, dict[str, tuple[list, list]]] = {}
    if min(len(world.forget), len(world.holdout)):
        for side, split, recs in (("members", "forget", world.forget), ("nonmembers", "holdout", world.holdout)):
            keys = []
            for i, r in enumerate(recs):
                if (split, i, "true") not in req.index:
                    req.add((split, i, "true"), r.question, r.answer)
                keys.append((split, i, "true"))
            sets.setdefault("qa", {})[side] = (keys, [r.answer for r in recs])
    if min(len(world.forget_docs), len(world.holdout_docs)):
        for side, docs in (("members", world.forget_docs), ("nonmembers", world.holdout_docs)):
            keys = []
            for i, d in enumerate(docs):
                req.add(("doc", side, i), "", d.text)
                keys.append(("doc", side, i))
            sets.setdefault("docs", {})[side] = (keys, [d.text for d in docs])
    return sets


@dataclass
class _Scores:
    """The scored pairs of one `lm.score` call, read back by key; `reference`: the reference model's
    scores of the membership texts, by key (None without a reference model)."""
    req: _Requests
    scores: list
    reference: dict | None = None

    @classmethod
    def of(cls, lm, req: _Requests, stats: bool, batch_size: int | None, timer: Timer) -> _Scores:
        if not len(req):
            return cls(req, [])
        with timer("score"):
            scores = lm.score(req.prompts, req.answers, stats=stats, batch_size=batch_size)
        if len(scores) != len(req):
            raise RuntimeError(f"lm.score returned {len(scores)} scores for {len(req)} pairs")
        return cls(req, scores)

    def __call__(self, key: tuple):
        return self.scores[self.req.index[key]]


def _reference_scores(reference_lm, req: _Requests, mia_sets: dict, batch_size: int | None, timer: Timer) -> dict:
    """The reference model's scores of every membership text, by key (one call)."""
    ref_req = _Requests()
    for sides in mia_sets.values():
        for keys, _ in sides.values():
            for key in keys:
                if key not in ref_req.index:
                    i = req.index[key]
                    ref_req.add(key, req.prompts[i], req.answers[i])
    with timer("reference_score"):
        out = reference_lm.score(ref_req.prompts, ref_req.answers, stats=False, batch_size=batch_size)
    return {key: out[i] for key, i in ref_req.index.items()}


def _greedy_answers(lm, splits_qa: dict, do_tofu: bool, do_muse: bool, max_new_tokens: int,
                    batch_size: int | None, timer: Timer) -> tuple[dict[tuple, str], int]:
    """Greedy answers to every question the suites read ((split, i, "q"); the forget paraphrased
    questions as (forget, i, "pq")), in one call; and how many were generated."""
    keys: list[tuple] = []
    prompts: list[str] = []
    if do_tofu or do_muse:
        for s, recs in splits_qa.items():
            if not do_tofu and s not in ("forget", "retain"):
                continue  # MUSE KnowMem needs only forget and retain
            for i, r in enumerate(recs):
                keys.append((s, i, "q"))
                prompts.append(r.question)
        if do_tofu:
            for i, r in enumerate(splits_qa["forget"]):
                if r.paraphrased_question:
                    keys.append(("forget", i, "pq"))
                    prompts.append(r.paraphrased_question)
    if not prompts:
        return {}, 0
    with timer("generate"):
        out = lm.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return dict(zip(keys, out, strict=True)), len(prompts)


@dataclass
class _Verbmem:
    """MUSE VerbMem's (prompt, true continuation) pairs, the model's continuations, and whether the
    pairs were given (compared whole) or cut from the forget documents (compared word for word)."""
    pairs: list[tuple[str, str]]
    outputs: list[str]
    given: bool

    @classmethod
    def of(cls, lm, world, pairs, prompt_words: int, continuation_words: int, max_new_tokens: int,
           batch_size: int | None, timer: Timer, notes: list[str]) -> _Verbmem:
        given = pairs is not None
        pairs = [tuple(p) for p in pairs] if given else []
        if given and not pairs:
            notes.append("no VerbMem pairs given: VerbMem skipped")
        elif not given:
            if not world.forget_docs:
                notes.append("no forget documents: VerbMem skipped")
                return cls(pairs, [], given)
            for d in world.forget_docs:
                prompt, cont = split_words(d.text, prompt_words, continuation_words)
                if prompt and cont:
                    pairs.append((prompt, cont))
            if not pairs:
                notes.append(f"forget documents shorter than {prompt_words + 1} words: VerbMem skipped")
        outputs = []
        if pairs:
            with timer("generate_verbmem"):
                outputs = lm.generate([p for p, _ in pairs], max_new_tokens=max_new_tokens, batch_size=batch_size)
        return cls(pairs, outputs, given)

    def score(self) -> float | None:
        """VerbMem: cut documents' continuations are compared over as many words as the true one;
        given pairs (MUSE's own) whole, as MUSE does."""
        if not self.pairs:
            return None
        cut = (lambda g, c: g) if self.given else (lambda g, c: " ".join(g.split()[:len(c.split())]))  # noqa: E731
        return muse.verbmem([cut(g, c) for g, (_, c) in zip(self.outputs, self.pairs)], [c for _, c in self.pairs])


def _split_metrics(s: str, recs: list, sc: _Scores, gens: dict, do_tofu: bool, do_muse: bool,
                   per_sample: dict) -> dict[str, Any]:
    """One QA split's metrics (TOFU's probability, truth ratio, ROUGE and the rest; MUSE's KnowMem on
    forget and retain); the forget split's per-record values go into `per_sample`."""
    d: dict[str, Any] = {"n": len(recs)}
    if not recs:
        return d
    if do_tofu:
        true = [sc((s, i, "true")) for i in range(len(recs))]
        d["answer_probability"] = _mean(tofu.answer_probability(x) for x in true)
        norm = [tofu.normalised_probability(sc((s, i, "para")),
                                            [sc((s, i, "pert", j)) for j in range(len(r.perturbed_answers))])
                for i, r in enumerate(recs)]
        d["normalised_probability"] = _mean(norm)
        # TOFU: plain probability on forget and retain, normalised on the other utility sets
        d["probability"] = d["answer_probability"] if s in ("forget", "retain") else d["normalised_probability"]
        ratios = [_truth_ratio(sc, (s, i), r) for i, r in enumerate(recs)]
        d["truth_ratio"] = tofu.truth_ratio_score(ratios, forget=(s == "forget"))
        d["truth_ratio_geomean_R"] = float(np.exp(np.mean(np.log(ratios))))
        d["exact_memorisation"] = _mean(tofu.exact_memorisation(x) for x in true)
        es = [tofu.extraction_strength(x) for x in true]
        d["extraction_strength"] = _mean(es)
        rouge = [rouge_l(gens[(s, i, "q")], r.answer) for i, r in enumerate(recs)]
        d["rouge"] = _mean(x["recall"] for x in rouge)
        if s == "forget":
            per_sample["forget_truth_ratios"] = ratios
            per_sample["forget_probability"] = [tofu.answer_probability(x) for x in true]
            per_sample["forget_rouge"] = [x["recall"] for x in rouge]
            per_sample["forget_extraction_strength"] = es
            # every forget record, for the report's per-record table (greedy_answers keeps a few)
            per_sample["forget_questions"] = [r.question for r in recs]
            per_sample["forget_true_answers"] = [r.answer for r in recs]
            per_sample["forget_answers"] = [gens[(s, i, "q")] for i in range(len(recs))]
            pq = [(gens[(s, i, "pq")], r.answer) for i, r in enumerate(recs) if (s, i, "pq") in gens]
            d["paraphrase_rouge"] = _mean(rouge_l(g, a)["recall"] for g, a in pq)
            d["n_paraphrased_questions"] = len(pq)
    if do_muse and s in ("forget", "retain"):
        d["knowmem"] = muse.knowmem([gens[(s, i, "q")] for i in range(len(recs))], [r.answer for r in recs])
    if (do_tofu or do_muse) and (s, 0, "q") in gens:
        d["greedy_answers"] = [gens[(s, i, "q")] for i in range(min(len(recs), 5))]  # a few, for reading
    return d


def _tofu_headline(split_out: dict, per_sample: dict, sc: _Scores, twin_of: list, oracle: dict | None,
                   notes: list[str]) -> dict[str, Any]:
    """TOFU's headline numbers: the forget split's, forget quality against the twins (no oracle) and
    against the oracle, and model utility over the utility splits present."""
    f = split_out["forget"]
    res: dict[str, Any] = {
        "forget_probability": f["probability"], "forget_rouge": f["rouge"], "forget_truth_ratio": f["truth_ratio"],
        "paraphrase_forget_rouge": f["paraphrase_rouge"], "exact_memorisation_forget": f["exact_memorisation"],
        "extraction_strength_forget": f["extraction_strength"], "retain_rouge": split_out["retain"].get("rouge"),
        "forget_quality_twins": None, "truth_gap_twins": None}
    if len(twin_of) >= 2:
        twin_ratios = [_truth_ratio(sc, ("twin", i), t) for i, t in twin_of]
        per_sample["twin_truth_ratios"] = twin_ratios
        paired = [per_sample["forget_truth_ratios"][i] for i, _ in twin_of]
        f["forget_quality_twins"] = tofu.forget_quality(paired, twin_ratios)
        res["forget_quality_twins"] = f["forget_quality_twins"]["p"]
        res["forget_quality_twins_n"] = len(twin_ratios)
        # the same pairs, fact by fact: how much more the true answer is preferred than for a stranger
        f["truth_gap_twins"] = tofu.paired_truth_gap(paired, twin_ratios)
        res["truth_gap_twins"] = f["truth_gap_twins"]["mean"]
    else:
        notes.append("fewer than two forget questions name their subject (with perturbed answers): "
                     "forget_quality_twins is None")
    fq = None
    oracle_ratios = ((oracle or {}).get("per_sample") or {}).get("forget_truth_ratios")
    if oracle is None:
        notes.append("no oracle result given: forget_quality is None (it compares with the oracle)")
    elif not oracle_ratios:
        notes.append("the oracle result has no forget truth ratios (evaluated without the tofu suite?)")
    else:
        oracle_ids = oracle["per_sample"].get("forget_ids")
        if oracle_ids is not None and sorted(oracle_ids) != sorted(per_sample["forget_ids"]):
            raise ValueError("the oracle result was computed on a different forget set "
                             "(forget ids differ): evaluate the oracle on the same world")
        if len(oracle_ratios) != len(per_sample["forget_truth_ratios"]):  # TOFU's eval logs name no ids
            raise ValueError(f"the oracle result has {len(oracle_ratios)} forget truth ratios and this forget set "
                             f"{len(per_sample['forget_truth_ratios'])} questions: evaluate the oracle on the same "
                             f"forget set (a retain model's log of another split?)")
        fq = tofu.forget_quality(per_sample["forget_truth_ratios"], oracle_ratios)
    res["forget_quality"] = fq["p"] if fq else None
    res["forget_quality_log10"] = fq["log10_p"] if fq else None
    res["forget_quality_n"] = fq["n"] if fq else f["n"]
    f["forget_quality"] = fq
    comps = {s: {m: split_out[s][m] for m in ("probability", "rouge", "truth_ratio")}
             for s in UTILITY_SPLITS if split_out[s]["n"]}
    missing = [s for s in UTILITY_SPLITS if not split_out[s]["n"]]
    if missing:
        notes.append(f"model utility without the empty splits {missing}")
    res["model_utility"] = tofu.model_utility(comps) if comps else None
    res["model_utility_components"] = comps
    return res


def _muse_headline(split_out: dict, verbmem: _Verbmem, n_forget_docs: int) -> dict[str, Any]:
    """MUSE's KnowMem (forget, retain) and VerbMem; VerbMem's counts go under `forget_docs`."""
    score = verbmem.score()
    split_out["forget_docs"] = {"n": n_forget_docs, "n_verbmem": len(verbmem.pairs), "verbmem": score}
    return {"knowmem_forget": split_out["forget"].get("knowmem"),
            "knowmem_retain": split_out["retain"].get("knowmem"), "verbmem_forget": score}


def _membership(mia_sets: dict, sc: _Scores, source: str | None, k: float, do_mia: bool, do_muse: bool,
                per_sample: dict) -> tuple[dict[str, Any], dict[str, float]]:
    """Each source's attack AUCs (every attack with the mia suite, Min-K% for PrivLeak with muse), and
    the Min-K% AUCs at `muse.PRIVLEAK_K` that PrivLeak compares; the headline source's per-sample
    scores go into `per_sample` for the report's plot."""
    out: dict[str, Any] = {"source": source, "k": k}
    mink_auc: dict[str, float] = {}
    for src, sides in mia_sets.items():
        mk, mt = sides["members"]
        nk, nt = sides["nonmembers"]
        members, nonmembers = [sc(x) for x in mk], [sc(x) for x in nk]
        ref = sc.reference
        aucs = mia.attack_aucs(members, mt, nonmembers, nt, k=k,
                               ref_members=[ref[x] for x in mk] if ref else None,
                               ref_nonmembers=[ref[x] for x in nk] if ref else None,
                               attacks=mia.ATTACKS if do_mia else ("min_k",))
        out[src] = {"auc": aucs, "k": {a: k for a in ("min_k", "min_k_plus_plus") if a in aucs},
                    "n_members": len(mk), "n_nonmembers": len(nk)}
        if do_muse:
            mink_auc[src] = mia.attack_aucs(members, mt, nonmembers, nt, k=muse.PRIVLEAK_K, attacks=("min_k",))["min_k"]
            out[src]["privleak_min_k_auc"] = {"auc": mink_auc[src], "k": muse.PRIVLEAK_K}
        if src == source:  # the per-sample scores behind the headline AUC, for the report's plot
            per_sample["mia_scores"] = {"source": src, "attack": "min_k", "k": k,
                                        "members": [mia.min_k_score(x, k) for x in members],
                                        "nonmembers": [mia.min_k_score(x, k) for x in nonmembers]}
    per_sample["mink_auc"] = mink_auc
    per_sample["mink_k"] = muse.PRIVLEAK_K
    return out, mink_auc


def _privleak(mink_auc: dict, source: str | None, oracle: dict | None, notes: list[str]) -> float | None:
    """MUSE's PrivLeak of the headline source against the oracle's Min-K% AUC there (None, with a
    note, when there is no oracle or it was scored otherwise)."""
    if oracle is None:
        notes.append("no oracle result given: privleak is None (it compares with the oracle)")
        return None
    if source not in mink_auc:
        return None
    oracle_auc = (oracle.get("per_sample") or {}).get("mink_auc", {}).get(source)
    if oracle_auc is None:
        notes.append(f"the oracle result has no Min-K% AUC on {source}: PrivLeak is None")
        return None
    if oracle_auc >= 1.0:  # ±inf, written as null beside a verdict that said "inf", until session 35
        notes.append(f"the oracle's own Min-K% AUC on {source} is {oracle_auc:.3f}: PrivLeak, relative to the "
                     f"oracle's distance from 1, is undefined (None)")
        return None
    try:
        return muse.privleak(mink_auc[source], oracle_auc, muse.PRIVLEAK_K, oracle["per_sample"].get("mink_k"))
    except ValueError as e:  # oracle scored at another k: no number rather than a wrong one
        notes.append(f"{e}: PrivLeak is None")
        return None


def _check(value, ok, tolerance, why: str) -> dict:
    status = "pass" if ok else "cannot decide" if ok is None else "fail"
    return {"pass": ok, "status": status, "value": value, "tolerance": tolerance, "why": why}


def min_ks_p(n1: int, n2: int) -> float:
    """The smallest p-value a two-sample KS test can give with n1 and n2 samples (fully separated)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.arange(n1), np.arange(n1, n1 + n2)).pvalue) if n1 and n2 else 1.0


def _no_power(subject: dict | None, oracle: dict | None, min_forget_quality: float, rouge_tolerance: float) -> str | None:
    """Why the forgetting test cannot separate the untouched subject from the oracle, or None.

    The verdict asks this before it judges: a test under which the subject itself would pass says
    nothing about an unlearned model."""
    if subject is None:
        return "no subject result: whether the test can tell the subject from the oracle is unknown (give --subject)"
    n = subject.get("forget_quality_n") or 0
    if min_ks_p(n, n) >= min_forget_quality:
        return (f"too few independent forget facts ({n}): even fully separated truth ratios give a KS p-value of "
                f"{min_ks_p(n, n):.3g} >= {min_forget_quality}")
    sfq, sfr, ofr = subject.get("forget_quality"), subject.get("forget_rouge"), (oracle or {}).get("forget_rouge")
    fq_sep = sfq is not None and sfq < min_forget_quality
    rouge_sep = sfr is not None and ofr is not None and abs(sfr - ofr) > rouge_tolerance
    if fq_sep and rouge_sep:
        return None
    if not rouge_sep and sfr is not None and ofr is not None:
        return (f"the subject does not know the forget set better than the oracle (forget ROUGE {sfr:.3f} vs "
                f"{ofr:.3f}), so forgetting cannot be shown")
    ratios = [np.asarray(((r or {}).get("per_sample") or {}).get("forget_truth_ratios") or [], float)
              for r in (subject, oracle)]
    if all(len(x) for x in ratios) and all(np.median(np.abs(np.log(x))) > math.log(20) for x in ratios):
        return ("every model's truth ratios are near 0 or 1 (median |log R| > log 20): the perturbed answers differ "
                "from the paraphrased answer in wording, not only in the fact")
    return (f"the test does not separate the subject from the oracle (subject forget quality {sfq:.3g} >= "
            f"{min_forget_quality})" if sfq is not None else "the subject has no forget quality")


def _privleak_blind(result: dict, oracle: dict | None, tolerance: float) -> str | None:
    """Why |PrivLeak| <= `tolerance` cannot be told from sampling noise here, or None.

    PrivLeak divides the gap between the model's and the oracle's membership AUC by
    1 - AUC_oracle, so when the oracle itself finds the forget set familiar (its AUC near 1: it met
    the forget people's names in other people's records, say), the tolerance is a sliver of AUC.
    When that sliver is under half the AUC's standard error and the model's AUC is within two
    standard errors of the oracle's, neither pass nor fail is earned."""
    src = ((result.get("splits") or {}).get("mia") or {}).get("privleak_source")
    side = ((result.get("splits") or {}).get("mia") or {}).get(src) or {}
    a = (side.get("privleak_min_k_auc") or {}).get("auc")
    a0 = (((oracle or {}).get("per_sample") or {}).get("mink_auc") or {}).get(src)
    n1, n2 = side.get("n_members"), side.get("n_nonmembers")
    if a is None or a0 is None or not n1 or not n2:
        return None
    se, band = mia.null_auc_se(n1, n2), tolerance / 100 * (1 - a0)
    if band >= se / 2 or abs(a - a0) > 2 * se:
        return None
    return (f"the oracle's own membership AUC is {a0:.3f}, so |PrivLeak| <= {tolerance:g} asks for the model's AUC "
            f"within {band:.3f} of it, under half the AUC's standard error {se:.3f} ({n1} members, {n2} non-members); "
            f"the model's AUC {a:.3f} is within two standard errors of the oracle's")


def _against_twins(result: dict, subject: dict | None, min_forget_quality: float) -> dict:
    """The forgetting check with no oracle: forget quality against the model's own twins
    (`forget_quality_twins`) >= `min_forget_quality`, with the same power checks as against the oracle
    (the subject's forget facts must be told apart from their twins'). On the eight worlds of
    docs/methods-log.md it falls on the same side of 0.05 as forget quality against the oracle in most
    rows (that table counts them)."""
    fq = result["forget_quality_twins"]
    n = result.get("forget_quality_twins_n") or 0
    sfq = (subject or {}).get("forget_quality_twins")
    if subject is None:
        why = ("no subject result: whether the test tells the subject's facts from their twins' is unknown "
               "(give --subject)")
    elif min_ks_p(n, n) >= min_forget_quality:
        why = (f"too few forget facts with twins ({n}): even fully separated truth ratios give a KS p-value of "
               f"{min_ks_p(n, n):.3g} >= {min_forget_quality}")
    elif sfq is None or sfq >= min_forget_quality:
        why = (f"the test does not tell the subject's forget facts from their twins' (subject forget quality against "
               f"twins {_fmt_p(sfq)} >= {min_forget_quality})")
    else:
        ok = fq >= min_forget_quality
        return {**_check(fq, ok, min_forget_quality, f"no oracle: forget quality against the twins {fq:.3g} "
                         f"{'>=' if ok else '<'} {min_forget_quality} (subject: {sfq:.3g})"), "reference": "twins"}
    return {**_check(fq, None, min_forget_quality, f"cannot decide on this data: {why}"), "reference": "twins"}


def _fmt_p(p) -> str:
    return "none" if p is None else f"{p:.3g}"


def verdict(result: dict, *, oracle: dict | None = None, subject: dict | None = None,
            min_forget_quality: float = 0.05, rouge_tolerance: float = 0.05, privleak_tolerance: float = 10.0,
            utility_fraction: float = 0.95) -> dict:
    """Pass, fail or "cannot decide" on forgetting, privacy and utility, each {"pass", "status",
    "value", "tolerance", "why"} ("pass" is None when the check cannot decide).

    Each check first asks whether it has power on this data: the untouched subject must fail it.
    - forgetting: forget quality >= `min_forget_quality` (the KS test cannot tell the model's forget
      truth ratios from the oracle's), or forget ROUGE within `rouge_tolerance` of the oracle's.
      Cannot decide without the subject's result, with so few forget facts that no KS p-value could
      fall below `min_forget_quality`, or when the subject itself is not separated from the oracle
      (`_no_power` names the reason). With no oracle result, forget quality against the model's own
      twins (`forget_quality_twins`, the same test with the twins in the oracle's place) decides,
      with the same power checks (`_against_twins`).
    - privacy: |PrivLeak| <= `privleak_tolerance` (percent); cannot decide without the subject's
      result, when the subject's own |PrivLeak| is within the tolerance too, or when the tolerance is
      finer than the membership AUC's sampling error and the model is within that error of the oracle
      (`_privleak_blind`).
    - utility: model utility >= `utility_fraction` x the subject's (when given), else the oracle's.
    "overall": fail if any check fails, else cannot decide if any cannot, else pass.
    """
    out: dict[str, dict] = {}
    fq, fr = result.get("forget_quality"), result.get("forget_rouge")
    ofr = (oracle or {}).get("forget_rouge")
    if fq is None and (fr is None or ofr is None) and oracle is None and result.get("forget_quality_twins") is not None:
        out["forgetting"] = _against_twins(result, subject, min_forget_quality)
    elif "tofu" not in (result.get("config") or {}).get("suites", ["tofu"]):  # the muse or mia suite alone
        out["forgetting"] = _check(None, None, min_forget_quality, "needs the tofu suite (forget quality and forget "
                                   "ROUGE come from it)")
    elif fq is None and (fr is None or ofr is None):
        out["forgetting"] = _check(fq, None, min_forget_quality,
                                   "needs an oracle result (forget quality and forget ROUGE compare with it), or "
                                   "forget questions that name their subject (forget quality against their twins)")
    elif (why_not := _no_power(subject, oracle, min_forget_quality, rouge_tolerance)) is not None:
        out["forgetting"] = _check(fq, None, min_forget_quality, f"cannot decide on this data: {why_not}")
    else:
        by_fq = fq is not None and fq >= min_forget_quality
        gap = abs(fr - ofr) if fr is not None and ofr is not None else None
        by_rouge = gap is not None and gap <= rouge_tolerance
        why = (f"forget quality {fq:.3g} {'>=' if by_fq else '<'} {min_forget_quality}" if fq is not None
               else "no forget quality")
        if gap is not None:
            why += (f"; forget ROUGE {fr:.3f} vs oracle {ofr:.3f} (gap {gap:.3f} {'<=' if by_rouge else '>'} "
                    f"tolerance {rouge_tolerance}); either one passes")
        out["forgetting"] = {**_check(fq, bool(by_fq or by_rouge), min_forget_quality, why),
                             "rouge_gap": gap, "rouge_tolerance": rouge_tolerance}
    pl, spl = result.get("privleak"), (subject or {}).get("privleak")
    src = ((result.get("splits") or {}).get("mia") or {}).get("privleak_source")
    oracle_auc = (((oracle or {}).get("per_sample") or {}).get("mink_auc") or {}).get(src)
    if pl is None and oracle_auc is not None and oracle_auc >= 1.0:
        out["privacy"] = _check(None, None, privleak_tolerance, f"cannot decide on this data: the oracle's own "
                                f"Min-K% AUC on {src} is {oracle_auc:.3f}, so PrivLeak is undefined")
    elif pl is None:
        out["privacy"] = _check(None, None, privleak_tolerance, "needs PrivLeak (the muse suite and an oracle result)")
    elif spl is None:
        out["privacy"] = _check(pl, None, privleak_tolerance, "cannot decide on this data: no subject PrivLeak, so "
                                "whether membership inference can tell the forget set at all is unknown (give --subject)")
    elif abs(spl) <= privleak_tolerance:
        out["privacy"] = _check(pl, None, privleak_tolerance, f"cannot decide on this data: the subject's own "
                                f"|PrivLeak| {abs(spl):.2f} is within {privleak_tolerance}, so MIA cannot tell members")
    elif (blind := _privleak_blind(result, oracle, privleak_tolerance)) is not None:
        out["privacy"] = _check(pl, None, privleak_tolerance, f"cannot decide on this data: {blind}")
    else:
        ok = abs(pl) <= privleak_tolerance
        side = "" if ok else (" (forget data still recognisable as members)" if pl < 0
                              else " (over-unlearned: forget data looks less familiar than unseen data)")
        out["privacy"] = _check(pl, ok, privleak_tolerance, f"|PrivLeak| = {abs(pl):.2f} "
                                f"{'<=' if ok else '>'} {privleak_tolerance}{side}")
    mu = result.get("model_utility")
    ref_name, ref = ("subject", (subject or {}).get("model_utility")) if subject is not None else \
        ("oracle", (oracle or {}).get("model_utility"))
    if mu is None or ref is None:
        out["utility"] = _check(mu, None, utility_fraction,
                                "needs model utility of this model and of the subject (or oracle)")
    elif ref <= 0:  # "0.000 >= 0.95 x 0.000" passed a model with no utility at all until session 35
        out["utility"] = _check(mu, None, utility_fraction, f"cannot decide on this data: the {ref_name}'s model "
                                f"utility is {ref:.3f}, so no share of it tells a useful model from a useless one")
    else:
        ok = mu >= utility_fraction * ref
        out["utility"] = _check(mu, ok, utility_fraction, f"model utility {mu:.3f} {'>=' if ok else '<'} "
                                f"{utility_fraction} x {ref_name}'s {ref:.3f} = {utility_fraction * ref:.3f}")
    statuses = [v["status"] for v in out.values()]
    overall = "fail" if "fail" in statuses else "cannot decide" if "cannot decide" in statuses else "pass"
    undecided = [k for k, v in out.items() if v["status"] == "cannot decide"]
    why = {"fail": f"failed: {', '.join(k for k, v in out.items() if v['status'] == 'fail')}",
           "cannot decide": f"cannot decide: {', '.join(undecided)}",
           "pass": "every check passed"}[overall]
    out["overall"] = _check(None, {"pass": True, "fail": False}.get(overall), None, why)
    return out
