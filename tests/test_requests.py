"""Forget requests end to end: the home, the ledger, add/guard, crash safety, certificates.

The bookkeeping tests use an untrained tiny model and a two-step budget (they check states, files
and hashes, not forgetting); thresholds are opened wide there so that every check passes. The
end-to-end tests at the bottom use the session's trained `tiny_world`."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit import DEFAULT_METHOD
from unlearnkit import requests as rq
from unlearnkit.cli import app
from unlearnkit.requests.home import HomeError

SRC = str(Path(__file__).resolve().parents[1] / "src")
LENIENT = dict(answer_tolerance=1.0, mia_tolerance=0.5, relearn_max=1.0, quantize_max=1.0, utility_floor=0.0,
               utility_records=20, retain_sample=20, relearn_steps=2, n_strangers=2)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A 20-person world and an untrained tiny model on its vocabulary."""
    from unlearnkit import api
    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import new_model, train_tokenizer

    root = tmp_path_factory.mktemp("rqraw")
    data = api.world(root / "world", seed=1, n_people=20, forget_fraction=0.2)
    w = load_world(data)
    texts = [t for r in w.training_records() for t in r.phrasings() + [r.answer]]
    tok = train_tokenizer(texts, vocab_size=512)
    save_model(new_model(tok, seed=0), tok, root / "model")
    people = sorted({r.subject for r in w.forget})
    return {"world": data, "model": root / "model", "people": people}


@pytest.fixture
def home(raw, tmp_path):
    return rq.init(tmp_path / "home", raw["model"], raw["world"], **LENIENT)


def cli(*args, env=None):
    r = CliRunner().invoke(app, list(args), env=env)
    return r.exit_code, r.stdout, r.stderr


def test_home_layout_manifest_and_corruption(home):
    assert (home.path / "home.json").is_file() and (home.path / "ledger.sqlite").is_file()
    assert home.current_name() == "v0000"
    v = home.current()
    assert "model.safetensors" in v.files and len(v.weights) == 64
    assert home.meta["base_utility"] >= 0
    # a partial version (no manifest) and a corrupted one are refused, and `current` cannot point at them
    (home.versions_dir / "v0001").mkdir()
    with pytest.raises(HomeError, match="partial version"):
        home.set_current("v0001")
    import shutil

    shutil.rmtree(home.versions_dir / "v0001")
    bad = home.add_version(v.path, "v0001", parent="v0000")
    with open(bad.path / "model.safetensors", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(HomeError, match="corrupted"):
        home.set_current("v0001")
    assert home.current_name() == "v0000"
    # a manifest whose files are not a mapping is unreadable (an AttributeError until session 35)
    manifest = json.loads((bad.path / "MANIFEST.json").read_text())
    (bad.path / "MANIFEST.json").write_text(json.dumps({**manifest, "files": list(manifest["files"])}))
    with pytest.raises(HomeError, match="field 'files' must map"):
        home.check_version("v0001")
    (bad.path / "MANIFEST.json").write_text(json.dumps(manifest))
    # the server refuses a corrupted current version at start
    from unlearnkit.requests.serve import HomeServer

    (home.path / "current").write_text("v0001\n")
    with pytest.raises(HomeError, match="corrupted"):
        HomeServer(home, token="t")


def test_add_guards_at_once_and_merges(home, raw):
    a = rq.add(home, raw["people"][0], aliases=["Dr. X"])
    assert a.status == "guarded" and not a.merged
    g = home.guard()
    assert [t.id for t in g.list()] == [a.id]
    assert g.detect([f"Where was {raw['people'][0]} born?"])[0].hit
    again = rq.add(home, "  " + raw["people"][0].upper() + " ")
    by_alias = rq.add(home, "dr. x", aliases=["Another Name"])
    assert again.id == by_alias.id == a.id and again.merged and by_alias.merged
    r = rq.show(home, a.id)
    # the name in capitals and "dr. x" are names it has, however written: no new alias
    assert r["status"] == "guarded" and r["aliases"] == ["Dr. X", "Another Name"]
    assert [e["to_status"] for e in r["events"]][:2] == ["received", "guarded"]
    assert len(rq.list_requests(home)) == 1


def test_a_request_filed_again_in_any_state_guards_its_new_name(home, raw):
    """Filed again under a new alias: a located request keeps its inventory's answers in the guard
    (until session 34 this raised, with the alias in the ledger and not in the guard), a failed one
    goes back to guarded, and a verified one's guard target, which keeps names only, takes the alias."""
    from unlearnkit.requests.intake import guard_target, put_target

    located, failed, verified = (rq.add(home, p).id for p in raw["people"][:3])
    item = {"question": f"What is the pet of {raw['people'][0]}?", "answer": "Zibblewump", "source": "probe"}
    with home.ledger() as led:
        led.transition(located, "located", inventory={"items": [item], "strangers": []})
        led.transition(failed, "failed", failure="a test")
        led.transition(verified, "processing")
        led.transition(verified, "verified", certificate="c.json")
    put_target(home.targets(), guard_target(verified, raw["people"][2], [], [], names_only=True))
    for rid, person, alias in zip((located, failed, verified), raw["people"], ("Pelly Marwick", "Quon Ashby", "Tiv Orrel")):
        added = rq.add(home, person, aliases=[alias])
        assert added.id == rid and added.merged
        assert added.status == {located: "located", failed: "guarded", verified: "verified"}[rid]
        g = home.guard()
        assert g.detect([f"Where was {alias} born?"])[0].hit, alias
        (t,) = [t for t in g.list() if t.id == rid]
        assert t.aliases == [alias] and ([q.answer for q in t.qa] == ["Zibblewump"] if rid == located else not t.qa)
    assert rq.add(home, "tiv  ORREL").id == verified  # known to the ledger by its hash alone
    (t,) = [t for t in home.guard().list() if t.id == verified]
    assert t.aliases == ["Tiv Orrel"]
    # filed again with facts, a verified person gets a new request that follows the verified one, which
    # keeps no clear text (the facts were dropped, and nothing done with them, until session 40); the
    # person's names name the new request from then on
    code, printed, err = cli("request", "add", "Tiv Orrel", "--home", str(home.path), "--facts",
                             _facts_file(home.path.parent, [{"question": "What does Tiv Orrel grow?", "answer": "Leeks"}]))
    follow = printed.strip()
    assert code == 0 and follow != verified and f"note: {verified}, the person's earlier request, is verified" in " ".join(err.split())
    again = rq.add(home, "tiv orrel", facts=[{"question": "Where does Tiv Orrel sail?", "answer": "Brackwater"}])
    assert (again.id, again.merged, again.status) == (follow, True, "guarded")
    with home.ledger() as led:
        assert led.get(follow).name == "Tiv Orrel" and [f["answer"] for f in led.get(follow).facts] == ["Leeks", "Brackwater"]
    first = rq.show(home, follow)["events"][0]
    assert first["to_status"] == "received" and json.loads(first["detail"])["follows"] == verified
    targets = {t.id: t for t in home.targets().list()}
    assert sorted(q.answer for q in targets[follow].qa) == ["Brackwater", "Leeks"] and not targets[verified].qa
    assert rq.show(home, verified)["status"] == "verified" and rq.add(home, "Tiv Orrel").id == follow


def test_two_adds_of_one_new_person_at_once_file_one_request(home, monkeypatch):
    """The look-up of a person's names and the new request are one transaction: two `request add`s of
    one new person at once give one request, the later merged (until session 40 both could create
    one; a pause before the insert, as here, made it certain)."""
    import threading
    import uuid

    real = uuid.uuid4

    def slow():
        time.sleep(0.3)
        return real()

    monkeypatch.setattr(uuid, "uuid4", slow)
    start, got = threading.Barrier(3), []

    def file():
        start.wait()
        got.append(rq.add(home, "Race Twin"))

    threads = [threading.Thread(target=file) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a.id for a in got}) == 1 and sorted(a.merged for a in got) == [False, True, True]
    assert len(rq.list_requests(home)) == 1 and [t.subject for t in home.targets().list()] == ["Race Twin"]


def test_an_add_beside_a_locate_leaves_the_guard_as_the_ledger_says(home, raw, monkeypatch):
    """`request add` from another process while `process` locates the same request: the guard keeps
    both the new alias and the inventory's answers (whichever wrote the guard last won until session
    40: the locate's write, made from the request as read before the add, dropped the alias)."""
    proc = sys.modules["unlearnkit.requests.process"]
    person = raw["people"][0]
    rid = rq.add(home, person).id
    item = {"question": f"What is the pet of {person}?", "answer": "Zibblewump", "source": "probe"}

    def locate_while_added(*a, **k):
        rq.add(home, person, aliases=["Pelly Marwick"])  # "another process", while locate runs
        return {"items": [item], "strangers": [], "names": [person], "counts": {"inventory": 1}}

    monkeypatch.setattr(proc, "locate", locate_while_added)
    proc.locate_request(home, rid, lm=object(), base=None)
    (t,) = [t for t in home.targets().list() if t.id == rid]
    assert t.aliases == ["Pelly Marwick"] and [q.answer for q in t.qa] == ["Zibblewump"]
    assert home.guard().detect(["Where was Pelly Marwick born?"])[0].hit
    r = rq.show(home, rid)
    assert r["status"] == "located" and r["aliases"] == ["Pelly Marwick"]


def test_an_add_beside_a_deployment_is_neither_lost_nor_left_in_the_guard(home, raw, monkeypatch):
    """`request add` from another process between the deployment's guard trim and its commit: a new
    alias sends the request back to guarded, kept in the ledger and the guard (the request was
    verified and the alias dropped until session 40); the same name filed again leaves the guard
    with the names alone once verified (the add's write put the facts back until session 40)."""
    proc = sys.modules["unlearnkit.requests.process"]
    grows, repeats = raw["people"][:2]
    facts = {p: [{"question": f"What is the pet of {p}?", "answer": f"Wobbles{i}"}] for i, p in enumerate((grows, repeats))}
    ids = {p: rq.add(home, p, facts=facts[p]).id for p in (grows, repeats)}
    with home.ledger() as led:
        for p, i in ids.items():
            led.transition(i, "located", inventory={"items": [], "strangers": [], "names": [p], "facts": 1})
        led.start_batch("b-race", "v0000", "v0001", list(ids.values()), DEFAULT_METHOD)
        reqs = [led.get(i) for i in ids.values()]
    b = {"id": "b-race", "results": {"certificates": {i: {"path": f"certificates/{i}.json", "sha256": "0" * 64}
                                                      for i in ids.values()},
                                     "request_checks": {i: [] for i in ids.values()}, "batch_checks": [],
                                     "verified_at": time.time()}}
    real_put, filed = proc.put_target, []

    def put_then_add(store, target):
        real_put(store, target)
        if len(filed) < 1:  # after the first trim, before the commit: "another process" files both again
            filed.append(rq.add(home, grows, aliases=["Quon Ashby"]))
            filed.append(rq.add(home, repeats))

    monkeypatch.setattr(proc, "put_target", put_then_add)
    proc._deploy(home, b, reqs, home.current())
    r = rq.show(home, ids[grows])
    assert r["status"] == "guarded" and r["aliases"] == ["Quon Ashby"]
    targets = {t.id: t for t in home.targets().list()}
    assert targets[ids[grows]].aliases == ["Quon Ashby"] and [q.answer for q in targets[ids[grows]].qa] == ["Wobbles0"]
    assert rq.show(home, ids[repeats])["status"] == "verified"
    t = targets[ids[repeats]]
    assert t.subject == repeats and not t.qa and not t.facts  # the names alone


