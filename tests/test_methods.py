"""Every unlearning method, with its default settings, at least halves forget ROUGE on the test world;
the caches they rely on match what the model computes live."""
from __future__ import annotations

import json
import math

import pytest
import torch

METHODS = ["ga", "graddiff", "npo", "npo_rt", "simnpo", "idk_dpo", "rmu", "twin_rmu"]


def test_registry_lists_every_method_with_a_description():
    from unlearnkit.methods import list_methods

    names = {m.name: m for m in list_methods()}
    assert set(METHODS) == set(names)
    assert all(names[n].description and names[n].loss.__module__ for n in METHODS)
    assert all(names[n].train_defaults.get("lr") for n in METHODS)


@pytest.mark.parametrize("method", METHODS)
def test_calibrated_default_reaches_the_target_or_says_where_it_stopped(method, tiny_world, tmp_path, load_bench,
                                                                       request):
    """With no budget, every method stops by the calibration rule: matched (and then it forgot:
    forget ROUGE at most half the subject's), or at the floor / overshot / budget, said as such;
    the kept weights are never below the utility floor. One backtrack, not the default's four: by
    default GA backtracked four times here and stopped at step 255, with one at step 81, and these
    runs were the suite's longest minutes; the defaults' own runs are bench/methods.py's. (SimNPO's
    run keeps every default setting, and is the resume test's too: its checkpoints change nothing
    it decides.)"""
    import json

    from unlearnkit import api
    from unlearnkit.calibrate import REASONS

    run = (request.getfixturevalue("simnpo_run") if method == "simnpo" else
           api.forget(tiny_world.subject_dir, tiny_world.data_dir, method, tmp_path / method, progress=False,
                      calibration={"max_backtracks": 1}))
    info = json.loads((run / "calibration.json").read_text())
    assert info["reason"] in REASONS and info["reason"] in api.run_summary(run)
    kept = info["kept"]
    assert kept["utility"] >= 0.95 and kept["step"] == info["kept_step"]
    # a repair round takes what the kept weights still reproduce, and the rounds together hold the floor
    rep = info["repairs"]
    assert (len(rep) == 1 and rep[0]["ids"] == info["survivors"]) if info["survivors"] else rep == []
    assert kept["utility"] * math.prod(r["utility"] for r in rep) >= 0.95 - 1e-9
    checks = [json.loads(line)["check"] for line in (run / "log.jsonl").read_text().splitlines() if '"check"' in line]
    assert checks[0]["step"] == 0 and checks[0]["auc"] > 0.9  # the subject knows its forget set
    assert any(c["step"] == kept["step"] and c["auc"] == kept["auc"] for c in checks)
    # the utility pass runs at some checks only, and the run says how many and what the checks cost
    assert info["utility_checks"] == sum(c["utility"] is not None for c in checks) >= 1
    assert set(info["seconds"]) <= {"target", "utility", "truth_ratio"} and info["seconds"]["target"] > 0
    # the facts' check, at the start and at the kept weights: the subject's are told from the twins'
    start, at_kept = info["truth_ratio"]["start"], info["truth_ratio"]["kept"]
    # (the paired gap: the KS test's p at the start varies 0.002-0.4 with the CPU, bench/twin_power.py)
    assert start["twin_gap_p"] < 0.01 and start["forget_log_r"] > start["reference_log_r"]
    assert at_kept["n_forget"] == start["n_forget"] > 0 and 0 <= at_kept["ks_p"] <= 1
    # the log replays through the rule to the same decisions, stop and kept check (bench/replay.py),
    # the repair round's too: what lets a new rule be tried on saved runs before any rerun
    replay = load_bench("replay")
    for d in [run] + [run / r["dir"] for r in rep]:
        got = replay.replay(d)
        assert got["outcome"] == "same" and got["per_epoch_logged"], got
        assert (got["reason"], got["step"], got["kept_step"]) == tuple(got["logged"].values())
    # the evaluation's ROUGE-L recall of greedy answers, on the forget and retain records alone (the
    # whole TOFU suite was a tenth of the test's time)
    from unlearnkit.attacks.recovery import forget_metrics
    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    w, lm = load_world(tiny_world.data_dir), LM(*load_model(run / "model"))
    if info["reason"] == "matched":
        assert abs(kept["auc"] - 0.5) <= kept["tolerance"]
        rouge = forget_metrics(lm, w.forget, truth_ratio=False)["forget_rouge"]
        subject = forget_metrics(LM(*load_model(tiny_world.subject_dir)), w.forget, truth_ratio=False)["forget_rouge"]
        assert rouge <= 0.5 * subject, (method, rouge, subject)
    assert forget_metrics(lm, w.retain, truth_ratio=False)["forget_rouge"] > 0.5


