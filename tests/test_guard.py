"""Inference-time unlearning: the index, the detector, calibration, the actions and GuardedLM.

Unit tests use the generated world, a tokenizer trained on it and a randomly initialised tiny
Llama (the guard never changes weights, so an untrained model is enough to test routing and
masking). The end-to-end "what must hold" test uses the lead's `tiny_world` fixture when present.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from unlearnkit.data.world import generate_world, training_texts  # noqa: E402
from unlearnkit.guard import (REFUSAL, ForbidTokensProcessor, Guard, GuardedLM, GuardSettings, Target,  # noqa: E402
                              TargetStore, forbidden_strings, icu_prompt, targets_from_world)
from unlearnkit.guard.actions import forbidden_token_sequences  # noqa: E402
from unlearnkit.guard.detect import Detector, calibrate  # noqa: E402


@pytest.fixture(scope="module")
def world():
    return SimpleNamespace(**generate_world(seed=0, n_people=60))


@pytest.fixture(scope="module")
def lm(world):
    from unlearnkit.models.tiny import new_model, train_tokenizer
    from unlearnkit.scoring import LM

    tok = train_tokenizer(training_texts(vars(world)), vocab_size=1024)
    return LM(new_model(tok, seed=0), tok)


@pytest.fixture(scope="module")
def guard(world, tmp_path_factory):
    g = Guard(tmp_path_factory.mktemp("guard"))
    g.add_many(targets_from_world(world))
    return g


def benign_prompts(world):
    recs = world.retain + world.neighbours
    return [r.question for r in recs], [r.paraphrased_question for r in recs]


# ----------------------------------------------------------------------------- index

def test_target_validation():
    with pytest.raises(ValueError, match="at least one of"):
        Target()
    with pytest.raises(ValueError, match="non-empty"):
        Target(subject="   ")
    with pytest.raises(ValueError):
        Target(subject="A B", action="delete")
    with pytest.raises(ValueError, match="letters, digits"):
        Target(id="../x", subject="A B")
    t = Target(subject="  Ada   Quill ")
    assert t.subject == "Ada Quill" and t.id.startswith("t-")


def test_store_persists_and_reloads(tmp_path, world):
    store = TargetStore(tmp_path)
    added = store.add_many(targets_from_world(world)[:3])
    extra = store.add({"subject": "Ada Quill", "facts": ["Ada Quill was born in Zelbury."]})
    assert len(store) == 4
    with pytest.raises(KeyError):
        store.add(Target(id=added[0].id, subject="X Y"))
    store.remove(added[1].id)
    with pytest.raises(KeyError):
        store.remove("no-such-id")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert {"targets.jsonl", "embeddings.npy", "index.json"} <= set(files)
    assert not [f for f in files if f.endswith(".tmp")]
    again = TargetStore(tmp_path)
    assert [t.id for t in again.list()] == [added[0].id, added[2].id, extra.id]
    np.testing.assert_array_equal(again.emb, store.emb)
    np.testing.assert_array_equal(again.row_target, store.row_target)
    # a stale index.json (e.g. a crash between two writes) is detected and re-embedded
    (tmp_path / "index.json").write_text(json.dumps({"rows": []}))
    fixed = TargetStore(tmp_path)
    assert len(fixed.pending) == 3 and fixed.complete() and not fixed.pending
    np.testing.assert_allclose(fixed.emb, store.emb, atol=1e-5)
    np.testing.assert_array_equal(fixed.row_target, store.row_target)


def test_a_deferred_target_is_guarded_by_name_at_once_and_embedded_by_the_first_search(tmp_path):
    """`add_many(defer=True)` in a process without the embedder (a command-line `request add`) stores
    the target with no vectors; a detector (the server) finds it by name, embeds it, and saves the
    vectors beside the others, which the next load reuses."""
    from unlearnkit.guard import Detector

    server = TargetStore(tmp_path)
    server.add({"subject": "Ada Quill", "facts": ["Ada Quill was born in Zelbury."]})
    detector = Detector(server)
    assert detector.detect(["What is the weather like?"])[0].target is not None  # embedder loaded here
    cli = TargetStore(tmp_path)
    cli.add_many([Target(subject="Brom Tallow", facts=["Brom Tallow keeps bees."])], defer=True)
    assert cli._embedder is None and [t.subject for t in cli.pending] == ["Brom Tallow"]
    assert [t.subject for t in TargetStore(tmp_path).pending] == ["Brom Tallow"]
    hit = detector.detect(["Where does Brom Tallow live?"])[0]
    assert hit.hit and hit.channel == "name" and hit.target.subject == "Brom Tallow" and not server.pending
    again = TargetStore(tmp_path)
    assert not again.pending and len(again.emb) == len(server.emb)
    np.testing.assert_allclose(again.emb, server.emb, atol=1e-6)
    # a vector search with the second target's own facts finds it by embedding too
    assert detector.embed_scores(["Who keeps bees?"])[0][0] == 1


def test_store_sees_changes_by_another_process(tmp_path):
    a, b = TargetStore(tmp_path), TargetStore(tmp_path)
    t = a.add({"subject": "Ada Quill"})
    assert b.refresh() and [x.id for x in b.list()] == [t.id]
    b.add({"subject": "Bo Rell"})  # b merges on a's state, a sees b's
    assert a.refresh() and len(a) == 2


def test_put_replaces_a_target_in_one_write_beside_another_process(tmp_path):
    """`put` adds a target or replaces the one of its id in one write, where another store of the same
    directory put it meanwhile (remove, then add, raised KeyError there until session 40); the other
    targets' vectors stay as they were."""
    a, b = TargetStore(tmp_path), TargetStore(tmp_path)
    keep = a.add({"subject": "Ada Quill", "facts": ["Ada Quill was born in Zelbury."]})
    rows = a.emb.copy()
    b.refresh()
    a.put({"id": "r-1", "subject": "Bo Rell"})
    b.put({"id": "r-1", "subject": "Bo Rell", "aliases": ["B. Rell"]})  # b's view is stale: it had no r-1
    a.put({"id": "r-1", "subject": "Bo Rell", "aliases": ["Bob Rell"], "facts": ["Bo Rell keeps bees."]})
    again = TargetStore(tmp_path)
    assert [(t.id, t.aliases) for t in again.list()] == [(keep.id, []), ("r-1", ["Bob Rell"])]
    np.testing.assert_array_equal(again.emb[again.row_target == 0], rows)
    assert (again.row_target == 1).sum() == 3  # name, alias and fact, embedded for the new version only
    with pytest.raises(KeyError, match="already exists"):
        again.add({"id": "r-1", "subject": "Bo Rell"})