def _facts_file(where, facts) -> str:
    path = where / "facts.jsonl"
    path.write_text("".join(json.dumps(f) + "\n" for f in facts))
    return str(path)


def test_ledger_refuses_bad_transitions(home, raw):
    from unlearnkit.requests.ledger import LedgerError

    a = rq.add(home, raw["people"][0])
    with home.ledger() as led:
        with pytest.raises(LedgerError, match="cannot go from guarded to verified"):
            led.transition(a.id, "verified", certificate="x")
        led.transition(a.id, "processing")
        with pytest.raises(LedgerError, match="verified needs its certificate"):
            led.transition(a.id, "verified")
        assert led.get(a.id).status == "processing"


def test_bad_input_one_line_errors(home, tmp_path):
    h = str(home.path)
    code, _, err = cli("request", "add", "   ", "--home", h)
    assert code == 2 and "name: must not be empty" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match=r"alias: holds the control character '\\x00'"):  # filed until session 40
        rq.add(home, "Ann Bee", aliases=["Ann\x00Bee"])
    assert rq.list_requests(home) == []
    code, _, err = cli("request", "show", "r-nope", "--home", h)
    assert code == 2 and "no request with id 'r-nope'" in err
    facts = tmp_path / "f.jsonl"
    facts.write_text('{"question": "Q?", "answer": "A"}\n{"question": "Q2?"}\n')
    code, _, err = cli("request", "add", "Some One", "--facts", str(facts), "--home", h)
    assert code == 2 and f"{facts}:2: a line needs 'question' and 'answer', or 'fact'" in err  # no "field '(line)'"
    facts.write_text('{"fact": "Some One was born in Ashmere."}\nnot json\n')
    code, _, err = cli("request", "add", "Some One", "--facts", str(facts), "--home", h)
    assert code == 2 and f"{facts}:2: malformed JSON" in err
    code, _, err = cli("request", "list", "--home", str(tmp_path / "nowhere"))
    assert code == 2 and "not a deployment home" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("request", "process", "--sam", "2", "--home", h)
    assert code == 2 and "--sam" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("home", "init", "--model", str(home.path / "versions" / "v0000"), "--retain",
                       str(home.path / "retain" / "retain.jsonl"), "--sam", "-1", "--home", str(tmp_path / "h2"))
    assert code == 2 and "--sam" in err and not (tmp_path / "h2").exists()
    code, _, err = cli("home", "init", "--model", str(home.path / "versions" / "v0000"), "--retain",
                       str(home.path / "retain" / "retain.jsonl"), "--repair-rounds", "-1", "--home", str(tmp_path / "h2"))
    assert code == 2 and "--repair-rounds" in err and not (tmp_path / "h2").exists()
    code, _, err = cli("home", "init", "--model", str(home.path / "versions" / "v0000"), "--retain",
                       str(home.path / "retain" / "retain.jsonl"), "--lift-rounds", "-1", "--home", str(tmp_path / "h2"))
    assert code == 2 and "--lift-rounds" in err and not (tmp_path / "h2").exists()
    code, _, err = cli("home", "init", "--model", str(home.path / "versions" / "v0000"), "--retain",
                       str(home.path / "retain" / "retain.jsonl"), "--lift-rounds", "0", "--home", str(tmp_path / "h6"))
    assert code == 0, err
    assert json.loads((tmp_path / "h6" / "home.json").read_text())["settings"]["lift_rounds"] == 0
    with pytest.raises(ValueError, match="parameter sam=2"):  # the Python API validates every setting too
        rq.init(tmp_path / "h3", home.path / "versions" / "v0000", home.path / "retain" / "retain.jsonl", sam=2)
    with pytest.raises(ValueError, match="no parameter 'answer_tol'; its parameters: method, sam"):
        rq.init(tmp_path / "h3", home.path / "versions" / "v0000", home.path / "retain" / "retain.jsonl",
                answer_tol=0.2)
    assert not (tmp_path / "h3").exists()
    # a retain pool or a model that is not there: one line, and no half-made home is left (an empty one was)
    code, _, err = cli("home", "init", "--model", str(home.path / "versions" / "v0000"), "--retain",
                       str(tmp_path / "nowhere.jsonl"), "--home", str(tmp_path / "h4"))
    assert code == 2 and "nowhere.jsonl" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "h4").exists()
    code, _, err = cli("home", "init", "--model", str(tmp_path / "no-model"), "--retain",
                       str(home.path / "retain" / "retain.jsonl"), "--home", str(tmp_path / "h4"))
    assert code == 2 and "no-model" in err and not (tmp_path / "h4").exists()
    meta = json.loads((home.path / "home.json").read_text())
    bad = tmp_path / "bad-home"
    bad.mkdir()
    (bad / "home.json").write_text(json.dumps({**meta, "settings": {**meta["settings"], "utility_floor": 3}}))
    code, _, err = cli("request", "list", "--home", str(bad))
    assert code == 2 and f"{bad / 'home.json'}: setting, parameter utility_floor=3" in err
    # from Python (session 36): a method or guard action that is none, at the door, and facts, a name and
    # aliases checked before the request is made (a bad method stuck the home's next batch for good, and a
    # malformed fact failed after the request was created and before its guard target)
    v0 = home.path / "versions" / "v0000"
    for bad_setting, says in (({"method": "nonsense"}, "unknown method 'nonsense'"),
                              ({"guard_action": "block"}, "choose one of")):
        with pytest.raises(ValueError, match=says) as e:
            rq.init(tmp_path / "h5", v0, home.path / "retain" / "retain.jsonl", **bad_setting)
        assert "\n" not in str(e.value) and not (tmp_path / "h5").exists()
    with pytest.raises(ValueError, match="--method: unknown method 'nonsense'"):
        rq.process(home, method="nonsense", steps=2)
    for facts_, exc, says in ((["Zed was born in Paris."], ValueError, r"facts\[0\]"),
                              ([{"question": "Where was Zed born?"}], ValueError, r"facts\[0\]: a line needs"),
                              ({"question": "Q?", "answer": "A"}, TypeError, "facts: expected")):
        with pytest.raises(exc, match=says):
            rq.add(home, "Zed Two", facts=facts_)
    with pytest.raises(TypeError, match="name: expected a string, got NoneType"):
        rq.add(home, None)
    code, _, _ = cli("request", "list", "--home", h)
    assert code == 0  # the failed adds left nothing behind
    assert rq.list_requests(home) == []
    assert rq.show(home, rq.add(home, "Zed Two", aliases="Z. Two").id)["aliases"] == ["Z. Two"]  # not 6 letters