def test_sequence_cache_matches_live_logprobs(tiny_world):
    from test_train import _streams
    from unlearnkit.data.batching import collate
    from unlearnkit.scoring import sequence_logprob

    net, m, streams, ctx, tok = _streams(tiny_world, "npo")
    idx = [3, 0, 7]
    b = collate([streams["forget"][i] for i in idx], tok.pad_token_id)
    with torch.no_grad():
        live = sequence_logprob(net, b)
    assert torch.allclose(ctx.cache[idx], live, atol=1e-4)
    # NPO at the start: log-ratio 0, so the loss is (2/beta) log 2
    b["index"] = torch.tensor(idx)
    with torch.no_grad():
        loss, _, forget = m.loss(net, {"forget": b}, ctx)
    assert forget is loss  # npo has no retain term: the forget term is the whole loss
    assert math.isclose(loss.item(), 2 / ctx.params.beta * math.log(2), rel_tol=1e-4)


def test_topk_cache_is_aligned_with_answer_positions(tiny_world):
    """graddiff's KL retain term is ~0 at the start: the cached distribution is the model's own."""
    from test_train import _streams
    from unlearnkit.data.batching import collate
    from unlearnkit.methods.cache import cache_topk_distributions, topk_kl

    net, _, streams, ctx, tok = _streams(tiny_world, "graddiff")
    ctx.cache = cache_topk_distributions(net, streams["retain"], tok.pad_token_id, k=8)
    idx = [5, 1, 9, 2]
    b = collate([streams["retain"][i] for i in idx], tok.pad_token_id)
    b["index"] = torch.tensor(idx)
    with torch.no_grad():
        assert abs(topk_kl(net, b, ctx.cache).item()) < 1e-4


def test_forget_labels_leave_the_name_out_and_caches_stay_aligned(tiny_world):
    """The forget stream does not train the subject's name tokens (the name is in the question and
    in other people's records), and per-position caches count only the labelled positions."""
    from test_train import _streams
    from unlearnkit.data.batching import collate, encode_pairs
    from unlearnkit.methods.cache import cache_topk_distributions, topk_kl

    net, _, streams, ctx, tok = _streams(tiny_world, "graddiff")
    e = encode_pairs(tok, ["Where was Ada Quell born?"], ["Ada Quell was born in Rome."], subjects=["Ada Quell"])[0]
    labelled = tok.decode([e.input_ids[i] for i in e.labelled])
    assert "Ada" not in labelled and "Quell" not in labelled and "born in Rome" in labelled
    assert collate([e], 0)["labels"][0].ne(-100).sum().item() == len(e.labelled)
    assert any(x.ignore for x in streams["forget"])  # the world's forget answers name their subject somewhere
    masked = [x for x in streams["forget"] if x.ignore][:6]
    cache = cache_topk_distributions(net, masked, tok.pad_token_id, k=8)
    b = collate(masked, tok.pad_token_id)
    b["index"] = torch.arange(len(masked))
    with torch.no_grad():
        assert abs(topk_kl(net, b, cache).item()) < 1e-4


