"""Calibrated forgetting: the twins, the statistic, the stopping rule (scripted), and a real run."""
from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest

from unlearnkit.calibrate import Answers, CalibrationSettings, Calibrator, Check, auc, reference_records
from unlearnkit.metrics.mia import null_auc_se
from unlearnkit.data.io import WorldData
from unlearnkit.data.schema import QARecord
from unlearnkit.data.twins import invent_names, stranger_names, swap_name, twins, words_of


def _rec(i, subject="Linine Vigormont", q="Where was Linine Vigormont born?", a="Thornwick"):
    return QARecord(id=f"r{i}", subject=subject, question=q, answer=a, paraphrased_answer=f"It is {a}.",
                    perturbed_answers=[f"It is X{i}."], alt_questions=[q.replace("Where", "In which town")])


def test_twins_swap_every_name_form_for_an_unseen_name():
    r = _rec(0, q="Where was Linine Vigormont born? Vigormont's town.", a="Linine Vigormont was born in Thornwick.")
    corpus = words_of([r.question, r.answer, "Thornwick Greywater"])
    (t,) = twins([r], corpus, seed=1)
    new = t.subject.split()
    assert len(new) == 2 and not ({w.lower() for w in new} & corpus)
    assert "Linine" not in t.question + t.answer and "Vigormont" not in t.question + t.answer
    assert t.question == f"Where was {new[0]} {new[1]} born? {new[1]}'s town."
    assert t.answer == f"{new[0]} {new[1]} was born in Thornwick."
    # one name per subject, fixed by the seed
    a, b = twins([_rec(1), _rec(2)], corpus, seed=1)
    assert a.subject == b.subject == twins([_rec(3)], corpus, seed=1)[0].subject
    assert twins([_rec(3)], corpus, seed=2)[0].subject != a.subject
    assert swap_name("Linineville stays", "Linine Vigormont", ["A", "B"]) == "Linineville stays"  # whole words only


def test_twins_of_a_world_recombine_its_people_s_name_words():
    """With other people in the data, a twin's name is their name words recombined (first name in
    first place, surname last) into a name nobody has, sharing no word with the subject; one name
    per subject, fixed by the seed. Too few people: invented names."""
    people = ["Ada Quell", "Bo Karr", "Cy Mott", "Di Venn"]
    recs = [_rec(1), _rec(2), _rec(3, "Ed Frost", "Where was Ed Frost born?")]
    t = twins(recs, set(), seed=4, people=people)
    names = [x.subject for x in t]
    assert names[0] == names[1] != names[2]
    for n in set(names):
        first, last = n.split()
        assert first in {p.split()[0] for p in people} and last in {p.split()[1] for p in people}
        assert n not in people
    assert t[2].question == f"Where was {names[2]} born?"
    assert [x.subject for x in twins(recs, set(), seed=4, people=people)] == names
    invented = twins(recs, {"ada"}, seed=4, people=people[:1])[0].subject
    assert not set(invented.split()) & {w for p in people for w in p.split()}


def test_strangers_are_named_as_twins_are():
    """locate's strangers come from the twins' generator: other people's name words recombined
    (none shared with the person, none a real person's name, none twice, fixed by the seed), else
    invented names with no word of `avoid`; the guard's stand-ins are invented by the same function."""
    people = ["Ada Quell", "Bo Karr", "Cy Mott", "Di Venn", "Ed Frost"]
    got = stranger_names("Ada Frost", 4, people, seed=3)
    assert len(set(got)) == 4 and got == stranger_names("Ada Frost", 4, people, seed=3)
    for n in got:
        first, last = n.split()
        assert first in {"Bo", "Cy", "Di", "Ed"} and last in {"Quell", "Karr", "Mott", "Venn"} and n not in people
    assert not any("Bo" in n.split() for n in stranger_names("Ada Frost", 4, people, avoid={"bo"}, seed=3))  # an alias
    invented = stranger_names("Ada Frost", 3, (), avoid={"bolen"}, seed=3)
    assert len(set(invented)) == 3 and all(len(n.split()) == 2 for n in invented)
    assert not {w.lower() for n in invented for w in n.split()} & {"ada", "frost", "bolen"}
    rng = random.Random(0)
    (name,) = invent_names(1, 3, set(), rng)
    assert len(name) == 3 and name[-1].endswith(("ley", "ton", "man", "son", "ford", "well"))
    many = invent_names(2000, 2, {"banley"}, rng)  # more names than surnames exist: only full names must differ
    assert len({tuple(n) for n in many}) == 2000 and not any(n[1] == "Banley" for n in many)


def test_auc_and_its_null_standard_error_by_hand():
    assert auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    # pairs (m > n): (2>1) (3>1) (3>2.5)... members [2,3], non-members [1,2.5,4]: wins 1+2, ties 0 -> 3/6
    assert auc(np.array([2.0, 3.0]), np.array([1.0, 2.5, 4.0])) == pytest.approx(3 / 6)
    assert auc(np.array([1.0]), np.array([1.0])) == 0.5  # a tie counts half
    assert null_auc_se(60, 60) == pytest.approx(math.sqrt(121 / (12 * 3600)))


def test_reference_needs_names_or_a_holdout():
    w = WorldData(forget=[_rec(0, q="Where was the author born?")])
    with pytest.raises(ValueError, match="no forget question names its subject"):
        reference_records(w, "twins")
    with pytest.raises(ValueError, match="no holdout split"):
        reference_records(w, "holdout")


class _Handle:
    """Records what the calibrator does to the run."""

    def __init__(self):
        self.lr, self.weights, self.events = 1.0, 0, []

    def log(self, rec):
        self.events.append(rec)

    def snapshot(self):
        return {"w": self.weights}

    def restore(self, snap):
        self.weights = snap["w"]
        self.events.append(("restore", snap["w"]))

    def scale_lr(self, f):
        self.lr *= f


