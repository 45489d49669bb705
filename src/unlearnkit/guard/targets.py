"""Forget targets: what the guard must keep the model from revealing.

A :class:`Target` is a person or entity (a name with aliases, free-text facts, question-answer pairs,
documents), or just QA pairs or documents without a subject. `embed_texts` lists the texts of a
target that prompts are compared with.
"""
from __future__ import annotations

import re
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..data.schema import valid_unicode

Action = Literal["refuse", "forbid", "pseudonymise", "icu"]
ACTIONS: tuple[str, ...] = ("refuse", "forbid", "pseudonymise", "icu")

MAX_ROWS_PER_TARGET = 64  # embedded texts per target (name, questions, facts, document chunks)
CHUNK_WORDS = 48  # document chunk size, in words (MiniLM truncates at 256 word pieces)


def _strip(v: str) -> str:
    v = " ".join(str(v).split())
    if not v:
        raise ValueError("must be a non-empty string")
    return valid_unicode(v)


class QAPair(BaseModel):
    """A question the model must not answer truthfully, its true answer, and optional false answers
    (used as the wrong labels of in-context unlearning)."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(max_length=2000)
    answer: str = Field(max_length=2000)
    wrong_answers: list[str] = Field(default_factory=list, max_length=32)

    _check = field_validator("question", "answer")(_strip)

    @field_validator("wrong_answers")
    @classmethod
    def _wrong(cls, v):  # checked as the other texts are (a lone surrogate failed the save, until session 36)
        return [_strip(x) for x in v]


class Target(BaseModel):
    """One forget target. At least one of subject, facts, qa or documents must be given.

    `action` overrides the guard's default action for prompts that hit this target; `forbidden`
    lists extra strings the guarded model must never produce for it (answers of `qa` are always
    forbidden).
    """

    model_config = ConfigDict(extra="forbid")
    id: str = Field(default="", max_length=128)
    subject: str | None = Field(default=None, max_length=200)
    aliases: list[str] = Field(default_factory=list, max_length=32)
    facts: list[str] = Field(default_factory=list, max_length=256)
    qa: list[QAPair] = Field(default_factory=list, max_length=256)
    documents: list[str] = Field(default_factory=list, max_length=64)
    forbidden: list[str] = Field(default_factory=list, max_length=256)
    action: Action | None = None
    # finite: 1e400 (standard JSON) or NaN was saved as null, and the guard would not load again (session 36)
    created_at: float = Field(default_factory=time.time, allow_inf_nan=False)

    @field_validator("subject")
    @classmethod
    def _subject(cls, v):
        return None if v is None else _strip(v)

    @field_validator("aliases", "facts", "documents", "forbidden")
    @classmethod
    def _lists(cls, v):
        return [_strip(x) for x in v]

    @field_validator("id")
    @classmethod
    def _id(cls, v):
        if v and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v):
            raise ValueError("may contain only letters, digits, '.', '_' and '-'")
        return v

    @model_validator(mode="after")
    def _something(self):
        if not (self.subject or self.aliases or self.facts or self.qa or self.documents):
            raise ValueError("a target needs at least one of: subject, aliases, facts, qa, documents")
        if not self.id:
            self.id = "t-" + uuid.uuid4().hex[:12]
        return self

    @property
    def names(self) -> list[str]:
        """The subject and its aliases: what name matching looks for."""
        return ([self.subject] if self.subject else []) + list(self.aliases)

    @property
    def label(self) -> str:
        return self.subject or (self.qa[0].question if self.qa else (self.facts or self.documents or [self.id])[0])[:60]


def invalid_target(e: ValidationError) -> str:
    """A target that failed validation, as one line naming its first bad field (never the value)."""
    err = e.errors()[0]
    return f"invalid target: {'.'.join(map(str, err['loc'])) or 'target'}: {err['msg']}"


def as_target(t: Target | dict) -> Target:
    """`t` as a `Target` (validated once, here, from its dict form); a bad field is a one-line
    ValueError (`invalid_target`), not pydantic's several lines and link."""
    if isinstance(t, Target):
        return t
    try:
        return Target.model_validate(t)
    except ValidationError as e:
        raise ValueError(invalid_target(e)) from None


def chunk_text(text: str, words: int = CHUNK_WORDS) -> list[str]:
    """Split a document into chunks of about `words` words, on sentence ends where possible."""
    sents = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    chunks, cur = [], []
    for s in sents:
        n = len(s.split())
        if cur and sum(len(c.split()) for c in cur) + n > words:
            chunks.append(" ".join(cur))
            cur = []
        cur.append(s)
    if cur:
        chunks.append(" ".join(cur))
    return chunks


def embed_texts(t: Target) -> list[str]:
    """The texts of a target that prompts are compared with: names, questions, facts, document
    chunks (at most MAX_ROWS_PER_TARGET; duplicates removed)."""
    texts = list(t.names) + [p.question for p in t.qa] + list(t.facts)
    for d in t.documents:
        texts += chunk_text(d)
    seen, out = set(), []
    for x in texts:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out[:MAX_ROWS_PER_TARGET]
