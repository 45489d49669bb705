"""Prompt formats (`--template`): raw, chat (the tokenizer's chat template) and format strings, in
the one place every verb encodes its prompts, and end to end on a tiny model."""
from __future__ import annotations

import json

import pytest
import yaml

from unlearnkit.data.batching import encode_pairs, encode_prompt, encode_prompts
from unlearnkit.data.templates import TOFU_LLAMA2, parse_template

CHAT = ("{% if messages[0]['role'] == 'system' %}<s>{{ messages[0]['content'] }}\n{% endif %}"
        "User: {{ messages[-1]['content'] }}\nAssistant:")


@pytest.fixture(scope="module")
def chat_tiny(tmp_path_factory):
    """An untrained tiny Llama whose tokenizer has a small chat template."""
    from unlearnkit.models.load import save_model
    from unlearnkit.models.tiny import new_model, train_tokenizer

    out = tmp_path_factory.mktemp("chat") / "model"
    tok = train_tokenizer(["User: Assistant: where was Ada born? In Leeds. system prompt"], vocab_size=300)
    tok.chat_template = CHAT
    save_model(new_model(tok, seed=0), tok, out)
    return out


def _tok(chat_tiny):
    from unlearnkit.models.load import load_model

    return load_model(chat_tiny)[1]


def test_parse_template_errors():
    assert parse_template(None).kind == "raw" and parse_template("chat", "Be brief.").system == "Be brief."
    assert parse_template(TOFU_LLAMA2).apply(None, "Who?") == "[INST] Who? [/INST]"
    with pytest.raises(ValueError, match="format string containing"):
        parse_template("[INST] q [/INST]")
    with pytest.raises(ValueError, match="only {question}"):
        parse_template("{question} {answer}")
    with pytest.raises(ValueError, match="--system needs --template chat"):
        parse_template("raw", "Be brief.")


def test_chat_and_format_prompts_are_encoded_in_one_place(chat_tiny):
    tok = _tok(chat_tiny)
    chat = parse_template("chat")
    assert chat.apply(tok, "Where?") == "User: Where?\nAssistant:"
    assert parse_template("chat", "Be brief.").apply(tok, "Where?") == "<s>Be brief.\nUser: Where?\nAssistant:"
    ids = encode_prompt(tok, "Where?", chat)
    assert ids[0] == tok.bos_token_id and tok.decode(ids[1:]) == "User: Where?\nAssistant:"
    # the answer follows a chat prompt directly, a raw or format-string prompt after one space
    e = encode_pairs(tok, ["Where?"], ["In Leeds."], template=chat)[0]
    assert tok.decode(e.input_ids[e.n_prompt:-1]) == "In Leeds."
    e = encode_pairs(tok, ["Where?"], ["In Leeds."], template=parse_template(TOFU_LLAMA2))[0]
    assert tok.decode(e.input_ids[1:e.n_prompt]) == "[INST] Where? [/INST]"
    assert tok.decode(e.input_ids[e.n_prompt:-1]) == " In Leeds."
    # documents (no prompt) are never formatted
    d = encode_pairs(tok, [""], ["A document."], template=chat)[0]
    assert d.n_prompt == 1 and tok.decode(d.input_ids[1:-1]) == "A document."
    # many prompts are tokenized in one call, each as it would be alone; nothing to encode is no error
    prompts = ["Where?", "", "Where was Ada born?"]
    for tpl in (chat, parse_template(None), parse_template(TOFU_LLAMA2)):
        assert encode_prompts(tok, prompts, tpl) == [encode_prompt(tok, p, tpl) for p in prompts]
    assert encode_pairs(tok, [], []) == []


def test_answers_cut_at_the_length_limit_are_warned_of_once(caplog):
    """Answers longer than the model takes were cut there, and only their start trained and scored,
    with nothing said (until session 38); the cut itself is as it was."""
    from unlearnkit.data import batching
    from unlearnkit.models.tiny import train_tokenizer

    tok = train_tokenizer(["where was ada born in leeds one two three four five six seven eight"], vocab_size=300)
    prompts = ["Where?"] * 3
    answers = ["one two", "one two three four five", "one two three four five six seven eight"]
    full = [len(e.input_ids) for e in encode_pairs(tok, prompts, answers, max_length=10**6)]
    assert full == sorted(full) and len(set(full)) == 3
    limit = full[0]  # the first pair fits exactly
    batching._CUT_SAID.clear()
    with caplog.at_level("WARNING", logger="unlearnkit.data.batching"):
        cut = encode_pairs(tok, prompts, answers, max_length=limit)
        encode_pairs(tok, prompts, answers, max_length=limit)  # the same limit again (scoring, batch by batch): said once
        tok.model_max_length = full[1]  # no max_length given: the tokenizer's
        encode_pairs(tok, prompts, answers)
        encode_pairs(tok, prompts[:2], answers[:2])  # nothing cut, nothing said
    whole = encode_pairs(tok, prompts, answers, max_length=10**6)
    assert [e.input_ids for e in cut] == [e.input_ids[:limit] for e in whole]
    assert [r.getMessage() for r in caplog.records] == [
        f"{n} of 3 answers cut at the limit of {m} tokens (the longest pair, prompt and answer, is {full[2]} tokens): "
        "only their start is trained or scored" for n, m in ((2, limit), (1, full[1]))]


