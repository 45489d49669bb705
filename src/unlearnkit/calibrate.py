"""Calibrated forgetting: unlearning stops when the forget set looks like data the model never saw.

No oracle is needed. The reference for "never seen" is, by default, the forget set's counterfactual
twins (`data.twins`: the same questions and answers about invented people); a world's holdout split
(people of the same kind, never trained on) can serve instead (`reference="holdout"`).

The statistic. Each record's score is the mean log-probability of its answer tokens given its
question (the end-of-sequence position left out, and so are the tokens of the subject's name:
`name_masked`), from one batched scoring pass, the quantity
behind TOFU's probability, the LOSS attack and NPO. The forget set matches the reference when a
membership-inference attacker holding these scores cannot tell them apart: the ROC AUC of forget
(members) against reference (non-members) lies within 0.5 ± tolerance. Above is under-forgetting
(the forget answers are still more likely than a stranger's); below is over-forgetting (they are
*less* likely than a stranger's, which gives the set away as surely). The tolerance is the larger of
`min_tolerance` and one standard error of the AUC under the null hypothesis,
sqrt((n1 + n2 + 1) / (12 n1 n2)) (Hanley & McNeil 1982): closer than that, the data cannot tell.

Utility. The same pass scores a slice of the retain set and the neighbours (the people most at
risk): their mean per-record answer probability, relative to the starting model's, must stay at or
above `floor` (0.95). World facts are not watched (see `Calibrator.__init__`): a run can lose
general-knowledge utility the floor does not see, which the evaluation's model utility reports.

The rule, all in `Calibrator.check`:
- matched and above the floor: stop; these weights are the result.
- under and above the floor: go on; these weights become the restore point.
- over (overshot) or below the floor: go back to the restore point and halve the learning rate,
  at most `max_backtracks` times; then stop.
- under, but at the pace of the last interval the target lies beyond the step budget: double the
  learning rate (at most `max_doublings` times, and never after a backtrack). So the step size
  follows from the run's own measurements, not from a constant tuned on one world.
At the end the kept weights are the best check above the floor: a matched one first (the highest
retain utility among them), else the one nearest the target. The stop reason is one of `matched`,
`floor` (the floor was reached before the target), `overshot` (the target was passed at every
learning rate tried) or `budget` (the step budget ran out first).
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .data.batching import IGNORE, Encoded, collate, length_batches
from .data.io import WorldData
from .data.templates import parse_template
from .data.twins import mentions, twins, words_of
from .scoring import answer_logprobs

REASONS = ("matched", "floor", "overshot", "budget")


class CalibrationSettings(BaseModel):
    """How a calibrated run measures and decides (`unlearn forget --calibration key=value`)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    reference: Literal["twins", "holdout"] = Field("twins", description="what 'never seen' is measured on")
    min_ks_p: float = Field(0.05, ge=0, lt=1, description="smallest KS p-value (forget vs reference scores) that matches")
    every: int | None = Field(None, ge=1, description="steps between checks; None: a quarter epoch of the forget set")
    min_tolerance: float = Field(0.05, ge=0, lt=0.5, description="smallest accepted |AUC - 0.5|")
    floor: float = Field(0.95, ge=0, le=1, description="retain utility kept, as a fraction of the starting model's")
    max_backtracks: int = Field(4, ge=0, description="learning-rate halvings after an overshoot or a floor hit")
    max_doublings: int = Field(3, ge=0, description="learning-rate doublings when progress would miss the budget")
    max_epochs: float = Field(30.0, gt=0, description="step budget, in epochs over the forget set")
    retain_sample: int = Field(128, ge=0, description="retain and neighbour records scored for utility at each check")


@dataclass
class Check:
    step: int
    auc: float             # forget vs reference, on per-record mean answer log-prob
    ks_p: float            # two-sample KS p-value of the same scores (the shape, not only the ranks)
    tolerance: float
    state: str             # under | matched | over
    utility: float         # retain slice's mean answer probability / the starting model's
    forget_logprob: float  # means, for the log
    reference_logprob: float
    lr: float

    @property
    def distance(self) -> float:
        return abs(self.auc - 0.5)


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
    n_retain: int
    checks: int
    history: list = field(default_factory=list)

    def summary(self) -> str:
        k = self.kept
        why = {"matched": "the forget set matches the reference",
               "floor": "retain utility reached the floor before the target",
               "overshot": "the target was passed at every learning rate tried",
               "budget": "the step budget ran out before the target"}[self.reason]
        return (f"stopped: {self.reason} ({why}) at step {self.stopped_at}; kept step {self.kept_step}: "
                f"AUC {k['auc']:.3f} vs reference (target 0.5 ± {k['tolerance']:.3f}, {k['state']}), "
                f"retain utility {k['utility']:.3f}x the start")


def null_auc_se(n1: int, n2: int) -> float:
    """Standard error of the ROC AUC when both samples come from one distribution."""
    return math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(member score > non-member score) + 0.5 P(tie): the Mann-Whitney form of the ROC AUC."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(members, nonmembers).statistic / (len(members) * len(nonmembers)))