def test_rmu_trains_only_chosen_down_projections_and_caches_retain(tiny_world):
    from test_train import _streams

    net, m, streams, ctx, tok = _streams(tiny_world, "rmu")
    trained = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trained and all(n.endswith("mlp.down_proj.weight") for n in trained)
    assert ctx.cache.retain_frozen is not None
    norm = ctx.cache.target.norm().item()
    assert norm > 0


def test_twin_rmu_steers_the_positions_after_the_name_to_the_mean_of_the_strangers(tiny_world):
    """twin_rmu's forget term compares the person's activations with strangers' at the tokens the
    texts share after the first mention of the name. Each forget person gets `STRANGERS` strangers,
    none of them anyone in the data and none sharing a word with the person; the target at a position
    is the mean of the starting model's activations on the `strangers` twins there (with one
    stranger, that stranger's own). Without a stranger for anyone there is nothing to steer to: one
    line."""
    from unlearnkit.data.batching import encode_pairs, forget_pairs
    from unlearnkit.data.io import load_world
    from unlearnkit.data.twins import STRANGERS, name_parts, swap_name
    from unlearnkit.methods import Context, get_method
    from unlearnkit.methods.cache import cache_activations
    from unlearnkit.methods.twin_rmu import aligned
    from unlearnkit.models.load import load_model
    from unlearnkit.unlearning import _strangers

    # [bos] Where was Ada Lee born ? -> [bos] Where was Bo Kin Tam born ?
    assert aligned([1, 5, 6, 7, 8, 9, 3], [1, 5, 6, 17, 18, 19, 9, 3]) == ([5, 6], [6, 7])
    net, tok = load_model(tiny_world.subject_dir)
    w, m = load_world(tiny_world.data_dir), get_method("twin_rmu")
    people = {r.subject for split in (w.forget, w.retain, w.neighbours, w.holdout) for r in split}
    st = _strangers(w, 1)
    assert set(st) == {r.subject for r in w.forget} and st == _strangers(w, 1) and st != _strangers(w, 2)
    for s, names in st.items():
        assert len(set(names)) == len(names) == STRANGERS and not set(names) & people
        assert all(not set(name_parts(n)) & set(name_parts(s)) for n in names)
    prompts, answers, subjects = forget_pairs(w)
    streams = {"forget": encode_pairs(tok, prompts, answers, subjects=subjects),
               "retain": encode_pairs(tok, [r.question for r in w.retain], [r.answer for r in w.retain])}
    named = [i for i, q in enumerate(prompts) if subjects[i] in q]
    i = named[0]
    e, s = streams["forget"][i], subjects[i]
    twins = encode_pairs(tok, [swap_name(prompts[i], s, n.split()) for n in st[s]],
                         [swap_name(answers[i], s, n.split()) for n in st[s]])
    acts = cache_activations(net, twins, tok.pad_token_id, net.config.num_hidden_layers - 1).rows
    for k in (None, 1, 3):  # the default, then one stranger and three
        ctx = Context(m.params({} if k is None else {"strangers": k}), pad_id=tok.pad_token_id, tokenizer=tok,
                      forget_text=(prompts, answers, subjects), strangers=st)
        cache = m.prepare(net, streams, ctx)
        assert named and all(cache["pos"][j] for j in named)
        assert all(cache["targets"][j].shape[0] == len(cache["pos"][j]) for j in named)
        k = k or m.params().strangers
        want = sum(acts[j][aligned(e.input_ids, twins[j].input_ids)[1]] for j in range(k)) / k
        assert cache["pos"][i] == aligned(e.input_ids, twins[0].input_ids)[0]
        assert torch.allclose(cache["targets"][i], want, atol=1e-5)
    with pytest.raises(ValueError, match="strangers"):
        m.params({"strangers": STRANGERS + 1})
    with pytest.raises(ValueError, match="no forget example names its subject"):
        m.prepare(net, streams, Context(m.params(), pad_id=tok.pad_token_id, tokenizer=tok,
                                        forget_text=(prompts, answers, subjects), strangers={"Nobody": ["X Y"]}))