def test_chat_without_a_chat_template_is_a_clear_error(tmp_path):
    from unlearnkit.models.tiny import train_tokenizer

    tok = train_tokenizer(["a b c"], vocab_size=280)
    with pytest.raises(ValueError, match="the tokenizer has no chat template"):
        encode_prompt(tok, "q", parse_template("chat"))


def test_chat_without_a_chat_template_is_refused_at_load(tiny_world, monkeypatch):
    """`guard serve --template chat` on a model with no chat template refuses with one line before it
    serves (it started, and every chat request failed with a 500)."""
    import uvicorn
    from typer.testing import CliRunner

    from unlearnkit.cli import app
    from unlearnkit.models.load import load_model
    from unlearnkit.scoring import LM

    with pytest.raises(ValueError, match="the tokenizer has no chat template"):
        LM(*load_model(tiny_world.subject_dir), template=parse_template("chat"))
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    r = CliRunner().invoke(app, ["guard", "serve", "--model", str(tiny_world.subject_dir), "--template", "chat"])
    assert r.exit_code == 2 and not served and "--template chat: the tokenizer has no chat template" in r.output


def test_finetune_forget_eval_with_chat_template(tmp_path, chat_tiny):
    from typer.testing import CliRunner

    from unlearnkit import api
    from unlearnkit.cli import app

    world = api.world(tmp_path / "world", seed=0, n_people=5, forget_fraction=0.2)
    run = CliRunner()
    flags = ["--template", "chat", "--system", "Answer briefly."]
    r = run.invoke(app, ["finetune", "--model", str(chat_tiny), "--data", str(world), "--out", str(tmp_path / "ft"),
                         "--steps", "2", *flags])
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "ft" / "unlearnkit.json").read_text())
    assert meta["template"] == {"kind": "chat", "text": None, "system": "Answer briefly."}
    r = run.invoke(app, ["forget", "--model", str(tmp_path / "ft"), "--data", str(world), "--method", "graddiff",
                         "--out", str(tmp_path / "run"), "--steps", "2", *flags])
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["template"]["kind"] == "chat" and cfg["template"]["system"] == "Answer briefly."
    r = run.invoke(app, ["eval", "--model", str(tmp_path / "run" / "model"), "--data", str(world), "--suite", "tofu",
                         "--out", str(tmp_path / "m.json"), *flags])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["info"]["template"]["kind"] == "chat" and res["model_utility"] is not None
    # without --template, a checkpoint is put the questions in the format it was trained in (the run's
    # config.yaml; it was evaluated raw, and looked as if it had forgotten, until session 36)
    again = api.evaluate(tmp_path / "run" / "model", world, suites=("tofu",))
    assert again["info"]["template"] == res["info"]["template"] and again["forget_probability"] == res["forget_probability"]
    assert api.evaluate(tmp_path / "ft", world, suites=("tofu",))["info"]["template"]["system"] == "Answer briefly."
    # the same model evaluated raw sees other prompts, so other numbers
    raw = api.evaluate(tmp_path / "run" / "model", world, suites=("tofu",), template="raw")
    assert raw["info"]["template"]["kind"] == "raw" and raw["forget_probability"] != res["forget_probability"]


def test_attacks_and_the_guard_use_the_template_too(tmp_path, chat_tiny):
    """`unlearn attack --template chat` writes the relearning data and the attacked prompts in the chat
    format, and a guarded model loaded with a template keeps it."""
    from typer.testing import CliRunner

    from unlearnkit import api
    from unlearnkit.cli import app
    from unlearnkit.guard.guarded import guarded_lm

    world = api.world(tmp_path / "world", seed=0, n_people=5, forget_fraction=0.2)
    out = tmp_path / "a.json"
    r = CliRunner().invoke(app, ["attack", "--model", str(chat_tiny), "--data", str(world), "--kind", "relearn",
                                 "--steps", "1", "--source", "facts", "--out", str(out), "--template", "chat",
                                 "--system", "Be brief."])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["template"] == {"kind": "chat", "text": None, "system": "Be brief."}
    (tmp_path / "guard").mkdir()
    assert guarded_lm(chat_tiny, tmp_path / "guard", template=parse_template("chat")).lm.template.kind == "chat"