def reference_records(world: WorldData, kind: str, seed: int = 0):
    """(forget records used, reference records): twins of the forget records that name their
    subject, or the holdout split. A one-line ValueError says when neither can be had."""
    if kind == "holdout":
        if not world.holdout:
            raise ValueError("calibration reference 'holdout': the data has no holdout split; use reference=twins")
        return list(world.forget), list(world.holdout)
    named = [r for r in world.forget if mentions(r)]
    if not named:
        raise ValueError("calibration reference 'twins': no forget question names its subject, so no twin can "
                         "be made; use reference=holdout, or a fixed budget (--steps/--epochs)")
    corpus = [t for split in (world.forget, world.retain, world.neighbours, world.holdout, world.world_facts)
              for r in split for t in (r.subject, r.question, r.answer, *r.alt_questions)]
    corpus += [d.text for split in (world.forget_docs, world.retain_docs, world.neighbours_docs) for d in split]
    return named, twins(named, words_of(corpus), seed)


def name_masked(tokenizer, records, template=None, mask_names: bool = True) -> list[tuple[list[int], int, list[int]]]:
    """(input ids, prompt length, answer positions that are not the subject's name) per record
    (`mask_names=False`: every answer position).

    The statistic compares forget records with twins whose names were swapped, so the name's own
    tokens (memorised for a real person, unseen for an invented one) must not decide it: they are
    left out of the score, and only the fact is compared. "Linine Vigormont was born in Thornwick."
    is scored on "was born in Thornwick." (and the end of sequence). A tokenizer without character
    offsets scores the whole answer."""
    import re

    from .data.batching import answer_text, encode_prompt
    from .data.twins import name_parts

    tpl = parse_template(template)
    out = []
    for r in records:
        q = encode_prompt(tokenizer, r.question, tpl)
        text = answer_text(r.question, r.answer, tpl)
        try:
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, KeyError, TypeError, ValueError):
            enc, offsets = tokenizer(text, add_special_tokens=False), None
        a = list(enc["input_ids"])
        spans = [m.span() for w in (name_parts(r.subject) if mask_names else []) for m in re.finditer(r"\b" + re.escape(w) + r"\b", text)]
        keep = [len(q) + i for i in range(len(a))
                if offsets is None or not any(s < e2 and s2 < e for (s2, e2) in [offsets[i]] for s, e in spans)]
        keep.append(len(q) + len(a))  # the end of sequence
        out.append((q + a + [tokenizer.eos_token_id], len(q), keep))
    return out


def _collate_masked(rows, pad_id: int) -> dict:
    """Right-padded batch whose labels cover only the kept answer positions."""
    batch = collate([Encoded(ids, n) for ids, n, _ in rows], pad_id)
    labels = torch.full_like(batch["labels"], IGNORE)
    for i, (ids, _, keep) in enumerate(rows):
        labels[i, keep] = batch["input_ids"][i, keep]
    batch["labels"] = labels
    return batch


def _answer_scores(model, batch, ctx=None):
    """Per-row mean answer-token log-prob, the last (end-of-sequence) position left out."""
    out = answer_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    m = out["mask"]
    last = m & (m.cumsum(-1) == m.sum(-1, keepdim=True))
    keep = m & ~last
    keep = torch.where(keep.any(-1, keepdim=True), keep, m)  # a one-token answer keeps its eos
    return (out["logprobs"] * keep).sum(-1) / keep.sum(-1).clamp_min(1)