def test_targets_from_world(world):
    ts = targets_from_world(world)
    people = {r.subject for r in world.forget}
    assert {t.subject for t in ts} == people
    t = ts[0]
    assert len(t.qa) == sum(r.subject == t.subject for r in world.forget)
    assert all(p.wrong_answers for p in t.qa)
    assert [x.id for x in targets_from_world(world)] == [x.id for x in ts]  # stable ids


# ----------------------------------------------------------------------------- detector

def test_detector_catches_paraphrases_misspellings_partial_names(guard, world):
    name = world.forget[0].subject
    first, last = name.split()
    prompts = [r.paraphrased_question for r in world.forget] + [
        f"Where was {last[:-2]}{last[-1]}{last[-2]} {first} born?",  # swapped letters, reversed order
        f"what did {first.lower()} {last.lower()} study?",
        f"Tell me everything about {last}.",
        f"Is {first} a good writer?",
    ]
    dets = guard.detect(prompts)
    missed = [p for p, d in zip(prompts, dets) if not d.hit]
    assert not missed
    assert all(d.target.subject == s for d, s in zip(dets, [r.subject for r in world.forget]))
    assert dets[-4].target.subject == name
    # a title before a partial name names the target: it is no other person's first name
    titled = [f"Where was {t} {last} born?" for t in ("Reverend", "Captain", "Judge", "Senator", "Uncle", "Dame",
                                                      "Sgt", "Professor", "Mx")] + [f"Where was {last} PhD born?"]
    assert [d.hit and d.target.subject == name for d in guard.detect(titled)] == [True] * len(titled)


def test_detector_leaves_other_people_alone(guard, world):
    name = world.forget[0].subject
    first, last = name.split()
    other = [f"Where was Bertram {last} born?", f"What does {first} Oakhurst do?",
             "What is the capital of France?", ""]
    assert [d.channel == "name" for d in guard.detect(other)] == [False] * 4
    neighbour_q = [r.question for r in world.neighbours]  # their answers are forget people
    assert not any(d.channel == "name" for d in guard.detect(neighbour_q))


