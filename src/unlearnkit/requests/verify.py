"""The checks a batch must pass before its version is deployed, each against a threshold of the
home's settings (docs/requests.md, "Process and its checks").

Per request, on the weights alone (no guard), each fact of the inventory against its twins (the
same question about locate's strangers, same answer; `metrics.twins`):
  * answers: the share of the inventory the model still answers (the true answer inside its greedy
    answer) minus the same share on the twins: at most `answer_tolerance`;
  * MIA: ROC AUC of the LOSS attack, inventory against twins: within `mia_tolerance` of 0.5 (an AUC
    far below 0.5 is over-forgetting, which gives the person away too).
  A value beyond its tolerance still passes where exact unlearning gives one as far often enough:
  the permutation test's p-value is at least `check_alpha` / the batch's number of such tests (a batch of
  twelve people is twenty-four tests, and a model that never saw them must not fail one of them by
  chance; Bonferroni). Where the test cannot reach that level on the facts it has (`min_p` above
  it: too few facts), the tolerance alone decides.
Per batch: recovery under relearning (attacks.relearn, source=facts) and under 4-bit round-to-nearest
quantization (attacks.quantize) at most `relearn_max` / `quantize_max`; retain utility at least
`utility_floor` x the base model's.
"""
from __future__ import annotations


import numpy as np

from ..attacks.recovery import forget_metrics
from ..metrics.mia import auc, loss_score
from ..metrics.tofu import harmonic_mean
from ..metrics.twins import answered_test, beyond, pooled_test
from .pool import load_pool, utility_slice


def _lm(model_dir):
    from ..models.load import load_model
    from ..scoring import LM

    return LM(*load_model(str(model_dir)))


def utility(home, model_dir, lm=None) -> float:
    """Retain utility: harmonic mean of ROUGE-L recall and answer probability on the home's fixed
    utility slice of the retain pool."""
    lm = lm or _lm(model_dir)
    recs = utility_slice(load_pool(home), home.settings.utility_records, home.settings.seed)
    m = forget_metrics(lm, recs, truth_ratio=False)
    return float(harmonic_mean([m["forget_rouge"], m["forget_probability"]]))


def check(name: str, value, threshold, passed: bool, **extra) -> dict:
    return {"check": name, "value": value, "threshold": threshold, "passed": bool(passed), **extra}


def judged(name: str, value, tolerance, beyond: bool, test: dict, level: float, **extra) -> dict:
    """A per-request check: passed when `value` is within its `tolerance` (`beyond` False), or when
    the permutation test (`metrics.twins`) has power at `level` and its p-value is not below it."""
    powered = test["min_p"] < level
    return check(name, value, tolerance, (not beyond) or (powered and test["p"] >= level), p=test["p"],
                 min_p=test["min_p"], level=level, powered=powered, n_facts=test["n"], **extra)


def _by_fact(records, twins) -> list[list[int]]:
    """Per record, the positions in `twins` of its own twins (their `twin_of`)."""
    at: dict[str, list[int]] = {}
    for j, t in enumerate(twins):
        at.setdefault(t.twin_of, []).append(j)
    return [at.get(r.id, []) for r in records]


def answers_check(lm, records, twins, settings, level: float = 0.0) -> dict:
    """The answers check of `records` (the inventory) against `twins`, judged at `level` (the
    batch's share of `check_alpha`; 0: the tolerance alone)."""
    mine = forget_metrics(lm, records, truth_ratio=False, keep=0, per_record=True)
    if not twins:  # only given facts that do not name the person: the answer rate alone
        rate = mine["forget_contains"]
        return check("answers", rate, settings.answer_tolerance, not beyond(rate, settings.answer_tolerance),
                     person_rate=rate, note="no strangers' twins for these facts: the rate itself is checked")
    theirs = forget_metrics(lm, twins, truth_ratio=False, keep=0, per_record=True)
    gap = mine["forget_contains"] - theirs["forget_contains"]
    own = _by_fact(records, twins)
    test = answered_test(mine["answered"], [[theirs["answered"][j] for j in js] for js in own])
    if not all(own):  # a fact with no twin has nothing to be exchangeable with: the tolerance alone
        test = {**test, "min_p": 1.0}
    return judged("answers", gap, settings.answer_tolerance, beyond(gap, settings.answer_tolerance), test, level,
                  person_rate=mine["forget_contains"], strangers_rate=theirs["forget_contains"],
                  person_rouge=mine["forget_rouge"], strangers_rouge=theirs["forget_rouge"])