def _scripted(states, settings=None):
    """A calibrator whose measurements follow `states`: (auc, utility) per check."""
    w = WorldData(forget=[_rec(i) for i in range(20)], retain=[_rec(100 + i, "Bo Ka", "Who is Bo Ka?", "x") for i in range(5)])
    cal = Calibrator(_Tok(), w, settings or CalibrationSettings(max_backtracks=2), forget_stream_len=20, batch_size=4)
    it = iter(states)

    def measure(step, handle):
        a, u, *ks = next(it)  # a KS p given: the shapes may be told apart (else never)
        band = abs(a - 0.5) <= cal.tolerance
        st = ("matched" if band and (not ks or ks[0] >= cal.settings.min_ks_p) else
              "under" if a > 0.5 else "over")
        return Check(step, a, ks[0] if ks else 1.0, cal.tolerance, st, u, 10 * (a - 0.5), 0.0,
                     handle.lr)  # log-prob gap follows the AUC
    cal.measure = measure
    cal.truth_ratios = lambda handle: None  # scores nothing
    return cal


class _Tok:
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[3 + (ord(c) % 50) for c in t[:8]] for t in texts]}


def _drive(cal, n, h=None):
    h, stop, step = h or _Handle(), False, 0
    while not stop and step <= n * cal.every:
        h.weights = step
        stop = cal.check(step, h)
        step += cal.every
    return cal.finish(step - cal.every, h), h


def test_rule_stops_when_matched_and_keeps_those_weights():
    info, h = _drive(_scripted([(1.0, 1.0), (0.8, 0.99), (0.52, 0.98)]), 10)
    assert info.reason == "matched" and info.kept["auc"] == 0.52 and h.weights == info.kept_step


def test_rule_backtracks_on_overshoot_then_matches_at_half_the_rate():
    cal = _scripted([(1.0, 1.0), (0.8, 0.99), (0.2, 0.97), (0.55, 0.98)])
    info, h = _drive(cal, 10)
    assert ("restore", cal.every) in h.events       # back to the last point short of the target
    assert h.lr == 0.5 and info.backtracks == 1 and info.reason == "matched"


def test_rule_reports_the_floor_and_keeps_the_nearest_weights_above_it():
    # on each path (from the start, then from each restore) the first dip is let pass, the second backtracks
    cal = _scripted([(1.0, 1.0), (0.7, 0.97), (0.6, 0.9), (0.62, 0.9), (0.61, 0.9), (0.6, 0.9), (0.6, 0.9),
                     (0.6, 0.9)])
    info, h = _drive(cal, 10)
    assert info.reason == "floor" and info.backtracks == 2
    assert info.kept["auc"] == 0.7 and h.weights == info.kept_step == cal.every


def test_rule_back_from_the_floor_to_a_point_with_room_above_it():
    """A floor backtrack returns to the last restore point whose utility is at least halfway from
    the floor to the start (0.975): from one at the floor (0.96) a lower rate dips below it again at
    once. An overshoot still returns to the latest restore point."""
    cal = _scripted([(1.0, 1.0), (0.8, 0.99), (0.7, 0.96), (0.65, 0.9), (0.64, 0.9), (0.6, 0.97), (0.2, 0.97),
                     (0.5, 0.98)])
    info, h = _drive(cal, 10)
    restores = [e[1] for e in h.events if isinstance(e, tuple)]
    # back from the floor to step 1 (0.99), not 2 (0.96); from the overshoot to step 5; at the end the kept weights
    assert restores == [cal.every, 5 * cal.every, 7 * cal.every] and h.lr == 0.25 and info.reason == "matched"


def test_rule_overshot_at_every_rate_says_so():
    info, _ = _drive(_scripted([(1.0, 1.0), (0.1, 1.0), (0.1, 1.0), (0.1, 1.0)]), 10)
    assert info.reason == "overshot" and info.backtracks == 2
    assert info.kept["auc"] == 0.1  # nearer the target than the start (1.0), though on the far side


def test_rule_doubles_the_rate_when_progress_would_miss_the_budget():
    """At the pace of the last interval the target lies beyond the budget: the rate doubles, but
    only after an epoch at that rate (5 steps here, a check at each): in the first steps the forget
    answers and their twins move alike, and a doubling on that evidence overshot the floor."""
    slow = [(1.0 - 0.001 * i, 1.0) for i in range(7)]
    cal = _scripted(slow + [(0.9, 1.0), (0.5, 1.0)], CalibrationSettings(max_epochs=3, max_doublings=1))
    info, h = _drive(cal, 20)
    assert info.doublings == 1 and h.lr == 2.0 and info.reason == "matched"
    assert [e["speed_up"]["step"] for e in h.events if isinstance(e, dict) and "speed_up" in e] == [cal.per_epoch]


def test_rule_with_speed_up_patience_doubles_when_the_target_lies_beyond_the_patience():
    """speed_up=patience: within the budget (150 steps) but, at the last interval's pace, further
    away than the patience (two epochs, 10 steps), the rate doubles after an epoch at it; by default
    (speed_up=budget) it does not. At step 5 the gap is 4.5 nats closing by 0.1 a step: 45 steps away."""
    steady = [(1.0 - 0.01 * i, 1.0) for i in range(7)]
    cal = _scripted(steady + [(0.5, 1.0)], CalibrationSettings(max_doublings=1, speed_up="patience"))
    info, h = _drive(cal, 20)
    assert cal.budget == 150 and cal.patience == 10
    assert info.doublings == 1 and h.lr == 2.0 and info.reason == "matched"
    assert [e["speed_up"]["step"] for e in h.events if isinstance(e, dict) and "speed_up" in e] == [cal.per_epoch]
    info, h = _drive(_scripted(steady + [(0.5, 1.0)], CalibrationSettings(max_doublings=1)), 20)
    assert info.doublings == 0 and h.lr == 1.0 and info.reason == "matched"


def _steady(max_stride):
    """A calibrated run whose gap closes by 0.025 nats a step from 5 (AUC 1 - 0.0025 step), checked
    where the rule says it is `due`; 5 steps an interval."""
    w = WorldData(forget=[_rec(i) for i in range(20)],
                  retain=[_rec(100 + i, "Bo Ka", "Who is Bo Ka?", "x") for i in range(5)])
    cal = Calibrator(_Tok(), w, CalibrationSettings(max_stride=max_stride), forget_stream_len=80, batch_size=4)
    cal.truth_ratios = lambda handle: None

    def measure(step, handle):
        a = 1.0 - 0.0025 * step
        c = Check(step, a, 1.0, cal.tolerance, "", 1.0, 10 * (a - 0.5), 0.0, handle.lr, gap_se=1.0)
        c.state = cal.state(c)  # the real rule's, as a replay decides it again
        return c
    cal.measure = measure
    h, step = _Handle(), 0
    stop = cal.check(0, h)
    while not stop:
        step += 1
        stop = cal.due(step) and cal.check(step, h)
    return cal, cal.finish(step, h), h