def test_calibration_meets_rate_on_held_out_prompts(guard, world):
    train, held = benign_prompts(world)
    cal = guard.calibrate(train, false_refusal=0.02,
                          positives=[r.paraphrased_question for r in world.forget])
    assert cal.achieved <= 0.02 and cal.recall == 1.0
    assert guard.detector.threshold == cal.threshold
    held_rate = np.mean([d.hit for d in guard.detect(held)])
    assert held_rate <= 0.04, held_rate  # held-out paraphrases of benign questions
    saved = json.loads((guard.dir / "guard.json").read_text())
    assert saved["threshold"] == pytest.approx(cal.threshold)
    assert Guard(guard.dir).detector.threshold == pytest.approx(cal.threshold)


def test_calibration_holds_in_every_group(guard, world):
    groups = {"retain": [r.question for r in world.retain], "neighbours": [r.question for r in world.neighbours]}
    cal = guard.calibrate(groups, false_refusal=0.02)
    assert set(cal.per_group) == {"retain", "neighbours"}
    assert all(v <= 0.02 for v in cal.per_group.values())
    for name, prompts in groups.items():
        assert np.mean([d.hit for d in guard.detect(prompts)]) <= 0.02, name


def test_calibration_validates_input(guard):
    with pytest.raises(ValueError):
        calibrate(guard.detector, [], 0.01)
    with pytest.raises(ValueError):
        calibrate(guard.detector, ["x"], 1.5)
    with pytest.raises(ValueError, match="a number in"):
        calibrate(guard.detector, ["x"], "0.01")


def test_a_target_that_cannot_be_saved_is_refused_and_leaves_the_guard_as_it_was(tmp_path):
    """A non-finite created_at (1e400 is standard JSON) was saved as null, and the guard would not load
    again; a lone surrogate in a wrong answer failed the save after the vectors and index were written,
    stayed in force in memory and made every later add fail (session 36)."""
    g = Guard(tmp_path / "g")
    g.add({"subject": "Ada Quill"})
    for bad, says in (({"subject": "Inf Date", "created_at": float("inf")}, "created_at"),
                      ({"subject": "Nan Date", "created_at": float("nan")}, "created_at"),
                      ({"subject": "Bo Vale", "qa": [{"question": "Where was Bo Vale born?", "answer": "Rome",
                                                      "wrong_answers": ["\ud800"]}]}, "wrong_answers")):
        with pytest.raises(ValueError, match=says):
            g.add(bad)
    g.add({"subject": "Cy Lorne"})  # later adds go on
    again = Guard(tmp_path / "g")
    assert [t.subject for t in again.list()] == ["Ada Quill", "Cy Lorne"] == [t.subject for t in g.list()]


def test_guard_add_jsonl_reads_as_a_world_file_is_read_and_names_a_duplicate_id(tmp_path):
    """`guard add --jsonl` split lines on U+2028 inside a string and refused a byte-order mark as
    malformed JSON, gave a traceback on bad UTF-8, and a duplicated id was "duplicate target ids in
    one request", naming neither the id nor the line (until session 37)."""
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    run = CliRunner().invoke
    g, path = str(tmp_path / "guard"), tmp_path / "targets.jsonl"
    rows = [{"id": "a", "subject": "Ada Quill", "facts": ["Ada Quill was born\u2028in Zelbury."]},
            {"id": "b", "subject": "Bo Kell", "facts": ["Bo Kell\u0085keeps bees."]}]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    r = run(app, ["guard", "add", "--guard-dir", g, "--jsonl", str(path)])
    assert r.exit_code == 0, r.output
    assert r.stdout.split() == ["a", "b"]
    path.write_bytes(text.encode("utf-8") + b'{"subject": "Cy \xff"}\n')
    r = run(app, ["guard", "add", "--guard-dir", str(tmp_path / "g2"), "--jsonl", str(path)])
    assert r.exit_code == 2 and f"{path}:3: not valid UTF-8" in " ".join(r.output.split())
    path.write_text(text + json.dumps({"id": "a", "subject": "Cy Lorne"}) + "\n", encoding="utf-8")
    r = run(app, ["guard", "add", "--guard-dir", str(tmp_path / "g2"), "--jsonl", str(path)])
    assert r.exit_code == 2
    assert f"{path}:3: field 'id': duplicate target id 'a' (first on line 1)" in " ".join(r.output.split())
    with pytest.raises(KeyError, match="duplicate target id 'c' in one request"):
        TargetStore(None).add_many([{"id": "c", "subject": "C D"}, {"id": "d", "subject": "D E"},
                                    {"id": "c", "subject": "E F"}])