def loss_scores(lm, records) -> list[float]:
    """The LOSS attack's member-ness score of each record's answer to its question under `lm`."""
    return [loss_score(s) for s in lm.score([r.question for r in records], [r.answer for r in records])]


def mia_check(lm, records, twins, settings, level: float = 0.0) -> dict:
    """The MIA check of `records` against `twins`: the LOSS attack's ROC AUC, the person's facts
    against all their twins (`metrics.twins.pooled_test`), judged at `level`."""
    sm, sn = loss_scores(lm, records), loss_scores(lm, twins)
    own = _by_fact(records, twins)
    test = pooled_test(sm, [[sn[j] for j in js] for js in own], seed=settings.seed)
    if not all(own):  # as in `answers_check`: the tolerance alone
        test = {**test, "min_p": 1.0}
    a = auc(sm, sn)  # the test's AUC where every fact has twins
    tol = settings.mia_tolerance
    return judged("mia_auc", a, [0.5 - tol, 0.5 + tol], beyond(abs(a - 0.5), tol), test, level, attack="loss",
                  n_person=len(sm), n_strangers=len(sn))


def request_checks(lm, records, twins, settings, level: float = 0.0) -> list[dict]:
    """The per-request checks (answers, MIA) on `records` (the inventory) against `twins`, each
    judged at `level` (`check_level`)."""
    if not records:
        return [check("answers", 0.0, settings.answer_tolerance, True, note="nothing located: nothing to reveal")]
    out = [answers_check(lm, records, twins, settings, level)]
    if twins:
        out.append(mia_check(lm, records, twins, settings, level))
    return out


def check_level(settings, n_requests: int) -> float:
    """Each per-request test's level in a batch of `n_requests`: `check_alpha` shared evenly by the
    batch's two tests a request (Bonferroni), so that exact unlearning fails the batch's
    per-request checks by chance at most that often, however many people it takes."""
    return settings.check_alpha / (2 * max(1, n_requests))


def attack_checks(model_dir, world_dir, source_dir, settings) -> list[dict]:
    """Recovery under relearning and 4-bit quantization, batch-wide. Relearning takes the first source
    the batch allows (`attacks.relearn.split`); with none, the batch cannot be verified."""
    from ..attacks import run_attack

    out, why = [], []
    # by facts (half of each person's relearned, the rest asked); where no person has two, by people
    # (some relearned, the others asked), then by neighbours or by retain records (relearned, the facts asked)
    for source in ("facts", "people", "neighbours", "retain"):
        try:
            r = run_attack("relearn", str(model_dir), str(world_dir), subject=str(source_dir), seed=settings.seed,
                           steps=settings.relearn_steps, source=source)
        except ValueError as e:
            why.append(str(e))
            continue
        out.append(check("relearn_recovery", r["recovery"], settings.relearn_max,
                         (r["recovery"] or 0.0) <= settings.relearn_max, variant=r["recovery_variant"],
                         **_undefined(r)))
        break
    else:  # cannot decide, so not verified (until session 37 it passed, and a batch nothing could relearn deployed)
        out.append(check("relearn_recovery", None, settings.relearn_max, False,
                         note=f"cannot decide, not run: {'; '.join(why)}"))
    q = run_attack("quantize", str(model_dir), str(world_dir), subject=str(source_dir), seed=settings.seed, bits=(4,))
    out.append(check("quantize_recovery", q["recovery"], settings.quantize_max,
                     (q["recovery"] or 0.0) <= settings.quantize_max, variant=q["recovery_variant"], **_undefined(q)))
    return out


def _undefined(res: dict) -> dict:
    """A recovery check's note where the attack's recovery is undefined: the subject's answers on
    the batch's facts are within `attacks.recovery.MIN_GAP` of the new version's (nothing was there
    to take back; were the facts still answered, the answers check fails the request)."""
    return {"note": res["notes"][-1]} if res["recovery"] is None and res["notes"] else {}


def utility_check(home, model_dir, lm=None) -> dict:
    base = home.meta.get("base_utility")
    u = utility(home, model_dir, lm)
    # a base that knows nothing of its retain pool (utility 0) cannot lose any: ratio 1
    ratio = u / base if base else (1.0 if base is not None else float("nan"))
    return check("utility", ratio, home.settings.utility_floor,
                 bool(np.isfinite(ratio)) and ratio >= home.settings.utility_floor, utility=u, base_utility=base)


__all__ = ["utility", "answers_check", "mia_check", "request_checks", "check_level", "attack_checks", "utility_check"]
