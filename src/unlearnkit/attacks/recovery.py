"""How much forgotten knowledge an attack brings back: the forget metrics and the recovery score.

The forget metrics (`forget_metrics`) are the evaluation suite's TOFU forget metrics computed on any
(prompt, record) list, so an attack can change the prompt (a probe, facts in context) or the model
(relearned, quantized) and be measured the same way:

- `forget_rouge`: mean ROUGE-L recall of the greedy answer against the true answer (TOFU ROUGE);
- `forget_probability`: mean exp(mean log p) of the true answer's tokens given the prompt (TOFU
  probability on the forget set);
- `forget_truth_ratio`: mean min(R, 1/R) with R = p(paraphrased)/geomean p(perturbed) (TOFU, forget form);
- `forget_exact_match`: the normalised greedy answer equals the normalised true answer;
- `forget_contains`: the normalised greedy answer contains the normalised true answer.

Recovery (`recovery`) is defined on the two forget metrics that grow with knowledge, ROUGE and
probability (the forget truth ratio peaks at 1 = "cannot tell true from false" and is not monotone
in knowledge, so it is reported but not turned into a recovery). For one metric m:

    gap      = m_subject(plain)   - m_model(plain)     what unlearning removed, before any attack
    ceiling  = m_subject(attacked) - m_model(plain)    what the attack could bring back at most
    recovery = clip((m_model(attacked) - m_model(plain)) / ceiling, 0, 1)

"plain" is the model asked the bare evaluation question with its own weights; "attacked" is the
same model under the attack (relearned weights, quantized weights, the probe prompt, facts in the
context), always on the same evaluation records. The ceiling uses the *attacked subject*: the
subject under the same attack shows what the attack reveals when the knowledge is all there (a
4-bit subject or a fill-in-the-blank subject knows less than the plain subject; relearning the
subject changes little). 0 = nothing came back, 1 = the model answers as well as the subject does
under the same attack.

A metric's recovery is undefined (None, with a note) when there is nothing to recover: `gap <=
min_gap` (the subject itself, or a model that forgot nothing), or `ceiling <= min_gap` (the attack
does not elicit the knowledge even from the subject, so it cannot show that anything came back).
The score is the mean over the defined metrics, None when none is (until session 37 an undefined
metric counted as 0, so a variant with one of two undefined scored at most 0.5, and a subject
attacked against itself read "recovery 0": robust).

The oracle (never trained on the forget set) under the same attack is the baseline: it has nothing
hidden, so whatever it "recovers" was taught by the attack itself (the relearn data, the facts in
the context). `excess_recovery` (`excess`) is the part that came from hidden knowledge, both gains
on the model's own scale, for each metric whose recovery is defined:

    excess = recovery - clip((m_oracle(attacked) - m_oracle(plain)) / ceiling, 0, 1)

with the model's `ceiling`, then the mean over those metrics. (Until session 42 it was the model's
recovery minus the oracle's, each over its own ceiling: an oracle that starts lower has a larger
ceiling, so the same gain read smaller for it, and the excess larger, than on the model's scale.)
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

RECOVERY_METRICS = ("forget_rouge", "forget_probability")
MIN_GAP = 0.05


def recovery(model_plain: Mapping[str, float], model_attacked: Mapping[str, float],
             subject_plain: Mapping[str, float], subject_attacked: Mapping[str, float] | None = None,
             metrics: Sequence[str] = RECOVERY_METRICS, min_gap: float = MIN_GAP) -> dict:
    """Recovery per metric (see the module docstring) with the raw numbers behind it.

    Each argument maps metric name to value (e.g. the output of `forget_metrics`); `subject_attacked`
    defaults to `subject_plain` (attacks for which the subject is its own reference).
    Returns {"recovery": {metric: value in [0, 1] or None}, "score": mean over the defined metrics
    (None: none is), "raw": {metric:
    {model_plain, model_attacked, subject_plain, subject_attacked, gap, ceiling}}, "notes": [...]}.
    """
    subject_attacked = subject_plain if subject_attacked is None else subject_attacked
    out: dict = {"recovery": {}, "raw": {}, "notes": []}
    for m in metrics:
        u, ua, s, sa = (float(x[m]) for x in (model_plain, model_attacked, subject_plain, subject_attacked))
        gap, ceiling = s - u, sa - u
        raw = {"model_plain": u, "model_attacked": ua, "subject_plain": s, "subject_attacked": sa,
               "gap": gap, "ceiling": ceiling}
        r = None
        if gap <= min_gap:
            out["notes"].append(f"{m}: nothing to recover (subject {s:.3f} - model {u:.3f} = {gap:.3f} <= {min_gap}): "
                                "recovery undefined")
        elif ceiling <= min_gap:
            out["notes"].append(f"{m}: the attack does not elicit the knowledge from the subject either (attacked "
                                f"subject {sa:.3f} - model {u:.3f} = {ceiling:.3f} <= {min_gap}): recovery undefined")
        else:
            r = float(np.clip((ua - u) / ceiling, 0.0, 1.0))
        out["recovery"][m] = r
        out["raw"][m] = raw
    defined = [r for r in out["recovery"].values() if r is not None]
    out["score"] = float(np.mean(defined)) if defined else None
    return out


def excess(model: dict, oracle: dict) -> float | None:
    """`excess_recovery` (module docstring) from `recovery`'s results for the model and for the
    oracle under the same attack: None where no metric's recovery is defined for the model."""
    parts = []
    for m, r in model["recovery"].items():
        if r is None:
            continue
        o = oracle["raw"][m]
        parts.append(r - float(np.clip((o["model_attacked"] - o["model_plain"]) / model["raw"][m]["ceiling"], 0, 1)))
    return float(np.mean(parts)) if parts else None