def test_bad_targets_and_settings_are_one_line_and_leave_no_guard(tmp_path, world):
    """A bad target field is one ValueError line naming it (pydantic's several lines and link until
    session 35), and the demo's guard checks its action and false-refusal rate before it makes its
    folder (it embedded the targets and left an uncalibrated guard behind)."""
    from unlearnkit import api

    with pytest.raises(ValueError, match=r"^invalid target: action: ") as e:
        Guard(tmp_path / "g").add({"subject": "Ada Quill", "action": "nope"})
    assert "\n" not in str(e.value)
    w = tmp_path / "w"
    api.world(w, n_people=12)
    for kw, says in (({"action": "nope"}, "invalid target: action"), ({"false_refusal": 2}, "false_refusal must be")):
        with pytest.raises(ValueError, match=says):
            api.demo_guard(tmp_path / "demo", w, **kw)
        assert not (tmp_path / "demo").exists()
    before = sorted(p.name for p in w.iterdir())
    for inside in (w, w / "guard"):  # among the world's files, changing its data hash
        with pytest.raises(ValueError, match="the data's folder"):
            api.demo_guard(inside, w)
    assert sorted(p.name for p in w.iterdir()) == before


def test_a_misspelt_guard_setting_is_refused(tmp_path):
    """`GuardSettings(defualt_action="refuse")` was accepted and the typo dropped (the default action
    stayed in force); in code and in guard.json an unknown setting is one line naming it, and a
    guard.json as saved loads as before."""
    says = ("guard settings has no parameter 'defualt_action'; its parameters: threshold, fuzzy_cutoff, "
            "default_action, refusal, icu_examples, forbidden_logprob, calibration")
    with pytest.raises(ValueError) as e:
        GuardSettings(defualt_action="refuse")
    assert str(e.value) == says
    (tmp_path / "guard.json").write_text(json.dumps({"defualt_action": "refuse"}))
    with pytest.raises(ValueError) as e:
        Guard(tmp_path)
    assert str(e.value) == f"{tmp_path / 'guard.json'}: invalid guard settings ({says})"
    (tmp_path / "guard.json").write_text(GuardSettings(default_action="icu").model_dump_json(indent=2))
    assert Guard(tmp_path).settings.default_action == "icu"


def test_one_string_is_one_prompt(guard, world):
    """A string given where a list of prompts goes was taken letter by letter, a prompt each (32
    detections for one question, a calibration on single letters) until session 36."""
    q = world.forget[0].question
    assert len(guard.detect(q)) == 1 and guard.detect(q)[0].hit == guard.detect([q])[0].hit
    with pytest.raises(TypeError, match="prompts: expected strings, got int"):
        guard.detect([q, 3])


def test_two_stage_search_agrees_with_direct(guard, world):
    prompts = [r.paraphrased_question for r in world.forget[:10]] + ["What award did someone win?"]
    direct = Detector(guard.store, direct_rows=10**9)
    staged = Detector(guard.store, direct_rows=0, rerank=3)
    (p1, s1), (p2, s2) = direct.embed_scores(prompts), staged.embed_scores(prompts)
    np.testing.assert_array_equal(p1[:-1], p2[:-1])  # prompts clearly about one target: exact
    np.testing.assert_allclose(s1[:-1], s2[:-1], atol=1e-5)
    assert s2[-1] <= s1[-1] + 1e-6  # a vague prompt: the staged maximum can only be lower


# ----------------------------------------------------------------------------- actions

def test_forbidden_strings_and_processor(lm):
    t = Target(subject="Ada Quill", qa=[{"question": "Where does Ada Quill work?", "answer": "Greywater Mills"}],
               facts=["Ada Quill was born in Zelbury in 1961."])
    fs = forbidden_strings(t)
    assert {"Greywater Mills", "Greywater", "Mills", "Zelbury", "1961"} <= set(fs)
    assert "Ada" not in fs and "Quill" not in fs
    tok = lm.tokenizer
    seqs = forbidden_token_sequences(tok, fs)
    proc = ForbidTokensProcessor(seqs)
    grey = tok(" Greywater", add_special_tokens=False)["input_ids"]
    vocab = len(tok)
    # whatever the logits say, no forbidden sequence can be completed token by token
    ids = torch.tensor([[tok.bos_token_id]])
    for target_tok in grey:
        scores = torch.zeros(1, vocab)
        scores[0, target_tok] = 100.0
        nxt = int(proc(ids, scores).argmax())
        assert not (len(grey) == 1 and nxt == target_tok)
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    assert "Greywater" not in tok.decode(ids[0, 1:])
    assert grey[0] in proc.banned([tok.bos_token_id])