class Calibrator:
    """The `train.Monitor` that stops unlearning at the target (module docstring: the rule)."""

    def __init__(self, tokenizer, world: WorldData, settings: CalibrationSettings | None = None, *, seed: int = 0,
                 forget_stream_len: int | None = None, batch_size: int = 16, template=None):
        self.settings = s = settings or CalibrationSettings()
        forget, ref = reference_records(world, s.reference, seed)
        rng = random.Random(seed)
        # retain and neighbours (the people most at risk), sampled together; world facts are left out:
        # their raw answer probability falls with any ascent while TOFU's utility (which normalises it
        # against the perturbed answers) barely moves, so a floor on it stopped runs that kept utility
        pool = list(world.retain) + list(world.neighbours)
        retain = rng.sample(pool, min(len(pool), s.retain_sample))
        self.n = {"forget": len(forget), "reference": len(ref), "retain": len(retain)}
        self._enc = {"forget": name_masked(tokenizer, forget, template),
                     "reference": name_masked(tokenizer, ref, template),
                     # scored whole: their names are part of what must be kept
                     "retain": name_masked(tokenizer, retain, template, mask_names=False)}
        self.pad_id = tokenizer.pad_token_id
        per_epoch = math.ceil((forget_stream_len or len(forget)) / batch_size)
        self.every = s.every or max(1, round(per_epoch / 4))
        self.budget = max(self.every, math.ceil(s.max_epochs * per_epoch))
        self.tolerance = max(s.min_tolerance, null_auc_se(len(forget), len(ref)))
        self.history: list[Check] = []
        self.start_prob: float | None = None  # the retain slice's mean answer probability at the first check
        self.backtracks = 0
        self.doublings = 0
        self.best: Check | None = None
        self.snapshots: dict[str, dict] = {}   # "restore" and "best": trainable weights
        self.reason: str | None = None

    @property
    def start(self) -> Check | None:
        return self.history[0] if self.history else None

    # ------------------------------------------------------------------ measuring
    def _scores(self, handle, name: str) -> np.ndarray:
        enc, out = self._enc[name], np.zeros(len(self._enc[name]))
        for idx in length_batches([len(ids) for ids, _, _ in enc], 8192, 128):
            batch = _collate_masked([enc[i] for i in idx], self.pad_id)
            out[idx] = handle.score(_answer_scores, batch).float().cpu().numpy()
        return out

    def measure(self, step: int, handle) -> Check:
        from scipy.stats import ks_2samp

        f, r = self._scores(handle, "forget"), self._scores(handle, "reference")
        prob = float(np.exp(self._scores(handle, "retain")).mean()) if self.n["retain"] else 1.0
        if self.start_prob is None:
            self.start_prob = prob
        utility = prob / max(self.start_prob, 1e-12)

        a, ks_p = auc(f, r), float(ks_2samp(f, r).pvalue)
        matched = abs(a - 0.5) <= self.tolerance and ks_p >= self.settings.min_ks_p
        state = "matched" if matched else ("under" if a >= 0.5 else "over")
        return Check(step, a, ks_p, self.tolerance, state, utility, float(f.mean()),
                     float(r.mean()), handle.lr)

    # ------------------------------------------------------------------ deciding
    def _better(self, c: Check) -> bool:
        b = self.best
        if b is None:
            return True
        key = lambda x: (x.state == "matched", x.utility if x.state == "matched" else -x.distance)  # noqa: E731
        return key(c) > key(b)

    def check(self, step: int, handle) -> bool:
        c = self.measure(step, handle)
        self.history.append(c)
        handle.log({"check": asdict(c)})
        above = c.utility >= self.settings.floor
        if above and self._better(c):
            self.best = c
            self.snapshots["best"] = handle.snapshot()
        if c.state == "matched" and above:
            self.reason = "matched"
            return True
        if c.state == "under" and above:
            self.snapshots["restore"] = self.snapshots["best"] if self.best is c else handle.snapshot()
            self._maybe_speed_up(c, handle)
            return False
        # overshot, or below the floor: back to the last point short of the target, at half the lr
        if self.backtracks < self.settings.max_backtracks and "restore" in self.snapshots:
            self.backtracks += 1
            handle.restore(self.snapshots["restore"])
            handle.scale_lr(0.5)
            handle.log({"backtrack": {"step": step, "to_lr": handle.lr, "why": c.state if above else "floor"}})
            return False
        self.reason = "floor" if not above else "overshot"
        return True

    def _maybe_speed_up(self, c: Check, handle) -> None:
        """Too slow for the budget, at the pace of the last interval: double the learning rate (never
        after a backtrack, which means a larger rate already went too far)."""
        if len(self.history) < 2 or self.backtracks or self.doublings >= self.settings.max_doublings:
            return
        prev = self.history[-2]
        pace = (prev.auc - c.auc) / max(1, c.step - prev.step)  # AUC per step
        left = c.auc - 0.5 - self.tolerance
        if pace <= 0 or left / pace > self.budget - c.step:
            self.doublings += 1
            handle.scale_lr(2.0)
            handle.log({"speed_up": {"step": c.step, "to_lr": handle.lr, "pace": pace}})

    def finish(self, step: int, handle) -> StopInfo:
        reason = self.reason or "budget"
        if self.best is not None:
            handle.restore(self.snapshots["best"])
        kept = self.best or self.start
        info = StopInfo(reason, step, kept.step, asdict(kept), asdict(self.start), self.backtracks, self.doublings,
                        self.settings.reference, self.n["forget"], self.n["reference"], self.n["retain"],
                        len(self.history), [asdict(c) for c in self.history])
        handle.log({"stopped": {k: v for k, v in asdict(info).items() if k != "history"}})
        return info

    # ------------------------------------------------------------------ resuming
    def state_dict(self) -> dict:
        return {"history": [asdict(c) for c in self.history], "start_prob": self.start_prob,
                "backtracks": self.backtracks, "doublings": self.doublings, "best": asdict(self.best) if self.best else None,
                "snapshots": self.snapshots}

    def load_state_dict(self, state: dict) -> None:
        self.history = [Check(**c) for c in state["history"]]
        self.start_prob, self.backtracks, self.doublings = state["start_prob"], state["backtracks"], state["doublings"]
        self.best = Check(**state["best"]) if state["best"] else None
        self.snapshots = state["snapshots"]
