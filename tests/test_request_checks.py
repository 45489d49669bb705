"""A request's answers and MIA checks (requests/verify.py) and the permutation tests behind them
(metrics/twins.py): exact unlearning must pass them however many people a batch takes, and a
model that still knows the person must fail them."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from unlearnkit.data import QARecord
from unlearnkit.metrics.twins import answered_test, pooled_test
from unlearnkit.requests.home import Settings
from unlearnkit.requests.verify import check_level, request_checks
from unlearnkit.scoring import SampleScore


def _enumerate(values, stat):
    """Every placing of the person among its fact's m + 1 (the person last), equally likely."""
    w = 1 / np.prod([len(v) for v in values])
    obs = stat(values, [len(v) - 1 for v in values])
    return obs, [(stat(values, pos), w) for pos in itertools.product(*[range(len(v)) for v in values])]


def _pooled(values, pos):
    mem = [v[j] for v, j in zip(values, pos)]
    non = [x for v, j in zip(values, pos) for k, x in enumerate(v) if k != j]
    return sum((m > x) + 0.5 * (m == x) for m in mem for x in non) / (len(mem) * len(non))


def test_the_tests_match_every_placing_of_the_person_among_its_twins():
    """Against brute force over all placings, with ties and with facts of 1-3 twins: the answers
    test exactly, the AUC's p-value within its draws' error."""
    rng = np.random.default_rng(0)
    for k in range(40):
        ms = [int(m) for m in rng.integers(1, 4, size=rng.integers(1, 6))]
        scores = [rng.integers(0, 4, size=m + 1).astype(float) for m in ms]
        got = pooled_test([v[-1] for v in scores], [v[:-1] for v in scores], seed=k)
        obs, null = _enumerate(scores, _pooled)
        assert got["auc"] == pytest.approx(obs)
        assert got["p"] == pytest.approx(sum(w for x, w in null if abs(x - 0.5) >= abs(obs - 0.5) - 1e-12), abs=0.03)
        flags = [rng.integers(0, 2, size=m + 1).astype(float) for m in ms]
        got = answered_test([v[-1] for v in flags], [v[:-1] for v in flags])
        obs, null = _enumerate(flags, lambda vs, pos: sum(v[j] for v, j in zip(vs, pos)))
        assert got["p"] == pytest.approx(sum(w for x, w in null if x >= obs))
        assert got["min_p"] == pytest.approx(np.prod([1 / (m + 1) for m in ms]))


def test_hand_values():
    # one fact of nine answered, no twin answering it: gap 1/9, and the person is one of three on that fact
    t = answered_test([1] + [0] * 8, [[0, 0]] * 9)
    assert t["gap"] == pytest.approx(1 / 9) and t["p"] == pytest.approx(1 / 3) and t["min_p"] == pytest.approx(3 ** -9)
    assert answered_test([1] * 9, [[0, 0]] * 9)["p"] == pytest.approx(3 ** -9)
    assert answered_test([0, 1], [[], []]) == {"n": 0, "gap": None, "p": None, "min_p": 1.0}
    r = pooled_test([2.0] * 10, [[0.0, 1.0]] * 10)  # likelier than every twin on every fact
    assert r["auc"] == 1.0 and r["p"] < 1e-3 and r["min_p"] == pytest.approx(2 * 3 ** -10)
    r = pooled_test([0.5] * 4, [[0.0, 1.0]] * 4)
    assert r["auc"] == 0.5 and r["p"] == 1.0 and r["min_p"] == pytest.approx(2 / 81)
    assert pooled_test([1.0], [[]])["p"] is None


class TableLM:
    """Answers the questions in `answers`, and scores each question's answer at `logp[question]`."""

    def __init__(self, answers: set[str], logp: dict[str, float]):
        self.answers, self.logp = answers, logp

    def score(self, prompts, answers, stats=False, batch_size=None):
        return [SampleScore(np.array([self.logp[p], -0.1]), np.zeros(2, bool), eos=True) for p in prompts]

    def generate(self, prompts, max_new_tokens=32, batch_size=None):
        return [f"It is {i}." if p in self.answers else "No idea." for i, p in ((q.split("#")[1], q) for q in prompts)]