def test_refusal_and_icu_prompt():
    t = Target(subject="Ada Quill", qa=[
        {"question": "Where was Ada Quill born?", "answer": "Zelbury", "wrong_answers": ["She was born in Ashford."]},
        {"question": "What does Ada Quill do?", "answer": "potter"}])
    assert "Ada" not in REFUSAL and "Quill" not in REFUSAL
    p = icu_prompt(t, "In which town was Ada Quill born?")
    lines = p.splitlines()
    assert lines[-1] == "In which town was Ada Quill born?"
    assert lines[-2] == "Where was Ada Quill born? She was born in Ashford."  # closest first, wrong label
    assert "What does Ada Quill do? Zelbury" in p  # no perturbed answer: another of its answers


# ----------------------------------------------------------------------------- GuardedLM

def test_guarded_lm_routes_and_scores(lm, world, tmp_path, through_guard):
    g = Guard(tmp_path)
    g.add_many(targets_from_world(world))
    glm = GuardedLM(lm, g)
    forget, retain = world.forget[:4], world.retain[:4]
    prompts = [r.question for r in forget + retain]
    answers = [r.answer for r in forget + retain]
    gen = glm.generate(prompts, max_new_tokens=6)
    assert gen[:4] == [REFUSAL] * 4
    assert gen[4:] == [through_guard(g, p, t) for p, t in zip(prompts[4:], lm.generate(prompts[4:], max_new_tokens=6))]
    base, guarded = lm.score(prompts, answers, stats=True), glm.score(prompts, answers, stats=True)
    for b, s in zip(base, guarded):
        assert len(b.logprobs) == len(s.logprobs) and s.mu is not None and np.isfinite(s.logprobs).all()
    for b, s in zip(base[4:], guarded[4:]):  # misses: exactly the model
        np.testing.assert_allclose(b.logprobs, s.logprobs, atol=1e-5)
    for b, s in zip(base[:4], guarded[:4]):  # hits: the answer's tokens are masked to the floor
        assert s.logprobs.sum() < b.logprobs.sum()
        assert (s.logprobs == g.settings.forbidden_logprob).any()

    # forbid: the model answers, but never with the forbidden answer; icu: prompt with wrong labels
    t0 = g.list()[0]
    g.remove(t0.id)
    g.add(t0.model_copy(update={"action": "forbid"}))
    q = [r.question for r in world.forget if r.subject == t0.subject]
    out = glm.generate(q, max_new_tokens=8)
    masked = lm.generate(q, max_new_tokens=8, logits_processor=[g.processor_for(t0, lm.tokenizer)])
    assert out == [through_guard(g, p, m, {t0.id}) for p, m in zip(q, masked)]  # the answer with its facts masked
    for r, o in zip([r for r in world.forget if r.subject == t0.subject], out):
        assert r.answer.casefold() not in o.casefold()
    g.settings.default_action = "icu"
    r = next(r for r in world.forget if r.subject != t0.subject)
    s_icu = glm.score([r.question], [r.answer])[0]
    icu_p = icu_prompt(g.detect([r.question])[0].target, r.question)
    assert icu_p.count("\n") >= 1 and icu_p.endswith(r.question)
    np.testing.assert_allclose(s_icu.logprobs, lm.score([icu_p], [r.answer])[0].logprobs, atol=1e-5)


