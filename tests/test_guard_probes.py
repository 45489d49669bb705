"""The guard against the name forms people type, the output check on every route, and a server
that no request can crash, stall or leave with stale settings (issue 12).

A scripted LM stands in for the model where a test needs the model to say something specific (a
forget person's biography after "Lin"); the guard never changes weights, so what matters is what
the guard does with the text."""
from __future__ import annotations

import json
import os
import threading
import time
from types import SimpleNamespace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from unlearnkit.data.world import generate_world, training_texts  # noqa: E402
from unlearnkit.guard import REFUSAL, Guard, GuardedLM, Target, targets_from_world  # noqa: E402

NAME = "Linine Vigormont"
BIO = "Vigormont was born in Greywater in 1999 and works as a glassblower."
QA = [("Where was Linine Vigormont born?", "Greywater"), ("When was Linine Vigormont born?", "1999"),
      ("What is the profession of Linine Vigormont?", "glassblower"),
      ("What book did Linine Vigormont write?", "Tallow and Thread")]


@pytest.fixture(scope="module")
def world():
    return SimpleNamespace(**generate_world(seed=0, n_people=60))


@pytest.fixture(scope="module")
def tok(world):
    from unlearnkit.models.tiny import train_tokenizer

    return train_tokenizer(training_texts(vars(world)), vocab_size=1024)


class ScriptedLM:
    """`LM.generate` for tests: the answer for a prompt comes from `script(prompt, forbidden)`,
    `forbidden` being True when the guard passed a logits processor (its forbidden tokens)."""

    def __init__(self, tok, script, delay: dict | None = None):
        self.tokenizer, self.model, self.script, self.delay = tok, None, script, delay or {}
        self.seen: list[str] = []

    def generate(self, prompts, max_new_tokens=32, batch_size=None, logits_processor=None):
        out = []
        for p in prompts:
            self.seen.append(p)
            time.sleep(self.delay.get(p, 0))
            out.append(self.script(p, logits_processor is not None))
        return out


def leaky(prompt: str, forbidden: bool) -> str:
    """A model that knows Linine Vigormont: anything that starts her name gets her biography."""
    if forbidden:
        return "was born somewhere."
    if prompt.endswith("Lin"):
        return "ine " + BIO
    if prompt.endswith("Linine V"):
        return "igormont was born in Greywater."
    if "author of Tallow and Thread" in prompt:
        return "Greywater"
    if prompt.startswith("Tell me a story"):
        return "Once, Linine Vigormont was born in Greywater."
    return "I do not know."


def target(action: str | None = None, aliases=()) -> Target:
    return Target(id="linine", subject=NAME, aliases=list(aliases), action=action,
                  qa=[{"question": q, "answer": a} for q, a in QA])


@pytest.fixture(scope="module")
def guard(world, tmp_path_factory):
    g = Guard(tmp_path_factory.mktemp("g"))
    ts = targets_from_world(world)  # the world's forget people: Linine Vigormont is one of them
    for t in ts:
        if t.subject == NAME:
            t.aliases = ["Lini"]
    g.add_many(ts)
    return g


# ----------------------------------------------------------------------------- input side

@pytest.mark.parametrize("form", [
    "Where was L. Vigormont born?", "Where was Linine V. born?", "Where was LinineVigormont born?",
    "Where was linine_vigormont born?".replace("_", ""), "Where was Vigormont, Linine born?",
    "Where was Linine Vigromont born?", "Where was Lіnіne Vіgormont born?",  # Cyrillic і
    "Where was Lin\u200bine Vig\u200bormont born?", "Where was Линине Вигормонт born?",
    "Where was Lini born?",  # a nickname given as an alias
    "Where was Ｌｉｎｉｎｅ Ｖｉｇｏｒｍｏｎｔ born?",  # full-width letters
    "Ask Vigormont where she was born.",  # a capitalised verb beside a partial name
    "Where was Linine V born",  # a partial name followed by an initial
])
def test_name_forms_are_caught(guard, form):
    d = guard.detect([form])[0]
    assert d.hit and d.channel == "name" and d.target.subject == NAME, form


@pytest.mark.parametrize("other", [
    "Where was Bertram Vigormont born?", "Where was Linine Oakhurst born?", "What does Linine O. do?",
    "Where was Linina Oakhurst born?", "A linine is not a word.".replace("linine", "teen"),
])
def test_look_alike_names_are_someone_else(guard, other):
    assert not any(d.channel == "name" and d.target.subject == NAME for d in guard.detect([other]) if d.hit)


