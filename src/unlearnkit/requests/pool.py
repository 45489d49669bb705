"""The retain pool of a home: what must stay true, from a world dir, a `datasets` dir or a JSONL file."""
from __future__ import annotations

import os
import random
from pathlib import Path

from ..data.io import DataError, has_split, load_split, read_jsonl, split_source, write_jsonl
from ..data.schema import QARecord

POOL_SPLITS = ("retain", "neighbours", "world_facts")  # everything an oracle trains on


def read_pool_source(source: str | os.PathLike) -> list[QARecord]:
    """QA records of a retain pool: a JSONL file, or the retain/neighbours/world_facts splits of a
    world or `datasets` directory (never its forget split)."""
    src = Path(source)
    if src.is_file():
        recs = read_jsonl(src)
    elif src.is_dir():
        recs, seen = [], set()
        for s in POOL_SPLITS:
            for r in load_split(src, s) if has_split(src, s) else []:
                # ids are unique within a split only: one an earlier split has is named for its split (the
                # home's own retain.jsonl was refused for a duplicate id until session 37)
                if r.id in seen:
                    if (named := f"{s}:{r.id}") in seen:
                        raise DataError(f"{split_source(src, s)}: record {r.id!r}: field 'id': in an earlier split, "
                                        f"and {named!r} is taken too")
                    r = r.model_copy(update={"id": named})
                seen.add(r.id)
                recs.append(r)
    else:
        raise DataError(f"{src}: retain pool not found (a world dir, a datasets dir or a JSONL file)")
    if not recs:
        raise DataError(f"{src}: empty retain pool")
    return recs


def import_pool(source: str | os.PathLike, out_dir: Path, utility_records: int = 0) -> Path:
    """The pool as `out_dir/retain.jsonl`; refused when it holds no more than `utility_records` (the
    home's utility slice, which no batch trains on): a batch's retain set is drawn from the rest, and
    with none left every batch failed ("retain.jsonl: empty, and method ... needs a retain set") and
    stayed open for good (session 37)."""
    recs = read_pool_source(source)
    check_size(recs, utility_records, source)
    return write_jsonl(Path(out_dir) / "retain.jsonl", recs)


def check_size(recs: list, utility_records: int, where) -> None:
    """A one-line DataError naming `where` when the pool holds no more than `utility_records`."""
    if len(recs) <= utility_records:
        raise DataError(f"{where}: the retain pool has {len(recs)} records, and utility_records is {utility_records}: "
                        f"it must hold more (the utility check's records are never trained on; a batch's retain set "
                        f"is drawn from the rest)")


def load_pool(home, checked: bool = False) -> list[QARecord]:
    """The home's pool; `checked`: refused, as `home init` refuses it, when no record is left to
    retain beside the utility slice (a home made before session 37 may hold such a pool: each of
    its batches failed, and stayed open, until session 42)."""
    recs = read_jsonl(home.retain_dir / "retain.jsonl")
    if checked:
        check_size(recs, home.settings.utility_records, home.retain_dir / "retain.jsonl")
    return recs


def utility_slice(records: list[QARecord], n: int, seed: int = 0) -> list[QARecord]:
    """A fixed sample of the pool (seeded), the records utility is measured on across versions."""
    recs = sorted(records, key=lambda r: r.id)
    random.Random(seed).shuffle(recs)
    return recs[:n]


def neighbours_of(records: list[QARecord], names: list[str], values: list[str]) -> list[QARecord]:
    """Pool records about other people that mention one of `names` or share a value with the
    inventory: they sit closest to what is forgotten and must stay true."""
    from ..attacks.recovery import normalise

    keys = {normalise(n) for n in names if n.strip()}
    vals = {normalise(v) for v in values if normalise(v)}
    out = []
    for r in records:
        text = normalise(" ".join([r.question, r.answer]))
        if any(k in text for k in keys) or normalise(r.answer) in vals:
            out.append(r)
    return out