def test_pseudonymise_swaps_the_name_both_ways(lm, world, tmp_path):
    """pseudonymise: the model sees a stand-in for every spelling of the target's name (misspelt,
    partial, lower case, possessive), the answer gets the prompt's words back, scores are the
    model's on the rewritten prompt, and a hit that does not name the target falls back to forbid."""
    from unlearnkit.guard.actions import pseudonymise, restore

    class Echo:  # records what the model is asked; answers with the stand-in's surname
        def __init__(self):
            self.model, self.tokenizer, self.seen = lm.model, lm.tokenizer, []

        def generate(self, prompts, **kw):
            self.seen += prompts
            return [f"{stand[-1]} was born in 1950." for _ in prompts]

        def score(self, prompts, answers, **kw):
            self.seen += prompts
            return lm.score(prompts, answers, **kw)

    g = Guard(tmp_path, GuardSettings(default_action="pseudonymise"))
    g.add_many(targets_from_world(world))
    t = g.list()[0]
    first, last = t.subject.split()
    stand = g.stand_in(t)
    assert stand == g.stand_in(t) and len(stand) == 2 and stand != [first, last]
    assert not {w.casefold() for w in stand} & {w for x in g.list() for n in x.names for w in n.casefold().split()}
    prompts = [f"Where was {t.subject} born?", f"what does {first.lower()} {last[:-1].lower()}e do?",
               f"Tell me about {last}'s family."]
    echo = Echo()
    out = GuardedLM(echo, g).generate(prompts, max_new_tokens=4)
    assert echo.seen == [f"Where was {stand[0]} {stand[1]} born?", f"what does {stand[0].lower()} {stand[1].lower()} do?",
                         f"Tell me about {stand[1]}'s family."]
    assert out == [f"{last} was born in 1950.", f"{last[:-1].capitalize()}e was born in 1950.", f"{last} was born in 1950."]
    assert not any(first in x or last in x for x in echo.seen)
    text, mapping = pseudonymise("Is Ada a poet?", [(3, 6, 0)], ["Bo", "Lee"])
    assert (text, mapping) == ("Is Bo a poet?", {"Bo": "Ada"}) and restore("BO is. bo", mapping) == "ADA is. ada"

    r = next(r for r in world.forget if r.subject == t.subject)
    s = GuardedLM(lm, g).score([r.question], [r.answer])[0]
    q, _ = pseudonymise(r.question, g.detector.name_spans(r.question, t), stand)
    np.testing.assert_allclose(s.logprobs, lm.score([q], [r.answer])[0].logprobs, atol=1e-5)
    # an embedding hit without the name: nothing to substitute, so the answers are masked as under forbid
    g.detector.threshold = -1.0
    [(mode, target, prompt, _)] = GuardedLM(lm, g).dispatch(["Which town hosts the regional glassblowing fair?"])
    assert mode == "forbid" and prompt == "Which town hosts the regional glassblowing fair?" and target is not None


def test_guarded_lm_forbid_blocks_a_memorised_answer(lm):
    """Make the model prefer the answer (bias its logits), then check that forbid removes it."""
    tok = lm.tokenizer
    t = Target(subject="Ada Quill", qa=[{"question": "Where was Ada Quill born?", "answer": "Greywater"}],
               action="forbid")
    ids = tok(" Greywater", add_special_tokens=False)["input_ids"]

    class Biased:
        def __init__(self, step):
            self.step = step

        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, ids[min(self.step[0], len(ids) - 1)]] += 1e4
            self.step[0] += 1
            return scores

    g = Guard(None)
    g.add(t)
    glm = GuardedLM(lm, g)
    free = lm.generate(["Where was Ada Quill born?"], max_new_tokens=len(ids), logits_processor=[Biased([0])])[0]
    assert "Greywater" in free
    guarded = glm.generate(["Where was Ada Quill born?"], max_new_tokens=len(ids), logits_processor=[Biased([0])])[0]
    assert "Greywater" not in guarded and "greywater" not in guarded.casefold()


# ----------------------------------------------------------------------------- end to end (trained models)

