"""Prompt formats: how a question is put to the model before its answer (`--template`).

- `raw`: the question as it is (the default, unless the checkpoint records the format it was trained
  in: `recorded_template`; what the embedded tiny models are trained on);
- `chat`: the tokenizer's chat template (`tokenizer.apply_chat_template`) with the question as the
  user turn, an optional system prompt (`--system`), and the generation prompt, so an instruct
  model is evaluated and unlearned in its own format;
- a format string with `{question}`, e.g. TOFU's Llama-2 chat format `[INST] {question} [/INST]`
  (`TOFU_LLAMA2`; TOFU's config/model_config.yaml: question_start_tag "[INST] ", question_end_tag
  " [/INST]").

Only prompts are formatted; documents (an empty prompt) stay plain text. The answer follows the
formatted prompt as `unlearnkit.data.batching.answer_text` puts it: after one space for raw and
format-string prompts, directly after a chat template's generation prompt.
"""
from __future__ import annotations

from dataclasses import dataclass

TOFU_LLAMA2 = "[INST] {question} [/INST]"


@dataclass(frozen=True)
class Template:
    kind: str = "raw"  # raw | chat | format
    text: str | None = None  # the format string, for kind "format"
    system: str | None = None  # system prompt, for kind "chat"

    def apply(self, tokenizer, question: str) -> str:
        """The prompt text for `question` (empty stays empty: a document has no prompt)."""
        if not question or self.kind == "raw":
            return question
        if self.kind == "format":
            return self.text.format(question=question)
        messages = ([{"role": "system", "content": self.system}] if self.system else []) + \
            [{"role": "user", "content": question}]
        self.check(tokenizer)
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def check(self, tokenizer) -> None:
        """A one-line ValueError where this format cannot be made with `tokenizer` (chat, and it has no
        chat template): at load, not at the first prompt (`scoring.LM`)."""
        if self.kind == "chat" and not getattr(tokenizer, "chat_template", None):
            raise ValueError("--template chat: the tokenizer has no chat template; use raw or a format string")

    @property
    def answer_separator(self) -> str:
        """What goes between the prompt and the answer: a chat template ends its generation prompt
        with its own separator."""
        return "" if self.kind == "chat" else " "

    def to_dict(self) -> dict:
        return {"kind": self.kind, "text": self.text, "system": self.system}


RAW = Template()


def recorded_template(model) -> Template | None:
    """The prompt format a local checkpoint was trained in, where the project recorded it: the
    `unlearnkit.json` of `finetune`, or the `config.yaml` of the `forget` run whose `model/` (or
    `adapter/`) it is; None elsewhere (a hub id, a checkpoint of other origin, an object)."""
    import json
    from pathlib import Path

    import yaml

    if not isinstance(model, (str, Path)) or not Path(model).is_dir():
        return None
    for f, read in ((Path(model) / "unlearnkit.json", json.loads), (Path(model).parent / "config.yaml", yaml.safe_load)):
        try:
            t = (read(f.read_text()) or {}).get("template") if f.is_file() else None
            if isinstance(t, dict) and t.get("kind") in ("raw", "chat", "format"):
                return Template(t["kind"], text=t.get("text"), system=t.get("system"))
        except (ValueError, AttributeError, TypeError, yaml.YAMLError):
            continue
    return None


def parse_template(spec: str | Template | None, system: str | None = None, model=None) -> Template:
    """`raw`, `chat` or a format string containing `{question}`; a clear error otherwise. None (no
    `--template` given): the format `model` was trained in (`recorded_template`), else raw: a
    checkpoint fine-tuned in its chat template was evaluated raw, and looked as if it had forgotten
    everything (forget ROUGE 0.14 against 1.00), unless the user repeated the option (until session 36)."""
    if isinstance(spec, Template):
        return spec
    if spec is None and system is None and (found := recorded_template(model)) is not None:
        return found
    if spec is None or spec == "raw":
        if system:
            raise ValueError("--system needs --template chat")
        return RAW
    if spec == "chat":
        return Template("chat", system=system)
    if "{question}" not in spec:
        raise ValueError(f"--template {spec!r}: use raw, chat, or a format string containing {{question}}")
    try:
        spec.format(question="q")
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"--template {spec!r}: not a format string with only {{question}} ({e})") from None
    if system:
        raise ValueError("--system needs --template chat")
    return Template("format", text=spec)