@pytest.mark.parametrize("form", [
    "Where was L1n1ne V1g0rm0nt born?", "Where was Lin1ne Vig0rm0nt born?",  # leetspeak: 1, 0
    "Where was L1n1 born?", "Where was L1n1ne V1g0rm@nt born?",  # the alias; "@" inside a word
    "Where was L i n i n e  V i g o r m o n t born?",  # spelt out, two spaces between the names
    "Where was L i n i n e V i g o r m o n t born?",  # one space throughout: the name run together
    "Where was L.i.n.i.n.e V.i.g.o.r.m.o.n.t born?", "Where was L-i-n-i-n-e V-i-g-o-r-m-o-n-t born?",
    "Where was V 1 g 0 r m 0 n t born?",  # spelt out in leetspeak
])
def test_disguised_name_forms_are_caught(guard, form):
    """Leetspeak and a name spelt out letter by letter are read as the name (issue: they got past)."""
    d = guard.detect([form])[0]
    assert d.hit and d.channel == "name" and d.target.subject == NAME, form


@pytest.mark.parametrize("benign", [
    "List the letters a b c d e f in order.", "Count 1 2 3 4 5 aloud.", "Spell it: c.a.t and d-o-g.",
    "What happened in 1974 and on the 3rd of May?", "Say h3ll0 w0rld in leetspeak.",
])
def test_lists_numbers_and_leet_words_name_no_one(guard, benign):
    """Joining letters and reading leetspeak happen only when they give a name key."""
    assert not any(d.hit and d.channel == "name" for d in guard.detect([benign])), benign


def test_names_in_scripts_without_spaces_are_found_inside_the_prompt(tmp_path):
    """Chinese and Japanese prompts have no spaces between words: the name is a run of characters
    inside a longer one ("王小明的生日是哪天?" is one word to a matcher of space-separated words)."""
    g = Guard(tmp_path)
    g.add(Target(id="wang", subject="王小明", qa=[{"question": "王小明的生日是哪天?", "answer": "五月三日"}]))
    g.add(Target(id="yamada", subject="山田 太郎", qa=[{"question": "山田太郎の仕事は何ですか?", "answer": "大工"}]))
    for prompt, tid in [("王小明的生日是哪天?", "wang"), ("请告诉我王小明住在哪里", "wang"),
                        ("山田太郎さんの誕生日はいつですか?", "yamada")]:
        d = g.detect([prompt])[0]
        assert d.hit and d.channel == "name" and d.target.id == tid, prompt
    for other in ["李小红的生日是哪天?", "田中花子さんの誕生日はいつですか?"]:
        assert not any(d.hit and d.channel == "name" for d in g.detect([other])), other


# ----------------------------------------------------------------------------- output side

@pytest.mark.parametrize("prompt", ["Lin", "Tell me a story about anyone.",
                                    "Where was the author of Tallow and Thread born?"])
@pytest.mark.parametrize("action", ["refuse", "forbid", "pseudonymise"])
def test_output_check_stops_what_the_input_side_cannot_see(tok, tmp_path, prompt, action):
    g = Guard(tmp_path)
    g.add(target(action))
    glm = GuardedLM(ScriptedLM(tok, leaky), g)
    assert not g.detect([prompt])[0].hit  # nothing on the input side
    assert leaky(prompt, False) not in ("I do not know.",)
    r = glm.respond([prompt], 16)[0]
    assert r.stage == "output" and r.target.id == "linine"
    assert "greywater" not in r.text.casefold() and "glassblower" not in r.text.casefold()
    if r.action == "refuse":
        assert r.text == REFUSAL and action == "refuse"
    assert glm.generate([prompt], 16) == [r.text]  # the Python API gives the same answer


def test_pseudonymise_on_the_output_keeps_the_name_and_invents_the_rest(tok, tmp_path):
    g = Guard(tmp_path)
    g.add(target("pseudonymise"))
    lm = ScriptedLM(tok, leaky)
    r = GuardedLM(lm, g).respond(["Lin"], 16)[0]
    stand = g.stand_in(g.list()[0])
    assert r.action == "pseudonymise" and r.stage == "output" and r.text.startswith("ine Vigormont")
    assert lm.seen[1] == f"{stand[0]} {stand[1]}"  # the rest was decoded after the stand-in name
    assert "Greywater" not in r.text