def test_home_init_refuses_a_home_inside_the_model_folder_or_holding_it(raw, tmp_path):
    """A home inside the model's folder copied the model into itself, writing into the source, until
    "File name too long" (session 37); a home that holds the model folder is refused too."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(raw["model"], model)
    before = sorted(p.relative_to(model) for p in model.rglob("*"))
    code, _, err = cli("home", "init", "--model", str(model), "--retain", str(raw["world"]),
                       "--home", str(model / "home"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"--home {model / 'home'}: it lies inside the source model's folder {model}" in " ".join(err.split())
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before  # nothing written into the source
    with pytest.raises(HomeError, match="it contains the source model's folder"):
        rq.init(tmp_path, model, raw["world"], **LENIENT)
    with pytest.raises(HomeError, match="it is the source model's folder"):
        rq.init(model, model, raw["world"], **LENIENT)
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before
    assert not (tmp_path / "home.json").exists() and not (tmp_path / "versions").exists()


def test_home_init_refuses_a_retain_pool_no_larger_than_its_utility_slice(raw, tmp_path):
    """The utility slice is never trained on, and a batch's retain set is drawn from the rest: a pool
    of utility_records or fewer left none, and every batch failed ("retain.jsonl: empty, and method
    simnpo needs a retain set") and stayed open for good (session 37)."""
    from unlearnkit.data.io import write_jsonl
    from unlearnkit.requests.pool import read_pool_source

    pool = read_pool_source(raw["world"])
    small = write_jsonl(tmp_path / "small.jsonl", pool[:50])
    code, _, err = cli("home", "init", "--model", str(raw["model"]), "--retain", str(small),
                       "--home", str(tmp_path / "h"))  # utility_records: 100 by default
    assert code == 2 and len(err.strip().splitlines()) == 1 and not (tmp_path / "h").exists()
    assert f"{small}: the retain pool has 50 records, and utility_records is 100: it must hold more" in " ".join(err.split())
    with pytest.raises(ValueError, match="the retain pool has 50 records, and utility_records is 50"):
        rq.init(tmp_path / "h", raw["model"], small, measure_utility=False, utility_records=50)
    assert not (tmp_path / "h").exists()
    h = rq.init(tmp_path / "h", raw["model"], small, measure_utility=False, utility_records=49)
    assert len((h.retain_dir / "retain.jsonl").read_text().splitlines()) == 50
    # a home made before the refusal may hold such a pool: `process` says so before it opens a
    # batch (each batch failed and stayed open until session 42), and the request stays guarded
    write_jsonl(h.retain_dir / "retain.jsonl", pool[:40])
    rid = rq.add(h, raw["people"][0], facts=[{"question": f"What is the pet of {raw['people'][0]}?",
                                               "answer": "Wobbles"}]).id
    code, _, err = cli("request", "process", "--home", str(h.path), "--steps", "2")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{h.retain_dir / 'retain.jsonl'}: the retain pool has 40 records, and utility_records is 49" in \
        " ".join(err.split())
    with h.ledger() as led:
        assert not led.open_batches() and led.get(rid).status == "guarded"


def test_a_retain_pool_from_a_world_keeps_ids_that_repeat_across_its_splits(tmp_path):
    """Ids are unique within a split (README); the pool joins the splits, and an id two of them
    share was refused in the home's own retain.jsonl ("home/retain/retain.jsonl:3: duplicate id",
    naming no file of the user's) until session 37."""
    from unlearnkit.data.io import DataError, write_jsonl
    from unlearnkit.requests.pool import import_pool, load_pool, read_pool_source

    def rec(i, s):
        return {"id": i, "subject": s, "question": f"Where was {s} born?", "answer": "Leeds",
                "paraphrased_answer": "In Leeds.", "perturbed_answers": ["In York."]}

    world = tmp_path / "world"
    world.mkdir()
    write_jsonl(world / "forget.jsonl", [rec("1", "Ada Vale")])
    write_jsonl(world / "retain.jsonl", [rec("1", "Bo Kell"), rec("2", "Cy Lorne")])
    write_jsonl(world / "neighbours.jsonl", [rec("1", "Di Moss")])
    write_jsonl(world / "world_facts.jsonl", [rec("1", "Ed Nye"), rec("2", "Fa Orr")])
    import_pool(world, tmp_path / "retain")
    pool = load_pool(type("Home", (), {"retain_dir": tmp_path / "retain"}))
    assert [(r.id, r.subject) for r in pool] == [("1", "Bo Kell"), ("2", "Cy Lorne"), ("neighbours:1", "Di Moss"),
                                                 ("world_facts:1", "Ed Nye"), ("world_facts:2", "Fa Orr")]
    write_jsonl(world / "neighbours.jsonl", [rec("1", "Di Moss"), rec("world_facts:1", "Gus Pike")])
    with pytest.raises(DataError, match=r"world_facts.jsonl: record '1': field 'id': in an earlier split, and "
                                        r"'world_facts:1' is taken too"):
        read_pool_source(world)


def test_cli_round_trip(raw, tmp_path, monkeypatch):
    h = tmp_path / "h"
    monkeypatch.setenv("UNLEARN_HOME", str(h))  # the default home
    code, out, err = cli("home", "init", "--model", str(raw["model"]), "--retain", str(raw["world"] / "retain.jsonl"))
    assert code == 0 and out.strip() == str(h), err
    code, _, err = cli("home", "init", "--model", str(raw["model"]), "--retain", str(raw["world"]))
    assert code == 2 and "already a deployment home" in err
    code, out, err = cli("request", "add", raw["people"][2], "--alias", "Nick Name", "--reason", "email")
    assert code == 0 and out.strip().startswith("r-") and "guarded" in err
    rid = out.strip()
    code, out, _ = cli("request", "list", "--json")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [rid]
    code, out, _ = cli("request", "show", rid, "--json")
    r = json.loads(out)
    assert r["status"] == "guarded" and r["aliases"] == ["Nick Name"] and r["reason"] == "email"
    code, out, _ = cli("request", "show", rid)
    assert code == 0 and "history" in out
    code, _, err = cli("request", "certificate", rid)
    assert code == 2 and "no certificate (status guarded)" in err
    code, _, err = cli("home", "prune")  # only the base version, which is deployed
    assert code == 0 and "nothing to prune" in err and (h / "versions" / "v0000" / "model.safetensors").is_file()


def _process_cmd(home, *extra):
    return [sys.executable, "-m", "unlearnkit.cli", "request", "process", "--home", str(home.path), "--steps", "2",
            *extra]


def _env(**kw):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.update(kw)
    return env


def _consistent(home, expected_ids):
    """No request lost or duplicated; none verified without its certificate file."""
    con = sqlite3.connect(home.ledger_path)
    rows = con.execute("SELECT id, status, certificate FROM requests").fetchall()
    con.close()
    ids = [r[0] for r in rows]
    assert sorted(ids) == sorted(set(ids)) and set(expected_ids) <= set(ids)
    for rid, status, cert in rows:
        if status == "verified":
            assert cert and (home.path / cert).is_file()
    return {r[0]: r[1] for r in rows}


ADD_WITHOUT_THE_MODEL_SIDE = r"""
import sys
from unlearnkit.cli import app
sys.argv = ["unlearn", "request", "add", "Ada Quill", "--home", sys.argv[1]]
try:
    app()
except SystemExit as e:
    assert not e.code, e.code
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "sentence_transformers",
                                                             "sklearn", "scipy"))  # scikit-learn: 1.5 s (session 36)
assert not heavy, heavy[:5]
"""


def test_request_add_from_the_command_line_guards_at_once_without_the_model_side(home):
    """`unlearn request add` loads neither torch nor the embedder (seconds): the target goes in with
    its names and no vectors; the guard (the server's) catches the person by name at once and
    embeds the target at its first search."""
    from unlearnkit.guard import TargetStore

    r = subprocess.run([sys.executable, "-c", ADD_WITHOUT_THE_MODEL_SIDE, str(home.path)], env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [t.subject for t in home.targets().pending] == ["Ada Quill"]
    hit = home.guard().detector.detect(["Where was Ada Quill born?"])[0]
    assert hit.hit and hit.channel == "name" and hit.target.subject == "Ada Quill"
    assert not TargetStore(home.guard_dir).pending  # the first search embedded and saved it
    assert [x["status"] for x in rq.list_requests(home)] == ["guarded"]


def test_a_request_add_killed_before_its_guard_step_is_guarded_by_the_next_add_or_process(home, raw):
    """`request add` SIGKILLed between the ledger's create and the guard step left the request
    `received` for good (session 37): never guarded, never taken by `process`, and filing it again
    merged into it without moving it on. The next add of the person, or the next process, guards it."""
    def killed_add(name):
        r = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "request", "add", name, "--home", str(home.path)],
                           env=_env(UNLEARNKIT_KILL_AT="received"), capture_output=True, timeout=120)
        assert r.returncode == -9, r.stderr.decode()[-2000:]
        (left,) = [x for x in rq.list_requests(home) if x["name"] == name]
        assert left["status"] == "received" and left["id"] not in {t.id for t in home.targets().list()}
        return left["id"]

    first, second = raw["people"][:2]
    rid = killed_add(first)
    again = rq.add(home, first.upper(), aliases=["F. Again"])  # filed again: merged, and guarded now
    assert (again.id, again.status, again.merged) == (rid, "guarded", True)
    (t,) = [t for t in home.targets().list() if t.id == rid]
    assert t.subject == first and t.aliases == ["F. Again"]
    assert home.guard().detect([f"Where was {first} born?"])[0].hit
    rid2 = killed_add(second)
    res = rq.process(home, steps=2)  # guards it first, then takes it with the other
    assert set(res["requests"]) == {rid, rid2}
    r2 = rq.show(home, rid2)
    assert r2["status"] in ("verified", "failed") and r2["guarded_at"] is not None
    assert [e["to_status"] for e in r2["events"]][:3] == ["received", "guarded", "located"]


def test_a_withdraw_killed_before_its_guard_step_is_ended_by_the_next_withdraw_or_process(home, raw):
    """`request withdraw` SIGKILLed between the ledger's commit and the guard step leaves the person
    behind the guard, their name in its files, under a request nothing else would touch again."""
    def killed_withdraw(name):
        rid = rq.add(home, name).id
        r = subprocess.run([sys.executable, "-m", "unlearnkit.cli", "request", "withdraw", rid, "--home",
                            str(home.path)], env=_env(UNLEARNKIT_KILL_AT="withdrawn"), capture_output=True, timeout=120)
        assert r.returncode == -9, r.stderr.decode()[-2000:]
        assert rq.show(home, rid)["status"] == "withdrawn" and rid in {t.id for t in home.targets().list()}
        return rid

    first, second = raw["people"][:2]
    rid = killed_withdraw(first)
    assert rq.withdraw(home, rid)["status"] == "withdrawn" and home.targets().list() == []  # again: ended
    rid2 = killed_withdraw(second)
    assert rq.process(home, steps=2) == {} and home.targets().list() == []  # nothing to process; ended first
    assert all(second.encode() not in data for _, data in _home_bytes(home)), rid2


def test_process_takes_at_most_the_homes_max_batch_oldest_first(raw, tmp_path):
    """One batch of all twelve forget people was rejected on all four bench worlds, batches of four
    deployed 9 of 12 (session 41): `process` takes at most the home's `max_batch` (4 unless set),
    oldest first, and says how many wait for the next run."""
    from unlearnkit.requests.home import Settings

    assert Settings().max_batch == 4
    home = rq.init(tmp_path / "home", raw["model"], raw["world"], **LENIENT, max_batch=2)
    ids = [rq.add(home, p, facts=[{"question": f"What is the pet of {p}?", "answer": "Wobbles"}]).id
           for p in raw["people"][:3]]
    code, out, err = cli("request", "process", "--home", str(home.path), "--steps", "2")
    assert code in (0, 1), out + err
    taken = {x["id"]: x for x in rq.list_requests(home)}
    assert [taken[i]["status"] in ("verified", "failed") for i in ids] == [True, True, False]
    assert taken[ids[2]]["status"] == "guarded"
    assert "1 request(s) wait for the next batch: run `unlearn request process` again (at most 2 a batch; " \
           "--all: until none waits)" in \
        " ".join(out.split())
    more = [rq.add(home, p, facts=[{"question": f"What is the pet of {p}?", "answer": "Wobbles"}]).id
            for p in (raw["people"][3], "Extra Person0")]
    # `rq.process_all` (`--all`): batch after batch, the oldest first, until none waits
    done = rq.process_all(home, steps=2)
    assert [b["requests"] for b in done] == [[ids[2], more[0]], [more[1]]] and [b["waiting"] for b in done] == [1, 0]
    assert rq.process(home) == {} and rq.process_all(home) == []
    last = rq.add(home, "Extra Person1", facts=[{"question": "What is the pet of Extra Person1?", "answer": "Wobbles"}])
    code, out, err = cli("request", "process", "--all", "--home", str(home.path), "--steps", "2")
    assert code in (0, 1), out + err
    assert " ".join(out.split()).count(" -> v000") == 1 and "wait for the next batch" not in out
    assert rq.show(home, last.id)["status"] in ("verified", "failed")
    with pytest.raises(ValueError, match="--max-batch: must be >= 1"):
        rq.process(home, max_batch=0)
    code, _, err = cli("home", "init", "--model", str(raw["model"]), "--retain", str(raw["world"]), "--home",
                       str(tmp_path / "h2"), "--max-batch", "-1")
    assert code == 2 and "--max-batch" in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "h2").exists()
    code, _, err = cli("home", "init", "--model", str(raw["model"]), "--retain", str(raw["world"]), "--home",
                       str(tmp_path / "h2"), "--max-batch", "0")
    assert code == 0 and rq.open_home(tmp_path / "h2").settings.max_batch == 0, err