def test_idk_dpo_refusals_ship_with_the_project():
    from unlearnkit.methods.idk_dpo import refusals

    r = refusals()
    assert len(r) >= 40 and len(set(r)) == len(r)


def test_an_epoch_budget_replaces_a_methods_step_budget(tiny_world, tmp_path):
    """`--epochs` on a method whose defaults count steps (ga: 30 steps) trains for those epochs."""
    import json

    import yaml

    from unlearnkit import api
    from unlearnkit.data.io import load_world
    from unlearnkit.methods import get_method

    assert get_method("ga").train_defaults.get("steps")
    run = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "ga", tmp_path / "run", epochs=2, lr=1e-6,
                     progress=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())["train"]
    n = sum(len(r.phrasings()) for r in load_world(tiny_world.data_dir).forget)
    assert cfg["steps"] is None and cfg["epochs"] == 2
    assert json.loads((run / "train.json").read_text())["train_stats"]["steps"] == 2 * math.ceil(n / cfg["batch_size"])


def test_a_repair_round_unlearns_what_the_run_left_reproduced(tiny_world, tmp_path):
    """A calibrated run cut to an epoch (`max_epochs`) leaves the forget answers reproduced; its
    repair round takes exactly the records it names (`survivors`), runs calibrated from its kept
    weights with a log and stop of its own, and its weights are the result. With `repair_rounds=0`
    the same run keeps its own weights, and the summary says what survives instead."""
    import json

    from typer.testing import CliRunner

    from unlearnkit import api
    from unlearnkit.cli import app
    from unlearnkit.models.load import load_model

    cut = {"max_epochs": 1}
    run = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "simnpo", tmp_path / "r1", progress=False,
                     calibration=cut)
    info = json.loads((run / "calibration.json").read_text())
    assert info["reason"] == "budget" and len(info["survivors"]) >= 5
    (rep,) = info["repairs"]
    assert rep["ids"] == info["survivors"] and rep["records"] == len(rep["ids"]) and rep["dir"] == "repair-1"
    from unlearnkit.methods import get_method

    assert rep["lr"] == get_method("simnpo").train_defaults["lr"]  # repair_lr=run: the run's rate
    own = json.loads((run / "repair-1" / "calibration.json").read_text())
    assert own["n_forget"] == rep["records"] and own["kept"]["utility"] == rep["utility"]
    assert own["reason"] == rep["reason"] and len(own["survivors"]) == rep["left"] <= rep["records"]
    if own["reason"] == "answers":  # the round's own stop: its last check found no answer left, and was kept
        assert own["history"][-1]["answers_left"] == 0 and own["kept_step"] == own["stopped_at"]
    assert all((c["answers_left"] is None) == (c["utility"] is None) for c in own["history"])
    assert '"check"' in (run / "repair-1" / "log.jsonl").read_text()
    summary = api.run_summary(run)
    assert f"repair round 1 on the {rep['records']} answers still given: {rep['reason']}" in summary
    code = CliRunner().invoke(app, ["forget", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir), "--method",
                                    "simnpo", "--out", str(tmp_path / "r0"), "--calibration", "max_epochs=1",
                                    "--calibration", "repair_rounds=0"])
    assert code.exit_code == 0, code.output
    info0 = json.loads((tmp_path / "r0" / "calibration.json").read_text())
    assert info0["survivors"] == info["survivors"] and info0["repairs"] == [] and not (tmp_path / "r0" / "repair-1").exists()
    said = f"; but {len(info['survivors'])} of {info0['n_forget']} forget answers are still given where their twins' are not"
    assert said in api.run_summary(tmp_path / "r0")
    w1, w0 = (load_model(p)[0].state_dict() for p in (run / "model", tmp_path / "r0" / "model"))
    assert any(not torch.equal(w1[k], w0[k]) for k in w1)