def _person(n: int, twins: int = 2):
    recs = [QARecord(id=f"r-{i}", subject="Ann", question=f"Where does Ann live? #{i}", answer=f"{i}",
                     paraphrased_answer=f"{i}", perturbed_answers=["x"]) for i in range(n)]
    tw = [QARecord(id=f"r-{i}-twin{j}", subject=f"S{j}", question=f"Where does S{j} live? #{i}", answer=f"{i}",
                   paraphrased_answer=f"{i}", perturbed_answers=["x"], twin_of=f"r-{i}") for i in range(n) for j in range(twins)]
    return recs, tw


def _checks(lm, recs, tw, n_requests, **settings):
    s = Settings(**settings)
    return {c["check"]: c for c in request_checks(lm, recs, tw, s, check_level(s, n_requests))}


def test_one_fact_of_nine_left_is_what_exact_unlearning_gives_and_passes():
    """The retrained oracle failed the 0.1 tolerance at one fact of nine (docs/requests-log.md, session
    40): a person of three on that fact answered it, as often as not by chance. Judged by its exact
    test it passes, in a batch of one or of twelve; with `check_alpha=0` the tolerance alone decides
    (the checks until session 41)."""
    recs, tw = _person(9)
    scores = {r.question: -1.0 - 0.1 * i for i, r in enumerate(recs)} | {t.question: -1.0 - 0.1 * int(t.twin_of[2:]) + 0.05 * (1 - 2 * int(t.id[-1])) for t in tw}
    lm = TableLM({recs[0].question}, scores)
    for n in (1, 12):
        c = _checks(lm, recs, tw, n)
        assert c["answers"]["value"] == pytest.approx(1 / 9) and c["answers"]["p"] == pytest.approx(1 / 3)
        assert c["answers"]["passed"] and c["answers"]["powered"] and c["answers"]["level"] == pytest.approx(0.05 / (2 * n))
        assert c["mia_auc"]["value"] == pytest.approx(0.5) and c["mia_auc"]["passed"]  # between its twins on every fact
    assert not _checks(lm, recs, tw, 12, check_alpha=0.0)["answers"]["passed"]


def test_a_model_that_still_knows_the_person_fails_however_large_the_batch():
    recs, tw = _person(9)
    scores = {r.question: -0.2 for r in recs} | {t.question: -3.0 - int(t.id[-1]) for t in tw}
    knows = TableLM({r.question for r in recs}, scores)
    c = _checks(knows, recs, tw, 12)
    assert c["answers"]["value"] == 1.0 and c["answers"]["p"] == pytest.approx(3 ** -9) and not c["answers"]["passed"]
    assert c["mia_auc"]["value"] == 1.0 and not c["mia_auc"]["passed"]
    # over-forgetting, every answer less likely than its twins', fails too
    under = TableLM(set(), {r.question: -9.0 for r in recs} | {t.question: -3.0 for t in tw})
    c = _checks(under, recs, tw, 12)
    assert c["answers"]["passed"] and c["mia_auc"]["value"] == 0.0 and not c["mia_auc"]["passed"]


def test_too_few_facts_to_test_leaves_the_tolerance_to_decide():
    """Two facts, both answered: the exact test's smallest p-value (1/9) cannot reach a batch's level,
    so it has no power there and the tolerance decides (fails). Four answered facts of ten, which
    neither twin answers, are as rare by chance as (1/3)^4 = 1/81: within a batch of twelve they pass
    (level 0.05/24), alone they do not (0.025)."""
    recs, tw = _person(2)
    lm = TableLM({r.question for r in recs}, {q.question: -1.0 for q in recs + tw})
    c = _checks(lm, recs, tw, 1)
    assert c["answers"]["min_p"] == pytest.approx(1 / 9) and not c["answers"]["powered"] and not c["answers"]["passed"]
    recs, tw = _person(10)
    lm = TableLM({r.question for r in recs[:4]}, {q.question: -1.0 for q in recs + tw})
    assert _checks(lm, recs, tw, 12)["answers"]["p"] == pytest.approx(1 / 81)
    assert _checks(lm, recs, tw, 12)["answers"]["passed"] and not _checks(lm, recs, tw, 1)["answers"]["passed"]


