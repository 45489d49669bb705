"""Who a request is about: the name normalised, its salted hash, and the facts a requester gives."""
from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..data.io import DataError, iter_jsonl

# scrypt (RFC 7914) at n=2^14, r=8: ~16 MiB and tens of milliseconds per hash, so a guessed list of
# names costs an attacker who holds the ledger but not the salt nothing, and one who holds both
# real work per guess.
SCRYPT = dict(n=2 ** 14, r=8, p=1, dklen=32)


def normalise_name(name: str) -> str:
    """Casefolded, accents stripped, whitespace collapsed: 'Zoë  Smith' and 'zoe smith' are one person."""
    t = unicodedata.normalize("NFKD", name)
    return " ".join("".join(c for c in t if not unicodedata.combining(c)).casefold().split())


def new_names(names: list[str], known: list[str]) -> list[str]:
    """The names of `names` that are none of `known` once normalised, each once, as first written."""
    seen, out = {normalise_name(n) for n in known}, []
    for n in names:
        if normalise_name(n) not in seen:
            seen.add(normalise_name(n))
            out.append(n)
    return out


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str):  # None was filed as a person named "None" until session 36
        raise TypeError(f"{what}: expected a string, got {type(name).__name__}")
    clean = " ".join(name.split())
    if not clean:
        raise ValueError(f"{what}: must not be empty")
    if len(clean) > 200:
        raise ValueError(f"{what}: longer than 200 characters")
    if bad := next((c for c in clean if unicodedata.category(c) in ("Cc", "Cs")), None):  # "Ann\x00Bee" was
        raise ValueError(f"{what}: holds the control character {bad!r}")  # filed until session 40
    return clean


def person_hash(name: str, salt: bytes) -> str:
    """Salted scrypt of the normalised name (hex): what the ledger keeps once a request is verified."""
    return hashlib.scrypt(normalise_name(name).encode(), salt=salt, **SCRYPT).hex()


class Fact(BaseModel):
    """One line of a `--facts` file: a question and its answer, or a fact sentence."""
    model_config = ConfigDict(extra="forbid")
    question: str | None = Field(default=None, max_length=2000)
    answer: str | None = Field(default=None, max_length=2000)
    fact: str | None = Field(default=None, max_length=2000)

    @field_validator("question", "answer", "fact")
    @classmethod
    def _strip(cls, v):
        if v is None:
            return v
        v = " ".join(v.split())
        if not v:
            raise ValueError("must be a non-empty string")
        return v

    @model_validator(mode="after")
    def _one_kind(self):
        if self.fact is None and (self.question is None or self.answer is None):
            raise ValueError("a line needs 'question' and 'answer', or 'fact'")
        if self.fact is not None and (self.question is not None or self.answer is not None):
            raise ValueError("a line has either 'fact' or 'question'+'answer', not both")
        return self


def _fact(obj, where: str, error: type[ValueError] = ValueError) -> dict:
    """One fact, validated (`Fact`), or `error` naming `where` and the field."""
    try:
        return Fact.model_validate(obj).model_dump(exclude_none=True)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        raise error(f"{where}: field '{loc}': {msg}" if loc else f"{where}: {msg}") from None


def check_facts(facts) -> list[dict]:
    """Facts given in Python, validated as a file's lines are (`Fact`): until session 36 they went
    into the ledger unchecked, and a malformed one failed `request add` after the request was
    created and before its guard target, for good."""
    if isinstance(facts, (str, bytes, dict)) or not isinstance(facts, (list, tuple)):
        raise TypeError(f"facts: expected a JSONL file or a list of dicts, got {type(facts).__name__}")
    return [_fact(obj, f"facts[{i}]") for i, obj in enumerate(facts)]


def read_facts(path: str | os.PathLike) -> list[dict]:
    """Facts from a JSONL file; DataError naming file:line:field on any problem."""
    path = Path(path)
    out = [_fact(obj, where, DataError) for where, _, obj in iter_jsonl(path, objects=True)]
    if not out:
        raise DataError(f"{path}: no facts")
    return out