def test_a_lift_round_brings_an_over_forgotten_person_back_to_the_strangers_level(tiny_world, tmp_path):
    """A person unlearned far past their twins (NPO-RT, a fixed budget of 40 steps on their ten
    facts alone: every answer much less likely than a stranger's, which the LOSS attack reads as
    surely as remembering) gets a lift round from a calibrated run with `lift_rounds` (a request
    home's setting; session 44's batch of twelve was rejected on one such person). The round takes
    the facts scored below their twins' mean, trains them back by their NLL with the check mirrored,
    and stops at the twins' level: the person's AUC against the twins, measured here on the result's
    own scores, rises from under 0.2 into 0.5 ± 0.3, and no answer comes back."""
    import json
    import shutil

    from typer.testing import CliRunner

    from unlearnkit import api
    from unlearnkit.cli import app
    from unlearnkit.data.io import load_world
    from unlearnkit.data.twins import world_twins
    from unlearnkit.metrics.mia import auc, loss_score
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    data = tmp_path / "world"
    shutil.copytree(tiny_world.data_dir, data)
    person = sorted({r.subject for r in load_world(data).forget})[0]
    for name in ("forget.jsonl", "forget_docs.jsonl"):  # the person alone is forgotten
        rows = [json.loads(x) for x in (data / name).read_text().splitlines()]
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows if r["subject"] == person))
    w = load_world(data)
    named, twins = world_twins(w, list(w.forget), 0)

    def person_auc(model_dir):
        lm = LM(*load_model(model_dir))
        score = lambda recs: [loss_score(x) for x in lm.score([r.question for r in recs], [r.answer for r in recs])]  # noqa: E731
        return auc(score(named), score(twins))

    past = api.forget(tiny_world.subject_dir, data, "npo_rt", tmp_path / "past", steps=40, progress=False)
    assert person_auc(past / "model") < 0.2
    r = CliRunner().invoke(app, ["forget", "--model", str(past / "model"), "--data", str(data), "--method", "simnpo",
                                 "--out", str(tmp_path / "lift"), *[x for kv in ("repair_auc=0.3", "repair_stop=auc",
                                 "repair_by=subject", "lift_rounds=1") for x in ("--calibration", kv)]])
    assert r.exit_code == 0, r.output
    run = tmp_path / "lift"
    info = json.loads((run / "calibration.json").read_text())
    (lift,) = info["repairs"]  # no answer was left to repair: the lift round alone
    assert lift["lift"] and lift["dir"] == "repair-1" and len(info["survivors"]) == 0
    assert lift["records"] == len(lift["ids"]) >= len(w.forget) // 2
    own = json.loads((run / "repair-1" / "calibration.json").read_text())
    first = own["history"][0]  # mirrored: the person's facts below their twins read as a forget set above its reference
    assert first["state"] == "under" and first["auc"] > 0.8 and first["reference_logprob"] < first["forget_logprob"]
    assert own["kept"]["state"] == "matched" and own["survivors"] == [] and lift["left"] == 0
    assert 0.2 <= person_auc(run / "model") <= 0.8
    assert f"lift round 1 on the {lift['records']} facts left less likely than their twins'" in api.run_summary(run)


