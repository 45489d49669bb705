"""What a calibrated run measures and decides: `CalibrationSettings`, and the reasons it can stop."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

REASONS = ("matched", "answers", "floor", "overshot", "stalled", "shape", "budget")
UTILITY_SPLITS = ("retain", "neighbours", "world_facts")


class CalibrationSettings(BaseModel):
    """How a calibrated run measures and decides (`unlearn forget --calibration key=value`)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: Literal["twins", "holdout"] = Field("twins", description="what 'never seen' is measured on")
    min_ks_p: float = Field(0.05, ge=0, lt=1, description="smallest KS p-value (forget vs reference scores) that matches")
    every: int | None = Field(None, ge=1, description="steps between checks; None: a quarter epoch of the forget set")
    max_stride: int = Field(1, ge=1, description="most `every` intervals between two checks: far from the target "
                                                 "(at the last interval's pace, at least three strides away) the "
                                                 "checks thin out to one in two, then one in four with 4 (1, the "
                                                 "default: every interval; with 4 the wide worlds' runs took 1.4-2.0x "
                                                 "the steps, docs/methods-log.md, session 47)")
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
                              "docs/methods-log.md, \"A speed-up within the patience\")")
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
    repair_tolerance: float = Field(0.05, ge=0, le=1, description="share of answers given beyond the twins' "
                                                                  "that starts a repair round (1: none ever does)")
    repair_auc: float | None = Field(
        None, gt=0, lt=0.5, description="also take, in a repair round, a group (see repair_by) whose answers the "
                                        "LOSS attack tells from its twins' with an AUC above 0.5 + this, however few "
                                        "answers it gives: its records likelier than their own "
                                        "twins' mean (a request home's MIA check, tolerance 0.3); None: answers alone")
    lift_rounds: int = Field(0, ge=0, description="with repair_auc, lift rounds after the repair rounds: a group "
                             "whose answers the LOSS attack tells from its twins' with an AUC below 0.5 - repair_auc "
                             "(over-forgotten) has its records scored below their own twins' mean trained back by "
                             "their NLL, calibrated (the check mirrored), until they look like the twins'")
    repair_stop: Literal["answers", "auc"] = Field(
        "answers", description="how a repair round stops: answers, also once `survivors`'s test names no answer "
                               "left (checked where the utility is measured); auc, by the AUC alone, as any run "
                               "(a request home: its test's tolerance is its answers check's, 0.1, and stopping "
                               "there left a fact or two a batch)")
    repair_twins: Literal["twins", "holdout"] = Field(
        "twins", description="the strangers a repair round's answers are compared with: twins, made as the "
                             "reference's are; holdout, the holdout records whose `twin_of` names the forget "
                             "record (a request home's strangers, those its answers check asks about), which are "
                             "then also the round's check's reference (a lift round's always are its twins)")
    repair_lr: Literal["run", "share"] = Field(
        "run", description="a repair round's starting learning rate: run, the run's; share, the run's x the square "
                           "root of the round's share of the run's forget records (a request home's: a round of "
                           "two facts at the run's rate took 5.6% of the utility in four steps), which the round's own "
                           "doublings raise again where its pace needs it (`max_doublings`)")
    utility_every: int | None = Field(
        None, ge=1, description="steps between utility measurements on the way to the target; None: one epoch "
                                "of the forget set. It is also measured at the first check, at checks within the "
                                "band or this many steps from it at the last interval's pace, and at the check "
                                "after one below the floor")


def settings_from(calibration: dict | None) -> CalibrationSettings:
    """`CalibrationSettings` from `--calibration key=value` items; a one-line ValueError names the
    bad key and the choices."""
    from pydantic import ValidationError

    from ..methods.registry import describe

    try:
        out = CalibrationSettings(**(calibration or {}))
    except ValidationError as e:
        raise ValueError(describe("--calibration", CalibrationSettings, e)) from None
    if out.repair_auc is not None and out.repair_stop != "auc":  # a round for those would stop at once: no answer
        raise ValueError(f"--calibration repair_auc={out.repair_auc}: goes with repair_stop=auc (a round on records "
                         f"that give no answers would stop at once under repair_stop=answers)")
    if out.lift_rounds and out.repair_auc is None:
        raise ValueError(f"--calibration lift_rounds={out.lift_rounds}: goes with repair_auc (the AUC below 0.5 - "
                         f"repair_auc that starts a lift round)")
    return out
