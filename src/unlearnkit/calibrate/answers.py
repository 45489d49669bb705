"""The forget answers a run leaves given where their twins' are not: what a repair round takes
(`Answers.survivors`, `surviving`); and what a lift round takes (`Answers.told`, `forgotten`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.io import DataError, WorldData
from ..data.templates import parse_template
from ..data.twins import world_twins
from ..metrics.mia import auc, loss_score
from ..metrics.twins import beyond
from .settings import CalibrationSettings


def surviving(forget: list, answered: np.ndarray, twin_answered: np.ndarray, tolerance: float,
              by: str = "set") -> list[str]:
    """The forget records a repair round unlearns again: where a group (the forget set as a whole,
    or with `by="subject"` each subject's records) has more of its answers given than its twins
    have (`answered`: per record, 0 or 1; `twin_answered`: per record, the share of its twins whose
    answer is given) by more than `tolerance`, its records answered none of whose twins' answers is
    given (an answer a stranger gets too is not the person's to forget). Returns their ids."""
    out = []
    for idx in _groups(forget, by):
        if beyond(answered[idx].mean() - twin_answered[idx].mean(), tolerance):
            out += [forget[i].id for i in idx if answered[i] and not twin_answered[i]]
    return out


def familiar(forget: list, mine: list[float], theirs: list[list[float]], tolerance: float,
             by: str = "set") -> list[str]:
    """The forget records a repair round takes where a group (as in `surviving`) is still told from
    its twins, however few answers it gives: the LOSS attack's ROC AUC of the group's answer scores
    (`mine`, per record) against all its twins' (`theirs`, per record; records without twins left
    out) above 0.5 + `tolerance` (a request home's MIA check: `requests.verify.mia_check`). Its
    records scored above their own twins' mean: those the model still favours. Returns their ids."""
    return _told_apart(forget, mine, theirs, tolerance, by, above=True)


def forgotten(forget: list, mine: list[float], theirs: list[list[float]], tolerance: float,
              by: str = "set") -> list[str]:
    """`familiar`'s mirror, what a lift round takes: where a group's AUC is below 0.5 - `tolerance`
    (over-forgotten: its answers less likely than its twins', which gives the set away as surely),
    its records scored below their own twins' mean. Returns their ids."""
    return _told_apart(forget, mine, theirs, tolerance, by, above=False)


def _told_apart(forget: list, mine: list[float], theirs: list[list[float]], tolerance: float, by: str,
                above: bool) -> list[str]:
    out, sign = [], 1 if above else -1
    for idx in _groups(forget, by, keep=lambda i: len(theirs[i]) > 0):
        if beyond(sign * (auc([mine[i] for i in idx], [t for i in idx for t in theirs[i]]) - 0.5), tolerance):
            out += [forget[i].id for i in idx if sign * (mine[i] - float(np.mean(theirs[i]))) > 0]
    return out


def _groups(forget: list, by: str, keep=None) -> list[list[int]]:
    """Positions of `forget` (those `keep` holds, all by default) by group: the set as one, or with
    `by="subject"` each subject's."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(forget):
        if keep is None or keep(i):
            groups.setdefault(r.subject if by == "subject" else "", []).append(i)
    return list(groups.values())


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
        from ..attacks.recovery import contains_answer
        from ..scoring import LM

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

    def survivors(self, settings: CalibrationSettings, model=None, tokenizer=None, template=None) -> list[str]:
        """The records a repair round takes (`surviving`). Generated answers, because the word-for-word
        count of the checks' scoring pass misses answers given further into a free answer ("Tell me
        about X."). With `settings.repair_auc` (and the model), also `familiar`'s records, after them."""
        return self.told(settings, model, tokenizer, template)[0]

    def told(self, settings: CalibrationSettings, model=None, tokenizer=None, template=None) -> tuple[list[str], list[str]]:
        """(`survivors`, the records a lift round takes: `forgotten`'s), from one scoring pass of the
        model; with no `settings.repair_auc` (or no model), no scores and nothing to lift."""
        ids = surviving(self.named, self.mine, self.theirs, settings.repair_tolerance, settings.repair_by)
        if settings.repair_auc is None or model is None or not self.named:
            return ids, []
        mine, theirs = self._scores(model, tokenizer, template)
        have = set(ids)
        return (ids + [i for i in familiar(self.named, mine, theirs, settings.repair_auc, settings.repair_by)
                       if i not in have],
                forgotten(self.named, mine, theirs, settings.repair_auc, settings.repair_by))

    def _scores(self, model, tokenizer, template=None) -> tuple[list[float], list[list[float]]]:
        """The LOSS attack's score of each record's answer, and of its twins' (`mia.loss_score`)."""
        from ..scoring import LM

        lm = LM(model, tokenizer, template=parse_template(template))
        tw = [t for ts in self.twins for t in ts]
        scores = [loss_score(x) for x in lm.score([r.question for r in self.named + tw],
                                                  [r.answer for r in self.named + tw])]
        mine, k, theirs = scores[:len(self.named)], len(self.named), []
        for ts in self.twins:
            theirs.append(scores[k:k + len(ts)])
            k += len(ts)
        return mine, theirs
