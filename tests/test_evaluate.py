"""evaluate() on fake LMs whose scores and generations are fixed by hand."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unlearnkit.data.io import WorldData
from unlearnkit.data.schema import DocRecord, QARecord
from unlearnkit.evaluate import evaluate, verdict
from unlearnkit.metrics import tofu
from unlearnkit.scoring import SampleScore

KNOWN, UNKNOWN = -0.1, -3.0  # log p per token of a memorised / an unseen answer


def _qa(split, i):
    v = f"{split}val{i}"
    return QARecord(id=f"{split}-{i}", subject=f"{split} person {i}", question=f"What is the {split} fact {i}?",
                    answer=v, paraphrased_answer=f"It is {v}.",
                    perturbed_answers=[f"It is wrong{j}{split}{i}." for j in range(3)],
                    paraphrased_question=f"Tell me the {split} fact {i}?")


def _doc(split, i):
    words = " ".join(f"{split}w{i}x{j}" for j in range(40))
    return DocRecord(id=f"{split}-doc-{i}", subject=f"{split} person {i}", text=words)


def make_world(n=8, n_docs=3):
    return WorldData(
        forget=[_qa("forget", i) for i in range(n)], retain=[_qa("retain", i) for i in range(2 * n)],
        neighbours=[_qa("neighbours", i) for i in range(n)], holdout=[_qa("holdout", i) for i in range(n)],
        world_facts=[_qa("world", i) for i in range(n)],
        forget_docs=[_doc("forget", i) for i in range(n_docs)], holdout_docs=[_doc("holdout", i) for i in range(n_docs)],
        retain_docs=[_doc("retain", i) for i in range(n_docs)],
    )


class FakeLM:
    """Knows (scores high, answers correctly) the QA records and documents of `known` splits."""

    def __init__(self, world, known):
        self.facts = {}  # (question, answer) -> known?
        self.answers, self.docs = {}, {}
        for s in known:
            for r in getattr(world, s, []):
                self.facts[(r.question, r.answer)] = True
                self.facts[(r.question, r.paraphrased_answer)] = True
                self.answers[r.question] = self.answers[r.paraphrased_question] = r.answer
            for d in getattr(world, f"{s}_docs", []):
                self.facts[("", d.text)] = True
                self.docs[d.text] = True
        self.all_docs = [d.text for s in ("forget", "retain", "holdout") for d in getattr(world, f"{s}_docs")]
        self.score_calls, self.generate_calls = [], []

    def score(self, prompts, answers, stats=False, batch_size=None):
        self.score_calls.append({"n": len(prompts), "stats": stats})
        out = []
        for p, a in zip(prompts, answers):
            n = len(a.split()) + 1
            known = self.facts.get((p, a), False)
            lp = np.full(n, KNOWN if known else UNKNOWN)
            out.append(SampleScore(lp, np.full(n, known), np.full(n, -1.0) if stats else None,
                                   np.full(n, 0.5) if stats else None))
        return out

    def generate(self, prompts, max_new_tokens=32, batch_size=None):
        self.generate_calls.append({"n": len(prompts), "max_new_tokens": max_new_tokens})
        out = []
        for p in prompts:
            if p in self.answers:
                out.append(self.answers[p])
                continue
            doc = next((d for d in self.all_docs if d.startswith(p + " ")), None)
            out.append(doc[len(p) + 1:] if doc is not None and doc in self.docs else "I do not know")
        return out


@pytest.fixture(scope="module")
def world():
    return make_world()


UTIL = ("retain", "neighbours", "world_facts")


@pytest.fixture(scope="module")
def oracle_result(world):
    return evaluate(FakeLM(world, UTIL), world)


@pytest.fixture(scope="module")
def subject_result(world, oracle_result):
    return evaluate(FakeLM(world, ("forget",) + UTIL), world, oracle=oracle_result)


def test_oracle_against_itself(world, oracle_result, subject_result):
    r = evaluate(FakeLM(world, UTIL), world, oracle=oracle_result, subject=subject_result)
    assert r["forget_quality"] == 1.0 and r["forget_quality_log10"] == 0.0
    assert r["privleak"] == 0.0
    assert r["verdict"]["forgetting"]["pass"] and r["verdict"]["utility"]["pass"]
    # 8 members against 8 non-members: the membership AUC's standard error (0.15) is three times the
    # band |PrivLeak| <= 10 allows, so not even the oracle earns a pass on privacy
    assert r["verdict"]["privacy"]["status"] == "cannot decide" and "standard error 0.149" in r["verdict"]["privacy"]["why"]
    assert r["verdict"]["overall"]["status"] == "cannot decide"
    json.dumps(r, allow_nan=False)  # JSON-serialisable, no NaN/inf


def test_no_oracle_means_none_not_self(oracle_result):
    assert oracle_result["forget_quality"] is None and oracle_result["privleak"] is None
    assert any("forget_quality is None" in n for n in oracle_result["notes"])
    assert oracle_result["verdict"]["forgetting"]["pass"] is None
    assert oracle_result["verdict"]["overall"]["pass"] is None
    assert oracle_result["per_sample"]["forget_truth_ratios"] == pytest.approx([1.0] * 8)


def test_subject_hand_values(world, oracle_result):
    lm = FakeLM(world, ("forget",) + UTIL)
    r = evaluate(lm, world, oracle=oracle_result)
    # one score call (with Min-K%++ stats, the mia suite is on), one QA generate, one VerbMem generate
    assert len(lm.score_calls) == 1 and lm.score_calls[0]["stats"] is True
    assert [c["max_new_tokens"] for c in lm.generate_calls] == [32, 64]
    n = 8
    # every pair: forget/neighbours/world 8 facts, retain 16, each 1 true + 1 paraphrased + 3 perturbed;
    # + 8 holdout answers for QA MIA + 3 + 3 documents; + the forget records' twins' paraphrased and
    # perturbed answers (the subject "forget person i" is named by the word "forget" in each question)
    assert r["n"]["scored_pairs"] == (5 * n * 5) + n + 6 + 4 * n
    assert r["forget_probability"] == pytest.approx(math.exp(KNOWN))
    R = math.exp(-UNKNOWN + KNOWN)  # exp(L_perturbed - L_paraphrased) = e^2.9
    assert r["per_sample"]["forget_truth_ratios"] == pytest.approx([R] * n)
    assert r["forget_truth_ratio"] == pytest.approx(1 / R)
    assert r["forget_rouge"] == 1.0 and r["paraphrase_forget_rouge"] == 1.0 and r["retain_rouge"] == 1.0
    assert r["exact_memorisation_forget"] == 1.0 and r["extraction_strength_forget"] == 1.0
    assert r["knowmem_forget"] == 1.0 and r["knowmem_retain"] == 1.0 and r["verbmem_forget"] == 1.0
    # 8 vs 8 completely separated truth ratios: exact KS p = 2 / C(16, 8)
    assert r["forget_quality"] == pytest.approx(2 / math.comb(16, 8))
    assert r["forget_quality_n"] == n
    # QA MIA: forget answers known, holdout not -> AUC 1; the oracle is at chance (ties) -> -100
    assert r["mia_source"] == "qa" and r["mia_auc"] == {"loss": 1.0, "zlib": 1.0, "min_k": 1.0, "min_k_plus_plus": 1.0}
    assert oracle_result["mia_auc"]["min_k"] == 0.5
    assert r["privleak"] == pytest.approx(-100.0)
    # model utility: harmonic mean of 9 numbers worked out by hand
    p_plain = math.exp(KNOWN)
    p_norm = math.exp(KNOWN) / (math.exp(KNOWN) + 3 * math.exp(UNKNOWN))
    tr = 1 - 1 / R
    expected = tofu.harmonic_mean([p_plain, 1.0, tr, p_norm, 1.0, tr, p_norm, 1.0, tr])
    assert r["model_utility"] == pytest.approx(expected)
    assert r["model_utility"] == pytest.approx(oracle_result["model_utility"])
    assert r["verdict"]["forgetting"]["status"] == "cannot decide"  # no subject given: power unknown
    v = verdict(r, oracle=oracle_result, subject=r)  # judged as the untouched subject it is
    assert v["forgetting"]["pass"] is False and v["privacy"]["pass"] is False and v["utility"]["pass"] is True
    assert "still recognisable" in v["privacy"]["why"]
    json.dumps(r, allow_nan=False)


def test_forgetting_passes_on_rouge_tolerance(world, oracle_result, subject_result):
    # forget quality fails but forget ROUGE equals the oracle's: the tolerance rule passes it
    fake = {"forget_quality": 1e-6, "forget_rouge": oracle_result["forget_rouge"] + 0.04}
    s = subject_result
    assert verdict(fake, oracle=oracle_result, subject=s)["forgetting"]["pass"] is True
    assert verdict(fake, oracle=oracle_result, subject=s, rouge_tolerance=0.01)["forgetting"]["pass"] is False
    assert verdict({"forget_quality": 0.2}, oracle=oracle_result, subject=s)["forgetting"]["pass"] is True


def test_the_verdict_checks_its_own_power(world, oracle_result, subject_result):
    """The untouched subject never passes; a test that cannot tell the subject from the oracle says
    'cannot decide', with the reason, instead of passing."""
    v = verdict(subject_result, oracle=oracle_result, subject=subject_result)
    assert v["forgetting"]["status"] == "fail" and v["overall"]["status"] == "fail"
    # without the subject's result the power is unknown
    v = verdict({"forget_quality": 0.9, "privleak": 1.0}, oracle=oracle_result)
    assert v["forgetting"]["status"] == v["privacy"]["status"] == "cannot decide" and v["overall"]["pass"] is None
    # a subject that does not know the forget set: nothing can be shown
    v = verdict({"forget_quality": 0.9}, oracle=oracle_result, subject=oracle_result)
    assert v["forgetting"]["status"] == "cannot decide" and "does not know the forget set" in v["forgetting"]["why"]
    # too few facts: 3 vs 3 fully separated gives p = 0.1 at best
    few = {**subject_result, "forget_quality_n": 3}
    v = verdict({"forget_quality": 0.9}, oracle=oracle_result, subject=few)
    assert "too few independent forget facts (3)" in v["forgetting"]["why"]
    # membership inference that cannot tell members from non-members even on the subject
    v = verdict({"privleak": 2.0}, oracle=oracle_result, subject={"privleak": -3.0})
    assert v["privacy"]["status"] == "cannot decide"


def test_privleak_finer_than_its_sampling_error_cannot_decide():
    """An oracle that itself finds the forget set familiar (Min-K% AUC 0.92) leaves |PrivLeak| <= 10 a
    band of 0.008 AUC, under half the 0.053 standard error of 60 vs 60 samples: a model within two
    standard errors neither passes nor fails; one far outside still fails."""
    def res(auc):
        return {"privleak": (0.92 - auc) / 0.08 * 100, "splits": {"mia": {"privleak_source": "qa", "qa": {
            "privleak_min_k_auc": {"auc": auc}, "n_members": 60, "n_nonmembers": 60}}}}

    oracle, subject = {"per_sample": {"mink_auc": {"qa": 0.92}}}, {"privleak": -100.0}
    v = verdict(res(0.97), oracle=oracle, subject=subject)["privacy"]
    assert v["status"] == "cannot decide" and "standard error 0.053" in v["why"] and abs(v["value"]) > 10
    assert verdict(res(0.60), oracle=oracle, subject=subject)["privacy"]["status"] == "fail"
    # an oracle at chance leaves a band wider than the error: judged as before
    oracle = {"per_sample": {"mink_auc": {"qa": 0.5}}}
    v = verdict({**res(0.52), "privleak": -4.0}, oracle=oracle, subject=subject)["privacy"]
    assert v["status"] == "pass"


def test_privleak_against_an_oracle_at_auc_one_is_undefined_and_undecided():
    """An oracle whose own Min-K% AUC is 1 leaves PrivLeak (relative to the oracle's distance from 1)
    undefined: None with a note, and the privacy check cannot decide (until session 35 the JSON held
    null beside a verdict that failed on "|PrivLeak| = inf")."""
    from unlearnkit.evaluate import _privleak

    notes: list[str] = []
    oracle = {"per_sample": {"mink_auc": {"docs": 1.0}, "mink_k": 0.4}}
    assert _privleak({"docs": 0.9}, "docs", oracle, notes) is None
    assert "undefined" in notes[0] and "1.000" in notes[0]
    result = {"privleak": None, "splits": {"mia": {"privleak_source": "docs"}}}
    v = verdict(result, oracle=oracle, subject={"privleak": -100.0})["privacy"]
    assert v["status"] == "cannot decide" and "AUC on docs is 1.000, so PrivLeak is undefined" in v["why"]


def test_a_reference_without_utility_cannot_decide_utility():
    """`0.000 >= 0.95 x 0.000` passed a model with no utility at all (until session 35)."""
    v = verdict({"model_utility": 0.0}, subject={"model_utility": 0.0})["utility"]
    assert v["status"] == "cannot decide" and "subject's model utility is 0.000" in v["why"]
    # an evaluation of the mia suite alone: forgetting needs the tofu suite (it said "needs an oracle result")
    v = verdict({"config": {"suites": ["mia"]}, "mia_auc": 0.7}, subject={"forget_quality": 1e-6})["forgetting"]
    assert v["status"] == "cannot decide" and "needs the tofu suite" in v["why"]


def test_utility_reference_is_subject_when_given():
    res = {"model_utility": 0.5}
    assert verdict(res, oracle={"model_utility": 0.5}, subject={"model_utility": 0.6})["utility"]["pass"] is False
    assert verdict(res, oracle={"model_utility": 0.9}, subject={"model_utility": 0.52})["utility"]["pass"] is True
    assert verdict(res, oracle={"model_utility": 0.6})["utility"]["pass"] is False  # 0.5 < 0.57
    subject = {"privleak": -60.0}
    assert verdict({"privleak": -4.0}, subject=subject)["privacy"]["pass"] is True
    assert verdict({"privleak": 7.0}, subject=subject, privleak_tolerance=5)["privacy"]["pass"] is False
    assert "over-unlearned" in verdict({"privleak": 30.0}, subject=subject)["privacy"]["why"]


def test_docs_source_and_reference_attack(world, oracle_result):
    ref = FakeLM(world, UTIL)
    oracle_docs = evaluate(FakeLM(world, UTIL), world, mia_source="docs", suites=("mia", "muse"))
    lm = FakeLM(world, ("forget",) + UTIL)
    r = evaluate(lm, world, oracle=oracle_docs, suites=("mia", "muse"), mia_source="docs", reference_lm=ref)
    assert len(ref.score_calls) == 1 and ref.score_calls[0] == {"n": 8 + 8 + 3 + 3, "stats": False}  # QA and documents
    assert r["mia_source"] == "docs" and r["mia_auc"]["reference"] == 1.0
    assert r["privleak"] == pytest.approx(-100.0)
    assert "forget_quality" not in r and "model_utility" not in r
    assert r["splits"]["mia"]["docs"]["n_members"] == 3


def test_tofu_only_scores_without_stats(world):
    lm = FakeLM(world, UTIL)
    r = evaluate(lm, world, suites=("tofu",))
    assert lm.score_calls == [{"n": 5 * 5 * 8 + 4 * 8, "stats": False}]  # + the twins' (test_subject_hand_values)
    assert len(lm.generate_calls) == 1 and lm.generate_calls[0]["n"] == 5 * 8 + 8  # questions + paraphrased
    assert "privleak" not in r and "mia_auc" not in r


def test_wrong_oracle_world_is_an_error(world, oracle_result):
    other = make_world(n=5)
    with pytest.raises(ValueError, match="different forget set"):
        evaluate(FakeLM(other, UTIL), other, oracle=oracle_result, suites=("tofu",))
    with pytest.raises(ValueError, match="unknown suites"):
        evaluate(FakeLM(world, UTIL), world, suites=("tofu", "bleu"))


def test_without_an_oracle_the_twins_decide_with_the_same_power_checks():
    """No oracle result: forget quality against the model's own twins decides forgetting, once the
    subject's forget facts are told apart from their twins' (else, or without the subject, or with
    too few facts, it cannot decide); with an oracle, the oracle decides as before."""
    subject = {"forget_quality_twins": 1e-6, "forget_quality_twins_n": 20}
    ok = verdict({"forget_quality_twins": 0.3, "forget_quality_twins_n": 20}, subject=subject)["forgetting"]
    assert ok["status"] == "pass" and ok["reference"] == "twins" and "no oracle" in ok["why"]
    bad = verdict({"forget_quality_twins": 0.01, "forget_quality_twins_n": 20}, subject=subject)["forgetting"]
    assert bad["status"] == "fail" and "0.01 < 0.05" in bad["why"]
    assert verdict(subject, subject=subject)["forgetting"]["status"] == "fail"   # the untouched subject never passes
    for sub, words in ((None, "give --subject"), ({"forget_quality_twins": 0.4}, "does not tell the subject"),
                       ({"forget_quality_twins": None}, "does not tell the subject")):
        v = verdict({"forget_quality_twins": 0.3, "forget_quality_twins_n": 20}, subject=sub)["forgetting"]
        assert v["status"] == "cannot decide" and words in v["why"]
    few = verdict({"forget_quality_twins": 0.3, "forget_quality_twins_n": 3}, subject=subject)["forgetting"]
    assert "too few forget facts with twins (3)" in few["why"]
    # an oracle result decides as before, the twins' figure aside
    assert "reference" not in verdict({"forget_quality": 0.2, "forget_quality_twins": 0.001},
                                      oracle={"forget_rouge": 0.1}, subject={"forget_quality": 1e-6,
                                                                              "forget_quality_n": 20})["forgetting"]
    assert "needs an oracle result" in verdict({}, subject=subject)["forgetting"]["why"]


def test_verbmem_pairs_given_are_compared_whole_and_none_given_is_a_note(world):
    """MUSE's own VerbMem pairs are generated and compared whole (no document is cut for them); an
    empty list of pairs gives no VerbMem and says so, rather than falling back to the documents."""
    lm = FakeLM(world, ("forget",) + UTIL)
    d = world.forget_docs[0].text.split()
    pairs = [(" ".join(d[:12]), " ".join(d[12:20])), ("nothing like it", "any words")]
    r = evaluate(lm, world, suites=("muse",), verbmem_pairs=pairs)
    assert lm.generate_calls[-1]["n"] == 2 and r["splits"]["forget_docs"]["n_verbmem"] == 2
    # the first continuation recited past its 8 words (the whole document), the second not at all
    assert 0 < r["verbmem_forget"] < 0.5
    r = evaluate(FakeLM(world, ("forget",) + UTIL), world, suites=("muse",), verbmem_pairs=[])
    assert r["verbmem_forget"] is None and r["splits"]["forget_docs"]["n_verbmem"] == 0
    assert "no VerbMem pairs given: VerbMem skipped" in r["notes"]
