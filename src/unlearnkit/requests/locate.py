"""Locate: what does the model reveal about a person? The result is the request's inventory, and the
inventory is the forget set.

Each probe (an attribute asked in several phrasings, `resources/probes.json`, extended by a home's
own `probes.json`) is asked about the person and about strangers, people who do not exist, named as
the calibration's twins are (from other people's name words, else invented). A probe's answer counts
as **known** when
  * it is consistent: the same normalised answer in at least two thirds of the phrasings (and at
    least two), and
  * it differs from what the model says about anyone: at most `STRANGER_SHARE` of the strangers'
    answers are that answer (a model that says "Thornwick" for every name reveals nothing). Answers
    are compared with the name asked about taken out (`_about_anyone`): where answers are sentences
    that name their person ("Ada Vale lives in Rome"), a stranger's could never match, so any
    consistent answer counted as known (session 34; on sentences world seed 0 the inventories of
    four forget people came out the same, 45 items, 42 of them true: the made-up ones, such as "X
    has a native of X", differ from the strangers' in more than the name).
A given fact counts as known when the model's answer contains its answer (a question) or completes
it (a fact sentence, its last words blanked). Given facts join the inventory whether known or not:
the requester says they are true.

  * and, where a `confident` model is given, that model is sure of it: the Min-K% score of the
    answer (the median over the phrasings giving it) lies above the `CONFIDENT_QUANTILE` of the
    scores of that model's own answers about `N_INVENTED` invented strangers (no word of anyone
    in the data), asked every probe, less its defaults: an answer it gives more than
    `STRANGER_SHARE` of the invented names for a probe ("origami" for anyone's hobby) is what it
    says of anyone, and such an answer about the person must also score above the best of the
    invented names' scores of it. Until session 44 the defaults counted in the quantile: a
    subject sure of two (Min-K% -0.001) set the threshold above most of its real facts, and locate
    found 0.49 of what it knew about twelve people (bench/locate.py, docs/requests.md, "Figures").
    A model that maps any name to some of the world's values
    answers a person it never saw consistently and unlike each stranger: without this test the
    embedded worlds' subjects gave 33-65 made-up facts for six unseen people (bench/locate.py),
    and unlearning them costs utility and no privacy. The confident model is the home's base
    version (v0000), from which every later version was unlearned: scored on a version already
    unlearned, which is less sure of everyone, the test dropped real facts too (session 36,
    docs/requests-log.md). Without one (the base pruned), no confidence test is made.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

from ..attacks.recovery import normalise
from ..data.schema import QARecord
from ..data.twins import stranger_names, words_of
from .person import new_names

STRANGER_SHARE = 0.25
N_INVENTED = 6  # invented strangers asked every probe, for the confidence test
CONFIDENT_QUANTILE = 0.99
MAX_NEW_TOKENS = 24
NAME = "{name}"  # the name asked about, in a compared answer (`_about_anyone`): no normalised text holds braces

@dataclass
class Probe:
    attribute: str
    questions: list[str]


def load_probes(home=None) -> list[Probe]:
    """The built-in probes, then the home's own `probes.json` (same format; same attribute replaces)."""
    data = json.loads(resources.files("unlearnkit").joinpath("resources/probes.json").read_text())
    probes = {p["attribute"]: Probe(p["attribute"], list(p["questions"])) for p in data["probes"]}
    extra = Path(home.path) / "probes.json" if home is not None else None
    if extra is not None and extra.is_file():
        from ..data.io import DataError

        try:
            for i, p in enumerate(json.loads(extra.read_text())["probes"]):
                qs = list(p["questions"])
                if len(qs) < 2 or not all("{name}" in q for q in qs):
                    raise DataError(f"{extra}: probes[{i}].questions: needs >= 2 phrasings, each with {{name}}")
                probes[str(p["attribute"])] = Probe(str(p["attribute"]), qs)
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"{extra}: malformed probes file ({type(e).__name__}: {e})") from None
    return list(probes.values())


def _about_anyone(answer: str, name: str) -> str:
    """`answer` normalised, with the name it was asked about, whole or any of its words, as `NAME`:
    what is left is what the model says of this person and not of anyone it names so."""
    t = normalise(answer)
    for n in sorted({normalise(name), *normalise(name).split()}, key=len, reverse=True):
        t = re.sub(rf"\b{re.escape(n)}\b", NAME, t)
    return t


def _blank(sentence: str) -> tuple[str, str]:
    """A fact sentence as (prompt, its last quarter of words, at least one): fill in the blank."""
    words = sentence.rstrip(".!?").split()
    k = max(1, math.ceil(len(words) / 4))
    return " ".join(words[:-k]), " ".join(words[-k:])