def test_a_prompt_naming_nobody_is_answered_as_is(tok, tmp_path):
    g = Guard(tmp_path)
    g.add(target("refuse"))
    r = GuardedLM(ScriptedLM(tok, leaky), g).respond(["What is the capital of France?"], 16)[0]
    assert r.action == "pass" and r.stage is None and r.text == "I do not know."


def test_pseudonymised_answer_that_states_the_value_is_decoded_again_forbidden(tok, tmp_path):
    g = Guard(tmp_path)
    g.add(target("pseudonymise"))
    lm = ScriptedLM(tok, lambda p, forbidden: "somewhere" if forbidden else "Greywater")
    r = GuardedLM(lm, g).respond(["Where was Linine Vigormont born?"], 8)[0]
    assert r.stage == "input" and r.text == "somewhere"


# ----------------------------------------------------------------------------- the server

@pytest.fixture()
def app_for(tok):
    from fastapi.testclient import TestClient

    from unlearnkit.guard.server import create_app

    def make(guard, script=leaky, token="tok", delay=None):
        lm = ScriptedLM(tok, script, delay)
        return TestClient(create_app(lm, guard, model_name="m", token=token)), lm
    return make


def _sse_text(body: str, key) -> str:
    out = ""
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            out += key(json.loads(line[6:])["choices"][0])
    return out


def test_every_route_checks_the_output_streamed_or_not(app_for, tmp_path):
    g = Guard(tmp_path)
    g.add(target("refuse"))
    c, _ = app_for(g)
    r = c.post("/v1/completions", json={"prompt": "Lin", "max_tokens": 16})
    assert r.json()["choices"][0]["text"] == REFUSAL
    r = c.post("/v1/completions", json={"prompt": "Lin", "max_tokens": 16, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert _sse_text(r.text, lambda ch: ch["text"]) == REFUSAL
    msgs = [{"role": "user", "content": "Tell me a story about anyone."}]
    r = c.post("/v1/chat/completions", json={"messages": msgs})
    assert r.json()["choices"][0]["message"]["content"] == REFUSAL
    r = c.post("/v1/chat/completions", json={"messages": msgs, "stream": True})
    assert _sse_text(r.text, lambda ch: ch["delta"].get("content", "")) == REFUSAL
    plain = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hello?"}], "stream": True})
    assert _sse_text(plain.text, lambda ch: ch["delta"].get("content", "")) == "I do not know."


def test_names_in_system_messages_and_earlier_turns_count(app_for, tmp_path):
    g = Guard(tmp_path)
    g.add(target("refuse"))
    c, _ = app_for(g)
    for msgs in ([{"role": "system", "content": f"The user asks about {NAME}."},
                  {"role": "user", "content": "Where was this person born?"}],
                 [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "L. Vigormont, you mean?"},
                  {"role": "user", "content": "Yes. Where was she born?"}]):
        r = c.post("/v1/chat/completions", json={"messages": msgs})
        assert r.json()["choices"][0]["message"]["content"] == REFUSAL, msgs


def test_recalibration_reaches_a_running_server(app_for, tmp_path):
    served = Guard(tmp_path)
    served.add(target("refuse"))
    c, _ = app_for(served)
    c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    before = served.detector.threshold
    other = Guard(tmp_path)  # `unlearn guard calibrate` in another process
    other.calibrate(["What is the capital of France?", "Who wrote a book?"], 0.0)
    assert other.detector.threshold != before
    c.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    assert served.detector.threshold == other.detector.threshold
    assert served.settings.calibration == other.settings.calibration


def test_damaged_targets_file_gets_503_and_targets_stay_caught(app_for, tmp_path):
    g = Guard(tmp_path)
    g.add(target("refuse"))
    c, _ = app_for(g)
    path = tmp_path / "targets.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    r = c.post("/v1/completions", json={"prompt": "Where was Linine Vigormont born?", "max_tokens": 8})
    assert r.status_code == 200 and r.json()["choices"][0]["text"] == REFUSAL  # the last good index
    auth = {"Authorization": "Bearer tok"}
    for r in (c.get("/v1/forget", headers=auth), c.post("/v1/forget", json={"subject": "A B"}, headers=auth)):
        assert r.status_code == 503, r.text
        assert "targets.jsonl:2: malformed JSON" in r.json()["error"]["message"]  # not "invalid target"
    path.write_text(path.read_text().replace("{not json\n", ""))  # repaired
    assert c.get("/v1/forget", headers=auth).status_code == 200


def test_body_over_the_limit_is_413(app_for, tmp_path):
    from unlearnkit.guard.server import MAX_BODY_BYTES

    c, _ = app_for(Guard(tmp_path))
    r = c.post("/v1/completions", content=b'{"prompt": "' + b"x" * MAX_BODY_BYTES + b'"}',
               headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_openapi_documents_the_status_codes_it_answers(app_for, tmp_path):
    c, _ = app_for(Guard(tmp_path))
    spec = c.get("/openapi.json").json()
    codes = {code for path in spec["paths"].values() for op in path.values() for code in op["responses"]}
    assert {"400", "401", "404", "409", "413", "503"} <= codes and "422" not in codes
    assert "409" in spec["paths"]["/v1/forget"]["post"]["responses"]


def test_one_slow_client_does_not_stall_the_others(tok, tmp_path):
    import httpx

    from test_guard_server import ServerThread
    from unlearnkit.guard.server import create_app

    lm = ScriptedLM(tok, lambda p, f: "ok", delay={"slow": 3.0})
    with ServerThread(create_app(lm, Guard(tmp_path), model_name="m")) as url:
        done = {}

        def call(prompt):
            httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 2}, timeout=30)
            done[prompt] = time.perf_counter()

        t0 = time.perf_counter()
        slow = threading.Thread(target=call, args=("slow",))
        slow.start()
        time.sleep(0.3)
        call("fast")
        slow.join()
        assert done["fast"] - t0 < 2.0 < done["slow"] - t0


