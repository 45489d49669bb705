"""The calibrator: checks during training, and every decision of a calibrated run (the package's
docstring says the rule)."""
from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, replace

import numpy as np

from ..data.batching import collate, encode_pairs, length_batches
from ..data.io import WorldData
from ..data.twins import world_twins
from ..metrics.mia import null_auc_se
from .answers import Answers, holdout_twins
from .settings import UTILITY_SPLITS, CalibrationSettings
from .statistic import (TWIN_PAIRS, answer_scores, _answer_scores_and_exact, _lp, _mean_logprob_and_accuracy,
                        _ratios, _utility_encoding, auc, encode_records, reference_records)
from .stop import Check, StopInfo

TRUTH_SPLITS = ("forget_tr", "reference_tr", "twin_tr")  # the truth ratios' records (`truth_ratios`)


class Calibrator:
    """The `train.Monitor` that stops unlearning at the target (module docstring: the rule)."""

    def __init__(self, tokenizer, world: WorldData, settings: CalibrationSettings | None = None, *, seed: int = 0,
                 forget_stream_len: int | None = None, batch_size: int = 16, template=None, forget: list | None = None,
                 answers: Answers | None = None, lift: bool = False, reference: list | None = None):
        """`lift`: a lift round's checks (package docstring: Lift rounds), mirrored: the forget and
        reference scores swap places, so a forget set below its reference reads as one above it.
        `reference`: these records in place of `settings.reference`'s (a lift round's, and any
        round's under `repair_twins="holdout"`: the strangers `Answers` chose its records against)."""
        s = settings or CalibrationSettings()
        self.lift = lift
        forget, ref = (list(forget), list(reference)) if reference is not None else reference_records(
            world, s.reference, seed, forget)
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
        # which answers a split's records are encoded with (`_utility_encoding`): (the true one, the
        # paraphrased and perturbed ones); a truth ratio reads only the latter, utility="answers" only the former
        parts = lambda k: (k not in TRUTH_SPLITS, k in TRUTH_SPLITS or s.utility == "tofu")  # noqa: E731
        self._enc = {"forget": encode_records(tokenizer, forget, template),
                     "reference": encode_records(tokenizer, ref, template),
                     # scored whole: their names are part of what must be kept
                     **{k: _utility_encoding(tokenizer, v, template, *parts(k)) for k, v in keep.items()},
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
        self.n.update({k: len(keep[k]) for k in TRUTH_SPLITS})
        self._enc.update({k: _utility_encoding(tokenizer, keep[k], template, *parts(k)) for k in TRUTH_SPLITS})
        self._layout = {k: [len(r.perturbed_answers) for r in v] for k, v in keep.items()}
        self._parts = {k: parts(k) for k in keep}
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
        self.stride = 1         # `every` intervals to the next check (`_stride`)
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
            got = handle.score(fn or answer_scores, batch).float().cpu().numpy()
            out = np.zeros((len(self._enc[name]), *got.shape[1:])) if out is None else out
            out[idx] = got
        return out

    def _utility(self, handle) -> float:
        """TOFU's model utility on the sampled utility splits (`metrics.tofu.model_utility`), with
        the teacher-forced exact answer standing in for ROUGE (which needs generation); with
        `utility="answers"`, the lowest split's harmonic mean of the true answers' probability and
        exact rate (`_true_answers`; the splits were encoded with their true answers alone). 1.0 with
        no utility split."""
        from ..metrics.tofu import harmonic_mean, model_utility

        splits = [k for k in UTILITY_SPLITS if self.n.get(k)]
        if not splits:
            return 1.0
        if self.settings.utility == "answers":  # every split must hold, not their average
            return min(harmonic_mean(list(_true_answers(self._answer_rows(handle, k)).values())) for k in splits)
        return model_utility(self._utility_components(handle))

    def _utility_components(self, handle) -> dict[str, dict[str, float]]:
        """Per utility split: TOFU's probability (plain on retain, the paraphrase normalised against
        the perturbed answers elsewhere), truth-ratio score, and the teacher-forced exact answer
        under the key "rouge" (`utility="tofu"`: the splits' paraphrased and perturbed answers were encoded)."""
        from ..metrics import tofu

        comps = {}
        for name in UTILITY_SPLITS:
            if not self.n.get(name):
                continue
            rows = self._answer_rows(handle, name)
            # TOFU: plain probability on retain; elsewhere normalised, the paraphrase (worded as the
            # perturbed answers are) against the perturbed answers
            prob = [tofu.answer_probability(_lp(t[0])) if name == "retain" else
                    tofu.normalised_probability(_lp(a[0]), [_lp(x) for x in q]) for t, a, q in rows]
            comps[name] = {"probability": float(np.mean(prob)),
                           "truth_ratio": tofu.truth_ratio_score(_ratios(rows), forget=False), **_true_answers(rows)}
        return comps

    def _answer_rows(self, handle, name: str) -> list[tuple]:
        """Per record of `name` (encoded by `_utility_encoding`): its true, paraphrased and perturbed
        answers' rows of `_mean_logprob_and_accuracy` (the perturbed answers' log-probs only); the
        true answer's is None for the truth ratios' records, encoded without it."""
        sc, i, rows = self._scores(handle, name, _mean_logprob_and_accuracy), 0, []
        true, others = self._parts[name]
        for n_pert in self._layout[name]:
            t = sc[i] if true else None
            i += true
            rows.append((t, *((sc[i], sc[i + 1:i + 1 + n_pert, 0]) if others else (None, None))))
            i += (1 + n_pert) if others else 0
        return rows

    def truth_ratios(self, handle) -> dict | None:
        """TOFU's forget quality with the reference in the oracle's place: the KS p of the forget
        records' truth ratios (paraphrased against perturbed answers) against the reference records'
        (`metrics.tofu.forget_quality`), and each side's median log ratio; and, where two or more of
        those forget records name their subject, the truth-ratio gap against their twins, fact by fact
        (`metrics.tofu.paired_truth_gap`: `twin_gap`, `twin_gap_se`, `twin_gap_p`, `n_twins`). None
        when either side has fewer than two records with perturbed answers. Reported, not decided on
        (module docstring: Facts that survive)."""
        from ..metrics import tofu

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
        if self.lift:  # mirrored (`__init__`)
            (f, fe), (r, re_) = (r, re_), (f, fe)
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
                if u <= 0 and self.settings.floor > 0:  # until session 37 the run stopped at step 0 "at the floor"
                    raise ValueError(
                        f"the starting model's utility on the sampled {', '.join(k for k in UTILITY_SPLITS if self.n.get(k))} "
                        f"records is 0 (it gives none of their answers word for word, or one split's harmonic-mean "
                        f"component is 0): a floor of {self.settings.floor}x of it is undefined; check that the "
                        f"data is what the model was trained on, or give a budget (--steps/--epochs) or "
                        f"--calibration floor=0")
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

    def due(self, step: int) -> bool:
        """Whether the loop checks at `step` (after the first check, at step 0): `stride` intervals after
        the last check, and at the last interval the step budget allows."""
        last = self.history[-1].step if self.history else 0
        return step % self.every == 0 and (step - last >= self.stride * self.every
                                           or step >= self.budget - self.budget % self.every)

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
        self.stride = 1
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
            lr = handle.lr
            self._adjust_pace(c, handle)
            if handle.lr == lr:  # no brake or speed-up here: the pace just measured holds
                self.stride = self._stride(c)
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

    def _stride(self, c: Check) -> int:
        """How many `every` intervals to the next check, after an under check where the learning rate
        did not change: the most (a power of two, `max_stride` at most) that leaves the reference's
        level at least three strides away at the last interval's pace, and 1 near it (where the
        brake acts), within the band, with no pace, or with the utility measured here in the lower
        half of the room above the floor (the "safe" restore point's line). A check costs several
        training steps; far from the target the pace is steady and the checks between say nothing
        the next one does not."""
        pace = self._pace(c)
        if (pace is None or pace <= 0 or c.gap <= 0 or c.in_band
                or (c.utility is not None and c.utility < (1 + self.settings.floor) / 2)):
            return 1
        away = c.gap / (pace * self.every)  # intervals to the level at this pace
        stride = 1
        while stride * 2 <= self.settings.max_stride and 3 * stride * 2 <= away:
            stride *= 2
        return stride

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
                "stride": self.stride,
                "seconds": self.seconds, "truth": self.truth,
                "best": asdict(self.best) if self.best else None,
                "snapshots": self.snapshots}

    def load_state_dict(self, state: dict) -> None:
        self.history = [Check(**c) for c in state["history"]]
        self.start_utility, self.backtracks, self.doublings = state["start_utility"], state["backtracks"], state["doublings"]
        self.restored_at = state.get("restored_at", -1)
        self.stride = state.get("stride", 1)
        self.seconds = state.get("seconds", {})
        self.truth = state.get("truth", {})
        self.best = Check(**state["best"]) if state["best"] else None
        self.snapshots = state["snapshots"]


def _true_answers(rows: list[tuple]) -> dict[str, float]:
    """The true answers of `Calibrator._answer_rows`'s rows: TOFU's mean answer probability, and the
    share answered word for word (teacher-forced) under the key "rouge", which it stands in for."""
    from ..metrics import tofu

    return {"rouge": float(np.mean([t[1] for t, _, _ in rows])),
            "answer_probability": float(np.mean([tofu.answer_probability(_lp(t[0])) for t, _, _ in rows]))}