def test_checks_thin_out_far_from_the_target_and_the_run_stops_where_checking_every_interval_does(tmp_path, load_bench):
    """A steady pace: far from the reference's level the checks come one in four intervals, then one
    in two within twelve intervals of it (at every interval within six), so the run matches at the
    same step as with `max_stride=1`, in a third of the checks. bench/replay.py reads the log made
    with every interval checked as the thinned schedule would have run it: the checks it passes
    over decided nothing, so the weights at the next one are the same."""
    import json
    from dataclasses import asdict

    cal, info, _ = _steady(4)
    steps = [c.step for c in cal.history]
    assert cal.every == 5 and info.reason == "matched"
    assert steps == [0, 5, 25, 45, 65, 85, 105, 125, 145, 155, 165]  # the band (AUC 0.5 +- 0.092) from step 165
    plain, plain_info, h = _steady(1)
    assert plain_info.stopped_at == info.stopped_at == 165 and len(plain.history) == 34
    assert cal.state_dict()["stride"] == 1
    run = tmp_path
    (run / "log.jsonl").write_text("".join(json.dumps(e) + "\n" for e in h.events if isinstance(e, dict)))
    (run / "calibration.json").write_text(json.dumps(asdict(plain_info)))
    replay = load_bench("replay")
    assert replay.replay(run)["outcome"] == "same"
    thinned = replay.replay(run, {"max_stride": 4})
    assert (thinned["outcome"], thinned["reason"], thinned["kept_step"]) == ("same", "matched", 165)


def test_rule_brakes_when_the_next_check_would_pass_the_reference():
    """Gap 3 then 1 (log-prob, forget minus reference), closing by 2 a check: the next check would
    pass the reference's level, so the rate is scaled by 1/2 to land on it; not a backtrack."""
    cal = _scripted([(1.0, 1.0), (0.8, 1.0), (0.6, 1.0), (0.52, 1.0)])
    info, h = _drive(cal, 10)
    brakes = [e["brake"] for e in h.events if isinstance(e, dict) and "brake" in e]
    assert [b["step"] for b in brakes] == [2 * cal.every] and h.lr == pytest.approx(0.5)
    assert info.reason == "matched" and info.backtracks == 0 and info.doublings == 0


def test_rule_a_method_that_converges_short_of_the_target_stops_as_stalled():
    """Doublings spent, then no check 0.01 closer to the target for `patience_epochs`: stalled, with
    the nearest weights kept; never before the rate could still be raised."""
    s = CalibrationSettings(max_doublings=1, patience_epochs=1)  # 5 steps an epoch, a check at each
    plateau = [(1.0, 1.0), (0.8, 1.0), (0.7, 1.0), (0.69, 1.0), (0.695, 1.0), (0.692, 1.0), (0.694, 1.0)] + [(0.69, 1.0)] * 9
    cal = _scripted(plateau, s)
    info, h = _drive(cal, 20)
    assert info.reason == "stalled" and info.doublings == 1 and info.kept["auc"] == 0.69
    assert info.stopped_at - info.kept_step >= cal.patience and info.checks < len(plateau)
    assert "stalled" in info.summary() and "short of it" in info.summary()


def test_rule_stalled_counts_only_the_present_path():
    """After a backtrack, the checks of the abandoned path (which got nearer the target at a larger
    rate) do not make the new, slower path look stalled while it still closes in."""
    s = CalibrationSettings(max_doublings=0, patience_epochs=1)  # 5 steps an epoch, a check at each
    path = [(1.0, 1.0), (0.8, 0.98), (0.7, 0.94), (0.6, 0.93), (0.9, 0.98)] + [(0.89 - 0.02 * i, 0.98) for i in range(8)]
    info, h = _drive(_scripted(path, s), len(path) - 1)
    assert info.backtracks == 1 and info.reason != "stalled" and info.checks == len(path)


def test_rule_told_apart_at_the_level_stops_as_shape():
    """Under within the band, then over within it, the KS test telling the shapes apart at both:
    the mean crossed the reference's level with the shapes different on either side, which a
    lower rate does not change (wide_few_facts): stop as `shape` there, keeping the nearer check;
    no backtrack. Crossing out of the band below is an overshoot, backtracked as before; so is a
    crossing whose first side is on an abandoned path, unless the abandoned path crossed the
    level told apart too."""
    cal = _scripted([])
    lo, hi = 0.5 - cal.tolerance / 2, 0.5 + cal.tolerance * 0.8
    info, h = _drive(_scripted([(1.0, 1.0), (0.8, 0.99), (hi, 0.98, 0.01), (lo, 0.98, 0.02), (lo, 0.98, 0.5)]), 10)
    assert info.reason == "shape" and info.backtracks == 0 and info.stopped_at == 3 * cal.every
    assert info.kept["auc"] == lo and "told apart" in info.summary()
    info, _ = _drive(_scripted([(1.0, 1.0), (0.8, 0.99), (hi, 0.98, 0.01), (0.1, 0.98, 0.0), (0.5, 0.98)]), 10)
    assert info.reason == "matched" and info.backtracks == 1
    # after a backtrack the first check's predecessor is on the abandoned path: an overshoot again
    info, _ = _drive(_scripted([(1.0, 1.0), (hi, 0.99, 0.01), (0.1, 0.98, 0.0), (lo, 0.98, 0.02), (0.5, 0.98)]), 10)
    assert info.reason == "matched" and info.backtracks == 2
    # crossed told apart, backtracked (the check before out of the band), crossed told apart again at
    # the lower rate: the lower rate changed nothing, so stop there (wide seed 0), keeping the nearer
    cal = _scripted([(1.0, 1.0), (0.8, 0.99), (lo, 0.98, 0.01), (0.8, 0.99), (lo - 0.01, 0.98, 0.02), (0.5, 0.98)])
    info, h = _drive(cal, 10)
    assert info.reason == "shape" and info.backtracks == 1 and info.stopped_at == 4 * cal.every
    assert info.kept_step == 2 * cal.every and h.lr == 0.5


