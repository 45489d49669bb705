"""Calibrated forgetting: unlearning stops when the forget set looks like data the model never saw.

No oracle is needed. The reference for "never seen" is, by default, the forget set's counterfactual
twins (`data.twins`: the same questions and answers about invented people); a world's holdout split
(people of the same kind, never trained on) can serve instead (`reference="holdout"`).

The statistic. Each record's score is the mean log-probability of its answer tokens given its
question (the end-of-sequence position left out, and so are the tokens of the subject's name:
`encode_records`), from one batched scoring pass, the quantity
behind TOFU's probability, the LOSS attack and NPO. The forget set matches the reference when a
membership-inference attacker holding these scores cannot tell them apart: the ROC AUC of forget
(members) against reference (non-members) lies within 0.5 ± tolerance, and the forget records'
mean score is no longer above the reference's by more than `mean_se` (1) standard errors of the
difference, sqrt(var_f / n_f + var_r / n_r) (a run enters the band from above; stopping at its
upper edge left a fact in three answered on small forget sets, and holding out for the mean at or
below the reference's left a converged method creeping at the edge for many epochs while the
reference's own mean moved by more than the gap between checks: docs/methods.md, "The matched
rule within one standard error"; a request home's batches, twenty-odd facts, keep the mean at or
below the reference's, `mean_se=0`: one standard error of so few left facts answered). Above is
under-forgetting
(the forget answers are still more likely than a stranger's); below is over-forgetting (they are
*less* likely than a stranger's, which gives the set away as surely). The tolerance is the larger of
`min_tolerance` and one standard error of the AUC under the null hypothesis,
sqrt((n1 + n2 + 1) / (12 n1 n2)) (Hanley & McNeil 1982): closer than that, the data cannot tell.

Documents. Forget documents (biographies) are unlearned with the questions. When the data also has
holdout documents, each check reports the forget documents' AUC against them (per-document mean
token log-prob, names left out) beside the decision, which rests on the questions alone: one
learning rate moves the two at different paces (on the default world the documents stayed at AUC
1.0 while the questions reached 0.46), and holding both to the band pushed the questions far past
it. `calibration.json` says when the documents are still recognisable.

Answers that survive. Each check also counts the forget and reference answers the model reproduces
word for word (teacher-forced, the name left out), from the same pass: reported, not decided on
(deciding on it kept the same weights after four backtracks on a sentence world: docs/methods.md).
The summary says when the kept weights reproduce more forget answers than the reference's share
and no repair round follows.

Repair rounds. Such facts need a round of their own, not more of the same loss on the whole set:
after the run, the forget records whose greedy answers still hold the true answer where their
twins' do not (`Answers.survivors`, when the set, or with `repair_by="subject"` a subject, gives more
answers than its twins by over `repair_tolerance`) are unlearned again, calibrated, from the kept
weights, `repair_rounds` times at most (`unlearning._repair`; docs/methods.md, "Repair rounds").
A round is run for those answers, so it also stops (`answers`; `repair_stop`) at a check above its floor where
`survivors`'s test names none: at the checks that measure the utility it generates its own records'
answers and their twins' again (0.13-0.16 s for 110 records and their twins) and keeps the other
records' flags from its start (`Answers`). The AUC of so few records against their twins says
little: on wide seed 0 a round of 110 records came to none left at step 15, and went on, under
by the AUC, to stall at step 195. A request home keeps the AUC's stop (`repair_stop="auc"`): its
test's tolerance is its answers check's, and stopping there left a fact or two a batch.

Facts that survive. At the start and at the kept weights, the forget records' truth ratios (their
paraphrased true answer against their perturbed false ones, as TOFU computes them) are compared with
the reference records' by the KS test behind TOFU's forget quality (`Calibrator.truth_ratios`):
forget quality with the reference in the oracle's place. The mean log-prob can match while the
facts survive in other words: a run that unlearned the answers' wording still prefers the true
paraphrased answer to the false ones. The summary says so when the kept weights are told apart and
the start was too (else the test has no power here); reported, not decided on (docs/methods.md).
The same passes give the truth-ratio gap against the twins: each of up to `TWIN_PAIRS` forget facts
against its own twin, under the same model (`metrics.tofu.paired_truth_gap`), which tells exact
unlearning from the subject on every world measured and sees what the KS test misses; reported
too, since Twin RMU closes it only past the answers' match (docs/methods.md, "The truth-ratio gap
against the twins").

Utility. The same pass scores a sample (`retain_sample` records each) of the retain set, the
neighbours (the people most at risk) and the world facts, with their paraphrased and perturbed
answers, and computes TOFU's model utility on it (`metrics.tofu.model_utility`: probability, truth
ratio and ROUGE per split, harmonically averaged), with the teacher-forced exact answer (every
answer token the argmax) in place of ROUGE, which would need generation. It must stay at or above
`floor` (0.95) x the starting model's: the utility target itself, not a stand-in that moves
differently (docs/methods.md: the stand-ins measured and replaced). The pass costs several training
steps, so it runs where it decides something (`Calibrator._wants_utility`): the first check, checks
within the band or less than `utility_every` steps (an epoch) from it at the last interval's pace,
the check after one below the floor, at least every `utility_every` steps on the way, and the last
check the step budget allows; only measured weights are kept or restored to.

The rule, all in `Calibrator.check`:
- matched and above the floor: stop; these weights are the result.
- under and above the floor: go on; these weights become the restore point (under, with no
  utility measured: go on).
- over (overshot: the AUC below the band, or within it with the shapes told apart and the forget
  mean at or below the reference's), or below the floor at two measured checks running on the
  present path (or at the target): go back to the restore point and halve the learning rate, at
  most `max_backtracks` times; then stop. Back from the floor, the restore point is the last one
  whose utility is at least halfway from the floor to the start: from a point at the floor a
  lower rate's first steps dip below it again, and the rate is halved to nothing. One check below
  the floor on a path (from the start or from a restore point) while still short of the target is
  let pass: early steps dip and the retain term repairs them. The kept weights are never below the
  floor.
- under, but at the pace of the last interval (of the gap between the forget and the reference
  mean log-prob) the target lies beyond the step budget (with `speed_up="patience"`, or further
  away than the patience: the steps the rule waits on a run without progress before it stops it
  as stalled, a pace that slow being as good as none): double the learning rate (at most
  `max_doublings` times, never after a backtrack, and only after an epoch at the present rate:
  the first steps move the forget answers and their twins alike); or the next check would pass the
  reference's level: scale the learning rate down to land on it (at most 4x). So the step size
  follows from the run's own measurements, not from a constant tuned on one world.
- under, no step closer to the target for `patience_epochs` (counting the checks since the last
  backtrack only), and the learning rate may not be raised any more: stop; the method has
  converged short of the target.
- over within the band, the check before it on the same path under within the band, and the KS
  test told the shapes apart at both: the forget mean crossed the reference's level between them
  and the shapes differ at the level itself, which no learning rate changes (answers that
  survive sit above the reference while the rest sit below it; a repair round takes them): stop
  (`shape`). On wide_few_facts both seeds went on to four backtracks or 850 more steps, at the
  same AUC, to keep the same weights or their like (docs/methods.md). The same stop when the
  level is crossed told apart a second time, at a lower learning rate than a first crossing
  (over within the band, told apart) that was backtracked from: the lower rate changed nothing
  (wide seed 0 went on to three more backtracks at AUC 0.545-0.55 and kept the first crossing).
At the end the kept weights are the best check above the floor: a matched one first (the highest
utility among them), else the one nearest the target (by AUC, then by the mean log-prob gap, which
still moves where the AUC has saturated); a repair round's `answers` stop keeps its own check.
The stop reason is one of `matched`, `answers` (a repair round: no answer left that a round would
take), `floor` (the floor was reached before the target), `overshot` (the target was passed at every
learning rate tried), `stalled` (converged short of it), `shape` (at the reference's level, told
apart by shape) or `budget` (the step budget ran out first).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .data.batching import Encoded, collate, encode_pairs, length_batches
from .data.io import DataError, WorldData
from .data.templates import parse_template
from .data.twins import world_twins
from .metrics.mia import null_auc_se
from .scoring import answer_logprobs

REASONS = ("matched", "answers", "floor", "overshot", "stalled", "shape", "budget")
UTILITY_SPLITS = ("retain", "neighbours", "world_facts")


class CalibrationSettings(BaseModel):
    """How a calibrated run measures and decides (`unlearn forget --calibration key=value`)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: Literal["twins", "holdout"] = Field("twins", description="what 'never seen' is measured on")
    min_ks_p: float = Field(0.05, ge=0, lt=1, description="smallest KS p-value (forget vs reference scores) that matches")
    every: int | None = Field(None, ge=1, description="steps between checks; None: a quarter epoch of the forget set")
    min_tolerance: float = Field(0.05, ge=0, lt=0.5, description="smallest accepted |AUC - 0.5|")
    mean_se: float = Field(1.0, ge=0, description="how far the forget mean log-prob may sit above the reference's "
                                                  "and match, in standard errors of their difference (0: at or "
                                                  "below it; a request home's, whose batches are small)")
    floor: float = Field(0.95, ge=0, le=1, description="model utility (TOFU's, on the sampled utility splits) kept, "
                                                        "as a fraction of the starting model's")
    max_backtracks: int = Field(4, ge=0, description="learning-rate halvings after an overshoot or a floor hit")
    max_doublings: int = Field(3, ge=0, description="learning-rate doublings when progress would miss the budget")
    speed_up: Literal["budget", "patience"] = Field(
        "budget", description="when the learning rate doubles: budget, when at the last interval's pace the target "
                              "lies beyond the step budget; patience, also when it lies further away than the "
                              "patience (faster and cheaper on the wide worlds, one target world fewer: "
                              "docs/methods.md, \"A speed-up within the patience\")")
    max_epochs: float = Field(30.0, gt=0, description="step budget, in epochs over the forget set")
    patience_epochs: float = Field(2.0, gt=0, description="epochs without progress towards the target (once the "
                                   "learning rate can no longer be raised) before the run stops as stalled")
    utility: Literal["tofu", "answers"] = Field(
        "tofu", description="what the floor holds: tofu, TOFU's model utility on the sampled splits; answers, on "
                            "each split the harmonic mean of the true answers' probability and exact rate, and the "
                            "lowest split (a request home's utility check, on records no loss trains)")
    retain_sample: int = Field(64, ge=0, description="records of each utility split (retain, neighbours, world "
                                                     "facts) scored when the utility is measured")
    repair_rounds: int = Field(1, ge=0, description="repair rounds after the run: each unlearns again, calibrated "
                               "from the kept weights, the forget answers still given (`survivors`)")
    repair_by: Literal["set", "subject"] = Field(
        "set", description="what must not give more answers than its twins: the forget set as a whole, or "
                           "each subject (a deletion request's person) on its own")
    repair_tolerance: float = Field(0.05, ge=0, lt=1, description="share of answers given beyond the twins' "
                                                                  "that starts a repair round")
    repair_stop: Literal["answers", "auc"] = Field(
        "answers", description="how a repair round stops: answers, also once `survivors`'s test names no answer "
                               "left (checked where the utility is measured); auc, by the AUC alone, as any run "
                               "(a request home: its test's tolerance is its answers check's, 0.1, and stopping "
                               "there left a fact or two a batch)")
    repair_twins: Literal["twins", "holdout"] = Field(
        "twins", description="the strangers a repair round's answers are compared with: twins, made as the "
                             "reference's are; holdout, the holdout records whose `twin_of` names the forget "
                             "record (a request home's strangers, those its answers check asks about)")
    utility_every: int | None = Field(
        None, ge=1, description="steps between utility measurements on the way to the target; None: one epoch "
                                "of the forget set. It is also measured at the first check, at checks within the "
                                "band or this many steps from it at the last interval's pace, and at the check "
                                "after one below the floor")


