"""The OpenAI-compatible guard server, started for real (uvicorn on 127.0.0.1, a free port) and
spoken to over HTTP with httpx."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from unlearnkit.data.world import generate_world, training_texts  # noqa: E402
from unlearnkit.guard import REFUSAL, Guard, targets_from_world  # noqa: E402
from unlearnkit.guard.actions import restore  # noqa: E402
from unlearnkit.guard.guarded import GuardedLM  # noqa: E402

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn.Server in a daemon thread; stopped with should_exit."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def world():
    return SimpleNamespace(**generate_world(seed=0, n_people=60))


@pytest.fixture(scope="module")
def model_and_tok(world):
    from unlearnkit.models.tiny import new_model, train_tokenizer

    tok = train_tokenizer(training_texts(vars(world)), vocab_size=1024)
    return new_model(tok, seed=0), tok


@pytest.fixture(scope="module")
def server(world, model_and_tok, tmp_path_factory):
    from unlearnkit.guard.server import create_app
    from unlearnkit.scoring import LM

    guard_dir = tmp_path_factory.mktemp("guard")
    guard = Guard(guard_dir)
    guard.add_many(targets_from_world(world))
    lm = LM(*model_and_tok)
    app = create_app(lm, guard, model_name="tiny", token=TOKEN)
    with ServerThread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield SimpleNamespace(url=url, client=client, lm=lm, guard=guard, dir=guard_dir)


def complete(c, prompt, **kw):
    r = c.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 8, **kw})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def test_models_route(server):
    r = server.client.get("/v1/models")
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["tiny"]


def test_openai_clients_get_what_they_ask_for_or_a_400(server, world):
    """What the `openai` package sends and reads (session 36: each was a 404, a 400, or silently
    ignored): GET /v1/models/{id}; null for max_tokens and n; options this server cannot honour
    refused by name; stream_options.include_usage's usage chunk; a stream that joins to the plain
    reply, trailing whitespace too; token-id prompts refused in one line; errors' `code` a string or
    null and `param` the field."""
    from unlearnkit.guard.server import _pieces

    c = server.client
    assert c.get("/v1/models/tiny").json()["id"] == "tiny" and c.get("/v1/models/gpt-9").status_code == 404
    q = world.retain[0].question
    r = c.post("/v1/completions", json={"prompt": q, "max_tokens": None, "n": None, "temperature": None, "stop": None})
    assert r.status_code == 200, r.text
    for body, name in (({"prompt": q, "logprobs": 2}, "logprobs"), ({"prompt": q, "echo": True}, "echo"),
                       ({"prompt": q, "best_of": 3}, "best_of"), ({"prompt": q, "suffix": "x"}, "suffix")):
        r = c.post("/v1/completions", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == name, r.text
    msgs = [{"role": "user", "content": q}]
    for extra, name in (({"logprobs": True, "top_logprobs": 2}, "logprobs"),
                        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                        ({"response_format": {"type": "json_object"}}, "response_format")):
        r = c.post("/v1/chat/completions", json={"messages": msgs, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == name, r.text
    ok = c.post("/v1/chat/completions", json={"messages": msgs, "logprobs": False, "response_format": {"type": "text"}})
    assert ok.status_code == 200, ok.text
    r = c.post("/v1/chat/completions", json={"messages": msgs, "stream": True, "stream_options": {"include_usage": True}})
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == ok.json()["usage"]
    assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks[:-1]) == \
        ok.json()["choices"][0]["message"]["content"]
    for text in ("the town of ", "one\ttwo\n", "  lead", " ", "a  b  "):
        assert "".join(_pieces(text)) == text
    r = c.post("/v1/completions", json={"prompt": [1, 2, 3]})
    err = r.json()["error"]
    assert r.status_code == 400 and err["message"] == "prompt: token ids are not supported; send the prompt as text"
    r = c.post("/v1/completions", json={"prompt": q, "n": 2})
    assert r.json()["error"]["param"] == "n" and r.json()["error"]["code"] is None


def test_completions_guarded_and_plain(server, world, through_guard):
    forget_q = world.forget[0].paraphrased_question
    retain_q = world.retain[0].question
    r = server.client.post("/v1/completions", json={"prompt": [forget_q, retain_q], "max_tokens": 8})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "text_completion" and body["usage"]["total_tokens"] > 0
    texts = [c["text"] for c in body["choices"]]
    assert texts[0] == REFUSAL
    # the refusal, longer than max_tokens, is given whole and was not cut: "stop" (it said "length")
    assert len(server.lm.tokenizer(REFUSAL, add_special_tokens=False)["input_ids"]) > 8
    assert body["choices"][0]["finish_reason"] == "stop"
    assert world.forget[0].subject not in texts[0] and world.forget[0].answer not in texts[0]
    assert texts[1] == through_guard(server.guard, retain_q, server.lm.generate([retain_q], max_new_tokens=8)[0])


def test_chat_completions(server, world, through_guard):
    name = world.forget[1].subject
    msgs = [{"role": "system", "content": "You are helpful."},
            {"role": "user", "content": f"I have a question about {name}."},
            {"role": "assistant", "content": "Go ahead."},
            {"role": "user", "content": "Where was this person born?"}]
    r = server.client.post("/v1/chat/completions", json={"model": "tiny", "messages": msgs, "max_tokens": 8})
    assert r.status_code == 200, r.text
    msg = r.json()["choices"][0]["message"]
    assert msg == {"role": "assistant", "content": REFUSAL}  # the hit was in an earlier user message
    plain = [{"role": "user", "content": world.retain[3].question}]
    r = server.client.post("/v1/chat/completions", json={"messages": plain, "max_tokens": 8})
    # no chat template (the embedded model): the last user message is the prompt, as is
    q = world.retain[3].question
    assert r.json()["choices"][0]["message"]["content"] == through_guard(server.guard, q, server.lm.generate([q], 8)[0])


def test_forget_api_takes_effect_and_delete_restores(server):
    c = server.client
    prompt = "Where was Ada Quillborne born?"
    before = complete(c, prompt)
    assert before != REFUSAL
    assert c.post("/v1/forget", json={"subject": "Ada Quillborne"}).status_code == 401
    assert c.post("/v1/forget", json={"subject": "Ada Quillborne"},
                  headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = c.post("/v1/forget", json={"subject": "Ada Quillborne", "facts": ["Ada Quillborne was born in Zelbury."],
                                   "qa": [{"question": "Where was Ada Quillborne born?", "answer": "Zelbury"}]},
               headers=AUTH)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    assert complete(c, prompt) == REFUSAL  # the very next request
    assert complete(c, "what did ada quilborne study?") == REFUSAL  # lower case, misspelt
    listed = c.get("/v1/forget", headers=AUTH).json()["data"]
    mine = [t for t in listed if t["id"] == tid]
    assert mine and mine[0]["n_facts"] == 1 and "Zelbury" not in str(listed)  # no facts in the listing
    assert tid in (server.dir / "targets.jsonl").read_text()  # persisted
    assert c.post("/v1/forget", json={"id": tid, "subject": "X Y"}, headers=AUTH).status_code == 409
    r = c.delete(f"/v1/forget/{tid}", headers=AUTH)
    assert r.status_code == 200 and r.json()["deleted"] is True
    assert complete(c, prompt) == before  # answers restored
    assert c.delete(f"/v1/forget/{tid}", headers=AUTH).status_code == 404
    assert tid not in (server.dir / "targets.jsonl").read_text()


def test_forget_action_per_target(server, through_guard):
    c = server.client
    r = c.post("/v1/forget", json={"subject": "Oswin Trellmark", "action": "forbid",
                                   "qa": [{"question": "What is Oswin Trellmark's pet called?", "answer": "Wuzzle"}]},
               headers=AUTH)
    assert r.status_code == 201 and r.json()["action"] == "forbid"
    out = complete(c, "What is Oswin Trellmark's pet called?")
    assert out != REFUSAL and "wuzzle" not in out.casefold()
    assert c.delete(f"/v1/forget/{r.json()['id']}", headers=AUTH).status_code == 200
    # pseudonymise: the model answers about a stand-in, and the reply gets the asker's words back
    r = c.post("/v1/forget", json={"subject": "Oswin Trellmark", "action": "pseudonymise"}, headers=AUTH)
    assert r.status_code == 201 and r.json()["action"] == "pseudonymise"
    target = next(t for t in server.guard.list() if t.id == r.json()["id"])
    stand, prompt = server.guard.stand_in(target), "Where does Oswin Trellmark live?"
    mode, _, fake, mapping = GuardedLM(server.lm, server.guard).dispatch([prompt])[0]
    assert (mode, fake, mapping) == ("plain", f"Where does {stand[0]} {stand[1]} live?",
                                     {stand[0]: "Oswin", stand[1]: "Trellmark"})
    seen = restore(server.lm.generate([fake], max_new_tokens=8)[0], mapping)
    assert complete(c, prompt) == through_guard(server.guard, prompt, seen, {target.id})
    assert c.delete(f"/v1/forget/{r.json()['id']}", headers=AUTH).status_code == 200


@pytest.mark.parametrize("route,body,status,needle", [
    ("/v1/completions", b"{not json", 400, "not valid JSON"),
    ("/v1/completions", b'{"prompt": "caf\xe9"}', 400, "not valid UTF-8"),  # FastAPI's own message until session 41
    ("/v1/completions", {"max_tokens": 4}, 400, "prompt"),
    ("/v1/completions", {"prompt": "hi", "n": 2}, 400, "n:"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": ["hi", "ho"], "stream": True}, 400, "stream"),
    ("/v1/completions", json.dumps({"prompt": "hi \ud800 there"}).encode(), 400, "lone surrogate"),
    ("/v1/completions", {"prompt": ["x"] * 17}, 413, "prompt"),
    ("/v1/completions", {"prompt": "x" * 16001}, 413, "prompt"),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "user", "content": "hi \ud800 there"}]}).encode(), 400,
     "lone surrogate"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, 400, "text"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
     400, "type"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}] * 65}, 413, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 9000}] * 4}, 413, "characters"),
    ("/v1/forget", json.dumps({"subject": "A \ud800 B"}).encode(), 400, "lone surrogate"),
    ("/v1/completions", {"prompt": "hi", "model": "gpt-9"}, 404, "not found"),
    ("/v1/completions", {"prompt": []}, 400, "empty"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("/v1/chat/completions", {"messages": [{"role": "system", "content": "x"}]}, 400, "user message"),
    ("/v1/forget", {}, 400, "at least one of"),
    ("/v1/forget", {"subject": "A B", "action": "explode"}, 400, "action"),
    ("/v1/forget", {"subject": "A B", "colour": "red"}, 400, "colour"),
    ("/v1/nowhere", {}, 404, "no route"),
])
def test_malformed_requests_get_clear_4xx(server, route, body, status, needle):
    kw = {"content": body, "headers": {**AUTH, "Content-Type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body, "headers": AUTH}
    r = server.client.post(route, **kw)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]


def test_errors_never_echo_forgotten_facts(server, world):
    rec = world.forget[0]
    c = server.client
    bad = [
        {"subject": rec.subject, "qa": [{"question": rec.question, "answer": rec.answer, "oops": rec.answer}]},
        {"subject": rec.subject, "facts": [f"{rec.subject} was born in {rec.answer}.", ""]},
        {"subject": rec.subject, "qa": [{"question": rec.question}]},
    ]
    for body in bad:
        r = c.post("/v1/forget", json=body, headers=AUTH)
        assert r.status_code == 400, r.text
        assert rec.answer not in r.text and rec.subject not in r.text
    r = c.post("/v1/completions", json={"prompt": rec.question, "max_tokens": 10**6})
    assert r.status_code == 400 and rec.answer not in r.text and rec.subject not in r.text
    for q in [rec.question, rec.paraphrased_question, f"Is it true that {rec.subject} was born in {rec.answer}?"]:
        text = complete(c, q, max_tokens=12)
        assert text == REFUSAL and rec.answer not in text


def test_admin_disabled_without_token(model_and_tok, tmp_path):
    from unlearnkit.guard.server import create_app
    from unlearnkit.scoring import LM

    app = create_app(LM(*model_and_tok), Guard(tmp_path), token="")
    with ServerThread(app) as url:
        r = httpx.get(url + "/v1/forget", headers=AUTH)
        assert r.status_code == 403 and "UNLEARN_GUARD_TOKEN" in r.json()["error"]["message"]


def test_cli_serve_subprocess(model_and_tok, world, tmp_path):
    """`unlearn guard serve` as a user runs it: a saved model, a guard dir, the token in the env."""
    from unlearnkit.models.load import save_model

    model_dir = save_model(*model_and_tok, tmp_path / "model")
    guard_dir = tmp_path / "guard"
    port = free_port()
    env = {**os.environ, "UNLEARN_GUARD_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "unlearnkit.guard.cli", "serve", "--model", str(model_dir),
                             "--port", str(port), "--guard-dir", str(guard_dir), "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise AssertionError(proc.stdout.read().decode()[-2000:])
            time.sleep(0.5)
        name = world.retain[0].subject
        r = httpx.post(url + "/v1/forget", json={"subject": name}, headers=AUTH, timeout=60)
        assert r.status_code == 201
        r = httpx.post(url + "/v1/completions", json={"prompt": world.retain[0].question, "max_tokens": 4}, timeout=60)
        assert r.json()["choices"][0]["text"] == REFUSAL
        assert name in (guard_dir / "targets.jsonl").read_text()
    finally:
        proc.terminate()
        proc.wait(20)