def test_a_resumed_batch_trains_with_what_it_was_started_with(home, raw):
    """A batch left open goes on with its own seed and budget, recorded with it, not the next call's
    (it trained with the new call's `--steps` and `--seed` until session 37), and the call says so."""
    rid, _ = (rq.add(home, p, facts=[{"question": f"What is the pet of {p}?", "answer": "Wobbles"}]).id
              for p in raw["people"][:2])  # two: the relearning check needs facts to train on and facts to ask
    proc = subprocess.run(_process_cmd(home, "--seed", "7"), env=_env(UNLEARNKIT_KILL_AT="started"),
                          capture_output=True, timeout=600)  # --steps 2
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    b = rq.show(home, rid)["batch"]
    code, out, err = cli("request", "process", "--home", str(home.path), "--steps", "3", "--seed", "1")
    assert code in (0, 1), out + err  # 1: not deployed (the checks, on an untrained model, decide)
    said = " ".join(out.split())
    assert f"batch {b}: " in said and "left open" not in said  # the batch resumed is the one printed
    assert 'resumed with what it was started with (seed=7, steps=2); this call\'s seed=1, steps=3 apply to a new ' \
           'batch only' in said
    config = yaml.safe_load((home.runs_dir / b / "unlearn" / "config.yaml").read_text())
    assert config["seed"] == 7 and config["train"]["steps"] == 2
    assert rq.show(home, rid)["status"] in ("verified", "failed")
    with home.ledger() as led:  # what it was started with stays on record with its results
        assert {k: led.batch(b)["results"][k] for k in ("seed", "train_overrides")} == {
            "seed": 7, "train_overrides": {"steps": 2}}


def test_a_batch_that_fails_every_time_can_be_abandoned(home, raw, monkeypatch):
    """A batch whose run raises every time (as a home made before session 37 whose retain pool left
    nothing to retain did) held its requests `processing` and every later batch back for good;
    `request process --abandon` gives it up: abandoned, its requests failed with the reason, the guard
    still on them; filed again, a request is taken again."""
    from unlearnkit.data.io import DataError

    proc = sys.modules["unlearnkit.requests.process"]  # the package's `process` is the function
    def fails(*a, **k):
        raise DataError("world/retain.jsonl: empty, and method simnpo needs a retain set")

    monkeypatch.setattr(proc, "_unlearn", fails)
    ids = [rq.add(home, p, facts=[{"question": f"What is the pet of {p}?", "answer": "Wobbles"}]).id
           for p in raw["people"][:2]]
    for _ in range(2):  # the same every time, and the way out said
        with pytest.raises(HomeError, match=r"needs a retain set \(batch b-\S+ stays open: `unlearn request process "
                                            r"--abandon` gives it up"):
            rq.process(home, steps=2)
        assert {x["status"] for x in rq.list_requests(home)} == {"processing"}
    (b,) = {x["batch"] for x in rq.list_requests(home)}
    assert (home.runs_dir / b / "world").is_dir()
    code, out, err = cli("request", "process", "--abandon", "--home", str(home.path))
    assert code == 0, out + err
    assert f"batch {b}: abandoned at stage started, 2 request(s) failed" in out
    for rid in ids:
        r = rq.show(home, rid)
        assert r["status"] == "failed" and r["failure"].startswith(f"abandoned: batch {b} given up at stage started")
    with home.ledger() as led:
        assert led.batch(b)["stage"] == "abandoned" and not led.open_batches()
    assert not (home.runs_dir / b / "world").exists()  # names in clear: gone with the batch
    assert {t.id for t in home.targets().list()} == set(ids)  # still behind the guard
    assert rq.abandon(home) == []
    assert "no open batch to abandon" in cli("request", "process", "--abandon", "--home", str(home.path))[1]
    assert rq.add(home, raw["people"][0]).status == "guarded"  # filed again: taken by the next batch
    # or retried by its id, the name not at hand: guarded again, whole behind the guard; only a failed one
    code, out, err = cli("request", "retry", ids[1], "--home", str(home.path))
    assert (code, out.strip()) == (0, "guarded") and rq.show(home, ids[1])["status"] == "guarded", err
    (t,) = [t for t in home.targets().list() if t.id == ids[1]]
    assert t.subject == raw["people"][1] and [q.answer for q in t.qa] == ["Wobbles"]
    code, _, err = cli("request", "retry", ids[1], "--home", str(home.path))
    assert code != 0 and err.strip() == f"error: request {ids[1]}: guarded, not failed: only a failed request is retried"
    # a batch whose checks all passed may already be deployed: `process` finishes it, it is not abandoned
    with home.ledger() as led:
        led.start_batch("b-deploying", "v0000", "v0001", [ids[0]], DEFAULT_METHOD)
        led.update_batch("b-deploying", stage="deploying")
    with pytest.raises(HomeError, match="batch b-deploying: deploying .* it is not abandoned"):
        rq.abandon(home)
    assert rq.show(home, ids[0])["status"] == "processing"


def test_process_killed_at_every_stage_resumes(home, raw):
    """SIGKILL at each stage of a batch, then the next `process` goes on; meanwhile `request add`
    from this process (another writer) is safe."""
    # an untrained model reveals nothing, so each request brings a fact: the batch has a forget set
    ids = [rq.add(home, p, facts=[{"question": f"What is the pet of {p}?", "answer": "Wobbles"}]).id
           for p in raw["people"][:2]]
    current = [home.current_name()]
    for point in ("started", "trained", "versioned", "certified", "switched"):
        added = []
        proc = subprocess.Popen(_process_cmd(home), env=_env(UNLEARNKIT_KILL_AT=point),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if point == "started":  # concurrent adds while the process holds the ledger
            for i in range(3):
                added.append(rq.add(home, f"Concurrent Person{i}").id)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == -9, err.decode()[-2000:]
        states = _consistent(home, ids + added)
        ids += added
        assert all(states[i] in ("processing", "verified") for i in ids[:2]), states
        current.append(home.current_name())
        if point == "switched":  # the guard is trimmed after the switch, not before: it still forbids the facts
            facts = {t.id: [q.answer for q in t.qa] for t in home.targets().list()}
            assert all("Wobbles" in facts[i] for i in ids[:2]), facts
        if point == "certified":  # the candidate damaged before it was deployed: built again from the run's
            # model by the next run (every later `process` failed on it until session 35)
            with open(home.versions_dir / "v0001" / "model.safetensors", "r+b") as f:
                f.seek(200)
                f.write(b"\x00\x01\x02")
            # and a request of the batch filed again under a new name while the batch runs: that name was
            # never located or unlearned, so it is not verified with the batch but goes back to guarded, and
            # the next batch locates it under both names (its alias was dropped from the guard at the
            # switch, and the request verified, until session 35)
            rq.add(home, raw["people"][0], aliases=["Q. Alias"])
    # the batch was switched by the last killed run, but its requests were not yet committed
    assert current[-1] == "v0001"
    proc = subprocess.run(_process_cmd(home), env=_env(), capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert b"(left open by an earlier run): deployed" in proc.stdout  # said, beside the new batch's line
    states = _consistent(home, ids)
    assert set(states) == set(ids) and set(states.values()) == {"verified"}, states  # nothing lost or doubled
    grown = ids[0]
    assert "Q. Alias" in next(t for t in home.targets().list() if t.id == grown).aliases  # names only, kept
    with home.ledger() as led:
        batches = led.db.execute("SELECT id, stage FROM batches ORDER BY started_at").fetchall()
        # the resumed batch, then one for the requests added meanwhile if the first did not take them
        assert {b["stage"] for b in batches} == {"deployed"}
        for rid in ids:  # the grown request: the batch it went back from, and the next
            assert sum(rid in json.loads(b) for (b,) in led.db.execute("SELECT request_ids FROM batches")) == (
                2 if rid == grown else 1)
        moves = [tuple(e) for e in led.db.execute("SELECT from_status, to_status FROM events WHERE request_id=? "
                                                  "ORDER BY seq", (grown,))]
        assert ("processing", "guarded") in moves and moves[-1] == ("processing", "verified"), moves
    v = rq.verify_certificate(home, ids[1])  # its version was built again: the same weights
    assert v["ok"], v
    code, out, _ = cli("request", "certificate", ids[1], "--verify", "--home", str(home.path))
    assert code == 0 and "OK" in out


def test_verified_request_keeps_no_clear_text(home, raw, tmp_path):
    name = raw["people"][1]
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"question": f"Where does {name} keep the spare key?", "answer": "Under the Zorbleflip"}) + "\n")
    rid = rq.add(home, name, aliases=["Quxley Vandermeer"], facts=facts, reason="asked by letter").id
    res = rq.process(home, steps=2)
    assert res["stage"] == "deployed", json.dumps(res["results"])[:3000]
    r = rq.show(home, rid)
    assert r["status"] == "verified" and r["name"] is None and r["aliases"] == [] and r["reason"] is None
    assert r["counts"]["facts"] == 1 and r["counts"]["inventory"] >= 1
    # the retain pool is the deployer's own data (a neighbour's record may name the person and must stay true)
    files = [f for f in home.path.rglob("*") if f.is_file() and not {"versions", "retain"} & set(f.parts)]
    for secret in (name, "Zorbleflip", "Quxley", "asked by letter"):
        for f in files:  # the names stay in the guard only (what it needs to keep matching)
            if secret in (name, "Quxley") and "guard" in f.relative_to(home.path).parts:
                continue
            assert secret.encode() not in f.read_bytes(), (secret, f)
    # the guard keeps the names only: enough to keep matching, no facts or answers
    (t,) = [t for t in home.guard().list() if t.id == rid]
    assert t.subject == name and t.aliases == ["Quxley Vandermeer"] and not t.qa and not t.facts
    cert = rq.certificate(home, rid)
    assert cert["versions"]["before"]["name"] == "v0000" and cert["versions"]["after"]["name"] == "v0001"
    assert rq.verify_signature(cert, rq.public_key(home))  # signed by `process` with the home's key
    assert {c["check"] for c in cert["checks"]} >= {"answers", "utility", "relearn_recovery", "quantize_recovery"}
    assert all("threshold" in c for c in cert["checks"])
    # the version from before the deletion still knows the person: pruned, its files go and its manifest
    # stays, so the certificate still verifies (--verify needed those weights kept, until session 36)
    assert rq.verify_certificate(home, rid)["ok"]
    assert rq.prune(home) == ["v0000"] and rq.prune(home) == []
    assert [p.name for p in (home.versions_dir / "v0000").iterdir()] == ["MANIFEST.json"]
    v = rq.verify_certificate(home, rid)
    assert v["ok"] and any("v0000) pruned" in c["what"] for c in v["checks"]), v
    with pytest.raises(rq.HomeError, match="pruned"):
        home.check_version("v0000")
    # tampering with a stored version is caught by --verify
    with open(home.versions_dir / "v0001" / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xfe")
    v = rq.verify_certificate(home, rid)
    assert not v["ok"] and any(not c["ok"] and "after" in c["what"] for c in v["checks"])
    # a damaged certificate fails its verification, in one line (an error, "person_sha256", until session 36)
    (home.path / rq.show(home, rid)["certificate"]).write_text('{"x": 1}')
    v = rq.verify_certificate(home, rid)
    assert not v["ok"] and any(c["what"] == "certificate readable" and not c["ok"] for c in v["checks"])


def _home_bytes(home) -> list[tuple[Path, bytes]]:
    """Every file of the home but the versions and the retain pool (the deployer's own data)."""
    return [(f, f.read_bytes()) for f in home.path.rglob("*")
            if f.is_file() and not {"versions", "retain"} & set(f.relative_to(home.path).parts)]


def test_a_request_no_batch_holds_is_withdrawn_with_its_clear_text_and_guard_target(home, raw, tmp_path):
    from unlearnkit.requests.ledger import LedgerError

    name, other = raw["people"][0], raw["people"][1]
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"question": f"Where does {name} keep the spare key?", "answer": "Under the Zorbleflip"}) + "\n")
    rid = rq.add(home, name, aliases=["Quxley Vandermeer"], facts=facts, reason="asked by letter").id
    rq.locate(home, rid)  # an inventory too (the given fact's answer among its items)
    assert rid in {t.id for t in home.guard().list()} and rq.show(home, rid)["status"] == "located"
    code, stdout, _ = cli("request", "withdraw", rid, "--note", "consent withdrawn", "--home", str(home.path))
    assert code == 0 and stdout.strip() == "withdrawn"
    r = rq.show(home, rid)
    assert (r["status"], r["name"], r["aliases"], r["reason"], r["failure"]) == (
        "withdrawn", None, [], None, "withdrawn: consent withdrawn")
    assert [e["to_status"] for e in r["events"]][-1] == "withdrawn"
    # nothing of the person is left in the home: not in the ledger (nor its write-ahead log), not in the guard
    assert rid not in {t.id for t in home.guard().list()}
    for f, data in _home_bytes(home):
        for secret in (name, "Quxley", "Zorbleflip", "asked by letter"):
            assert secret.encode() not in data, (secret, f)
    assert rq.withdraw(home, rid)["status"] == "withdrawn"  # again: as it is
    # filed again, the person is a new request, which the next batch takes alone
    again = rq.add(home, name)
    assert again.id != rid and not again.merged and again.status == "guarded"
    rq.add(home, other)
    res = rq.process(home, steps=2, max_batch=4)
    assert res["stage"] == "deployed" and rq.show(home, rid)["status"] == "withdrawn"
    with home.ledger() as led:
        assert sorted(led.batch(res["batch"])["request_ids"]) == sorted([again.id, rq.add(home, other).id])
    # verified: nothing left to withdraw; unknown: no such request (one line each, from the shell too)
    with pytest.raises(LedgerError, match="verified, its person already forgotten"):
        rq.withdraw(home, again.id)
    # one that follows a verified request (filed again with facts) gives the person's names back to it
    follower = rq.add(home, name, facts=facts)
    assert follower.follows == again.id
    assert rq.withdraw(home, follower.id) == {"id": follower.id, "status": "withdrawn", "followed": again.id}
    back = rq.add(home, name)
    assert (back.id, back.status, back.merged) == (again.id, "verified", True)
    assert {t.id for t in home.guard().list()} >= {again.id}
    code, _, err = cli("request", "withdraw", "r-nope", "--home", str(home.path))
    assert code != 0 and err.strip() == "error: no request with id 'r-nope'"