def settings_from(calibration: dict | None) -> CalibrationSettings:
    """`CalibrationSettings` from `--calibration key=value` items; a one-line ValueError names the
    bad key and the choices."""
    from pydantic import ValidationError

    from .methods.registry import describe

    try:
        return CalibrationSettings(**(calibration or {}))
    except ValidationError as e:
        raise ValueError(describe("--calibration", CalibrationSettings, e)) from None


@dataclass
class Check:
    step: int
    auc: float             # forget vs reference, on per-record mean answer log-prob
    ks_p: float            # two-sample KS p-value of the same scores (the shape, not only the ranks)
    tolerance: float
    state: str             # under | matched | over
    utility: float | None  # Calibrator._utility / its value at the start; None where not measured
                           # (`Calibrator._wants_utility`)
    forget_logprob: float  # means, for the log
    reference_logprob: float
    lr: float
    docs_auc: float | None = None        # forget documents vs holdout documents, when the data has both
    docs_tolerance: float | None = None
    forget_exact: float | None = None     # share of forget answers reproduced (teacher-forced: every scored
    reference_exact: float | None = None  # answer token the argmax), and of the reference's; reported, not decided on
    answers_left: int | None = None       # a repair round's: the records `survivors` would still name (`Answers`)
    gap_se: float | None = None           # one standard error of `gap`, sqrt(var_f / n_f + var_r / n_r) (None in
                                          # logs before session 26: read as 0)

    @property
    def distance(self) -> float:
        return abs(self.auc - 0.5)

    @property
    def in_band(self) -> bool:
        return self.distance <= self.tolerance

    @property
    def gap(self) -> float:
        """Forget minus reference mean log-prob: what the run closes."""
        return self.forget_logprob - self.reference_logprob