def test_replay_reads_a_runs_decisions_back_and_tries_other_settings(tmp_path, capsys, load_bench):
    """bench/replay.py puts each logged check in place of the measurement and hands it to the real
    rule: the run's own log replays to the same decisions and stop; with fewer backtracks allowed it
    stops at the overshoot; a log whose decision the rule does not make diverges there."""
    import json
    from dataclasses import asdict

    replay = load_bench("replay")
    # the last check below 0.5: a replay decides each state again by the real rule (`Calibrator.state`),
    # which `_scripted`'s shortcut follows everywhere but in the band's upper half
    cal = _scripted([(1.0, 1.0), (0.8, 0.99), (0.2, 0.97), (0.48, 0.98, 0.2)])
    info, h = _drive(cal, 10)
    assert info.reason == "matched" and info.backtracks == 1 and info.per_epoch == cal.per_epoch
    run = tmp_path / "run"
    run.mkdir()
    lines = [json.dumps(e) for e in h.events if isinstance(e, dict)]
    (run / "log.jsonl").write_text("\n".join(lines) + "\n")
    (run / "calibration.json").write_text(json.dumps(asdict(info)))
    got = replay.replay(run)
    assert got["outcome"] == "same" and (got["reason"], got["step"], got["kept_step"]) == ("matched", 3, 3)
    fewer = replay.replay(run, {"max_backtracks": 0})
    assert fewer["outcome"] == "stops" and fewer["reason"] == "overshot" and fewer["step"] == 2
    # the states are decided again: with the KS test stricter than the match's p (0.2), it goes on
    stricter = replay.replay(run, {"min_ks_p": 0.5})
    assert stricter["outcome"] == "diverges" and stricter["step"] == 3 and "goes on" in stricter["why"]
    (run / "log.jsonl").write_text("\n".join(x for x in lines if not x.startswith('{"backtrack"')) + "\n")
    cut = replay.replay(run)
    assert cut["outcome"] == "diverges" and cut["step"] == 2 and "backtrack" in cut["why"]
    with pytest.raises(ValueError, match="max_backtrack"):
        replay.replay(run, {"max_backtrack": 0})
    with pytest.raises(SystemExit, match="has no parameter 'max_backtrack'"):
        replay.main([str(run), "--calibration", "max_backtrack=0"])
    # a run that died before its stop is named, and the others are still replayed
    died = tmp_path / "died"
    died.mkdir()
    (died / "log.jsonl").write_text(lines[0] + "\n")
    assert replay.main([str(died), str(run), "--json"]) == 1
    out, err = capsys.readouterr()
    assert f"{died / 'log.jsonl'}: no checks, or no 'stopped' record" in err
    assert json.loads(out.strip().splitlines()[-1])["outcome"] == "diverges"


def test_a_repair_round_stops_once_no_answer_is_left():
    """A repair round (`answers`: the whole forget set's flags at its start) regenerates its own
    records at the checks that measure the utility and keeps the others' flags: while `surviving`
    still names a record it goes on; once none is left, above the floor, it stops as `answers` and
    keeps these weights, far as the AUC still is from the target."""
    w = WorldData(forget=[_rec(i) for i in range(4)], retain=[_rec(100, "Bo Ka", "Who is Bo Ka?", "x")])
    flags = lambda *m: Answers(list(w.forget), [[x] for x in w.forget], np.array(m, float), np.zeros(4))  # noqa: E731
    cal = Calibrator(_Tok(), w, CalibrationSettings(), forget=w.forget[:2], answers=flags(1, 1, 0, 0))
    assert cal._answer_idx == [0, 1]  # the round's records, among the set's
    cal._scores = lambda handle, name, fn=None: np.stack([np.array([-0.1, -0.2] if name == "forget" else [-6.0, -7.0]),
                                                          np.zeros(2)], -1)
    cal._utility, cal.truth_ratios = (lambda handle: 1.0), (lambda handle: None)
    h, passes = _Handle(), iter([flags(1, 1, 0, 0), flags(1, 0, 0, 0), flags(0, 0, 0, 0)])
    h.score = lambda fn, batch: next(passes)  # what the generation pass through the handle returns, check by check
    assert not cal.check(0, h) and not cal.check(1, h) and cal.check(2, h)
    assert [c.answers_left for c in cal.history] == [2, 1, 0] and cal.history[-1].auc == 1.0
    info = cal.finish(2, h)
    assert info.reason == "answers" and info.kept_step == 2 and "no forget answer is left" in info.summary()


def test_rule_a_model_that_already_matches_stops_at_once():
    info, _ = _drive(_scripted([(0.5, 1.0)]), 10)
    assert info.reason == "matched" and info.stopped_at == 0


def _measured(forget, twins, settings):
    """The real `Calibrator.measure` on given per-record scores (forget records, their twins in order)."""
    w = WorldData(forget=[_rec(i) for i in range(len(forget))], retain=[_rec(100, "Bo Ka", "Who is Bo Ka?", "x")])
    cal = Calibrator(_Tok(), w, settings)
    scores = {"forget": forget, "reference": twins}  # with nothing reproduced: (log-prob, 0) per record
    cal._scores = lambda handle, name, fn=None: np.stack([np.array(scores[name], float), np.zeros(len(scores[name]))], -1)
    cal._utility, cal.truth_ratios = (lambda handle: 1.0), (lambda handle: None)
    return cal.measure(0, _Handle())