def test_check_alpha_is_validated():
    with pytest.raises(ValueError, match="check_alpha"):
        Settings.parse(check_alpha=1.0)


def test_how_a_check_s_significance_reads():
    from unlearnkit.requests.certificate import significance

    assert significance({"check": "answers", "p": 1 / 3, "min_p": 1e-4, "level": 0.05 / 24, "powered": True}) == \
        "p 0.333 ≥ 0.00208"
    assert significance({"check": "mia_auc", "p": 1e-4, "min_p": 1e-5, "level": 0.0125, "powered": True}) == \
        "p 0.0001 < 0.0125"
    assert significance({"check": "answers", "p": 1.0, "min_p": 1 / 9, "level": 0.025, "powered": False}) == \
        "no power (min p 0.11)"
    assert significance({"check": "utility", "value": 1.0}) == significance({"check": "answers", "level": 0.0}) == ""


def test_a_check_at_its_tolerance_passes_whatever_the_float_arithmetic():
    """An AUC of exactly 0.8 (160 of 200 pairs) is at the MIA check's tolerance (0.5 + 0.3), and an
    answer rate 0.1 above the strangers' (0.4 against 0.3) at the answers check's: both within it.
    In floats 0.8 - 0.5 is 0.30000000000000004 and 0.4 - 0.3 is 0.10000000000000003, and until
    session 45 both failed (seed 2's first batch of two was rejected on an AUC of 0.8). Two pairs
    more (162 of 200) are beyond it. `check_alpha=0`: the tolerance alone decides."""
    from unlearnkit.calibrate import familiar, surviving

    recs, tw = _person(10)
    above = {r.question: (1.0 if i < 8 else -1.0) for i, r in enumerate(recs)} | {t.question: 0.0 for t in tw}
    c = _checks(TableLM(set(), above), recs, tw, 1, check_alpha=0.0)["mia_auc"]
    assert c["value"] == 0.8 and abs(c["value"] - 0.5) > 0.3 and c["passed"]
    beyond = above | {tw[-1].question: -2.0}  # the two facts at -1 now beat one twin: 162 of 200
    c = _checks(TableLM(set(), beyond), recs, tw, 1, check_alpha=0.0)["mia_auc"]
    assert c["value"] == pytest.approx(0.81) and not c["passed"]
    # the repair rounds read the AUC as the check does (`familiar`): none taken at 0.8
    mine = [above[r.question] for r in recs]
    theirs = [[above[t.question] for t in tw if t.twin_of == r.id] for r in recs]
    assert familiar(recs, mine, theirs, 0.3) == [] and len(familiar(recs, mine, theirs, 0.29)) == 8
    # four facts answered of ten, six of twenty twins: 0.4 - 0.3
    answered = {r.question for r in recs[:4]} | {t.question for t in tw[8:14]}
    c = _checks(TableLM(answered, {q.question: -1.0 for q in recs + tw}), recs, tw, 1, check_alpha=0.0)["answers"]
    assert (c["person_rate"], c["strangers_rate"]) == (0.4, 0.3) and c["passed"]
    flags, twin_flags = np.array([1.0] * 4 + [0.0] * 6), np.array([0.0] * 4 + [1.0] * 3 + [0.0] * 3)
    assert flags.mean() - twin_flags.mean() > 0.1 and surviving(recs, flags, twin_flags, 0.1) == []