@dataclass
class StopInfo:
    """Why and where a calibrated run stopped, and which weights it kept."""
    reason: str
    stopped_at: int
    kept_step: int
    kept: dict
    start: dict
    backtracks: int
    doublings: int
    reference: str
    n_forget: int
    n_reference: int
    n_utility: dict  # records scored per utility split
    checks: int
    utility_checks: int = 0  # checks that measured the utility (`Calibrator._wants_utility`)
    seconds: dict = field(default_factory=dict)  # wall time in the checks: target (forget, reference, documents), utility
    history: list = field(default_factory=list)
    truth_ratio: dict = field(default_factory=dict)  # `Calibrator.truth_ratios` at "start" and "kept" (None: no data)
    survivors: list | None = None                     # ids of the forget records `survivors` names at the kept weights
    #                                                   (None: not looked for, sharded weights)
    repairs: list = field(default_factory=list)       # the repair rounds that followed (`unlearning.forget`)
    settings: dict = field(default_factory=dict)      # the run's CalibrationSettings, and its steps per epoch of
    per_epoch: int = 0                                # the forget stream: what bench/replay.py needs to replay it

    def summary(self) -> str:
        k, s = self.kept, CalibrationSettings(**self.settings)
        why = {"matched": "the forget set matches the reference",
               "floor": "utility reached the floor before the target",
               "overshot": "the target was passed at every learning rate tried",
               "stalled": "progress towards the target stopped short of it",
               "shape": "the forget set reached the reference's level, but the shapes of their scores are told apart",
               "answers": "no forget answer is left beyond the twins' (the repair round's target)",
               "budget": "the step budget ran out before the target"}[self.reason]
        return (f"stopped: {self.reason} ({why}) at step {self.stopped_at}; kept step {self.kept_step}: "
                f"AUC {k['auc']:.3f} vs the {self.reference} (target 0.5 ± {k['tolerance']:.3f}, {k['state']}), "
                + (f"documents' AUC {k['docs_auc']:.3f} vs holdout documents (± {k['docs_tolerance']:.3f}), "
                   if k.get("docs_auc") is not None else "")
                + f"utility {k['utility']:.3f}x the start"
                + (_surviving(k, self.n_forget, self.n_reference, s.repair_tolerance, self.survivors)
                   if not self.repairs else "")
                + _facts(self.truth_ratio, s.min_ks_p) + "".join(_repair(i, r) for i, r in enumerate(self.repairs)))


def _surviving(k: dict, n_forget: int, n_reference: int, tolerance: float, found: list | None = None) -> str:
    """The summary's warning when forget answers survive a run that had no repair round: a set can
    match its reference on average with a few facts intact (docs/methods.md, "Answers that
    survive"). `found`: the records `survivors` named (the repair rounds' own rule, on generated
    answers); where it was not looked for (None), the kept weights' word-for-word count against the
    reference's, beyond `tolerance`. A run with repair rounds says what they did instead (`_repair`)."""
    if found is not None:
        return (f"; but {len(found)} of {n_forget} forget answers are still given where their twins' are not "
                f"(no repair round)") if found else ""
    fe, re_ = k.get("forget_exact"), k.get("reference_exact")
    if fe is None or re_ is None or fe - re_ <= tolerance:
        return ""
    return (f"; but {round(fe * n_forget)} of {n_forget} forget answers are still reproduced word for word "
            f"(reference: {round(re_ * n_reference)} of {n_reference})")


def _repair(i: int, r: dict) -> str:
    """The summary's line for repair round i + 1 (`unlearning.forget`)."""
    return (f"; repair round {i + 1} on the {r['records']} answers still given: {r['reason']} at step "
            f"{r['stopped_at']}, kept step {r['kept_step']}, utility {r['utility']:.3f}x its start"
            + (f", {r['left']} still given" if r.get("left") else ""))


