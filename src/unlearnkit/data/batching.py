"""Tokenise question/answer pairs the same way for training, scoring and generation.

Question and answer are tokenised separately and joined, `[bos] + q + a + [eos]`, so evaluation
sees exactly the ids training saw. Labels are -100 on bos, question and padding. Training and
scoring pad on the right; generation pads on the left.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .templates import RAW, Template
from .twins import name_spans

log = logging.getLogger(__name__)
_CUT_SAID: set[int] = set()  # the limits at which `encode_pairs` has warned of cut answers, in this process

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    n_prompt: int  # bos + prompt tokens; labels start after them
    ignore: tuple[int, ...] = ()  # answer positions left out of the labels (the subject's name: `encode_pairs`)

    @property
    def labelled(self) -> list[int]:
        """Positions with a label: the answer's (end of sequence included) less `ignore`."""
        skip = set(self.ignore)
        return [i for i in range(self.n_prompt, len(self.input_ids)) if i not in skip]


def qa_pairs(records) -> tuple[list[str], list[str]]:
    """(prompts, answers) for training on QA records: one pair per phrasing (`question` and
    `alt_questions`), each with the record's answer."""
    prompts, answers = [], []
    for r in records:
        for q in r.phrasings():
            prompts.append(q)
            answers.append(r.answer)
    return prompts, answers


def forget_pairs(world) -> tuple[list[str], list[str], list[str]]:
    """(prompts, answers, subjects) for unlearning a world's forget set: its QA pairs (`qa_pairs`),
    then each forget document whole (empty prompt). Forgetting a person takes their biography too."""
    prompts, answers = qa_pairs(world.forget)
    subjects = [r.subject for r in world.forget for _ in r.phrasings()]
    docs = world.forget_docs
    return prompts + [""] * len(docs), answers + [d.text for d in docs], subjects + [d.subject for d in docs]


def answer_text(prompt: str, answer: str, template: Template = RAW) -> str:
    """The answer as it follows its prompt: one space after a question (nothing after a chat
    template's generation prompt), nothing before a document."""
    return template.answer_separator + answer.strip() if prompt else answer


def encode_prompt(tok, prompt: str, template: Template = RAW) -> list[int]:
    """bos + the prompt formatted by `template` (a chat template that writes its own bos keeps
    just that one)."""
    return encode_prompts(tok, [prompt], template)[0]


def encode_prompts(tok, prompts: list[str], template: Template = RAW) -> list[list[int]]:
    """`encode_prompt` of each prompt, tokenized in one batched call."""
    texts = [template.apply(tok, p) for p in prompts]
    bos_text = getattr(tok, "bos_token", None)
    said = [t for t in texts if t]
    ids = iter(tok(said, add_special_tokens=False)["input_ids"] if said else [])
    out = []
    for text in texts:
        has_bos = tok.bos_token_id is not None and not (template.kind == "chat" and bos_text and text.startswith(bos_text))
        out.append(([tok.bos_token_id] if has_bos else []) + (next(ids) if text else []))
    return out


def encode_pairs(tok, prompts: list[str], answers: list[str], max_length: int | None = None,
                 template: Template = RAW, subjects: list[str] | None = None) -> list[Encoded]:
    """Encode (prompt, answer) pairs; answers end with eos. Truncates the answer at `max_length`
    (None: the tokenizer's `model_max_length`, which `models.load.load_model` sets to what the model
    takes, where it is a real limit), with a warning, once per limit in a process, that says how many
    were cut and the longest pair's length: only the start of a cut answer is trained or scored
    (said nowhere until session 38).
    Prompts are formatted by `template` (data/templates.py); documents (empty prompt) are not.

    `subjects`: each pair's subject, whose name's tokens in the answer are left out of the labels
    (`Encoded.ignore`). Forgetting what a person did is not forgetting how to write their name: the
    name stands in the question, other people's records name them too, and a model that can no
    longer copy it looks less familiar with the name than one that never saw the person at all. A
    tokenizer without character offsets leaves every answer token labelled."""
    if len(prompts) != len(answers) or (subjects is not None and len(subjects) != len(prompts)):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers"
                         + (f" and {len(subjects)} subjects" if subjects is not None else ""))
    if not prompts:
        return []
    if max_length is None and isinstance(getattr(tok, "model_max_length", None), int) and tok.model_max_length < 10**7:
        max_length = tok.model_max_length  # transformers' "no limit" is 10^30
    q_ids = encode_prompts(tok, prompts, template)
    texts = [answer_text(p, a, template) for p, a in zip(prompts, answers)]
    offsets = None
    try:
        enc = tok(texts, add_special_tokens=False, return_offsets_mapping=subjects is not None)
        offsets = enc.get("offset_mapping")
    except (NotImplementedError, KeyError, TypeError, ValueError):  # a slow tokenizer has no offsets
        enc = tok(texts, add_special_tokens=False)
    lengths = [len(q) + len(a) + 1 for q, a in zip(q_ids, enc["input_ids"])]  # bos and prompt, answer, eos
    if max_length is not None and max_length not in _CUT_SAID and (cut := [n for n in lengths if n > max_length]):
        _CUT_SAID.add(max_length)  # scoring encodes batch by batch: once per limit is enough to be told
        log.warning("%d of %d answers cut at the limit of %d tokens (the longest pair, prompt and answer, is %d "
                    "tokens): only their start is trained or scored", len(cut), len(lengths), max_length, max(cut))
    out = []
    for k, (q, a) in enumerate(zip(q_ids, enc["input_ids"])):
        ids = q + a + [tok.eos_token_id]
        if max_length is not None:
            ids = ids[:max_length]
        ignore = ()
        if offsets is not None and (spans := name_spans(texts[k], subjects[k])):
            ignore = tuple(len(q) + i for i, (s0, e0) in enumerate(offsets[k])
                           if len(q) + i < len(ids) and any(s0 < e and s < e0 for s, e in spans))
        out.append(Encoded(ids, len(q), ignore))
    return out


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded `input_ids`, `attention_mask` and `labels` (-100 outside answers)."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        mask[i, :n] = 1
        labels[i, e.n_prompt:n] = ids[i, e.n_prompt:n]
        if e.ignore:
            labels[i, list(e.ignore)] = IGNORE
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_left(prompts: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched generation."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def length_batches(lengths: list[int], max_tokens: int, max_batch: int) -> list[list[int]]:
    """Group indices of similar length so padding stays small; each batch holds at most
    `max_tokens` padded tokens and `max_batch` rows."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches, cur, width = [], [], 0
    for i in order:
        w = max(width, lengths[i])
        if cur and (w * (len(cur) + 1) > max_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    if cur:
        batches.append(cur)
    return batches