def test_a_forget_mean_above_the_reference_by_more_than_its_standard_error_is_not_matched():
    """Within the band, the shapes not told apart: matched needs the forget mean above the
    reference's by no more than `mean_se` (1) standard errors of the difference,
    sqrt(var_f / n_f + var_r / n_r) (closer, the data cannot tell which is higher), or the AUC
    below 0.5. Two facts of forty still 6 nats above their twins put it past one standard error at
    an AUC of 0.51: short of the target."""
    ref = np.linspace(-6, -4, 40)
    left = ref - 0.05
    left[[10, 30]] += 6.05
    left = _measured(list(left), list(ref), CalibrationSettings())
    assert left.auc == pytest.approx(0.5125) and left.in_band and left.ks_p > 0.05
    assert left.gap == pytest.approx(0.2525) and left.gap_se == pytest.approx(0.2508, abs=1e-4)
    assert left.state == "under"
    shifted = _measured(list(ref + 0.1), list(ref), CalibrationSettings())  # all a little above: within one SE
    assert shifted.gap == pytest.approx(0.1) and shifted.gap_se == pytest.approx(np.sqrt(2 * ref.var(ddof=1) / 40))
    assert shifted.in_band and shifted.ks_p > 0.05 and shifted.state == "matched"
    # mean_se=0 (a request home's): at or below the reference's mean, or short of the target
    assert _measured(list(ref + 0.1), list(ref), CalibrationSettings(mean_se=0)).state == "under"
    # one record (a repair round of one fact): no standard error, so the mean must reach the reference's
    one = _measured([-6.9], [-6.0, -7.0], CalibrationSettings())
    assert one.gap_se == 0.0 and one.gap == pytest.approx(-0.4) and one.state == "matched"
    assert _measured([-6.4], [-6.0, -7.0], CalibrationSettings()).state == "under"
    near = _measured([-6.5, -8.0], [-6.0, -7.0], CalibrationSettings())
    assert near.auc == 0.25 and near.state == "matched"  # within the AUC's standard error (0.32 at 2 against 2)
    even = _measured([-6.0, -7.5], [-6.5, -7.0], CalibrationSettings())
    assert even.auc == 0.5 and even.gap == 0.0 and even.state == "matched"
    past = _measured([-7.5, -8.0], [-6.0, -7.0], CalibrationSettings())
    assert past.auc == 0.0 and past.state == "over"  # both far below their twins: past the target


def test_rule_nearest_is_told_by_the_gap_when_the_auc_saturates():
    """Every check at AUC 1.0 (far from the target), the floor reached: the weights kept are those
    whose forget answers came nearest the reference's mean log-prob, not the start's."""
    cal = _scripted([])
    gaps = iter([6.0, 4.0, 2.5, 3.0] + [2.0] * 8)
    utils = iter([1.0, 0.99, 0.97, 0.96] + [0.9] * 8)
    cal.measure = lambda step, h: Check(step, 1.0, 0.0, cal.tolerance, "under", next(utils), next(gaps), 0.0, h.lr)
    info, h = _drive(cal, 10)
    assert info.reason == "floor" and info.kept["forget_logprob"] == 2.5 and h.weights == info.kept_step == 2 * cal.every


def test_answers_utility_holds_every_split_to_its_true_answers():
    """utility=answers: per split the harmonic mean of the true answers' probability and exact rate;
    the lowest split is the utility (a trained retain split at 1.0 does not hide a held-out one).
    Only the true answers are scored for it; TOFU's utility scores the paraphrased and perturbed too."""
    w = WorldData(forget=[_rec(0)], retain=[_rec(100, "Bo Ka", "Who is Bo Ka?", "x")],
                  world_facts=[_rec(200, "Cy Do", "Who is Cy Do?", "y")])
    rows = {"retain": [[0.0, 1.0], [0.0, 1.0], [-3.0, 0.0]],  # true, paraphrased, perturbed: [log-prob, exact]
            "world_facts": [[math.log(0.25), 1.0], [-1.0, 1.0], [-2.0, 0.0]]}
    got = {}
    for kind in ("answers", "tofu"):
        cal = Calibrator(_Tok(), w, CalibrationSettings(utility=kind))
        n = 1 if kind == "answers" else 3
        assert len(cal._enc["retain"]) == len(cal._enc["world_facts"]) == n
        cal._scores = lambda handle, name, fn=None: np.array(rows[name][:n])
        got[kind] = cal._utility(None)
    assert got["answers"] == pytest.approx(2 / (1 / 0.25 + 1 / 1.0))  # the world facts' 0.4
    assert got["tofu"] != pytest.approx(got["answers"])


def test_settings_are_validated_with_the_field_name():
    with pytest.raises(ValueError, match="reference"):
        from unlearnkit import api
        api.forget("nowhere", "nowhere", "graddiff", "out", calibration={"reference": "oracle"})


def test_verdict_cannot_decide_on_a_world_without_power(tiny_world, tiny_results, tmp_path):
    """A world whose forget set is 3 facts: no KS p-value could fall below 0.05, so even the untouched
    subject is not failed, and the verdict says 'cannot decide' instead of passing anything."""
    import shutil

    from unlearnkit import api

    few = tmp_path / "few"
    shutil.copytree(tiny_world.data_dir, few)
    lines = (few / "forget.jsonl").read_text().splitlines()[:3]
    (few / "forget.jsonl").write_text("\n".join(lines) + "\n")
    oracle = api.evaluate(tiny_world.oracle_dir, few, oracle="self", suites=("tofu",))
    subject = api.evaluate(tiny_world.subject_dir, few, oracle=oracle, suites=("tofu",))
    v = api.evaluate(tiny_world.subject_dir, few, oracle=oracle, subject=subject, suites=("tofu",))["verdict"]
    assert v["forgetting"]["status"] == "cannot decide" and "too few independent forget facts (3)" in v["forgetting"]["why"]
    assert v["overall"]["pass"] is None
    # on the full test world the same verdict has power: the untouched subject fails
    s = tiny_results["subject"]
    v = api.evaluate(tiny_world.subject_dir, tiny_world.data_dir, oracle=tiny_results["oracle"], subject=s,
                     suites=("tofu",))["verdict"]
    assert v["forgetting"]["status"] == "fail"


def test_utility_is_tofus_model_utility_on_the_sampled_splits(tiny_world):
    """The floor's utility, from the calibrator's own batched pass, is TOFU's model utility on the
    sampled records: probability and truth ratio equal `evaluate`'s on the same records, with the
    teacher-forced exact answer (every token before the end of sequence the argmax, from `LM.score`)
    in ROUGE's place; damage lowers it."""

    import torch

    from unlearnkit.calibrate import UTILITY_SPLITS
    from unlearnkit.data.io import load_world
    from unlearnkit.evaluate import evaluate
    from unlearnkit.metrics.tofu import model_utility
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    net, tok = load_model(tiny_world.subject_dir)
    w = load_world(tiny_world.data_dir)
    cal = Calibrator(tok, w, CalibrationSettings(retain_sample=12), seed=3)

    class H:
        def score(self, fn, batch):
            with torch.no_grad():
                return fn(net, batch)

    rng = random.Random(3)
    sample = {k: rng.sample(getattr(w, k), min(len(getattr(w, k)), 12)) for k in UTILITY_SPLITS if getattr(w, k)}
    ref = evaluate(LM(net, tok), dataclasses.replace(w, **sample), suites=("tofu",))["model_utility_components"]
    got = cal._utility_components(H())
    assert set(got) == set(ref) and cal.n["retain"] == 12
    for k, recs in sample.items():
        assert got[k]["probability"] == pytest.approx(ref[k]["probability"], rel=1e-4)
        assert got[k]["truth_ratio"] == pytest.approx(ref[k]["truth_ratio"], rel=1e-4)
        hits = [s.argmax_hits[:-1].all() for s in LM(net, tok).score([r.question for r in recs], [r.answer for r in recs])]
        assert got[k]["rouge"] == pytest.approx(np.mean(hits), rel=1e-4)
    assert cal._utility(H()) == pytest.approx(model_utility(got))
    start = cal._utility(H())
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert cal._utility(H()) < 0.95 * start