def surviving(forget: list, answered: np.ndarray, twin_answered: np.ndarray, tolerance: float,
              by: str = "set") -> list[str]:
    """The forget records a repair round unlearns again: where a group (the forget set as a whole,
    or with `by="subject"` each subject's records) has more of its answers given than its twins
    have (`answered`: per record, 0 or 1; `twin_answered`: per record, the share of its twins whose
    answer is given) by more than `tolerance`, its records answered none of whose twins' answers is
    given (an answer a stranger gets too is not the person's to forget). Returns their ids."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(forget):
        groups.setdefault(r.subject if by == "subject" else "", []).append(i)
    out = []
    for idx in groups.values():
        if answered[idx].mean() - twin_answered[idx].mean() > tolerance:
            out += [forget[i].id for i in idx if answered[i] and not twin_answered[i]]
    return out


def holdout_twins(world: WorldData) -> dict[str, list]:
    """Forget id -> the holdout records that are its twins (their `twin_of`). A one-line DataError
    names the holdout file when none is: `repair_twins=holdout` would have no strangers to compare."""
    of: dict[str, list] = {}
    for h in world.holdout:
        if h.twin_of is not None:
            of.setdefault(h.twin_of, []).append(h)
    if not of:
        raise DataError(f"{world.source('holdout')}: no record has a 'twin_of' field naming a forget record, and "
                        f"repair_twins=holdout compares each forget record with those; use repair_twins=twins")
    return of


@dataclass
class Answers:
    """Which forget records' greedy answers hold the true answer (`mine`, 0/1 per record of `named`)
    and the share of each one's twins whose answers do (`theirs`): `survivors`'s test, kept by a
    repair round (`Calibrator(answers=...)`) so that a check regenerates only the round's own records
    and takes the others' flags as they were when it started."""
    named: list
    twins: list
    mine: np.ndarray
    theirs: np.ndarray

    @classmethod
    def generate(cls, model, tokenizer, world: WorldData, settings: CalibrationSettings, seed: int = 0,
                 template=None) -> Answers:
        """The forget records that have twins (`settings.repair_twins`: made by `world_twins`, or the
        holdout records whose `twin_of` names them: `holdout_twins`), answered when the model's greedy
        answer holds the whole true answer: the evaluation's answer rate and a request home's answers
        check, by the same test (`attacks.recovery.contains_answer`). One generation pass (0.1-0.9 s
        on the benches' 60-200 fact worlds, 1 s on 1000)."""
        if settings.repair_twins == "holdout":
            of = holdout_twins(world)
            named = [r for r in world.forget if of.get(r.id)]
            twins = [of[r.id] for r in named]
        else:
            named, tw = world_twins(world, list(world.forget), seed)
            twins = [[t] for t in tw]
        out = cls(named, twins, np.zeros(len(named)), np.zeros(len(named)))
        return out.again(model, tokenizer, range(len(named)), template) if named else out

    def again(self, model, tokenizer, idx, template=None) -> Answers:
        """These flags with the records at positions `idx` (and their twins) generated anew."""
        from .attacks.recovery import contains_answer
        from .scoring import LM

        idx = list(idx)
        recs, tw = [self.named[i] for i in idx], [t for i in idx for t in self.twins[i]]
        gens = LM(model, tokenizer, template=parse_template(template)).generate([r.question for r in recs + tw],
                                                                               max_new_tokens=32)
        flags = np.array(contains_answer(gens, recs + tw), dtype=float)
        mine, theirs, k = self.mine.copy(), self.theirs.copy(), len(recs)
        for i, pos in enumerate(idx):
            mine[pos] = flags[i]
            n = len(self.twins[pos])
            theirs[pos] = flags[k:k + n].mean()
            k += n
        return Answers(self.named, self.twins, mine, theirs)

    def survivors(self, settings: CalibrationSettings) -> list[str]:
        """The records a repair round takes (`surviving`). Generated answers, because the word-for-word
        count of the checks' scoring pass misses answers given further into a free answer ("Tell me
        about X.")."""
        return surviving(self.named, self.mine, self.theirs, settings.repair_tolerance, settings.repair_by)


TWIN_PAIRS = 400  # forget facts and twins in the truth-ratio gap: its SE ~0.03 on the wide worlds (0.018 at 1000)


def _facts(truth: dict, min_ks_p: float) -> str:
    """The summary's truth-ratio gap against the twins at the kept weights and the start (docs/methods.md,
    "The truth-ratio gap against the twins"), and its warning when the kept weights' forget truth
    ratios are still told apart from the reference's (KS p below `min_ks_p`) where the starting
    weights' were too: the answers' wording is forgotten, the facts are not (docs/methods.md,
    "Facts that survive"). No warning when the start was not told apart either: the test then has
    no power on this data."""
    st, kt = truth.get("start"), truth.get("kept")
    if not st or not kt:
        return ""
    gap = (f"; truth-ratio gap against the twins {kt['twin_gap']:+.3f} (SE {kt['twin_gap_se']:.3f}, Wilcoxon p "
           f"{kt['twin_gap_p']:.2g}; start {st['twin_gap']:+.3f}; 0: the true answer preferred no more than for a "
           "stranger)" if "twin_gap" in kt and "twin_gap" in st else "")
    if st["ks_p"] >= min_ks_p or kt["ks_p"] >= min_ks_p:
        return gap
    return gap + (f"; but the forget facts are still told apart from the reference's: truth ratios' KS p {kt['ks_p']:.2g} "
            f"(median log ratio {kt['forget_log_r']:+.2f} against {kt['reference_log_r']:+.2f}; start: "
            f"p {st['ks_p']:.2g}): " + ("the true answers, reworded, are still preferred to false ones"
                                        if kt["forget_log_r"] > kt["reference_log_r"] else
                                        "the true answers are now less likely against false ones than a stranger's"))


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(member score > non-member score) + 0.5 P(tie): the Mann-Whitney form of the ROC AUC."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(members, nonmembers).statistic / (len(members) * len(nonmembers)))


def reference_records(world: WorldData, kind: str, seed: int = 0, forget: list | None = None):
    """(forget records used, reference records): twins of the forget records (`forget`, default the
    world's forget split) that name their subject, or the holdout split. A one-line ValueError says
    when neither can be had."""
    forget = list(world.forget) if forget is None else list(forget)
    if kind == "holdout":
        if not world.holdout:
            raise ValueError("calibration reference 'holdout': the data has no holdout split; use reference=twins")
        return forget, list(world.holdout)
    named, tw = world_twins(world, forget, seed)
    if not named:
        raise ValueError("calibration reference 'twins': no forget question names its subject, so no twin can "
                         "be made; use reference=holdout, or a fixed budget (--steps/--epochs)")
    return named, tw


def encode_records(tokenizer, records, template=None, mask_names: bool = True) -> list[Encoded]:
    """Each record's question and answer, encoded as training encodes them; with `mask_names`, the
    subject's name tokens are left out of the labels (`data.batching.encode_pairs`).

    The statistic compares forget records with twins whose names were swapped, so the name's own
    tokens (memorised for a real person, not for a twin's) must not decide it: only the
    fact is compared. "Linine Vigormont was born in Thornwick." is scored on "was born in
    Thornwick." (and the end of sequence)."""
    recs = list(records)
    return encode_pairs(tokenizer, [r.question for r in recs], [r.answer for r in recs],
                        template=parse_template(template), subjects=[r.subject for r in recs] if mask_names else None)


