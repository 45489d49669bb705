"""`unlearn serve --home`'s own routes (`unlearnkit.requests.serve`): errors in the guard server's
one shape, naming the field; the ledger waited on in a worker thread, not on the event loop; a new
`current` that cannot be loaded is not served. On an untrained tiny model (the routes, not forgetting)."""
from __future__ import annotations

import socket
import sqlite3
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from unlearnkit import requests as rq

AUTH = {"Authorization": "Bearer tok"}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """A 20-person world and an untrained tiny model on its vocabulary (as tests/test_requests.py)."""
    from unlearnkit import api
    from unlearnkit.data.io import load_world
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import new_model, train_tokenizer

    root = tmp_path_factory.mktemp("serveraw")
    data = api.world(root / "world", seed=1, n_people=20, forget_fraction=0.2)
    w = load_world(data)
    tok = train_tokenizer([t for r in w.training_records() for t in r.phrasings() + [r.answer]], vocab_size=512)
    save_model(new_model(tok, seed=0), tok, root / "model")
    return {"world": data, "model": root / "model"}


@pytest.fixture
def home(raw, tmp_path):
    return rq.init(tmp_path / "home", raw["model"], raw["world"], utility_records=20)


def test_request_routes_answer_bad_input_in_one_line_naming_the_field(home):
    from unlearnkit.guard.server import MAX_BODY_BYTES
    from unlearnkit.requests.serve import HomeServer

    client = TestClient(HomeServer(home, token="tok"))

    def error(body=None, content=None, status=400, method="post", path="/v1/forget"):
        if content is not None:
            r = client.post(path, content=content, headers={**AUTH, "content-type": "application/json"})
        elif method == "post":
            r = client.post(path, json=body, headers=AUTH)
        else:
            r = getattr(client, method)(path, headers=AUTH)
        assert r.status_code == status, r.text
        e = r.json()["error"]
        assert e["code"] is None and "\n" not in e["message"]
        return e["message"], e["param"]

    # a fact's error names the fact and its field (": Value error, ..." until session 40)
    assert error({"name": "Ann Bee", "facts": [{"question": "Where?"}]}) == (
        "facts.0: a line needs 'question' and 'answer', or 'fact'", "facts.0")
    assert error({"name": "Ann Bee", "facts": [{"fact": "x"}, {"fact": "y", "source": "z"}]}) == (
        "facts.1.source: Extra inputs are not permitted", "facts.1.source")
    assert error({"name": "Ann Bee", "facts": [{"fact": "x" * 2001}]})[1] == "facts.0.fact"
    assert error(content=b'{"name": "Ann \\ud800 Bee"}') == (
        "name: text is not valid Unicode (a lone surrogate)", "name")
    assert error({"name": "Ann Bee", "extra": 1}) == ("extra: Extra inputs are not permitted", "extra")
    # a body that is no JSON object, or no JSON ("Input should be ... instance of ForgetBody" until session 40)
    assert error(content=b"[]")[0].startswith("body: ")
    assert error(content=b"{name:") == ("body: request body is not valid JSON", None)
    assert error(content=b'{"name": "Ren\xe9 Bee"}') == (  # FastAPI's own words until session 41
        "request body is not valid UTF-8 (at byte offset 13): JSON is UTF-8 text", None)
    # bounded as the guard's routes are: a body over the limit is refused before it is read
    assert "limit" in error(content=b'{"name": "A B", "reason": "' + b"r" * MAX_BODY_BYTES + b'"}', status=413)[0]
    # routes and methods that do not exist answer in the same shape ({"detail": ...} until session 40)
    assert error(method="get", path="/v1/requests/a/b", status=404)[0] == "no route GET /v1/requests/a/b"
    assert error(path="/v1/requests/r-x", status=405)[0] == "method POST not allowed on /v1/requests/r-x"
    # the token is asked first: a body that is no JSON, or over the limit, from a client without it is a
    # 401 (the body was parsed first, and answered 400, until session 40)
    for content in (b"{name:", b'{"name": "Ren\xe9"}', b'{"name": "A B", "reason": "' + b"r" * MAX_BODY_BYTES + b'"}'):
        r = client.post("/v1/forget", content=content, headers={"content-type": "application/json"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert r.json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/requests/r-x", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert rq.list_requests(home) == []
    # a damaged guard directory is the server's fault, not the client's (a 400 until session 40): 503
    # and nothing filed
    with open(home.guard_dir / "targets.jsonl", "a") as f:
        f.write("{not json\n")
    message, _ = error({"name": "Ann Bee"}, status=503)
    assert message.startswith("guard directory damaged") and rq.list_requests(home) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_forget_waiting_on_the_ledger_holds_up_no_other_request(home, monkeypatch):
    """POST /v1/forget ran `add` on the event loop until session 40: while it waited on a ledger
    another process held (up to the 30 s busy timeout), every other request waited too, and then it
    answered a bare 500."""
    import uvicorn

    from unlearnkit.requests import ledger
    from unlearnkit.requests.serve import HomeServer

    monkeypatch.setattr(ledger, "BUSY_MS", 3000)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(HomeServer(home, token="tok"), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        held = sqlite3.connect(home.ledger_path, isolation_level=None)
        held.execute("BEGIN IMMEDIATE")  # another process writing the ledger
        filed = {}
        post = threading.Thread(target=lambda: filed.update(r=httpx.post(
            url + "/v1/forget", json={"name": "Ann Bee"}, headers=AUTH, timeout=30)))
        post.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        assert httpx.get(url + "/v1/models", timeout=30).status_code == 200
        assert time.perf_counter() - t0 < 1.5  # not behind the forget's wait (3 s)
        post.join(30)
        held.execute("ROLLBACK")
        held.close()
        r = filed["r"]
        assert r.status_code == 503 and "the ledger is busy" in r.json()["error"]["message"]
        assert rq.list_requests(home) == []  # nothing half-filed: the client is told to try again
        r = httpx.post(url + "/v1/forget", json={"name": "Ann Bee"}, headers=AUTH, timeout=30)
        assert r.status_code == 201 and rq.show(home, r.json()["id"])["status"] == "guarded"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_new_current_whose_model_does_not_load_is_not_served(home, raw, tmp_path):
    """A version that passes its manifest (written so) but whose model does not load (a garbled
    config.json) is refused as a damaged one is: the loaded version goes on serving. Until session
    40 every request answered 500, and each loaded the version again."""
    import shutil

    from unlearnkit.requests.serve import HomeServer

    client = TestClient(HomeServer(home, token="tok"))
    assert client.get("/v1/models").json()["data"][0]["id"] == "v0000"
    bad = tmp_path / "bad"
    shutil.copytree(raw["model"], bad)
    (bad / "config.json").write_text('{"model_type": "llama",')
    home.add_version(bad, "v0001", "v0000")
    home.set_current("v0001")  # the manifest matches: only loading finds the fault
    for _ in range(2):
        assert client.get("/v1/models").json()["data"][0]["id"] == "v0000"
        r = client.post("/v1/completions", json={"prompt": "Where was Ann Bee born?", "max_tokens": 2})
        assert r.status_code == 200 and r.json()["model"] == "v0000"


def test_a_client_that_names_the_model_current_follows_each_deployment(home, raw):
    """The model's name is its version, so a client that pinned "v0000" gets a 404 once a new version
    is current (as it should: that version is no longer served). A client that names it "current"
    is answered by whichever version is current (until session 41 it got a 404 after every
    deployment), and each answer says which version gave it."""
    from unlearnkit.requests.serve import CURRENT_MODEL, HomeServer

    client = TestClient(HomeServer(home, token="tok"))
    ask = lambda model: client.post("/v1/chat/completions", json={  # noqa: E731
        "model": model, "messages": [{"role": "user", "content": "Where was Ann Bee born?"}], "max_tokens": 2})
    assert CURRENT_MODEL == "current"
    assert ask("current").status_code == 200 and ask("current").json()["model"] == "v0000"
    assert client.get("/v1/models/current").json()["id"] == "v0000"
    home.add_version(raw["model"], "v0001", "v0000")
    home.set_current("v0001")
    r = ask("current")
    assert r.status_code == 200 and r.json()["model"] == "v0001"
    r = ask("v0000")
    assert r.status_code == 404 and r.json()["error"]["message"] == (
        "model 'v0000' not found; this server serves 'v0001' (or 'current')")
    assert ask("v0001").status_code == 200


def test_delete_withdraws_a_request_no_batch_holds(home):
    """`DELETE /v1/requests/{id}` is `request withdraw`: 404 for an unknown id, 409 for one in a batch
    (with the ledger's one-line reason), the token asked first."""
    from unlearnkit.requests.serve import HomeServer

    client = TestClient(HomeServer(home, token="tok"))
    rid = client.post("/v1/forget", json={"name": "Ann Bee", "reason": "by mail"}, headers=AUTH).json()["id"]
    assert client.delete(f"/v1/requests/{rid}", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = client.delete(f"/v1/requests/{rid}", headers=AUTH)
    assert r.status_code == 200 and r.json() == {"id": rid, "object": "forget_request", "status": "withdrawn"}
    got = client.get(f"/v1/requests/{rid}", headers=AUTH).json()
    assert got["status"] == "withdrawn" and got["failure"] == "withdrawn"
    assert rq.show(home, rid)["name"] is None and home.guard().list() == []
    r = client.delete("/v1/requests/r-nope", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["message"] == "no request with id 'r-nope'"
    other = rq.add(home, "Cal Dune").id
    with home.ledger() as led:
        led.start_batch("b-test", "v0000", "v0001", [other], "simnpo")
    r = client.delete(f"/v1/requests/{other}", headers=AUTH)
    assert r.status_code == 409 and "being processed" in r.json()["error"]["message"]
    assert rq.show(home, other)["status"] == "processing"