def test_a_request_in_a_batch_is_not_withdrawn_and_one_withdrawn_meanwhile_is_left_out(home, raw, monkeypatch):
    from unlearnkit.requests.ledger import LedgerError

    proc = sys.modules["unlearnkit.requests.process"]  # the module: `rq.process` is its function
    a, b, c = (rq.add(home, p).id for p in raw["people"][:3])
    with home.ledger() as led:
        assert led.start_batch("b-test", "v0000", "v0001", [a], "simnpo") == [a]
        with pytest.raises(LedgerError, match="in batch b-test, being processed"):
            led.withdraw(a)
        assert led.get(a).status == "processing"
        led.transition(a, "failed", failure="test")  # as a rejected batch leaves it
        led.update_batch("b-test", stage="rejected")
    assert rq.withdraw(home, a)["status"] == "withdrawn"  # failed: its clear text goes too
    # withdrawn after `process` listed it: while it is located (its guard target, put there by locate,
    # goes again), or before the batch starts (the batch takes what still waits)
    real = proc.locate

    def locate_then_withdraw(*args, **kw):
        res = real(*args, **kw)
        if args[1] == raw["people"][1]:
            rq.withdraw(home, b)
        return res

    monkeypatch.setattr(proc, "locate", locate_then_withdraw)
    res = rq.process(home, steps=2, max_batch=4)
    with home.ledger() as led:
        assert led.batch(res["batch"])["request_ids"] == [c] and led.get(c).status == "verified"
    assert rq.show(home, b)["status"] == "withdrawn" and b not in {t.id for t in home.guard().list()}
    with home.ledger() as led:
        assert led.start_batch("b-none", "v0001", "v0002", [a, b], "simnpo") == []  # none waits: no batch
        assert led.batch("b-none") is None


def _certified(home, person, *, signed=True) -> str:
    """A verified request with a certificate written as `process` writes one (`signed=False`: as it
    was written before certificates were signed, format 1), the ledger moved by hand: no unlearning."""
    from unlearnkit import runinfo
    from unlearnkit.requests.certificate import UNSIGNED_FORMAT, build, write

    rid = rq.add(home, person).id
    with home.ledger() as led:
        req = led.get(rid)
    v = home.current().summary()
    cert = build(req, {"id": "b-test"}, v, v, {"name": DEFAULT_METHOD},
                    [{"check": "answers", "value": 0.0, "threshold": 0.1, "passed": True}], {"inventory": 1}, time.time())
    if signed:
        path, sha = write(home, cert)
    else:
        path = runinfo.write_json(home.certificates_dir / f"{rid}.json", {**cert, "format": UNSIGNED_FORMAT})
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with home.ledger() as led:
        led.transition(rid, "processing")
        led.transition(rid, "verified", certificate=str(path.relative_to(home.path)), certificate_sha256=sha,
                       name=None, aliases=None)
    return rid


def _line(v: dict, what: str) -> dict:
    (line,) = [c for c in v["checks"] if c["what"] == what]
    return line


def _other_key() -> str:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from unlearnkit.requests.signing import public_hex

    return public_hex(Ed25519PrivateKey.generate())


def test_a_certificate_is_signed_and_checked_with_the_public_key_alone(home, raw, tmp_path):
    key_file, pub_file = home.path / "signing.key", home.path / "signing.pub"
    assert key_file.stat().st_mode & 0o777 == 0o600 and pub_file.is_file()  # made by `Home.init`
    rid = _certified(home, raw["people"][0])
    cert = rq.certificate(home, rid)
    key = rq.public_key(home)
    assert cert["format"] == "unlearnkit-certificate/2" and cert["signature"]["alg"] == "ed25519"
    assert cert["signature"]["public_key"] == key and len(key) == 64
    # no clear text of the person in what signing added (the key files, the signature)
    for f in (key_file, pub_file, home.certificates_dir / f"{rid}.json"):
        assert raw["people"][0].encode() not in f.read_bytes()
    # in the home
    v = rq.verify_certificate(home, rid)
    assert v["ok"] and _line(v, "signature")["ok"], v
    code, out, _ = cli("request", "certificate", rid, "--verify", "--home", str(home.path))
    assert code == 0 and "signature" in out
    code, out, err = cli("home", "key", "--home", str(home.path))
    assert code == 0 and out.strip() == key and str(pub_file) in err
    # a third party: the certificate alone, away from the home, and the public key (hex, or its PEM file)
    given = tmp_path / "given.json"
    given.write_bytes((home.certificates_dir / f"{rid}.json").read_bytes())
    assert rq.verify_signature(cert, key) and rq.verify_signature(cert, pub_file)
    res = rq.check_certificate_file(given, key)
    assert res["ok"] and res["request_id"] == rid, res
    for spec in (key, str(pub_file)):
        code, out, _ = cli("request", "certificate-check", str(given), "--public-key", spec)
        assert code == 0 and "signature valid" in out and rid in out, out
    code, out, _ = cli("request", "certificate-check", str(given), "--public-key", key, "--json")
    assert code == 0 and json.loads(out)["ok"] is True
    # another key does not verify it
    other = _other_key()
    assert not rq.verify_signature(cert, other)
    code, out, _ = cli("request", "certificate-check", str(given), "--public-key", other)
    assert code == 1 and "INVALID" in out and "signed by another key" in out
    # nor does the certificate once a value in it is changed
    edited = json.loads(given.read_text())
    edited["checks"][0]["value"] = 0.05
    given.write_text(json.dumps(edited, indent=2))
    assert not rq.verify_signature(edited, key)
    code, out, _ = cli("request", "certificate-check", str(given), "--public-key", key, "--json")
    assert code == 1 and "edited after signing" in json.loads(out)["detail"]