def test_repair_rounds_go_on_while_a_round_leaves_other_records(tiny_world, tmp_path, monkeypatch):
    """The whole-set test scripted (`Answers.generate`): the run leaves records a, b; round 1 takes
    them and leaves c, d (answers it brought back); round 2 takes c, d and leaves c; round 3 takes c
    and leaves c, every record it took, so no fourth round is run though four are allowed.
    (Stopping when a round leaves as many as it took ended after round 1 with c and d answered: a
    request home's batch, docs/requests.md.)"""
    import json

    from unlearnkit import api, calibrate
    from unlearnkit.data.io import load_world

    ids = [r.id for r in load_world(tiny_world.data_dir).forget][:4]
    a, b, c, d = ids
    script = iter([[a, b], [c, d], [c], [c]])

    class Scripted:  # the whole-set pass before and after each round; a round's own checks never find none left
        named = []

        def __init__(self, ids):
            self.ids = ids

        def survivors(self, settings, *model):  # (the model: for `repair_auc`, unset here)
            return self.ids

        def told(self, settings, *model):  # (survivors, what a lift round would take)
            return self.ids, []

        def again(self, *args):
            return Scripted([a])

    monkeypatch.setattr(calibrate.Answers, "generate", classmethod(lambda cls, *args: Scripted(next(script))))
    run = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "simnpo", tmp_path / "r", progress=False,
                     calibration={"max_epochs": 1, "repair_rounds": 4, "repair_lr": "share"})
    info = json.loads((run / "calibration.json").read_text())
    assert [r["ids"] for r in info["repairs"]] == [[a, b], [c, d], [c]]
    assert [r["left"] for r in info["repairs"]] == [2, 1, 1] and info["survivors"] == [a, b]
    # `repair_lr=share`: each round starts at the run's rate x sqrt(its records / the run's forget records),
    # as its first check says
    from unlearnkit.methods import get_method

    lr, n = get_method("simnpo").train_defaults["lr"], len(load_world(tiny_world.data_dir).forget)
    assert [r["lr"] for r in info["repairs"]] == pytest.approx([lr * math.sqrt(k / n) for k in (2, 2, 1)])
    for r in info["repairs"]:
        log = (run / r["dir"] / "log.jsonl").read_text().splitlines()
        assert json.loads(next(line for line in log if '"check"' in line))["check"]["lr"] == pytest.approx(r["lr"])


def test_lift_rounds_go_on_while_a_round_leaves_fewer_records(tiny_world, tmp_path, monkeypatch):
    """The lift rounds' stop, scripted (`Answers.generate`): after the run, a and b are read below
    their twins (no answer survives, so no repair round); lift 1 takes both and leaves a; lift 2
    takes a and leaves a, every record it took, so no third is run though three are allowed."""
    import json

    from unlearnkit import api, calibrate
    from unlearnkit.data.io import load_world
    from unlearnkit.data.twins import world_twins

    named, twins = world_twins(load_world(tiny_world.data_dir), list(load_world(tiny_world.data_dir).forget), 0)
    a, b = named[0].id, named[1].id
    script = iter([[a, b], [a], [a]])

    class Scripted:  # the pass before and after each round
        def __init__(self, ids):
            self.ids, self.named, self.twins = ids, named, [[t] for t in twins]

        def told(self, settings, *model):  # (survivors, what a lift round takes)
            return [], self.ids

    monkeypatch.setattr(calibrate.Answers, "generate", classmethod(lambda cls, *args: Scripted(next(script))))
    run = api.forget(tiny_world.subject_dir, tiny_world.data_dir, "simnpo", tmp_path / "r", progress=False,
                     calibration={"max_epochs": 1, "repair_auc": 0.3, "repair_stop": "auc", "lift_rounds": 3})
    info = json.loads((run / "calibration.json").read_text())
    assert [(r["ids"], r["left"], r.get("lift")) for r in info["repairs"]] == [([a, b], 1, True), ([a], 1, True)]
    assert [r["dir"] for r in info["repairs"]] == ["repair-1", "repair-2"]
    for r in info["repairs"]:  # each measured against its records' own twins, mirrored
        own = json.loads((run / r["dir"] / "calibration.json").read_text())
        assert own["n_forget"] == own["n_reference"] == len(r["ids"])


def test_a_repair_round_starts_at_the_runs_rate_or_at_its_share():
    """`repair_lr`: run, the run's learning rate; share, x sqrt(the round's records / the run's), and
    the run's own rate for a round of all of them (or of none)."""
    from unlearnkit.calibrate import settings_from
    from unlearnkit.unlearning import _round_lr

    run, share = settings_from({}), settings_from({"repair_lr": "share"})
    assert run.repair_lr == "run" and _round_lr(1e-3, 2, 32, run) == 1e-3
    assert _round_lr(1e-3, 2, 32, share) == pytest.approx(2.5e-4) and _round_lr(1e-3, 8, 32, share) == pytest.approx(5e-4)
    assert _round_lr(1e-3, 32, 32, share) == _round_lr(1e-3, 0, 32, share) == 1e-3
    with pytest.raises(ValueError, match="repair_lr"):
        settings_from({"repair_lr": "half"})


