"""What a calibrated run measured at each check (`Check`) and how it ended (`StopInfo`, with the
summary a run prints)."""
from __future__ import annotations

from dataclasses import dataclass, field

from .settings import CalibrationSettings


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
    """The summary's line for repair or lift round i + 1 (`unlearning._repair`)."""
    lift = r.get("lift")
    return ((f"; lift round {i + 1} on the {r['records']} facts left less likely than their twins'" if lift else
             f"; repair round {i + 1} on the {r['records']} answers still given")
            + f": {r['reason']} at step {r['stopped_at']}, kept step {r['kept_step']}, utility {r['utility']:.3f}x "
            f"its start" + (f", {r['left']} still {'below' if lift else 'given'}" if r.get("left") else ""))


def _facts(truth: dict, min_ks_p: float) -> str:
    """The summary's truth-ratio gap against the twins at the kept weights and the start (docs/methods-log.md,
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