def locate(lm, name: str, aliases: list[str] | None = None, facts: list[dict] | None = None,
           probes: list[Probe] | None = None, n_strangers: int = 8, seed: int = 0, people: Iterable[str] = (),
           confident=None) -> dict:
    """The inventory of what `lm` reveals about `name` and its `aliases`: {"items": [...], "strangers":
    [...], "names": the names probed, "counts": {...}}.

    The strangers are named as the calibration's twins are (`data.twins.stranger_names`): from the
    name words of `people` (the deployment's retain pool), else invented.

    `confident`: a model (with `score` and `generate`; `lm` itself where it was never unlearned)
    that must be sure of a probe's answer for it to count as known (the module's docstring).

    Each item: attribute, template (with {name}; None for a given fact), question, phrasings, answer,
    source ("probe" | "fact"), known, consistency, stranger_share, confidence (None without a
    confident model)."""
    probes = probes if probes is not None else load_probes()
    facts = facts or []
    # every name the person goes by is probed: an alias the model knows as someone of its own was
    # guarded but never located, unlearned or checked, and the request was verified (until session 35)
    people = list(people)
    names = [name, *new_names(aliases or [], [name])]
    others = stranger_names(name, n_strangers, people, avoid=words_of(names), seed=seed)
    prompts, keys = [], []
    for pi, p in enumerate(probes):
        for qi, q in enumerate(p.questions):
            for ni, who in enumerate(names):
                prompts.append(q.replace("{name}", who)), keys.append(("p", pi, qi, ni))
            for si, s in enumerate(others):
                prompts.append(q.replace("{name}", s)), keys.append(("s", pi, qi, si))
    fact_prompts = []
    for fi, f in enumerate(facts):
        prompt, answer = (f["question"], f["answer"]) if "question" in f else _blank(f["fact"])
        fact_prompts.append((prompt, answer))
        prompts.append(prompt), keys.append(("f", fi, 0, None))
    gens = dict(zip(keys, lm.generate(prompts, max_new_tokens=MAX_NEW_TOKENS)))
    # what the model says of the strangers, per probe: the same for every name of the person
    theirs_of = [[_about_anyone(gens[("s", pi, qi, si)], s) for qi in range(len(p.questions))
                  for si, s in enumerate(others)] for pi, p in enumerate(probes)]
    items, giving = [], []  # giving: per probe item, the phrasings that gave its answer
    for ni, who in enumerate(names):
        for pi, p in enumerate(probes):
            mine, theirs = [gens[("p", pi, qi, ni)] for qi in range(len(p.questions))], theirs_of[pi]
            top, count = Counter(_about_anyone(a, who) for a in mine).most_common(1)[0]
            consistency = count / len(mine)
            share = sum(t == top for t in theirs) / max(1, len(theirs))
            known = (bool(top.replace(NAME, "").strip()) and count >= max(2, math.ceil(2 * len(mine) / 3))
                     and share <= STRANGER_SHARE)
            answer = next(a for a in mine if _about_anyone(a, who) == top)
            wrong = [a for a, _ in Counter(t for t in theirs if t and t != top).most_common(3)]
            giving.append([q.replace("{name}", who) for q, a in zip(p.questions, mine) if _about_anyone(a, who) == top])
            items.append({"attribute": p.attribute, "template": p.questions[0], "name": who,
                          "question": p.questions[0].replace("{name}", who),
                          "phrasings": [q.replace("{name}", who) for q in p.questions], "templates": p.questions,
                          "answer": answer, "source": "probe", "known": known, "consistency": consistency,
                          "stranger_share": share, "stranger_answers": wrong, "confidence": None})
    threshold = _confidence(confident, items, giving, probes, names, people, seed) if confident is not None else None
    for fi, (f, (prompt, answer)) in enumerate(zip(facts, fact_prompts)):
        out = normalise(gens[("f", fi, 0, None)])
        items.append({"attribute": "given", "template": None, "question": prompt, "phrasings": [prompt],
                      "templates": None, "answer": answer, "source": "fact",
                      "known": bool(normalise(answer)) and normalise(answer) in out,
                      "consistency": None, "stranger_share": None, "stranger_answers": []})
    inventory = [it for it in items if it["source"] == "fact" or it["known"]]
    return {"items": inventory, "probed": len(probes), "strangers": others, "names": names,
            "confidence_threshold": threshold,
            "counts": {"probes": len(probes), "known_probes": sum(it["known"] for it in items if it["source"] == "probe"),
                       "facts": len(facts), "known_facts": sum(it["known"] for it in items if it["source"] == "fact"),
                       "inventory": len(inventory)}}