# ------------------------------------------------------------------------------ measurement

def normalise(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed (for exact match)."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def holds_answer(generation: str, answer: str) -> bool:
    """Whether `generation` holds the whole true `answer`, both normalised: "answered" (the answer
    rate's count, and the report's hit)."""
    return normalise(answer) in normalise(generation)


def contains_answer(generations: Sequence[str], records) -> list[bool]:
    """`holds_answer` for each generation and its record's true answer."""
    return [holds_answer(g, r.answer) for g, r in zip(generations, records)]


def forget_metrics(lm, records, prompts: Sequence[str] | None = None, *, max_new_tokens: int = 32,
                   truth_ratio: bool = True, keep: int = 5, per_record: bool = False) -> dict:
    """The forget metrics of `lm` (anything with `score`/`generate`) on `records` asked with `prompts`
    (default: each record's `question`). One `score` call and one `generate` call. `per_record` adds
    "answered": per record, whether the greedy answer holds the whole true answer (`contains_answer`)."""
    from ..metrics import tofu
    from ..metrics.text import rouge_l_recall

    records = list(records)
    prompts = [r.question for r in records] if prompts is None else list(prompts)
    if len(prompts) != len(records):
        raise ValueError(f"{len(prompts)} prompts for {len(records)} records")
    if not records:
        raise ValueError("no records to evaluate")
    sp, sa, keys = [], [], []
    for i, (p, r) in enumerate(zip(prompts, records)):
        sp.append(p), sa.append(r.answer), keys.append((i, "true"))
        if truth_ratio:
            sp.append(p), sa.append(r.paraphrased_answer), keys.append((i, "para"))
            for j, x in enumerate(r.perturbed_answers):
                sp.append(p), sa.append(x), keys.append((i, "pert", j))
    scores = dict(zip(keys, lm.score(sp, sa)))
    gens = lm.generate(prompts, max_new_tokens=max_new_tokens)
    prob = [tofu.answer_probability(scores[(i, "true")]) for i in range(len(records))]
    rouge = [rouge_l_recall(g, r.answer) for g, r in zip(gens, records)]
    em = [normalise(g) == normalise(r.answer) for g, r in zip(gens, records)]
    contains = contains_answer(gens, records)
    res = {"forget_rouge": float(np.mean(rouge)), "forget_probability": float(np.mean(prob)),
           "forget_exact_match": float(np.mean(em)), "forget_contains": float(np.mean(contains)), "n": len(records)}
    if truth_ratio:
        ratios = [tofu.truth_ratio(scores[(i, "para")], [scores[(i, "pert", j)] for j in range(len(r.perturbed_answers))])
                  for i, r in enumerate(records)]
        res["forget_truth_ratio"] = tofu.truth_ratio_score(ratios, forget=True)
    res["examples"] = [{"prompt": p, "answer": r.answer, "output": g} for p, r, g in list(zip(prompts, records, gens))[:keep]]
    if per_record:
        res["answered"] = contains
    return res