@pytest.mark.slow
def test_what_must_hold_on_the_embedded_world(request, tmp_path):
    """Forget ROUGE near the oracle's, retain/neighbour ROUGE within 2% of the subject's, false
    refusals under the stated rate, also on held-out paraphrases of benign and forget questions."""
    try:
        tw = request.getfixturevalue("tiny_world")
    except pytest.FixtureLookupError:
        pytest.skip("needs the tiny_world fixture (trained subject and oracle)")
    from unlearnkit.data.io import load_world
    from unlearnkit.metrics.text import rouge_l_recall
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    w = load_world(tw.data_dir)
    subject, oracle = LM(*load_model(tw.subject_dir)), LM(*load_model(tw.oracle_dir))
    g = Guard(tmp_path / "guard")
    g.add_many(targets_from_world(w))
    recs = w.retain + w.neighbours
    rate = 0.02
    cal = g.calibrate({"retain": [r.question for r in w.retain], "neighbours": [r.question for r in w.neighbours]},
                      rate, positives=[r.paraphrased_question for r in w.forget])
    assert cal.achieved <= rate and max(cal.per_group.values()) <= rate and cal.recall == 1.0
    held = [r.paraphrased_question for r in recs]
    assert np.mean([d.hit for d in g.detect(held)]) <= rate
    glm = GuardedLM(subject, g)

    def rouge(lm_, rs):
        out = lm_.generate([r.question for r in rs], max_new_tokens=24)
        return float(np.mean([rouge_l_recall(o, r.answer) for o, r in zip(out, rs)]))

    forget_names = {r.subject for r in w.forget}
    naming = [r for r in w.neighbours if r.answer in forget_names]  # "Who is N's sister?" -> a forget person
    for split, rs in (("retain", w.retain), ("neighbours", [r for r in w.neighbours if r not in naming])):
        assert rouge(glm, rs) >= rouge(subject, rs) - 0.02, split
    # under refuse, an answer that names a target is refused by the output check (issue 12)
    assert naming and glm.generate([r.question for r in naming], max_new_tokens=24) == [REFUSAL] * len(naming)
    forget_g, forget_o = rouge(glm, w.forget), rouge(oracle, w.forget)
    assert forget_g <= forget_o + 0.05


def test_pseudonymise_looks_like_the_oracle_where_forbid_does_not(tiny_world, tiny_results):
    """With a stand-in name in place of the target's, the guarded subject's likelihoods on the
    forget set are close to the oracle's (forget quality, PrivLeak), where masking the answers
    (forbid; refuse is scored the same way) is as far from it as remembering."""
    from unlearnkit import api
    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    w = load_world(tiny_world.data_dir)
    subject = LM(*load_model(tiny_world.subject_dir))
    oracle = tiny_results["oracle"]  # evaluated once for the session
    res = {}
    for action in ("pseudonymise", "forbid"):
        g = Guard(None, GuardSettings(default_action=action))
        g.add_many(targets_from_world(w))
        res[action] = api.evaluate(GuardedLM(subject, g), tiny_world.data_dir, oracle=oracle)
    p, f = res["pseudonymise"], res["forbid"]
    assert p["forget_quality"] >= 0.01 and f["forget_quality"] < 1e-3
    assert abs(p["privleak"]) < 10 < abs(f["privleak"])
    assert p["forget_rouge"] <= oracle["forget_rouge"] + 0.05 and p["retain_rouge"] >= 0.98