def _confidence(model, items: list[dict], giving: list[list[str]], probes: list[Probe], names: list[str],
                people: list[str], seed: int) -> float:
    """The confidence test (the module's docstring): sets each probe item's `confidence` (`model`'s
    Min-K% score of its answer, the median over `giving`, the phrasings that gave it) and clears
    `known` where it is not above the `CONFIDENT_QUANTILE` of `model`'s scores of its own answers
    about `N_INVENTED` invented strangers, less its defaults (the answers more than `STRANGER_SHARE`
    of the names got for a probe), and, for an answer that is a default, above the best score the
    default got; returns that threshold."""
    import numpy as np

    from ..metrics.mia import min_k_score

    invented = stranger_names(names[0], N_INVENTED, (), avoid=words_of([*names, *people]), seed=seed + 1)
    asked = [(pi, s, q.replace("{name}", s)) for pi, p in enumerate(probes) for q in p.questions for s in invented]
    said = model.generate([q for _, _, q in asked], max_new_tokens=MAX_NEW_TOKENS)
    scores = [min_k_score(x) for x in model.score([q for _, _, q in asked], said)]
    keys = [(pi, _about_anyone(a, s)) for (pi, s, _), a in zip(asked, said)]  # (probe, what it says of anyone)
    given: dict[tuple, set] = {}  # key -> the invented names it was said of
    for (_, s, _), key in zip(asked, keys):
        given.setdefault(key, set()).add(s)
    default: dict[tuple, float] = {}  # a key said of more than STRANGER_SHARE of the names -> its best score
    for key, x in zip(keys, scores):
        if len(given[key]) / len(invented) > STRANGER_SHARE:
            default[key] = max(default.get(key, -math.inf), x)
    own = [x for key, x in zip(keys, scores) if key not in default]
    threshold = float(np.quantile(own or scores, CONFIDENT_QUANTILE))
    probe_of = {p.attribute: pi for pi, p in enumerate(probes)}
    todo = [(it, qs) for it, qs in zip(items, giving) if it["known"]]
    pairs = [(q, it["answer"]) for it, qs in todo for q in qs]
    mine = iter([min_k_score(x) for x in model.score([q for q, _ in pairs], [a for _, a in pairs])] if pairs else [])
    for it, qs in todo:
        it["confidence"] = float(np.median([next(mine) for _ in qs]))
        it["known"] = it["confidence"] > max(threshold, default.get(
            (probe_of[it["attribute"]], _about_anyone(it["answer"], it["name"])), threshold))
    return threshold


def item_id(request_id: str, i: int) -> str:
    """The id of a request's i-th inventory item as a forget record; its twins name it in `twin_of`."""
    return f"{request_id}-{i:02d}"


def forget_records(request_id: str, name: str, inventory: list[dict]) -> list[QARecord]:
    """The inventory as forget-set QA records (every phrasing a training phrasing), each about the name
    it was located under (`name`, or an alias)."""
    out = []
    for i, it in enumerate(inventory):
        wrong = [w for w in it.get("stranger_answers") or [] if normalise(w) != normalise(it["answer"])] or ["unknown"]
        out.append(QARecord(id=item_id(request_id, i), subject=it.get("name") or name, question=it["phrasings"][0],
                            alt_questions=it["phrasings"][1:], answer=it["answer"], paraphrased_answer=it["answer"],
                            perturbed_answers=wrong, attribute=it["attribute"]))
    return out


def twin_records(request_id: str, name: str, inventory: list[dict], others: list[str], per_item: int = 2) -> list[QARecord]:
    """Counterfactual twins: the inventory's questions about the strangers `others` (locate's:
    recombined from the pool's name words, else invented), with the same answers. What the model
    says about people it never saw is the level the person must reach."""
    out = []
    for i, it in enumerate(inventory):
        for j, s in enumerate(others[:per_item]):
            if it.get("templates"):
                qs = [t.replace("{name}", s) for t in it["templates"]]
            elif (it.get("name") or name) in it["question"]:
                qs = [it["question"].replace(it.get("name") or name, s)]
            else:
                continue
            out.append(QARecord(id=f"{item_id(request_id, i)}-twin{j}", subject=s, question=qs[0], alt_questions=qs[1:],
                                answer=it["answer"], paraphrased_answer=it["answer"],
                                perturbed_answers=[w for w in it.get("stranger_answers") or []] or ["unknown"],
                                attribute=it["attribute"], twin_of=item_id(request_id, i)))
    return out