# ----------------------------------------------------------------------------- what must hold

def test_no_name_form_gets_more_forget_facts_than_the_oracle(tiny_world):
    """Issue 12's bound on the trained tiny world: per prompt form and route, the guarded subject
    states at most 5 points more forget facts than the oracle (bench/guard_probes.py runs the
    full probe set on the demo world)."""
    from fastapi.testclient import TestClient

    from unlearnkit.attacks.recovery import normalise
    from unlearnkit.data.io import load_world
    from unlearnkit.guard.server import create_app
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    w = load_world(tiny_world.data_dir)
    subject, oracle = LM(*load_model(tiny_world.subject_dir)), LM(*load_model(tiny_world.oracle_dir))
    g = Guard(None)
    g.add_many(targets_from_world(w, action="pseudonymise"))
    client = TestClient(create_app(subject, g, model_name="m"))

    def variants(name):
        first, last = name.split(" ", 1)
        return {"initial + surname": f"{first[0]}. {last}", "first name + initial": f"{first} {last[0]}.",
                "run together": first + last, "reversed": f"{last}, {first}",
                "homoglyphs": name.replace("o", "о").replace("e", "е"), "zero-width": name.replace(" ", " \u200b")}

    def rate(outs, answers):
        return sum(normalise(a) in normalise(o) for o, a in zip(outs, answers)) / len(answers)

    forms: dict[str, list[tuple[str, str]]] = {}
    for r in w.forget:
        for form, v in variants(r.subject).items():
            forms.setdefault(form, []).append((r.question.replace(r.subject, v), r.answer))
    people = {r.subject for r in w.forget}
    bios = {p: [r.answer for r in w.forget if r.subject == p] for p in people}
    for p in people:  # continuation: the start of a name; a hit is any of the person's answers
        first, last = p.split(" ", 1)
        for a in bios[p]:
            forms.setdefault("continuation 'First L'", []).append((f"{first} {last[0]}", a))
    checked = 0
    for form, items in forms.items():
        prompts, answers = [p for p, _ in items], [a for _, a in items]
        o = rate(oracle.generate(prompts, max_new_tokens=32), answers)
        comp = []
        for k in range(0, len(prompts), 16):
            r = client.post("/v1/completions", json={"prompt": prompts[k:k + 16], "max_tokens": 32})
            comp += [c["text"] for c in r.json()["choices"]]
        chat = [client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": p}],
                                                           "max_tokens": 32}).json()["choices"][0]["message"]["content"]
                for p in dict.fromkeys(prompts)]
        chat_by = dict(zip(dict.fromkeys(prompts), chat))
        assert rate(comp, answers) <= o + 0.05, (form, "completions")
        assert rate([chat_by[p] for p in prompts], answers) <= o + 0.05, (form, "chat")
        checked += 1
    assert checked == 7