def test_default_plan_chooses_by_the_data(tiny_world):
    """With no method named, a calibrated run on data with a holdout split gets Twin RMU against the
    holdout people; without one (or told reference=twins, or with a fixed budget), SimNPO. A named
    method keeps what it was given."""
    import dataclasses

    from unlearnkit.calibrate import CalibrationSettings as S
    from unlearnkit.data.io import load_world
    from unlearnkit.unlearning import default_plan

    w = load_world(tiny_world.data_dir)
    assert w.holdout
    assert default_plan(None, S(), w) == ("twin_rmu", S(reference="holdout"))
    assert default_plan(None, S(floor=0.9), w) == ("twin_rmu", S(floor=0.9, reference="holdout"))
    assert default_plan(None, S(reference="twins"), w) == ("simnpo", S(reference="twins"))
    assert default_plan(None, None, w) == ("simnpo", None)                  # a fixed budget
    assert default_plan("simnpo", S(), w) == ("simnpo", S())                # a named method keeps the twins
    assert default_plan("npo", S(reference="holdout"), w) == ("npo", S(reference="holdout"))
    assert default_plan(None, S(), dataclasses.replace(w, holdout=[])) == ("simnpo", S())


def test_forget_without_a_method_runs_the_default_and_says_which(tiny_world, tmp_path):
    """`unlearn forget` with no --method: the run's config names the method chosen and its reference,
    and the printed summary says both."""
    import yaml
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["forget", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir),
                                   "--out", str(out), "--calibration", "max_epochs=1", "--calibration", "repair_rounds=0"])
    assert res.exit_code == 0, res.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["method"] == "twin_rmu" and config["calibration"]["reference"] == "holdout"
    assert "twin_rmu, stopped:" in res.output and "vs the holdout" in res.output
    # a fixed budget, no method: SimNPO, and no calibration
    res = CliRunner().invoke(app, ["forget", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir),
                                   "--out", str(tmp_path / "fixed"), "--steps", "1"])
    assert res.exit_code == 0, res.output
    config = yaml.safe_load((tmp_path / "fixed" / "config.yaml").read_text())
    assert config["method"] == "simnpo" and config["calibration"] is None and "simnpo, fixed budget: 1 step\n" in res.output


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_rmu_and_twin_rmu_find_the_layers_of_other_architectures(arch, tiny_world, tmp_path):
    """RMU trains the MLP output projections of layers l-2..l and Twin RMU reads a layer's
    activations: both looked for Llama's `model.layers[i].mlp.down_proj` alone, and the default
    method failed with an AttributeError on GPT-2 (blocks under `transformer.h`, a `Conv1D` c_proj)
    and RMU on GPT-NeoX (`mlp.dense_4h_to_h`) until session 36. The GPT-2 takes 64 positions, fewer
    than a biography's ~93 tokens: texts are cut there (an IndexError in training until session 36)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    from unlearnkit import api
    from unlearnkit.methods.rmu import mlp_out
    from unlearnkit.models.load import save_model
    from unlearnkit.scoring import decoder_blocks

    tok = AutoTokenizer.from_pretrained(tiny_world.subject_dir)
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    net = (GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=3, n_head=2, n_positions=64, **ids)) if arch == "gpt2" else
           GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                            intermediate_size=64, max_position_embeddings=256, **ids)))
    blocks = decoder_blocks(net)
    assert len(blocks) == 3
    assert mlp_out(blocks[1]) is (blocks[1].mlp.c_proj.weight if arch == "gpt2" else blocks[1].mlp.dense_4h_to_h.weight)
    model = save_model(net, tok, tmp_path / arch)
    for method in ("rmu", "twin_rmu"):
        run = api.forget(model, tiny_world.data_dir, method, tmp_path / method, steps=2, progress=False)
        assert json.loads((run / "train.json").read_text())["train_stats"]["steps"] == 2
