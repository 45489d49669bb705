"""Record schemas for world directories (see docs/architecture.md, "Data").

A :class:`QARecord` is one fact; a :class:`DocRecord` is one document (a biography).
Unknown fields in the input are accepted and dropped; numbers given for string
fields (``"answer": 1974``) are read as strings (a whole float as an integer, see
:func:`number_text`), but NaN and infinity are refused: ``json`` reads the literal ``NaN``
as a float, and "nan" would then pass for an answer.
A lone surrogate (JSON's ``"\\ud800"``) in any text is refused: no tokenizer can encode it.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def _each_non_empty(values: list[str]) -> list[str]:
    for i, v in enumerate(values):
        if not v.strip():
            raise ValueError(f"item {i} must be a non-empty string")
    return values


def valid_unicode(value: str) -> str:
    """`value`, refused if it holds a lone surrogate: JSON may write one ("\\ud800"), and no
    tokenizer (nor a UTF-8 file) can take it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (a lone surrogate)") from None
    return value


def _unicode(value):
    """`valid_unicode` on a text or each text of a list (a record's text crashed the tokenizer, or
    failed a UTF-8 write naming no file, until session 37)."""
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, str):
            valid_unicode(v)
    return value


def number_text(value):
    """A float given for a text field as the text its writer meant: a whole number as an integer
    ("1961": pandas reads a year column with a gap in it as floats, and a parquet file or datasets
    folder written from it keeps them, as do some JSON writers; "1961.0" was the answer trained and
    scored, until session 38), any other
    as Python writes it ("3.5"; beyond 2**53 a float holds no exact integer: "1e+20"). NaN and
    infinity are refused: they would become the strings "nan"/"inf". Anything else is returned
    as it is (pydantic writes an int as its digits)."""
    if not isinstance(value, float):
        return value
    if not math.isfinite(value):
        raise ValueError(f"must be a string, not {'NaN' if math.isnan(value) else value}")
    return str(int(value)) if value.is_integer() and abs(value) < 2 ** 53 else str(value)


def _numbers(value):
    """`number_text` on a value or each item of a list, before pydantic coerces numbers to strings."""
    return [number_text(v) for v in value] if isinstance(value, list) else number_text(value)


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
    # a holdout record only: the id of the forget record it is a stranger's version of (the same
    # question and answer about someone the model never saw): `repair_twins=holdout`'s reference
    twin_of: str | None = None

    _numbers = field_validator("*", mode="before")(_numbers)
    _unicode = field_validator("*")(_unicode)
    _check = field_validator("id", "subject", "question", "answer", "paraphrased_answer")(_non_empty)
    _check_each = field_validator("perturbed_answers", "alt_questions")(_each_non_empty)

    def phrasings(self) -> list[str]:
        """The training phrasings: ``[question] + alt_questions``."""
        return [self.question, *self.alt_questions]


class DocRecord(BaseModel):
    """One document (e.g. a biography) about a subject."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    id: str
    subject: str
    text: str

    _numbers = field_validator("*", mode="before")(_numbers)
    _unicode = field_validator("*")(_unicode)
    _check = field_validator("id", "subject", "text")(_non_empty)