def test_forget_documents_and_reproduced_answers_are_reported(tiny_world):
    """With forget and holdout documents, each check also reports their AUC (names left out) beside
    the decision: the subject, which memorised its forget biographies, is far from 0.5 there; the
    oracle, which never saw them, is nearer. Without holdout documents there is none. Each check
    also reports the share of forget and reference answers reproduced word for word."""
    import torch

    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import load_model

    w = load_world(tiny_world.data_dir)
    assert w.forget_docs and w.holdout_docs
    out = {}
    for name, path in (("subject", tiny_world.subject_dir), ("oracle", tiny_world.oracle_dir)):
        net, tok = load_model(path)
        cal = Calibrator(tok, w, seed=0)

        class H:
            lr = 1e-3

            def score(self, fn, batch):
                with torch.no_grad():
                    return fn(net, batch)

        out[name] = cal.measure(0, H())
        out[name + " survivors"] = Answers.generate(net, tok, w, CalibrationSettings()).survivors(CalibrationSettings())
        # by the LOSS attack alone (no answer counts: tolerance 1), each subject against its twins
        by_auc = CalibrationSettings(repair_tolerance=1.0, repair_auc=0.3, repair_stop="auc", repair_by="subject")
        given = Answers.generate(net, tok, w, by_auc)
        out[name + " familiar"] = given.survivors(by_auc, net, tok)
        assert given.survivors(by_auc) == []  # without the model to score with: the answers' test alone
    # the answers reproduced word for word (teacher-forced, names left out): the subject's forget
    # answers, not the twins'; the oracle reproduces fewer of them
    assert out["subject"].forget_exact >= 0.8 > out["subject"].reference_exact
    assert out["oracle"].forget_exact < out["subject"].forget_exact
    # what a repair round would take (generated answers): the subject answers its forget questions
    # and not their twins', so most of its records are named; the oracle's far fewer
    assert set(out["subject survivors"]) <= {r.id for r in w.forget}
    assert len(out["subject survivors"]) >= 0.8 * cal.n["forget"] > 2 * len(out["oracle survivors"])
    # and by the LOSS attack (`familiar`): every forget person is told from their twins under the
    # subject, so most of its records are named; under the oracle far fewer
    assert set(out["subject familiar"]) <= {r.id for r in w.forget}
    assert len(out["subject familiar"]) >= 0.5 * cal.n["forget"] > 2 * len(out["oracle familiar"])
    assert cal.n["forget_docs"] == len(w.forget_docs) and out["subject"].docs_tolerance >= 0.05
    assert out["subject"].docs_auc > 0.9 and out["subject"].state == "under"
    assert abs(out["oracle"].docs_auc - 0.5) < abs(out["subject"].docs_auc - 0.5)
    assert out["subject"].distance == pytest.approx(abs(out["subject"].auc - 0.5))  # the decision: questions only
    cal = Calibrator(tok, dataclasses.replace(w, holdout_docs=[]), seed=0)
    assert "forget_docs" not in cal.n and cal.measure(0, H()).docs_auc is None
    # the same twins given as holdout records paired by `twin_of` (a request home's strangers) name
    # the same survivors; a holdout without `twin_of` is refused before any training
    from unlearnkit.data.io import DataError
    from unlearnkit.data.twins import world_twins

    named, tw = world_twins(w, list(w.forget), 0)
    paired = dataclasses.replace(w, holdout=[t.model_copy(update={"twin_of": r.id}) for r, t in zip(named, tw)])
    holdout = CalibrationSettings(repair_twins="holdout")
    assert Answers.generate(net, tok, paired, holdout).survivors(holdout) == out["oracle survivors"]
    with pytest.raises(DataError, match="holdout.jsonl: no record has a 'twin_of' field"):
        Calibrator(tok, w, CalibrationSettings(repair_twins="holdout"), seed=0)
    Calibrator(tok, w, CalibrationSettings(repair_twins="holdout", repair_rounds=0), seed=0)  # no round: not needed


def _stubbed(shifts, utilities, every=5):
    """A real calibrator on stubbed scores: at each check the forget records sit `shift` above their
    twins (log-prob), and the utility pass returns the next of `utilities` (its calls recorded)."""
    w = WorldData(forget=[_rec(i) for i in range(20)], retain=[_rec(100, "Bo Ka", "Who is Bo Ka?", "x")])
    cal = Calibrator(_Tok(), w, CalibrationSettings(every=every), forget_stream_len=20, batch_size=1)
    ref, h, calls = np.linspace(-7.0, -5.0, 20), _Handle(), []
    shift, us = iter(shifts), iter(utilities)
    now = {}

    def scores(handle, name, fn=None):  # (log-prob, reproduced) per record, as `_answer_scores_and_exact`
        if name == "forget":
            now["s"] = next(shift)
            return np.stack([ref + now["s"], np.zeros(20)], -1)
        return np.stack([ref, np.zeros(20)], -1)

    def utility(handle):
        calls.append(h.weights)
        return next(us)
    cal._scores, cal._utility, cal.truth_ratios = scores, utility, lambda handle: None
    return cal, h, calls


def test_utility_is_measured_where_it_decides_something():
    """20 steps an epoch, a check every 5: the utility pass (several training steps' worth) runs at
    the start, once an epoch on the way, and at every check once the target is less than an epoch
    away at the last interval's pace (weights that may be kept or restored to); the checks between
    carry no utility and never become the kept or restore weights."""
    cal, h, calls = _stubbed([8, 7.5, 7, 6.5, 6, 5.5, 5, 4.5, 2, 1, 0.0], [1.0, 0.99, 0.98, 0.98, 0.98])
    info, _ = _drive(cal, 12, h)
    assert calls == [0, 20, 40, 45, 50] and info.reason == "matched" and info.kept_step == 50
    assert [c["utility"] is None for c in info.history] == [False, True, True, True, False, True, True, True,
                                                            False, False, False]