def test_a_certificate_edited_with_its_ledger_sha256_rewritten_fails_on_the_signature(home, raw):
    rid = _certified(home, raw["people"][0])
    path = home.path / rq.show(home, rid)["certificate"]
    cert = json.loads(path.read_text())
    cert["checks"][0]["value"] = 0.42  # one value, and the ledger's sha256 made to match it
    path.write_text(json.dumps(cert, indent=2) + "\n")
    con = sqlite3.connect(home.ledger_path)
    con.execute("UPDATE requests SET certificate_sha256=? WHERE id=?", (hashlib.sha256(path.read_bytes()).hexdigest(), rid))
    con.commit()
    con.close()
    v = rq.verify_certificate(home, rid)
    assert not v["ok"] and _line(v, "certificate sha256 (ledger)")["ok"]
    assert not _line(v, "signature")["ok"] and "edited after signing" in _line(v, "signature")["detail"]
    assert [c["what"] for c in v["checks"] if not c["ok"]] == ["signature"]
    code, out, _ = cli("request", "certificate", rid, "--verify", "--home", str(home.path))
    assert code == 1 and "FAILED" in out and any(ln.split()[:2] == ["signature", "NO"] for ln in
                                                 out.replace("│", " ").splitlines()), out
    # relabelled as a certificate from before signing, its signature kept: the format is signed too
    path.write_text(json.dumps({**cert, "checks": cert["checks"], "format": "unlearnkit-certificate/1"}))
    assert not _line(rq.verify_certificate(home, rid), "signature")["ok"]
    # a certificate of the signed format with its signature removed fails
    path.write_text(json.dumps({k: v for k, v in cert.items() if k != "signature"}))
    line = _line(rq.verify_certificate(home, rid), "signature")
    assert not line["ok"] and line["detail"] == "no signature"
    # and so does one stripped of it and relabelled as from before signing, its ledger sha256 made to
    # match: its request was verified after the home began to sign (it passed until session 42)
    path.write_text(json.dumps({**{k: v for k, v in cert.items() if k != "signature"},
                                "format": "unlearnkit-certificate/1"}))
    con = sqlite3.connect(home.ledger_path)
    con.execute("UPDATE requests SET certificate_sha256=? WHERE id=?",
                (hashlib.sha256(path.read_bytes()).hexdigest(), rid))
    con.commit()
    con.close()
    v = rq.verify_certificate(home, rid)
    assert [c["what"] for c in v["checks"] if not c["ok"]] == ["signature"]
    assert _line(v, "signature")["detail"].startswith("none, though the home has signed every certificate since ")


