"""Record schemas for world directories (see docs/architecture.md, "Data").

A :class:`QARecord` is one fact; a :class:`DocRecord` is one document (a biography).
Unknown fields in the input are accepted and dropped; numbers given for string
fields (``"answer": 1974``) are read as strings.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


class QARecord(BaseModel):
    """One fact about a subject, with its training phrasings and evaluation variants."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str
    subject: str
    question: str
    answer: str
    paraphrased_answer: str
    perturbed_answers: list[str] = Field(min_length=1)
    alt_questions: list[str] = Field(default_factory=list)
    paraphrased_question: str | None = None
    attribute: str | None = None

    _check = field_validator("id", "question", "answer")(_non_empty)

    def phrasings(self) -> list[str]:
        """The training phrasings: ``[question] + alt_questions``."""
        return [self.question, *self.alt_questions]


class DocRecord(BaseModel):
    """One document (e.g. a biography) about a subject."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str
    subject: str
    text: str

    _check = field_validator("id", "text")(_non_empty)