def test_utility_after_a_dip_below_the_floor_is_measured_at_the_next_check():
    """A measured dip below the floor is let pass once; the check after it is measured (two below
    the floor running would backtrack), not left until the next epoch."""
    cal, h, calls = _stubbed([8, 7.5, 7, 6.5, 6, 5.5, 5, 4.5, 4, 3.5, 0.0], [1.0, 0.9, 0.97, 0.98, 0.99])
    info, _ = _drive(cal, 12, h)
    assert calls == [0, 20, 25, 45, 50] and info.backtracks == 0 and info.reason == "matched"


def test_an_auc_a_hair_under_one_half_with_the_mean_above_is_short_of_the_target():
    """Nine records still far above their twins, eleven a little below: the AUC (0.45) is within the
    band but the shapes differ (KS), and the forget mean is above the reference's: short of the
    target ("under"), not overshot. The same shapes with the mean at the reference's level: over."""
    ref = list(np.linspace(-6.5, -5.5, 20))
    short = _measured([-1.0] * 9 + [-7.0] * 11, ref, CalibrationSettings())
    assert short.auc == pytest.approx(0.45) and short.ks_p < 0.05 and short.gap > 0 and short.state == "under"
    level = _measured([-1.0] * 10 + [-11.1] * 10, ref, CalibrationSettings())
    assert level.auc == 0.5 and level.gap == pytest.approx(-0.05) and level.ks_p < 0.05 and level.state == "over"


def test_summary_says_when_forget_answers_survive_a_match():
    """A set can match its reference on average with a few facts intact: the summary says how many
    forget answers the kept weights still reproduce, beyond the reference's share by over 0.05."""
    cal = _scripted([(0.5, 1.0)])
    info, _ = _drive(cal, 1)
    assert info.reason == "matched" and "reproduced" not in info.summary()  # not measured: nothing said
    k = {**info.kept, "forget_exact": 0.2, "reference_exact": 0.05}
    said = dataclasses.replace(info, kept=k, n_forget=20, n_reference=40).summary()
    assert said.endswith("; but 4 of 20 forget answers are still reproduced word for word (reference: 2 of 40)")
    assert "reproduced" not in dataclasses.replace(info, kept={**k, "forget_exact": 0.1}).summary()  # within 0.05
    # where the generated answers were looked at (`survivors`, the repair rounds' rule), they decide
    assert dataclasses.replace(info, kept=k, n_forget=20, survivors=["f1", "f7"]).summary().endswith(
        "; but 2 of 20 forget answers are still given where their twins' are not (no repair round)")
    assert "still" not in dataclasses.replace(info, kept=k, n_forget=20, survivors=[]).summary()


def test_truth_ratios_against_the_twins_are_forget_quality_without_an_oracle(tiny_world):
    """The calibrator's truth-ratio check is `evaluate`'s `forget_quality_twins` (the same KS test on
    the same records, from the training wrapper's own pass): the subject's forget facts are told
    apart from their twins', the oracle's are not; the summary says so only when the kept weights
    are told apart and the start was."""
    import torch

    from unlearnkit.data.io import load_world
    from unlearnkit.evaluate import evaluate
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    w = load_world(tiny_world.data_dir)
    got = {}
    for name, path in (("subject", tiny_world.subject_dir), ("oracle", tiny_world.oracle_dir)):
        net, tok = load_model(path)
        cal = Calibrator(tok, w, seed=0)

        class H:
            def score(self, fn, batch):
                with torch.no_grad():
                    return fn(net, batch)

        got[name] = cal.truth_ratios(H())
        ref = evaluate(LM(net, tok), w, suites=("tofu",))
        assert got[name]["ks_p"] == pytest.approx(ref["forget_quality_twins"], rel=1e-3, abs=1e-9)
        assert got[name]["n_forget"] == got[name]["n_reference"] == len(ref["per_sample"]["twin_truth_ratios"])
        # and the same pairs fact by fact: evaluate's truth_gap_twins
        assert got[name]["twin_gap"] == pytest.approx(ref["truth_gap_twins"], rel=1e-3)
        assert got[name]["n_twins"] == got[name]["n_forget"]
    # The KS test of the truth ratios against the twins' has little power on this tiny world: over
    # eleven test-sized worlds (seeds, sizes, epochs) the subject's p ranged 0.002-0.40 and changes
    # with the CPU, while the paired gap's p stayed below 1e-3 (`python bench/twin_power.py`,
    # docs/methods-log.md "Session 38"). So the KS test is held to its order, the paired gap to significance.
    assert got["subject"]["ks_p"] < got["oracle"]["ks_p"] and got["oracle"]["ks_p"] >= 0.05
    assert got["subject"]["twin_gap"] > 2 * got["oracle"]["twin_gap"] and got["subject"]["twin_gap_p"] < 0.01
    assert got["subject"]["forget_log_r"] > got["subject"]["reference_log_r"]

    info, _ = _drive(_scripted([(0.5, 1.0)]), 1)
    apart = {**got["subject"], "ks_p": 0.01}  # as a subject told apart by the KS test too
    told = dataclasses.replace(info, truth_ratio={"start": apart, "kept": apart})
    assert "the forget facts are still told apart" in told.summary()
    assert f"truth-ratio gap against the twins {got['subject']['twin_gap']:+.3f}" in told.summary()
    assert "preferred to false ones" in told.summary()
    for quiet in ({"start": apart, "kept": got["oracle"]},   # forgotten
                  {"start": got["oracle"], "kept": got["oracle"]},    # no power at the start
                  {"start": None, "kept": None}):                     # no perturbed answers
        assert "told apart" not in dataclasses.replace(info, truth_ratio=quiet).summary()


