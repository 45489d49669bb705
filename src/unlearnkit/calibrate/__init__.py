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
reference's own mean moved by more than the gap between checks: docs/methods-log.md, "The matched
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
test's tolerance is its answers check's, and stopping there left a fact or two a batch. With
`repair_twins="holdout"` a round's check measures its records against their own holdout twins (the
strangers `survivors` compared them with) instead of `reference`'s: a request home's strangers sat
3 nats below the invented twins, and rounds that stopped at the invented twins' level left people
the home's MIA check failed (docs/requests.md, "A round measures against the home's strangers").

Lift rounds. A run can also leave a group below the band: its answers less likely than its twins',
which the LOSS attack reads as surely as the reverse (a request home's MIA check failed batches on
one person at AUC 0.155). With `repair_auc`, after the repair rounds, `lift_rounds` rounds at most
take such a group's records scored below their own twins' mean (`Answers.told`, `forgotten`) and train
them back by their own NLL, from the kept weights, with the check mirrored (`Calibrator(lift=True)`:
the forget and reference scores swap places, so that the rule above, written for a descent, stops
where the records rise to the twins' level and backtracks where they pass it), against the very
twins `Answers.told` compared them with.

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
too, since Twin RMU closes it only past the answers' match (docs/methods-log.md, "The truth-ratio gap
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
  same AUC, to keep the same weights or their like (docs/methods-log.md). The same stop when the
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

from .answers import Answers, familiar, forgotten, holdout_twins, surviving
from .calibrator import Calibrator
from .settings import REASONS, UTILITY_SPLITS, CalibrationSettings, settings_from
from .statistic import TWIN_PAIRS, answer_scores, auc, encode_records, reference_records
from .stop import Check, StopInfo

__all__ = ["REASONS", "TWIN_PAIRS", "UTILITY_SPLITS", "Answers", "CalibrationSettings", "Calibrator", "Check",
           "StopInfo", "answer_scores", "auc", "encode_records", "holdout_twins", "reference_records",
           "settings_from", "surviving", "familiar", "forgotten"]