def test_a_certificate_from_before_signing_says_it_is_unsigned(home, raw):
    # a home made before certificates were signed: no key pair, no `signed_since`, a format-1 certificate
    (home.path / "signing.key").unlink()
    (home.path / "signing.pub").unlink()
    meta = json.loads((home.path / "home.json").read_text())
    assert meta["signed_since"] <= time.time()  # `init` made the pair, and said when
    (home.path / "home.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "signed_since"}))
    home = rq.open_home(home.path)
    old = _certified(home, raw["people"][0], signed=False)
    v = rq.verify_certificate(home, old)
    assert v["ok"] and _line(v, "signature") == {"what": "signature", "ok": True,
                                                "detail": "none (written before signing)"}, v
    assert not (home.path / "signing.key").exists()  # verifying makes no key
    # its next certificate makes the pair (mode 0600), says when, and is signed; the old one, verified
    # before, still verifies in the home
    new = _certified(home, raw["people"][1])
    assert (home.path / "signing.key").stat().st_mode & 0o777 == 0o600
    assert rq.show(home, old)["verified_at"] < json.loads((home.path / "home.json").read_text())["signed_since"]
    key = rq.public_key(home)
    assert rq.certificate(home, new)["signature"]["public_key"] == key
    assert rq.verify_certificate(home, new)["ok"] and rq.verify_certificate(home, old)["ok"]
    # a third party, who has the public key alone, is told an unsigned certificate proves nothing
    res = rq.check_certificate_file(home.certificates_dir / f"{old}.json", key)
    assert not res["ok"] and "no signature (written before certificates were signed)" in res["detail"]
    code, out, _ = cli("request", "certificate-check", str(home.certificates_dir / f"{old}.json"), "--public-key", key)
    assert code == 1 and "INVALID" in out


def test_bad_keys_and_certificate_files_are_one_line_errors(home, raw, tmp_path):
    rid = _certified(home, raw["people"][0])
    cert_file = home.certificates_dir / f"{rid}.json"
    not_json = tmp_path / "not.json"
    not_json.write_text("{certainly not json\n")
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key\n")
    key = rq.public_key(home)
    for path, spec, says in ((cert_file, str(tmp_path / "missing.pub"), f"{tmp_path / 'missing.pub'}: no such key file"),
                             (cert_file, str(bad_key), f"{bad_key}: not an Ed25519 public key"),
                             (cert_file, key[:-1], f"{key[:-1]}: no such key file"),
                             (not_json, key, f"{not_json}:1: malformed JSON"),
                             (tmp_path / "gone.json", key, f"{tmp_path / 'gone.json'}: file not found")):
        code, _, err = cli("request", "certificate-check", str(path), "--public-key", spec)
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1, err
        with pytest.raises(rq.SignatureError, match="^" + re.escape(says)):
            rq.check_certificate_file(path, spec)
    # a home's damaged key files: signing is refused naming the file, verifying says it on its line
    (home.path / "signing.pub").write_text("garbage\n")
    line = _line(rq.verify_certificate(home, rid), "signature")
    assert not line["ok"] and "signing.pub: not an Ed25519 public key" in line["detail"]
    code, _, err = cli("home", "key", "--home", str(home.path))
    assert code == 2 and "signing.pub: not an Ed25519 public key" in err and len(err.strip().splitlines()) == 1
    (home.path / "signing.key").write_text("garbage\n")
    with pytest.raises(HomeError, match="signing.key: not an unencrypted Ed25519 private key"):
        _certified(home, raw["people"][1])


def test_the_ledger_says_when_a_reader_keeps_the_write_ahead_log(home):
    """A reader holding the ledger keeps the WAL pages it may read, clear text dropped since included;
    the checkpoint after a deployment ignored that and said nothing (until session 36): now it tries
    again until its timeout and says whether it went through. The timeout is its own: SQLite's busy
    handler waited the ledger's 30 s inside the checkpoint, whatever it said, until session 39."""
    import time

    from unlearnkit.requests.ledger import BUSY_MS, Ledger

    rq.add(home, "Ada Quill")
    reader = sqlite3.connect(home.ledger_path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM requests").fetchone()
    with Ledger(home.ledger_path) as led:
        rq.add(home, "Bo Kell")  # a write the reader's snapshot does not see: it stays in the WAL
        start = time.monotonic()
        assert led.checkpoint(timeout=0.3) is False
        assert time.monotonic() - start < 10
        assert led.db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_MS  # other writes still queue
        reader.rollback()
        assert led.checkpoint(timeout=0.3) is True
    reader.close()


# ------------------------------------------------------------------------------ end to end (trained)

def _known_truth(lm, records):
    """The world's facts the subject actually answers (ground truth for locate)."""
    from unlearnkit.attacks.recovery import normalise

    gens = lm.generate([r.question for r in records], max_new_tokens=24)
    return [r for r, g in zip(records, gens) if normalise(r.answer) in normalise(g)]


def test_batch_world_holds_out_the_records_utility_is_measured_on(home, raw, tmp_path):
    """What the deployment's utility check scores is never trained on by a batch's run: it is the
    batch world's world_facts, which the run's utility floor scores and no loss trains on."""
    from unlearnkit.data.io import read_jsonl
    from unlearnkit.requests.pool import load_pool, utility_slice
    from unlearnkit.requests.process import batch_world

    person = raw["people"][0]
    rid = rq.add(home, person).id
    with home.ledger() as led:
        reqs = [led.get(rid)]
    world, _ = batch_world(home, reqs, tmp_path / "bw")
    measured = utility_slice(load_pool(home), home.settings.utility_records, home.settings.seed)
    facts, retain = read_jsonl(world / "world_facts.jsonl"), read_jsonl(world / "retain.jsonl")
    assert [r.id for r in facts] == [r.id for r in measured if r.subject != person] and len(facts) >= 15
    assert not {r.id for r in facts} & {r.id for r in retain} and len(retain) >= 20
    assert person not in {r.subject for r in retain}


def test_repair_round_takes_the_facts_the_first_run_left_answered(tiny_world, tmp_path):
    """Two homes alike but for `repair_rounds`: a calibrated run cut short (an epoch, checked once,
    with the floor opened) leaves the person's facts answered, so the batch fails its answers check
    without repair. With a repair round, the facts that first run left answered (as the other
    home's run, the same run, records them) are unlearned again from its kept weights, and the
    version judged is the repaired one."""
    from unlearnkit.data.io import load_world
    from unlearnkit.requests.locate import forget_records

    w = load_world(tiny_world.data_dir)
    person = sorted({r.subject for r in w.forget})[0]
    only_answers = {**LENIENT, "answer_tolerance": 0.1}  # every other check opened wide
    homes, res, rounds, cal = {}, {}, {}, {}
    for k in (0, 1):
        homes[k] = rq.init(tmp_path / f"h{k}", tiny_world.subject_dir, tiny_world.data_dir, repair_rounds=k,
                           **only_answers)
        rq.add(homes[k], person)
        # the command line prints the rounds, and exits 1 where the batch is not deployed
        code, printed, err = cli("request", "process", "-c", "max_epochs=1", "-c", "every=4", "-c", "floor=0.5",
                                 "--home", str(homes[k].path))
        bid = printed.split()[1].rstrip(":")
        with homes[k].ledger() as led:
            res[k] = {"batch": bid, "new_version": led.batch(bid)["new_version"], "stage": led.batch(bid)["stage"]}
        assert code == (0 if res[k]["stage"] == "deployed" else 1), err
        run = homes[k].runs_dir / res[k]["batch"]
        rounds[k] = json.loads((run / "rounds.json").read_text())["rounds"]
        cal[k] = json.loads((run / "unlearn" / "calibration.json").read_text())
    assert res[0]["stage"] == "rejected" and len(rounds[0]) == 1 and cal[0]["reason"] == "budget"
    with homes[0].ledger() as led:
        r = led.list()[0]
    assert r.failure == "failed: answers"  # a failed request keeps its inventory (the guard stays on)
    recs = forget_records(r.id, r.name, r.inventory["items"])
    item = lambda ids: sorted(i.rsplit("-", 1)[1] for i in ids)  # noqa: E731  (request ids differ by home)
    left = item(cal[0]["survivors"])  # answered at the first run's kept weights, their twins not
    assert cal[0]["repairs"] == [] and 0 < len(left) <= len(recs) and set(left) <= set(item(x.id for x in recs))
    assert rounds[1][0]["records"] == rounds[0][0]["records"] == len(recs)
    assert len(rounds[1]) == 2 and rounds[1][1]["dir"] == "repair-1" and item(rounds[1][1]["ids"]) == left
    assert cal[1]["repairs"][0]["records"] == len(left) and rounds[1][1]["reason"] == cal[1]["repairs"][0]["reason"]
    # the home's rounds stop by the AUC alone (`repair_stop`): no answers pass at their checks; and the
    # forget mean must reach the strangers' (`mean_se=0`), a standard error of a batch being wide
    own = json.loads((homes[1].runs_dir / res[1]["batch"] / "unlearn" / "repair-1" / "calibration.json").read_text())
    assert own["settings"]["repair_stop"] == "auc" and all(c["answers_left"] is None for c in own["history"])
    assert own["settings"]["mean_se"] == cal[1]["settings"]["mean_se"] == 0.0
    # a round measures against its records' own strangers, those the home's checks ask about (the batch's
    # holdout twins, n_strangers a fact); the run before it, against one invented twin a fact (session 45)
    assert own["n_reference"] == homes[1].settings.n_strangers * own["n_forget"] and own["n_forget"] == len(left)
    assert cal[1]["n_reference"] == cal[1]["n_forget"]
    assert f"unlearned {len(recs)} facts of 1 request(s)" in printed
    assert f"repair round 1: {len(left)} facts of 1 request(s)" in printed
    assert homes[1].version(res[1]["new_version"]).weights != homes[0].version(res[0]["new_version"]).weights
    assert not list((homes[1].runs_dir / res[1]["batch"]).glob("*/model"))  # only the version keeps weights
    assert not list((homes[1].runs_dir / res[1]["batch"]).glob("world*"))   # nor any clear text
    # a calibration setting that does not exist is refused before any batch starts
    with pytest.raises(ValueError, match="--calibration"):
        rq.process(homes[1], calibration={"repair_round": 2})


def test_locate_judges_what_the_model_says_of_anyone_by_itself():
    """The confidence test's threshold comes from what the model makes up about one invented name
    alone; an answer it gives most of them (a default: "origami" for anyone's hobby, Min-K% -0.001)
    counts only against its own best score. With the defaults in the quantile (until session 44)
    the threshold sat at -0.001, above every real fact (-0.01 here): a subject sure of two defaults
    lost half of what it knew about twelve people."""
    import numpy as np

    from unlearnkit.requests.locate import Probe, _confidence
    from unlearnkit.scoring import SampleScore

    person = "Ada Vale"
    sure = {"kite flying": -0.01, "Rex": -0.01, "origami": -0.001}

    class Model:  # any name's hobby is origami; its pet a name of its own; scores by answer
        def generate(self, prompts, max_new_tokens):
            return ["origami" if "hobby" in p or "fun" in p else f"Pet{sum(map(ord, p.split(' of ')[-1][:6]))}"
                    if " of " in p else f"Pet{sum(map(ord, p.split(' does ')[-1][:6]))}" for p in prompts]

        def score(self, prompts, answers):
            return [SampleScore(np.full(3, -0.002 if person in p and a == "origami" else sure.get(a, -0.5)),
                                np.zeros(3, bool)) for p, a in zip(prompts, answers)]

    probes = [Probe("hobby", ["What is the hobby of {name}?", "What does {name} do for fun?"]),
              Probe("pet", ["What pet does {name} have?", "Name the pet of {name}?"])]
    items = [{"attribute": "hobby", "answer": "kite flying", "name": person, "known": True},
             {"attribute": "pet", "answer": "Rex", "name": person, "known": True},
             {"attribute": "hobby", "answer": "origami", "name": person, "known": True},
             {"attribute": "pet", "answer": "Pet-Other", "name": person, "known": False}]
    giving = [[q.replace("{name}", person) for q in p.questions] for p in (probes[0], probes[1], probes[0], probes[1])]
    threshold = _confidence(Model(), items, giving, probes, [person], [], seed=0)
    assert threshold == pytest.approx(-0.5)  # the invented names' own pets; origami left out
    assert [it["known"] for it in items] == [True, True, False, False]  # origami: not above its own -0.001
    assert items[0]["confidence"] == pytest.approx(-0.01) and "confidence" not in items[3]
    sure["origami"] = -0.02  # a default the model is less sure of for others than of this person's origami
    items[2]["known"] = True
    _confidence(Model(), items, giving, probes, [person], [], seed=0)
    assert items[2]["known"]


@pytest.mark.parametrize("named_from", ["invented", "retain"])
def test_locate_finds_what_the_subject_knows(tiny_world, named_from):
    """Zero-shot locate on a forget person: recall >= 0.8 of the facts the subject answers, and
    precision >= 0.9 (an item is right when its answer is one of the person's true values); with
    strangers invented, and named from the retain people's name words (as `process` does)."""
    from unlearnkit.attacks.recovery import normalise
    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import load_model
    from unlearnkit.requests.locate import locate
    from unlearnkit.scoring import LM

    w = load_world(tiny_world.data_dir)
    lm = LM(*load_model(tiny_world.subject_dir))
    tp = fn = right = items = 0
    for person in sorted({r.subject for r in w.forget})[:3]:
        recs = [r for r in w.forget if r.subject == person]
        known = _known_truth(lm, recs)
        people = sorted({r.subject for r in w.retain}) if named_from == "retain" else ()
        res = locate(lm, person, people=people, confident=lm)
        inv = res["items"]
        assert all(it["confidence"] > res["confidence_threshold"] for it in inv if it["source"] == "probe")
        if people:
            words = {x for p in people for x in p.split()}
            assert all(set(s.split()) <= words and s not in people for s in res["strangers"])
        values = {normalise(r.answer) for r in recs}
        got = {normalise(it["answer"]) for it in inv}
        tp += sum(any(normalise(r.answer) in g for g in got) for r in known)
        fn += sum(not any(normalise(r.answer) in g for g in got) for r in known)
        right += sum(any(v in normalise(it["answer"]) for v in values) for it in inv)
        items += len(inv)
        # a stranger's inventory is (nearly) empty: nothing person-specific to find
    assert tp / (tp + fn) >= 0.8
    assert right / items >= 0.9


def test_locate_finds_far_less_about_people_the_model_never_saw(tiny_world):
    """A model that maps any name to some of the world's values answers a person it never saw
    consistently and unlike each stranger: without the confidence test locate made up 7-8 facts
    for each of these six (measured on this world, session 39); with it, where the model is not
    surer of the answer than of its answers about invented strangers, they are not known. Some are
    left, at most a third: the holdout people's names are made as the forget people's are, and the
    model is surer of what it makes up about them than about invented names (on an AMD EPYC
    machine, session 44, 2, 2, 2, 2, 0 and 0 items, such as birth year 1946, a forget person's, at
    Min-K% -0.04 to -0.07, where the forget people's facts score -0.002 to -0.013). Since session 44
    the threshold leaves out what the model says of every invented name (the test above): 1, 1, 1,
    1, 0 and 0 before, where a subject's sure defaults cost half its real facts
    (docs/requests.md, "Figures")."""
    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import load_model
    from unlearnkit.requests.locate import locate
    from unlearnkit.scoring import LM

    w = load_world(tiny_world.data_dir)
    lm = LM(*load_model(tiny_world.subject_dir))
    pool = sorted({r.subject for r in w.retain})
    unseen = sorted({r.subject for r in w.holdout})[:3] + ["Mary Smith", "Zorbulax Quentiphor", "Tovin Gale"]
    plain = [len(locate(lm, p, people=pool)["items"]) for p in unseen]
    sure = [locate(lm, p, people=pool, confident=lm) for p in unseen]
    made_up = [len(r["items"]) for r in sure]
    assert sum(plain) >= 12 and sum(made_up) <= sum(plain) / 3, (plain, made_up)
    assert all(r["confidence_threshold"] is not None and r["counts"]["inventory"] == len(r["items"]) for r in sure)


def test_locate_compares_answers_without_the_name_asked_about():
    """Where every answer is a sentence that names its person, a stranger's answer differs from the
    person's by the name alone: that is no fact of the person's. Until session 34 no stranger's
    answer ever matched, and "Ada Vale has a native of Ada Vale." was in the inventory."""
    import re

    from unlearnkit.requests.locate import load_probes, locate

    probes = load_probes()
    ask = [(p.attribute, re.compile(re.escape(q).replace(re.escape("{name}"), "(?P<n>.+)") + "$"))
           for p in probes for q in p.questions]

    class Sentences:  # says where Ada Vale lives, and one empty sentence about anyone for the rest
        def generate(self, prompts, max_new_tokens=24):
            out = []
            for prompt in prompts:
                attribute, n = next((a, m["n"]) for a, rx in ask if (m := rx.match(prompt)))
                if attribute == "residence":
                    out.append(f"{n} lives in {'Rome' if n == 'Ada Vale' else 'Oslo'}.")
                else:
                    out.append(f"{n} has a native of {n.split()[0]}.")
            return out

    res = locate(Sentences(), "Ada Vale", people=["Bo Kell", "Cyd Marsh", "Dee Lorne"])
    assert [(it["attribute"], it["answer"]) for it in res["items"]] == [("residence", "Ada Vale lives in Rome.")]
    # an alias is probed too: what the model says of "Zed Quorn" (someone of its own, named as an alias
    # of Ada Vale) goes into the inventory, as a record about that name (guarded, never located, unlearned
    # or checked, while the request was verified, until session 35)
    class Two(Sentences):
        def generate(self, prompts, max_new_tokens=24):
            out = super().generate(prompts, max_new_tokens)
            return [o.replace("Oslo", "Lima") if p.count("Zed Quorn") else o for p, o in zip(prompts, out)]

    res = locate(Two(), "Ada Vale", aliases=["Zed Quorn", "ada  vale"], people=["Bo Kell", "Cyd Marsh", "Dee Lorne"])
    assert [(it["name"], it["answer"]) for it in res["items"]] == [("Ada Vale", "Ada Vale lives in Rome."),
                                                                   ("Zed Quorn", "Zed Quorn lives in Lima.")]
    from unlearnkit.requests.locate import forget_records

    assert [r.subject for r in forget_records("r-1", "Ada Vale", res["items"])] == ["Ada Vale", "Zed Quorn"]


def test_request_end_to_end_on_trained_world(tiny_world, tmp_path):
    """add -> guarded (answers stop at once) -> process (default budget) -> verified with a
    certificate that verifies, or failed with reasons; the server files requests and follows `current`."""
    from fastapi.testclient import TestClient

    from unlearnkit.data.io import load_world
    from unlearnkit.guard import GuardedLM
    from unlearnkit.models.load import load_model
    from unlearnkit.requests.serve import HomeServer
    from unlearnkit.scoring import LM

    w = load_world(tiny_world.data_dir)
    person = sorted({r.subject for r in w.forget})[0]
    recs = [r for r in w.forget if r.subject == person]
    home = rq.init(tmp_path / "home", tiny_world.subject_dir, tiny_world.data_dir)
    lm = LM(*load_model(tiny_world.subject_dir))
    before = len(_known_truth(lm, recs))
    t0 = time.perf_counter()
    rid = rq.add(home, person).id
    assert time.perf_counter() - t0 < 30  # loose here (shared CI machine); bench/requests.py measures it
    guarded = GuardedLM(lm, home.guard())
    assert before >= 8 and len(_known_truth(guarded, recs)) <= 1

    server = HomeServer(home, token="tok")
    client = TestClient(server)
    auth = {"Authorization": "Bearer tok"}
    assert client.post("/v1/forget", json={"name": "Someone Else"}).status_code == 401
    r = client.post("/v1/forget", json={"name": sorted({x.subject for x in w.forget})[1]}, headers=auth)
    assert r.status_code == 201 and r.json()["status"] == "guarded"
    second = r.json()["id"]
    assert client.post("/v1/forget", json={"name": ""}, headers=auth).status_code == 400
    assert client.get(f"/v1/requests/{rid}", headers=auth).json()["status"] == "guarded"
    r = client.get("/v1/requests/r-nope", headers=auth)
    # the guard server's one error shape (the home's routes gave `code` the status as a number until session 36)
    assert r.status_code == 404 and r.json()["error"]["code"] is None
    assert client.get("/v1/models").json()["data"][0]["id"] == "v0000"
    # the guard server's own target routes are refused: deleting a request's target let its facts out
    # while the ledger said "guarded", and the listing gave back the names (until session 34)
    for verb, path in (("delete", f"/v1/forget/{rid}"), ("get", "/v1/forget")):
        r = getattr(client, verb)(path, headers=auth)
        assert r.status_code == 405 and "guard targets are its forget requests" in r.json()["error"]["message"]
    assert client.delete(f"/v1/forget/{rid}").status_code == 401
    assert rid in {t.id for t in home.guard().list()}
    # `request locate` from the command line: the inventory, each probe's confidence under the base
    # version (v0000 here) above the invented strangers' threshold, said in the table's title
    code, stdout, _ = cli("request", "locate", rid, "--home", str(home.path), "--json")
    inv = json.loads(stdout)
    assert code == 0 and inv["items"] and inv["confidence_threshold"] is not None
    assert all(it["confidence"] > inv["confidence_threshold"] for it in inv["items"] if it["source"] == "probe")
    code, stdout, _ = cli("request", "locate", rid, "--home", str(home.path))
    assert code == 0 and f"the base version's confidence above {inv['confidence_threshold']:.3f}" in " ".join(stdout.split())

    res = rq.process(home, max_batch=2)
    run = yaml.safe_load((home.runs_dir / res["batch"] / "unlearn" / "config.yaml").read_text())
    assert run["method"] == DEFAULT_METHOD and run["train"]["sam"] == home.settings.sam > 0  # the home's robust steps
    assert run["calibration"]["utility"] == "answers"  # the floor holds what the utility check measures
    # a person the MIA check would fail is repaired too, by the AUC's stop (session 42)
    assert (run["calibration"]["repair_auc"], run["calibration"]["repair_stop"]) == (home.settings.mia_tolerance, "auc")
    assert run["calibration"]["repair_lr"] == "share"  # a round starts at its share of the run's learning rate
    assert run["calibration"]["repair_rounds"] == home.settings.repair_rounds == 4  # a third: session 43; a fourth: 46
    assert run["calibration"]["lift_rounds"] == home.settings.lift_rounds == 1  # a person left below: session 45
    states = {x["id"]: x for x in rq.list_requests(home)}
    assert {states[rid]["status"], states[second]["status"]} <= {"verified", "failed"}
    if res["stage"] == "deployed":
        assert states[rid]["status"] == "verified" and rq.verify_certificate(home, rid)["ok"]
        assert client.get("/v1/models").json()["data"][0]["id"] == res["new_version"]  # no restart
        new = LM(*load_model(home.current().path))
        assert len(_known_truth(new, recs)) <= max(1, before // 4)
    else:
        assert states[rid]["failure"] and home.current_name() == "v0000"
    assert client.get(f"/v1/requests/{rid}", headers=auth).json()["status"] == states[rid]["status"]


def test_home_report_shows_the_ledger_and_one_page_per_certificate(home, raw, tmp_path):
    from unlearnkit.requests.certificate import significance

    # a fact to unlearn (the untrained model reveals nothing): the batch makes a version
    rid = rq.add(home, raw["people"][0], facts=[{"question": f"What is the pet of {raw['people'][0]}?",
                                                 "answer": "Wobbles"}]).id
    other = rq.add(home, raw["people"][2]).id
    assert rq.process(home, steps=2)["stage"] == "deployed"
    r = CliRunner().invoke(app, ["report", str(home.path), "--html", str(tmp_path / "home.html")])
    assert r.exit_code == 0, (r.output, repr(r.exception))
    page = (tmp_path / "home.html").read_text()
    assert page.count('<tr class="request">') == 2 and rid in page and other in page
    assert raw["people"][0] not in page and "://" not in page  # no clear text, no URL
    cert_page = (tmp_path / "home-certificates" / f"{rid}.html").read_text()
    cert = rq.certificate(home, rid)
    assert cert_page.count('<tr class="check">') == len(cert["checks"]) and cert["person_sha256"] in cert_page
    # each request check's exact test beside it, on the page and in `request show` (session 41)
    shown = [significance(c) for c in cert["checks"] if significance(c)]
    assert shown and all(x in cert_page for x in shown)
    code, stdout, _ = cli("request", "show", rid, "--home", str(home.path))
    assert code == 0 and all(x in stdout for x in shown), stdout
    assert f"ed25519 by the home's key <code>{rq.public_key(home)}</code>" in cert_page  # not shown until session 40
    assert f'href="home-certificates/{rid}.html"' in page and 'href="../home.html"' in cert_page
    # the versions and the utility measured on each (MUSE's sustainability; nowhere to be read until session 40)
    vs = rq.versions(home)
    u = next(c for c in cert["checks"] if c["check"] == "utility")
    assert [(v["name"], v["parent"], v["current"], v["deployed"], v["requests"]) for v in vs] == [
        ("v0000", None, False, True, 0), ("v0001", "v0000", True, True, 2)]
    assert vs[0]["utility"] == 1.0 and vs[0]["utility_raw"] == home.meta["base_utility"]
    assert vs[1]["utility"] == u["value"] and vs[1]["utility_raw"] == u["utility"] and vs[1]["batch"] == cert["batch"]
    assert page.count('<tr class="version">') == 2 and f"{u['value']:.4g}" in page
    code, printed, _ = cli("home", "versions", "--home", str(home.path), "--json")
    assert code == 0 and json.loads(printed) == vs
    code, printed, _ = cli("home", "versions", "--home", str(home.path))
    line = next(x for x in printed.splitlines() if "v0001" in x)
    assert code == 0 and "v0001*" in line and "deployed" in line and f"{u['value']:.3f}" in line
    # without --html: one line that says a home's report is the HTML page (it read "no metrics.json")
    r = CliRunner().invoke(app, ["report", str(home.path)])
    assert r.exit_code == 2 and "a deployment home: its report is the ledger's HTML page" in r.output


def test_demo_requests_carries_every_forget_person_through_sequential_batches(tiny_world, tmp_path):
    """`unlearn demo --requests`: the forget people filed without facts, processed two at a time, each
    batch from the last deployed version; every request ends verified with a certificate that
    verifies, or failed with its reason."""
    from unlearnkit.requests.demo import demo_requests

    res = demo_requests(tmp_path, tiny_world.data_dir, tiny_world.subject_dir, per_batch=2)
    assert len(res["requests"]) == 6 and len(res["batches"]) == 3
    assert {b["stage"] for b in res["batches"]} <= {"deployed", "rejected"}
    for r in res["requests"]:
        assert r["status"] in ("verified", "failed")
        assert (r["certificate_ok"] is True) if r["status"] == "verified" else bool(r["failure"])
    deployed = [b["version"] for b in res["batches"] if b["stage"] == "deployed"]
    assert res["version"] == (deployed[-1] if deployed else "v0000")


def test_a_recovery_check_that_cannot_run_fails_the_batch(monkeypatch):
    """Relearning needs a person with two facts (one to relearn, one to ask), or two people, or
    neighbours to relearn; where no source can run the batch is not verified (until session 37 the
    check passed, "not run"). An undefined recovery (nothing was there to take back) passes, with
    the attack's note."""
    import unlearnkit.attacks as attacks
    from unlearnkit.requests.home import Settings
    from unlearnkit.requests.verify import attack_checks

    tried = []

    def fake(kind, *a, source=None, **k):
        if kind == "relearn":
            tried.append(source)
            raise ValueError(f"relearn source {source!r} cannot run")
        return {"recovery": None, "recovery_variant": None, "notes": ["recovery undefined under every variant: x"]}
    monkeypatch.setattr(attacks, "run_attack", fake)
    relearn, quant = attack_checks("m", "w", "s", Settings())
    assert tried == ["facts", "people", "neighbours", "retain"] and relearn["passed"] is False
    assert relearn["note"].startswith("cannot decide, not run: relearn source 'facts' cannot run; relearn source 'people'")
    assert quant["passed"] is True and quant["note"] == "recovery undefined under every variant: x"
    with pytest.raises(ValueError, match="relearn_steps"):
        Settings(relearn_steps=0)
    from unlearnkit.calibrate import settings_from  # a home's answer tolerance of 1 is its repair rounds' too:
    assert settings_from({"repair_tolerance": Settings(answer_tolerance=1.0).answer_tolerance})  # refused there once


def test_process_says_which_rounds_were_lift_rounds(home, monkeypatch):
    """`request process` prints a batch's rounds as `rounds.json` has them: the run, its repair
    rounds, and a lift round (`"lift": true`, session 45) named as one."""
    res = {"batch": "b-x", "stage": "deployed", "source_version": "v0000", "new_version": "v0001", "requests": [],
           "rounds": [{"records": 20, "requests": 2, "reason": "matched", "utility": 0.97},
                      {"records": 2, "requests": 1, "reason": "stalled", "utility": 0.99, "ids": ["a", "b"]},
                      {"records": 10, "requests": 1, "reason": "matched", "utility": 0.98, "ids": list("cdefghijkl"),
                       "lift": True}]}
    monkeypatch.setattr(rq, "process", lambda *a, **k: res)
    code, printed, err = cli("request", "process", "--home", str(home.path))
    assert code == 0, err
    said = " ".join(printed.split())
    assert "unlearned 20 facts of 2 request(s), matched" in said
    assert "repair round 1: 2 facts of 1 request(s), stalled" in said
    assert "lift round 2: 10 facts of 1 request(s), matched" in said