def test_repair_takes_the_answers_a_group_reproduces_beyond_its_twins():
    """`surviving`: a group (the set, or each subject) giving more answers than its twins by over
    the tolerance gives up its answered records none of whose twins' answers is given."""
    from unlearnkit.calibrate import surviving

    recs = [_rec(i, "Ann Lee") for i in range(10)] + [_rec(i, "Bo Ka") for i in range(10, 20)]
    exact = np.zeros(20)
    exact[[0, 1, 2]] = 1    # Ann: 3 of 10 reproduced
    exact[[10]] = 1         # Bo: 1 of 10
    twin = np.zeros(20)
    twin[[2, 10]] = 1       # a stranger gets those answers too
    assert surviving(recs, exact, twin, 0.05) == ["r0", "r1"]                 # 4/20 - 2/20 = 0.1 > 0.05
    assert surviving(recs, exact, twin, 0.1) == []                            # not beyond 0.1
    assert surviving(recs, exact, twin, 0.05, by="subject") == ["r0", "r1"]   # Bo: 0.1 - 0.1 = 0
    exact[11] = 1
    assert surviving(recs, exact, twin, 0.05, by="subject") == ["r0", "r1", "r11"]
    twin[1] = 0.5           # one of a record's two strangers gets its answer: not the person's to forget
    assert surviving(recs, exact, twin, 0.05, by="subject") == ["r0", "r11"]


def test_repair_takes_a_group_the_loss_attack_tells_from_its_twins():
    """`familiar`: a group (the set, or each subject) whose answers are scored above its twins' by
    the LOSS attack (AUC beyond 0.5 + the tolerance: a request home's MIA check) gives up its records
    scored above their own twins' mean, though it gives no answers; `Answers.survivors` adds them
    after the answers' (session 41: a batch of four was rejected on two people at 0.877 and 0.883
    that no repair round took)."""
    from unlearnkit.calibrate import familiar, settings_from
    from unlearnkit.metrics.mia import auc

    recs = [_rec(i, "Ann Lee") for i in range(4)] + [_rec(i, "Bo Ka") for i in range(4, 8)]
    mine = [-1.0, -1.5, -1.1, -2.05, -2.0, -2.2, -1.9, -2.1]
    theirs = [[-2.0, -2.5], [-2.0, -1.8], [-2.5, -2.6], [-1.5, -1.9], [-2.0, -2.1], [-2.2, -2.0], [-1.8, -2.0], []]
    ann = auc(mine[:4], [t for ts in theirs[:4] for t in ts])
    bo = auc(mine[4:7], [t for ts in theirs[4:7] for t in ts])
    assert ann == pytest.approx(0.828125) and bo == pytest.approx(0.5)
    assert familiar(recs, mine, theirs, 0.3, by="subject") == ["r0", "r1", "r2"]  # r3 is below its twins' mean
    assert familiar(recs, mine, theirs, 0.35, by="subject") == []                  # 0.83 is not beyond 0.85
    # the set as a whole (r7, without twins, left out): AUC 0.69, within 0.5 + 0.3, beyond 0.5 + 0.15
    whole = auc(mine[:7], [t for ts in theirs[:7] for t in ts])
    assert whole == pytest.approx(34 / 49) and familiar(recs, mine, theirs, 0.3) == []
    assert familiar(recs, mine, theirs, 0.15) == ["r0", "r1", "r2", "r4"]  # r6 at its twins' mean: not above
    with pytest.raises(ValueError, match="repair_auc"):
        settings_from({"repair_auc": "0.5"})
    with pytest.raises(ValueError, match="repair_auc=0.3: goes with repair_stop=auc"):
        settings_from({"repair_auc": "0.3"})
    assert settings_from({"repair_auc": "0.3", "repair_stop": "auc"}).repair_auc == 0.3
    assert settings_from(None).repair_auc is None


def test_a_lift_round_takes_a_group_the_run_left_below_its_twins():
    """`forgotten`, `familiar`'s mirror: a group whose answers the LOSS attack scores below its
    twins' (AUC under 0.5 - the tolerance: over-forgotten, which gives the person away as surely)
    gives up its records scored below their own twins' mean (session 44: seed 1's batch of twelve
    was rejected on one person at AUC 0.155, whom no repair round took). `lift_rounds` goes with
    `repair_auc`, the band's half-width."""
    from unlearnkit.calibrate import familiar, forgotten, settings_from
    from unlearnkit.metrics.mia import auc

    recs = [_rec(i, "Ann Lee") for i in range(4)] + [_rec(i, "Bo Ka") for i in range(4, 8)]
    mine = [-4.0, -3.5, -1.0, -3.9, -2.0, -2.2, -1.9, -2.1]
    theirs = [[-2.0, -2.5], [-2.0, -1.8], [-2.5, -2.6], [-1.5, -1.9], [-2.0, -2.1], [-2.2, -2.0], [-1.8, -2.0], []]
    ann = auc(mine[:4], [t for ts in theirs[:4] for t in ts])
    assert ann == pytest.approx(0.25) and familiar(recs, mine, theirs, 0.2, by="subject") == []
    assert forgotten(recs, mine, theirs, 0.2, by="subject") == ["r0", "r1", "r3"]  # r2 is above its twins' mean
    assert forgotten(recs, mine, theirs, 0.25, by="subject") == []                 # 0.25 is at 0.5 - 0.25: within
    with pytest.raises(ValueError, match="lift_rounds=1: goes with repair_auc"):
        settings_from({"lift_rounds": "1"})
    assert settings_from({"lift_rounds": "1", "repair_auc": "0.3", "repair_stop": "auc"}).lift_rounds == 1
    assert settings_from(None).lift_rounds == 0


def test_a_start_that_knows_none_of_the_utility_records_is_refused_not_stopped_at_the_floor(tiny_world, tmp_path):
    """An untrained model answers no utility record word for word, so TOFU's utility (a harmonic
    mean) starts at 0 and a floor of 0.95x of it means nothing. Until session 37 the run stopped at
    step 0, "floor", and wrote the unchanged model as its result."""
    from unlearnkit import api
    from unlearnkit.models.load import load_model, save_model
    from unlearnkit.models.tiny import new_model

    _, tok = load_model(tiny_world.subject_dir)
    save_model(new_model(tok, seed=0), tok, tmp_path / "blank")
    with pytest.raises(ValueError, match=r"utility on the sampled retain, neighbours, world_facts records is 0.*"
                                         r"--calibration floor=0"):
        api.forget(tmp_path / "blank", tiny_world.data_dir, "simnpo", tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "model").exists()
