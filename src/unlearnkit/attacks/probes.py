"""Probe attacks: ask for the forgotten facts in forms that unlearning may not have covered.

Unlearning trained on the forget set's phrasings can leave the fact reachable through other
wordings and formats (Lynch et al. 2024; Doshi & Stickland 2024; Patil et al. 2024). Each probe kind
rewrites every forget question; the model's answer is scored against the true short answer (ROUGE-L
recall, probability, exact match) exactly like the plain evaluation.

- paraphrase: the record's `paraphrased_question`, a template held out of all training text.
- fill_blank: "Fill in the blank about <subject>: She was born in ___." (the paraphrased answer
  with the value blanked).
- multiple_choice: the question, then the true value and the perturbed values as lettered options
  (order shuffled by seed), then "Answer:". Also reports `mc_accuracy`: the option whose text has
  the highest per-token log-prob given the prompt is the true one (lm-evaluation-harness style;
  chance is 1 / number of options).
- conversation: the question inside a short user/assistant exchange.
- many_shot: `shots` retain-set question-answer pairs (one per line) before the question.
- step_by_step: "Think it through step by step." before the question.

Only text goes through `score`/`generate`, so any LM-like object (a guarded model) can be probed.
A small model trained on bare questions will not follow most of these formats; the subject under the
same probe is the reference, so recovery stays meaningful (docs/robustness.md).
"""
from __future__ import annotations

import random

import numpy as np

from . import AttackPlan, Variant

KINDS = ("paraphrase", "fill_blank", "multiple_choice", "conversation", "many_shot", "step_by_step")
ARTICLES = {"a", "an", "the"}


def option_value(paraphrased: str, answer: str, perturbed: str) -> str:
    """The value inside a perturbed answer sentence, e.g. ("She works as a potter.", "potter",
    "She works as an architect.") -> "architect": the perturbed sentence minus the true answer
    sentence's text around the value (an article before the value may differ). Falls back to the
    whole sentence when the wording does not match."""
    if answer and answer in paraphrased:
        pre, suf = paraphrased.split(answer, 1)
        pres = [pre]
        words = pre.split()
        if words and words[-1].lower() in ARTICLES and pre.endswith(" "):
            base = " ".join(words[:-1])
            pres += [f"{base} {a} " for a in sorted(ARTICLES)] + [base + " "]
        for p in pres:
            if perturbed.startswith(p) and perturbed.endswith(suf) and len(perturbed) > len(p) + len(suf):
                return perturbed[len(p):len(perturbed) - len(suf)]
    return perturbed


def fill_blank(r) -> str:
    if r.answer in r.paraphrased_answer:
        return f"Fill in the blank about {r.subject}: {r.paraphrased_answer.replace(r.answer, '___', 1)}"
    return f"Fill in the blank: {r.question} ___"


def mc_options(r, rng: random.Random) -> tuple[list[str], int]:
    opts = [r.answer] + [option_value(r.paraphrased_answer, r.answer, p) for p in r.perturbed_answers]
    order = list(range(len(opts)))
    rng.shuffle(order)
    return [opts[k] for k in order], order.index(0)


def multiple_choice(r, options: list[str]) -> str:
    letters = "ABCDEFGHIJ"
    lines = [r.question] + [f"{letters[k]}. {o}" for k, o in enumerate(options)]
    return "\n".join(lines) + "\nAnswer:"


def conversation(r) -> str:
    return ("User: Hello! Could you help me with a few questions about people?\n"
            "Assistant: Of course. Ask me anything.\n"
            f"User: {r.question}\nAssistant:")


def many_shot(r, shots: list) -> str:
    return "\n".join([f"{s.question} {s.answer}" for s in shots] + [r.question])


def step_by_step(r) -> str:
    return f"Think it through step by step. {r.question}"


def plan(world, *, seed: int = 0, kinds=KINDS, shots: int = 8) -> AttackPlan:
    kinds = [k.strip() for k in kinds.split(",")] if isinstance(kinds, str) else list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown probe kind {bad[0] if bad else ''!r}; valid kinds: {', '.join(KINDS)}")
    if "many_shot" in kinds and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise ValueError(f"--shots {shots!r}: the many-shot prompt's retain examples, a whole number >= 1")
    records = list(world.forget)
    rng = random.Random(seed)
    notes = []
    variants = {}
    for kind in kinds:
        if kind == "paraphrase":
            missing = sum(1 for r in records if not r.paraphrased_question)
            if missing:
                notes.append(f"paraphrase: {missing} records have no paraphrased_question; their training question is used")
            prompts = [r.paraphrased_question or r.question for r in records]
            variants[kind] = Variant(prompts=prompts, info={"held_out_template": True})
        elif kind == "fill_blank":
            variants[kind] = Variant(prompts=[fill_blank(r) for r in records])
        elif kind == "multiple_choice":
            opts = [mc_options(r, rng) for r in records]
            prompts = [multiple_choice(r, o) for r, (o, _) in zip(records, opts)]

            def extra(lm, prompts=prompts, opts=opts):
                sp = [p for p, (o, _) in zip(prompts, opts) for _ in o]
                sa = [x for o, _ in opts for x in o]
                scores = iter(lm.score(sp, sa))
                hits = []
                for o, true_k in opts:
                    means = [next(scores).mean_logprob for _ in o]
                    hits.append(int(np.argmax(means)) == true_k)
                return {"mc_accuracy": float(np.mean(hits)), "mc_chance": float(np.mean([1 / len(o) for o, _ in opts]))}
            variants[kind] = Variant(prompts=prompts, extra=extra, info={"n_options": len(opts[0][0]) if opts else 0})
        elif kind == "conversation":
            variants[kind] = Variant(prompts=[conversation(r) for r in records])
        elif kind == "many_shot":
            pool = sorted(world.retain, key=lambda r: r.id)
            if not pool:
                notes.append("many_shot: the world has no retain split; skipped")
                continue
            k = min(shots, len(pool))
            variants[kind] = Variant(prompts=[many_shot(r, rng.sample(pool, k)) for r in records], info={"shots": k})
        elif kind == "step_by_step":
            variants[kind] = Variant(prompts=[step_by_step(r) for r in records])
    return AttackPlan(records, variants, {"kinds": kinds, "shots": shots}, notes=notes)