def _before_eos(m: torch.Tensor) -> torch.Tensor:
    """The answer positions of `m` (a row's labelled positions) less each row's last, its end of sequence."""
    return m & ~(m & (m.cumsum(-1) == m.sum(-1, keepdim=True)))


def _answer_scores(model, batch, ctx=None):
    """Per-row mean answer-token log-prob, the last (end-of-sequence) position left out."""
    return _answer_scores_and_exact(model, batch)[:, 0]


def _answer_scores_and_exact(model, batch, ctx=None):
    """Per row: the mean log-prob of the scored answer tokens (the end of sequence left out, but kept
    for a one-token answer; the subject's name is out of the labels: `encode_records`), and whether
    every one of them is the model's argmax: the answer reproduced word for word."""
    out = answer_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    m = out["mask"]
    keep = _before_eos(m)
    keep = torch.where(keep.any(-1, keepdim=True), keep, m)  # a one-token answer keeps its eos
    right = (out["hits"] | ~keep).all(-1).float()
    return torch.stack([(out["logprobs"] * keep).sum(-1) / keep.sum(-1).clamp_min(1), right], -1)


def _mean_logprob_and_accuracy(model, batch, ctx=None):
    """Per row: the mean answer-token log-prob (end of sequence included, as `LM.score` gives it to
    TOFU's metrics) and whether every answer token before the end of sequence is the model's argmax:
    the teacher-forced form of "the greedy answer is right". (The fraction of argmax tokens was
    tried: one wrong first token derails a greedy answer, and it stood at 0.95 with ROUGE at 0.77.)"""
    out = answer_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    m = out["mask"]
    n = m.sum(-1).clamp_min(1)
    right = ((out["hits"] | ~_before_eos(m)).all(-1)).float()
    return torch.stack([(out["logprobs"] * m).sum(-1) / n, right], -1)


def _lp(v: float) -> np.ndarray:
    """A sequence's mean log-prob as `metrics.tofu`'s functions take it (an array of log-probs)."""
    return np.array([v])


def _ratios(rows: list[tuple]) -> list[float]:
    """TOFU's truth ratio of each record's rows (`Calibrator._answer_rows`): paraphrased against perturbed."""
    from .metrics import tofu

    return [tofu.truth_ratio(_lp(a[0]), [_lp(x) for x in q]) for _, a, q in rows]


def _utility_encoding(tokenizer, records, template=None) -> list[Encoded]:
    """Each record's question with its true, paraphrased and perturbed answers, in that order."""
    q = [r.question for r in records for _ in range(2 + len(r.perturbed_answers))]
    a = [x for r in records for x in (r.answer, r.paraphrased_answer, *r.perturbed_answers)]
    return encode_pairs(tokenizer, q, a, template=parse_template(template))