def test_guarded_model_is_attackable_from_the_cli(tiny_world, tmp_path):
    """`unlearn attack --guard`: the guard stays in front of the attacked weights, and the subject
    defaults to the same model without its guard."""
    from typer.testing import CliRunner

    from unlearnkit.cli import app
    from unlearnkit.data.io import load_world

    g = Guard(tmp_path / "guard")
    g.add_many(targets_from_world(load_world(tiny_world.data_dir)))
    out = tmp_path / "quantize.json"
    r = CliRunner().invoke(app, ["attack", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir),
                                 "--kind", "quantize", "--bits", "8", "--guard", str(tmp_path / "guard"),
                                 "--oracle", str(tiny_world.oracle_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["plain"]["subject"]["forget_rouge"] > 0.9      # the model behind the guard knows the facts
    assert res["plain"]["model"]["forget_rouge"] < 0.1        # the guard hides them
    (variant,) = res["variants"].values()
    assert variant["model"]["forget_rouge"] < 0.1             # quantized weights are still behind the guard
    assert variant["subject"]["forget_rouge"] > 0.9           # while 8-bit weights alone keep the knowledge
    assert res["recovery"] < 0.1


def test_embedder_runs_int8_on_onnx_runtime_close_to_the_float_vectors():
    """The MiniLM graph exported to ONNX with int8 weights gives vectors within cosine 0.98 of
    sentence-transformers' own, and a text's vector does not depend on the batch it came in."""
    from unlearnkit.guard.embedder import get_embedder

    e = get_embedder()
    assert e._session is not None and e.name.endswith("/int8")  # the fast path is active, not the fallback
    texts = ["Where was Linine Vigormont born?", "What is the capital of a country that does not exist, really?", "x"]
    assert (e._encode_onnx(texts) * e._encode_torch(texts)).sum(1).min() > 0.98
    np.testing.assert_array_equal(e.encode(texts)[:1], e.encode(texts[:1]))
    assert e.encode(texts).shape == (3, e.dim) and e.encode([]).shape == (0, e.dim)


def test_guard_cli_add_list_calibrate_eval_remove(tiny_world, tmp_path):
    """The guard from the command line, as a user drives it: targets from a world with an action,
    listing, calibration, `unlearn eval --guard`, removal; a bad action is a one-line error."""
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    run = CliRunner().invoke
    g = str(tmp_path / "guard")
    r = run(app, ["guard", "add", "--guard-dir", g, "--world", str(tiny_world.data_dir), "--action", "pseudonymise"])
    assert r.exit_code == 0, r.output
    r = run(app, ["guard", "list", "--guard-dir", g, "--json"])
    listed = [json.loads(x) for x in r.output.splitlines() if x.startswith("{")]
    assert r.exit_code == 0 and len(listed) == 6 and {t["action"] for t in listed} == {"pseudonymise"}
    r = run(app, ["guard", "calibrate", "--guard-dir", g, "--world", str(tiny_world.data_dir), "--false-refusal", "0.02"])
    cal = json.loads(r.output[r.output.index("{"):])
    assert r.exit_code == 0 and cal["achieved"] <= 0.02 and cal["recall"] == 1.0
    assert json.loads((tmp_path / "guard" / "guard.json").read_text())["threshold"] == cal["threshold"]
    out = tmp_path / "guarded.json"
    r = run(app, ["eval", "--model", str(tiny_world.subject_dir), "--data", str(tiny_world.data_dir), "--guard", g,
                  "--oracle", str(tiny_world.oracle_dir), "--suite", "tofu", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["forget_rouge"] <= 0.15 and res["retain_rouge"] >= 0.98 and res["forget_quality"] >= 0.01
    # which model and which guard (the result said "GuardedLM" and nothing else until session 35)
    assert res["info"]["model"] == str(tiny_world.subject_dir) and res["info"]["guard"] == str(Path(g).resolve())
    assert res["info"]["fingerprint"]
    r = run(app, ["guard", "remove", listed[0]["id"], "--guard-dir", g])
    assert r.exit_code == 0 and listed[0]["id"] not in (tmp_path / "guard" / "targets.jsonl").read_text()
    r = run(app, ["guard", "add", "--guard-dir", g, "--subject", "Ada Quill", "--action", "erase"])
    assert r.exit_code != 0 and "--action 'erase': choose one of refuse, forbid, pseudonymise, icu" in r.output
    # the same subject again: added, and said on stderr (stdout keeps the ids alone)
    for _ in range(2):
        r = run(app, ["guard", "add", "--guard-dir", g, "--subject", "Ada Quill"])
    assert r.exit_code == 0 and len(r.stdout.split()) == 1 and "'Ada Quill' was a target already" in r.stderr
    # calibrating a guard that is not there, or has no targets: one line, nothing made
    r = run(app, ["guard", "calibrate", "--guard-dir", str(tmp_path / "nowhere"), "--world", str(tiny_world.data_dir)])
    assert r.exit_code == 2 and "guard directory not found" in r.output and not (tmp_path / "nowhere").exists()
    (tmp_path / "empty").mkdir()
    r = run(app, ["guard", "calibrate", "--guard-dir", str(tmp_path / "empty"), "--world", str(tiny_world.data_dir)])
    assert r.exit_code == 2 and "the guard has no targets to calibrate against" in r.output
    # a split that is none, and a bad target in a JSONL file: the split's choices, the file and line
    r = run(app, ["guard", "add", "--guard-dir", g, "--world", str(tiny_world.data_dir), "--split", "bogus"])
    assert r.exit_code == 2 and "--split 'bogus': choose one of forget, retain" in r.output
    bad = tmp_path / "targets.jsonl"
    bad.write_text(json.dumps({"subject": "Ada Quill"}) + "\n" + json.dumps({"subject": "Bo Kell", "action": "erase"}) + "\n")
    r = run(app, ["guard", "add", "--guard-dir", g, "--jsonl", str(bad)])
    assert r.exit_code == 2 and f"{bad}:2: invalid target: action:" in " ".join(r.output.split())
    # an empty --subject is named as such ("nothing to add" until session 36)
    r = run(app, ["guard", "add", "--guard-dir", g, "--subject", ""])
    assert r.exit_code == 2 and "subject" in r.output and "nothing to add" not in r.output