class Calibrator:
    """The `train.Monitor` that stops unlearning at the target (module docstring: the rule)."""

    def __init__(self, tokenizer, world: WorldData, settings: CalibrationSettings | None = None, *, seed: int = 0,
                 forget_stream_len: int | None = None, batch_size: int = 16, template=None, forget: list | None = None,
                 answers: Answers | None = None):
        s = settings or CalibrationSettings()
        forget, ref = reference_records(world, s.reference, seed, forget)
        if s.repair_rounds and s.repair_twins == "holdout":
            holdout_twins(world)  # before training, not after it
        rng = random.Random(seed)
        # a sample of each utility split: retain, neighbours (the people most at risk), world facts
        keep = {name: rng.sample(recs, min(len(recs), s.retain_sample))
                for name in UTILITY_SPLITS if (recs := list(getattr(world, name)))}
        self.n = {"forget": len(forget), "reference": len(ref), **{k: len(v) for k, v in keep.items()}}
        docs = {}
        if world.forget_docs and world.holdout_docs:  # documents against documents never trained on
            docs = {k: encode_pairs(tokenizer, [""] * len(d), [x.text for x in d], subjects=[x.subject for x in d])
                    for k, d in (("forget_docs", world.forget_docs), ("holdout_docs", world.holdout_docs))}
            self.n.update({k: len(v) for k, v in docs.items()})
        self._enc = {"forget": encode_records(tokenizer, forget, template),
                     "reference": encode_records(tokenizer, ref, template),
                     # scored whole: their names are part of what must be kept
                     **{k: _utility_encoding(tokenizer, v, template) for k, v in keep.items()},
                     **docs}
        # the truth ratios' records: forget and reference records with paraphrased and perturbed answers
        keep.update({f"{k}_tr": [r for r in v if r.perturbed_answers]
                     for k, v in (("forget", forget), ("reference", ref))})
        # and the twins of a sample of those forget records that name their subject, fact by fact (the
        # gap's pairs: `TWIN_PAIRS` at most)
        named, tw = world_twins(world, keep["forget_tr"], seed)
        pick = sorted(rng.sample(range(len(named)), min(len(named), TWIN_PAIRS)))
        at = {id(r): i for i, r in enumerate(keep["forget_tr"])}
        self._twin_of, keep["twin_tr"] = [at[id(named[i])] for i in pick], [tw[i] for i in pick]
        self.n.update({k: len(keep[k]) for k in ("forget_tr", "reference_tr", "twin_tr")})
        self._enc.update({k: _utility_encoding(tokenizer, keep[k], template)
                          for k in ("forget_tr", "reference_tr", "twin_tr")})
        self._layout = {k: [len(r.perturbed_answers) for r in v] for k, v in keep.items()}
        self.truth: dict[str, dict | None] = {}  # `truth_ratios` at the start and at the kept weights
        self.pad_id = tokenizer.pad_token_id
        # a repair round's answers at its start: its own records are generated again at the checks
        # that measure the utility, the rest kept (`Answers`); it stops once none is left
        self._answers, self._tok, self._template = answers, tokenizer, template
        if answers is not None:
            mine = {r.id for r in forget}
            self._answer_idx = [i for i, r in enumerate(answers.named) if r.id in mine]
        self._collated: dict[str, list] = {}
        self.seconds: dict[str, float] = {}  # time in the checks' passes (StopInfo.seconds)
        self._init_rule(s, math.ceil((forget_stream_len or len(forget)) / batch_size),
                        max(s.min_tolerance, null_auc_se(len(forget), len(ref))))
        self.docs_tolerance = (max(s.min_tolerance, null_auc_se(self.n["forget_docs"], self.n["holdout_docs"]))
                               if docs else None)

    @classmethod
    def replaying(cls, settings: CalibrationSettings, per_epoch: int, tolerance: float) -> Calibrator:
        """The rule alone, with no data to measure: `replay` decides on the checks a caller hands it
        (bench/replay.py replays a run's `log.jsonl` through it)."""
        cal = cls.__new__(cls)
        cal._init_rule(settings, per_epoch, tolerance)
        return cal

    def _init_rule(self, settings: CalibrationSettings, per_epoch: int, tolerance: float) -> None:
        """The schedule (from the forget stream's steps per epoch) and the decision state."""
        self.settings = s = settings
        self.per_epoch = per_epoch
        self.every = s.every or max(1, round(per_epoch / 4))
        self.utility_every = s.utility_every or per_epoch
        self.budget = max(self.every, math.ceil(s.max_epochs * per_epoch))
        self.patience = max(self.every, math.ceil(s.patience_epochs * per_epoch))
        self.tolerance = tolerance
        self.history: list[Check] = []
        self.start_utility: float | None = None  # `_utility` at the first check
        self.backtracks = 0
        self.restored_at = -1   # step of the last backtrack
        self.doublings = 0
        self.best: Check | None = None
        self.snapshots: dict[str, dict] = {}   # "restore", "safe" (room above the floor), "best": weights
        self.reason: str | None = None

    @property
    def start(self) -> Check | None:
        return self.history[0] if self.history else None

    # ------------------------------------------------------------------ measuring
    def _batches(self, name: str) -> list:
        """`name`'s records in padded batches, made once: the records are the same at every check."""
        if name not in self._collated:
            enc = self._enc[name]
            self._collated[name] = [(idx, collate([enc[i] for i in idx], self.pad_id))
                                    for idx in length_batches([len(e.input_ids) for e in enc], 8192, 128)]
        return self._collated[name]

    def _scores(self, handle, name: str, fn=None) -> np.ndarray:
        out = None
        for idx, batch in self._batches(name):
            got = handle.score(fn or _answer_scores, batch).float().cpu().numpy()
            out = np.zeros((len(self._enc[name]), *got.shape[1:])) if out is None else out
            out[idx] = got
        return out

    def _utility(self, handle) -> float:
        """TOFU's model utility on the sampled utility splits (`metrics.tofu.model_utility`), with
        the teacher-forced exact answer standing in for ROUGE (which needs generation); 1.0 with no
        utility split."""
        from .metrics.tofu import harmonic_mean, model_utility

        comps = self._utility_components(handle)
        if not comps:
            return 1.0
        if self.settings.utility == "answers":  # every split must hold, not their average
            return min(harmonic_mean([c["answer_probability"], c["rouge"]]) for c in comps.values())
        return model_utility(comps)

    def _utility_components(self, handle) -> dict[str, dict[str, float]]:
        """Per utility split: TOFU's probability (plain on retain, the paraphrase normalised against
        the perturbed answers elsewhere), truth-ratio score, and the teacher-forced exact answer
        under the key "rouge"."""
        from .metrics import tofu

        comps = {}
        for name in UTILITY_SPLITS:
            if not self.n.get(name):
                continue
            rows = self._answer_rows(handle, name)
            true, para, pert = zip(*rows)
            # TOFU: plain probability on retain; elsewhere normalised, the paraphrase (worded as the
            # perturbed answers are) against the perturbed answers
            prob = [tofu.answer_probability(_lp(t[0])) if name == "retain" else
                    tofu.normalised_probability(_lp(a[0]), [_lp(x) for x in q]) for t, a, q in zip(true, para, pert)]
            ratios = _ratios(rows)
            comps[name] = {"probability": float(np.mean(prob)), "rouge": float(np.mean([t[1] for t in true])),
                           "truth_ratio": tofu.truth_ratio_score(ratios, forget=False),
                           "answer_probability": float(np.mean([tofu.answer_probability(_lp(t[0])) for t in true]))}
        return comps

    def _answer_rows(self, handle, name: str) -> list[tuple]:
        """Per record of `name` (encoded by `_utility_encoding`): its true, paraphrased and perturbed
        answers' rows of `_mean_logprob_and_accuracy` (the perturbed answers' log-probs only)."""
        sc, i, rows = self._scores(handle, name, _mean_logprob_and_accuracy), 0, []
        for n_pert in self._layout[name]:
            rows.append((sc[i], sc[i + 1], sc[i + 2:i + 2 + n_pert, 0]))
            i += 2 + n_pert
        return rows

    def truth_ratios(self, handle) -> dict | None:
        """TOFU's forget quality with the reference in the oracle's place: the KS p of the forget
        records' truth ratios (paraphrased against perturbed answers) against the reference records'
        (`metrics.tofu.forget_quality`), and each side's median log ratio; and, where two or more of
        those forget records name their subject, the truth-ratio gap against their twins, fact by fact
        (`metrics.tofu.paired_truth_gap`: `twin_gap`, `twin_gap_se`, `twin_gap_p`, `n_twins`). None
        when either side has fewer than two records with perturbed answers. Reported, not decided on
        (module docstring: Facts that survive)."""
        from .metrics import tofu

        if min(self.n.get("forget_tr", 0), self.n.get("reference_tr", 0)) < 2:
            return None
        t0 = time.perf_counter()
        f, r = (_ratios(self._answer_rows(handle, k)) for k in ("forget_tr", "reference_tr"))
        out = {"ks_p": tofu.forget_quality(f, r)["p"], "forget_log_r": float(np.median(np.log(f))),
               "reference_log_r": float(np.median(np.log(r))), "n_forget": len(f), "n_reference": len(r)}
        if len(self._twin_of) >= 2:
            gap = tofu.paired_truth_gap([f[i] for i in self._twin_of], _ratios(self._answer_rows(handle, "twin_tr")))
            out |= {"twin_gap": gap["mean"], "twin_gap_se": gap["se"], "twin_gap_p": gap["p"], "n_twins": gap["n"]}
        self.seconds["truth_ratio"] = self.seconds.get("truth_ratio", 0.0) + time.perf_counter() - t0
        return out

    def measure(self, step: int, handle) -> Check:
        from scipy.stats import ks_2samp

        t0 = time.perf_counter()
        (f, fe), (r, re_) = (self._scores(handle, k, _answer_scores_and_exact).T for k in ("forget", "reference"))
        a, ks_p = auc(f, r), float(ks_2samp(f, r).pvalue)
        da = None  # reported beside the decision, not part of it (module docstring: Documents)
        if self.n.get("forget_docs"):
            da = auc(self._scores(handle, "forget_docs"), self._scores(handle, "holdout_docs"))
        # the standard error of the difference of the means (0 with a single record on either side:
        # a repair round may take one fact, and then the mean must reach the reference's)
        se = float(np.sqrt(f.var(ddof=1) / len(f) + r.var(ddof=1) / len(r))) if min(len(f), len(r)) > 1 else 0.0
        c = Check(step, a, ks_p, self.tolerance, "", None, float(f.mean()),
                  float(r.mean()), handle.lr, da, self.docs_tolerance if da is not None else None,
                  float(fe.mean()), float(re_.mean()), gap_se=se)
        c.state = self.state(c)
        t1 = time.perf_counter()
        self.seconds["target"] = self.seconds.get("target", 0.0) + t1 - t0
        if not self.history:  # the starting weights: does the test tell the forget facts from the reference's?
            self.truth["start"] = self.truth_ratios(handle)
            t1 = time.perf_counter()
        if self._wants_utility(c):
            u = self._utility(handle)
            self.seconds["utility"] = self.seconds.get("utility", 0.0) + time.perf_counter() - t1
            if self.start_utility is None:
                self.start_utility = u
            c.utility = u / max(self.start_utility, 1e-12)
            if self._answers is not None:
                t2 = time.perf_counter()
                now = handle.score(lambda model, batch, ctx: self._answers.again(model, self._tok, self._answer_idx,
                                                                                 self._template), {})
                c.answers_left = len(now.survivors(self.settings))
                self.seconds["answers"] = self.seconds.get("answers", 0.0) + time.perf_counter() - t2
        return c

    def state(self, c: Check) -> str:
        """`c`'s state (the one place it is decided). Matched: within the band, the shapes not told
        apart, and the forget mean no longer above the reference's by more than `mean_se` standard
        errors of their difference (a run that enters the band from above goes on, braking in
        `_adjust_pace`, towards the reference's level instead of stopping at the band's upper edge;
        closer than one standard error the data cannot tell which mean is higher). Over: below the
        band, or within it (the shapes told apart) with the mean at or below the reference's (an AUC
        a hair under 0.5 with the forget mean still above is short of the target). Else under."""
        level = c.gap <= self.settings.mean_se * (c.gap_se or 0.0)
        if c.in_band and c.ks_p >= self.settings.min_ks_p and (level or c.auc < 0.5):
            return "matched"
        return "over" if c.auc < 0.5 - c.tolerance or (c.in_band and c.gap <= 0) else "under"

    def _last_measured(self, path: bool = False) -> Check | None:
        """The last check with a utility; with `path`, on the weights' present path only (since the
        last backtrack: a dip on the abandoned path is not the first of two below the floor)."""
        return next((h for h in reversed(self.history)
                     if h.utility is not None and (not path or h.step > self.restored_at)), None)

    def _wants_utility(self, c: Check) -> bool:
        """The utility pass costs several training steps (every sampled record with its paraphrased
        and perturbed answers), so it is measured where it decides something: at the first check
        (the reference level); within the band, or with the target less than `utility_every` steps
        away at the last interval's pace (weights that may be the result, or the restore point a
        backtrack returns to); at the check after one below the floor (two running make a
        backtrack); at least every `utility_every` steps on the way; and at the last check the step
        budget allows (a run that ends at its budget keeps how far it got). Weights never measured
        are never kept or restored to."""
        last, pace = self._last_measured(), self._pace(c)
        near = c.in_band or (pace is not None and pace > 0 and c.gap / pace < self.utility_every)
        return (last is None or near or last.utility < self.settings.floor
                or c.step - last.step >= self.utility_every)

    # ------------------------------------------------------------------ deciding
    def _better(self, c: Check) -> bool:
        b = self.best
        if b is None:
            return True
        # the AUC saturates far from the target (1.0 at every check of a run that has not yet
        # reached it), so nearest is then told by the mean log-prob gap to the reference
        key = lambda x: (x.state == "matched", x.utility if x.state == "matched" else -x.distance,  # noqa: E731
                         -abs(x.gap))
        return key(c) > key(b)

    def check(self, step: int, handle) -> bool:
        return self._decide(self.measure(step, handle), handle)

    def replay(self, c: Check, handle) -> bool | None:
        """`check` with a logged check in place of the measurement (bench/replay.py): its state is
        decided again under these settings (`state`: a replay with another `min_ks_p` sees other
        matches), the utility the rule would not have measured there is dropped; None where the rule
        would measure it and the log has none (what follows cannot be read from the log)."""
        wants = self._wants_utility(c)
        if wants and c.utility is None:
            return None
        c = replace(c, state=self.state(c), utility=c.utility if wants else None)  # the state under these settings
        return self._decide(c, handle)

    def _decide(self, c: Check, handle) -> bool:
        """The rule (module docstring) on the measured check `c`; True: stop."""
        before = self._last_measured(path=True)
        self.history.append(c)
        handle.log({"check": asdict(c)})
        above = None if c.utility is None else c.utility >= self.settings.floor  # None: not measured here
        if above and self._better(c):
            self.best = c
            self.snapshots["best"] = handle.snapshot()
        if c.state == "matched" and above:
            self.reason = "matched"
            return True
        if c.answers_left == 0 and above:  # a repair round's target: no answer left that a round would take
            if self.best is not c:
                self.best, self.snapshots["best"] = c, handle.snapshot()
            self.reason = "answers"
            return True
        if above is not False and self._told_apart_at_the_level(c):
            self.reason = "shape"
            return True
        if c.state == "under" and above is not False:
            if above:  # a restore point: measured, above the floor, short of the target
                self.snapshots["restore"] = self.snapshots["best"] if self.best is c else handle.snapshot()
                if c.utility >= (1 + self.settings.floor) / 2:  # room for a lower rate's early dip
                    self.snapshots["safe"] = self.snapshots["restore"]
            if self._stalled(c):
                self.reason = "stalled"
                return True
            self._adjust_pace(c, handle)
            return False
        if c.state == "under" and (before is None or before.utility >= self.settings.floor):
            # a first dip below the floor on this path, still short of the target: the retain term may repair it
            return False
        # overshot, or below the floor (twice running, or at the target): back to the last point short
        # of the target, at half the lr
        point = "safe" if above is False and "safe" in self.snapshots else "restore"
        if self.backtracks < self.settings.max_backtracks and point in self.snapshots:
            self.backtracks += 1
            self.restored_at = c.step
            handle.restore(self.snapshots[point])
            handle.scale_lr(0.5)
            handle.log({"backtrack": {"step": c.step, "to_lr": handle.lr, "why": "floor" if above is False else c.state}})
            return False
        self.reason = "floor" if above is False else "overshot"
        return True

    def _told_apart_at_the_level(self, c: Check) -> bool:
        """`c` is over within the band with the shapes told apart (KS p below `min_ks_p`), and either
        the check before it on the present path is under within the band, told apart too (the level
        was crossed between them with the shapes different on either side), or an earlier check
        was over within the band, told apart, at a higher learning rate (the backtrack it caused
        crossed the level again at a lower rate, with the same result). Module docstring: the rule,
        `shape`."""
        told = lambda h: h.in_band and h.ks_p < self.settings.min_ks_p  # noqa: E731
        if not (c.state == "over" and told(c)):
            return False
        prev = self.history[-2] if len(self.history) > 1 else None
        if prev is not None and prev.step > self.restored_at and prev.state == "under" and told(prev):
            return True
        # every over check before `c` was backtracked from: a crossing at a higher learning rate
        return any(h.state == "over" and told(h) for h in self.history[:-1])

    def _stalled(self, c: Check) -> bool:
        """The learning rate may not be raised any more (doublings spent, or a backtrack showed a
        larger rate goes too far), it has not changed for `patience` steps, and in those steps the
        run came no closer to the target (by 0.01 AUC) than before them, since the last backtrack
        (the checks of an abandoned path do not count): the method has converged short of the target."""
        if not (self.backtracks or self.doublings >= self.settings.max_doublings):
            return False
        path = [h for h in self.history if h.step > self.restored_at]  # checks on the weights' present path
        recent = [h for h in path if h.step > c.step - self.patience]
        before = [h.distance for h in path if h.step <= c.step - self.patience and h.state == "under"]
        if not before or self._rate_since(c) > c.step - self.patience:
            return False
        return min(h.distance for h in recent) > min(before) - 0.01

    def _rate_since(self, c: Check) -> int:
        """The step since which the learning rate has been `c.lr`: that of the last check at another
        rate (a brake, a speed-up or a backtrack changes it right after a check); 0 if none."""
        return max((h.step for h in self.history if h.lr != c.lr), default=0)

    def _pace(self, c: Check) -> float | None:
        """How fast the forget answers' mean log-prob closes on the reference's, per step, over the
        last interval (the AUC saturates far from the target, so its own pace says little there)."""
        before = [h for h in self.history if h.step < c.step]
        if not before:
            return None
        prev = before[-1]
        return (prev.gap - c.gap) / max(1, c.step - prev.step)

    def _adjust_pace(self, c: Check, handle) -> None:
        """Brake or speed up, from the pace of the last interval (`_pace`).
        Brake: at this pace the next check would pass the reference's level, so the learning rate is
        scaled to land on it (at most 4x down): the band is narrow next to one interval's progress.
        Speed up: the target lies beyond the step budget (with `speed_up="patience"`, or further
        away than the patience: the steps a run without progress is given before it stops as
        stalled): double the learning rate (never after a backtrack, which means a larger rate
        already went too far)."""
        pace = self._pace(c)
        if pace is None:
            return
        gap = c.gap
        if pace > 0 and gap > 0 and gap - pace * self.every < 0:
            factor = max(0.25, gap / (pace * self.every))
            handle.scale_lr(factor)
            handle.log({"brake": {"step": c.step, "to_lr": handle.lr, "gap": gap, "pace": pace}})
            return
        if self.backtracks or self.doublings >= self.settings.max_doublings:
            return
        if c.step - self._rate_since(c) < self.per_epoch:
            return  # an epoch at this rate first: the first steps move the forget answers and their twins alike
        horizon = self.budget - c.step
        if self.settings.speed_up == "patience":
            horizon = min(horizon, self.patience)
        if pace <= 0 or gap / pace > horizon:
            self.doublings += 1
            handle.scale_lr(2.0)
            handle.log({"speed_up": {"step": c.step, "to_lr": handle.lr, "pace": pace}})

    def finish(self, step: int, handle) -> StopInfo:
        reason = self.reason or "budget"
        if self.best is not None:
            handle.restore(self.snapshots["best"])
        kept = self.best or self.start
        self.truth["kept"] = self.truth_ratios(handle) if kept is not self.start else self.truth.get("start")
        info = StopInfo(reason, step, kept.step, asdict(kept), asdict(self.start), self.backtracks, self.doublings,
                        self.settings.reference, self.n["forget"], self.n["reference"],
                        {k: self.n[k] for k in UTILITY_SPLITS if k in self.n},
                        len(self.history), sum(c.utility is not None for c in self.history),
                        {k: round(v, 3) for k, v in self.seconds.items()}, [asdict(c) for c in self.history],
                        dict(self.truth), settings=self.settings.model_dump(), per_epoch=self.per_epoch)
        handle.log({"stopped": {k: v for k, v in asdict(info).items() if k != "history"}})
        return info

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict:
        return {"history": [asdict(c) for c in self.history], "start_utility": self.start_utility,
                "backtracks": self.backtracks, "doublings": self.doublings, "restored_at": self.restored_at,
                "seconds": self.seconds, "truth": self.truth,
                "best": asdict(self.best) if self.best else None,
                "snapshots": self.snapshots}

    def load_state_dict(self, state: dict) -> None:
        self.history = [Check(**c) for c in state["history"]]
        self.start_utility, self.backtracks, self.doublings = state["start_utility"], state["backtracks"], state["doublings"]
        self.restored_at = state.get("restored_at", -1)
        self.seconds = state.get("seconds", {})
        self.truth = state.get("truth", {})
        self.best = Check(**state["best"]) if state["best"] else None
        self.snapshots = state["snapshots"]
