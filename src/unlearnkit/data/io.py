"""Reading and writing world directories.

A world directory holds JSONL splits (``forget.jsonl``, ``retain.jsonl``, ...; see
docs/architecture.md) or, alternatively, a Hugging Face ``datasets`` directory saved
with ``DatasetDict.save_to_disk`` whose split names are the same names.

Every validation problem raises :class:`DataError` with a one-line message naming the
file, the line (or split and row) and the field. Ids are unique within a split; a UTF-8
byte-order mark at the start of a file is accepted.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from .schema import DocRecord, QARecord

QA_SPLITS = ("forget", "retain", "neighbours", "holdout", "world_facts")
DOC_SPLITS = ("forget_docs", "retain_docs", "neighbours_docs", "holdout_docs")


class DataError(ValueError):
    """A problem with input data; the message is one line: ``file:line: what``."""


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _describe_validation(err: ValidationError) -> str:
    """``field 'answer': missing`` from the first pydantic error (+ count of the rest)."""
    errors = err.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "(record)"
    if first.get("type") == "missing":
        msg = "missing"
    else:
        msg = str(first.get("msg", "invalid"))
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
    text = f"field '{loc}': {msg}"
    if len(errors) > 1:
        text += f" (+{len(errors) - 1} more)"
    return _one_line(text)


def validate_record(kind: type[BaseModel], obj: Any, where: str) -> BaseModel:
    """`kind` from `obj`; a problem is one DataError line, ``{where}: field 'answer': ...``."""
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    try:
        return kind.model_validate(obj)
    except ValidationError as e:
        raise DataError(f"{where}: {_describe_validation(e)}") from None


def _check_new_id(seen: dict[str, str], record, where: str, here: str) -> None:
    """Remember ``record.id`` as first seen at ``here``; a second record with it is an error."""
    first = seen.setdefault(record.id, here)
    if first != here:
        raise DataError(f"{where}: field 'id': duplicate id {record.id!r} (first on {first})")


def _kind_for(name: str) -> type[BaseModel]:
    return DocRecord if name.endswith("_docs") else QARecord


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = DataError, objects: bool = False):
    """(`file:line`, line number, value) for each non-blank line of a JSONL file; a missing file, bad
    UTF-8, bad JSON (or, with `objects`, a value that is not an object) raises `error` naming the
    file and line. A UTF-8 byte-order mark is accepted."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                # utf-8-sig drops a byte-order mark (editors on Windows write one)
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise error(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:  # without its line break: a line cut short was reported at "column 1" of the next line
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise error(f"{where}: malformed JSON ({e.msg}: column {e.colno})") from None
            if objects and not isinstance(obj, dict):
                raise error(f"{where}: expected a JSON object")
            yield where, lineno, obj


def read_jsonl(path: str | os.PathLike, kind: type[BaseModel] = QARecord) -> list:
    """Read and validate a JSONL file of ``kind`` records (blank lines are skipped)."""
    records, seen = [], {}
    for where, lineno, obj in iter_jsonl(path):
        record = validate_record(kind, obj, where)
        _check_new_id(seen, record, where, f"line {lineno}")
        records.append(record)
    return records


def _to_jsonable(record: Any) -> Any:
    if isinstance(record, BaseModel):
        return record.model_dump(mode="json")
    return record


def write_jsonl(path: str | os.PathLike, records: Iterable) -> Path:
    """Write records (pydantic models or dicts) as JSONL, atomically (`runinfo.write_text`)."""
    from ..runinfo import write_text

    return write_text(path, "".join(json.dumps(_to_jsonable(r), ensure_ascii=False) + "\n" for r in records))


def _is_datasets_dir(data_dir: Path) -> bool:
    return (data_dir / "dataset_dict.json").is_file()


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk`: one table, no splits."""
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def saved_splits(path: Path) -> list[str]:
    """The split names of a folder written by `DatasetDict.save_to_disk` (its dataset_dict.json)."""
    try:
        info = json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(_one_line(f"{path / 'dataset_dict.json'}: unreadable ({e})")) from None
    return list(info.get("splits", []))


def _saved_empty(path: Path) -> bool:
    """Whether a `Dataset.save_to_disk` folder holds no rows (its state.json lists no data files)."""
    try:
        return not json.loads((path / "state.json").read_text(encoding="utf-8")).get("_data_files")
    except (OSError, ValueError, AttributeError):
        return False  # loading it says what is wrong


def saved_rows(path: Path) -> list[dict]:
    """The rows of a folder written by `Dataset.save_to_disk` (a DatasetDict's split is one), [] for one
    saved with none: `datasets` cannot load that back, and a DatasetDict with an empty split failed
    whole with "list index out of range", naming no split, until session 38."""
    if _saved_empty(path):
        return []
    import datasets  # lazy: slow import

    try:
        return list(datasets.load_from_disk(str(path)))
    except Exception as e:  # noqa: BLE001 - report any loader failure as a data error
        raise DataError(_one_line(f"{path}: cannot load datasets directory ({e})")) from None


def describe_saved(path: Path) -> str | None:
    """What a `save_to_disk` folder holds, for a message: "a single Dataset (Dataset.save_to_disk)" or
    "a DatasetDict with splits forget, retain (retain empty)"; None if `path` is neither."""
    if _is_datasets_dir(path):
        names = saved_splits(path)
        empty = [n for n in names if _saved_empty(path / n)]
        return (f"a DatasetDict with splits {', '.join(names) or '(none)'}"
                + (f" ({', '.join(empty)} empty)" if empty else ""))
    if is_saved_dataset(path):
        return "a single Dataset (Dataset.save_to_disk)" + (", empty" if _saved_empty(path) else "")
    return None


def _refuse_single_dataset(data_dir: Path) -> None:
    """A world given as one `Dataset.save_to_disk` folder was "forget.jsonl: file not found" until
    session 38: say what the folder is and what a world is."""
    if is_saved_dataset(data_dir) and not _is_datasets_dir(data_dir):
        raise DataError(f"{data_dir}: {describe_saved(data_dir)}, not a world: expected forget.jsonl (retain.jsonl, "
                        f"...) or a DatasetDict with splits forget (retain, ...), e.g. DatasetDict({{'forget': ds}})"
                        f".save_to_disk(...)")


def _load_datasets_split(data_dir: Path, name: str, kind: type[BaseModel]) -> list:
    names = saved_splits(data_dir)
    if name not in names:
        raise DataError(f"{data_dir}: no split '{name}' (has: {', '.join(sorted(names)) or 'none'})")
    # a table has one set of columns: a field some rows lack (`alt_questions`) is null on the others;
    # null is absent for a field with a default ("Input should be a valid list" until session 37)
    optional = {n for n, f in kind.model_fields.items() if not f.is_required()}
    records, seen = [], {}
    for i, row in enumerate(saved_rows(data_dir / name)):
        where = f"{data_dir}[{name}] row {i + 1}"
        row = {k: v for k, v in row.items() if v is not None or k not in optional}
        record = validate_record(kind, row, where)
        _check_new_id(seen, record, where, f"row {i + 1}")
        records.append(record)
    return records


def has_split(data_dir: str | os.PathLike, name: str) -> bool:
    """Whether the world directory has split ``name`` (JSONL file or datasets split)."""
    data_dir = Path(data_dir)
    if _is_datasets_dir(data_dir):
        return name in saved_splits(data_dir)
    return (data_dir / f"{name}.jsonl").is_file()


def split_source(data_dir: str | os.PathLike, name: str) -> str:
    """Where split ``name`` of a world directory is read from: ``<dir>/<name>.jsonl``, or
    ``<dir>[<name>]`` in a datasets directory (whether or not the split is there)."""
    data_dir = Path(data_dir)
    return f"{data_dir}[{name}]" if _is_datasets_dir(data_dir) else str(data_dir / f"{name}.jsonl")


def load_split(data_dir: str | os.PathLike, name: str, kind: type[BaseModel] | None = None) -> list:
    """Load split ``name`` of a world directory: ``<dir>/<name>.jsonl`` or a datasets split.

    ``kind`` defaults to :class:`DocRecord` for names ending in ``_docs``, else :class:`QARecord`.
    """
    data_dir = Path(data_dir)
    kind = kind or _kind_for(name)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: directory not found")
    _refuse_single_dataset(data_dir)
    if _is_datasets_dir(data_dir):
        return _load_datasets_split(data_dir, name, kind)
    return read_jsonl(data_dir / f"{name}.jsonl", kind)


@dataclass
class WorldData:
    """All splits of a world directory; optional splits that are absent are empty lists."""

    forget: list[QARecord] = field(default_factory=list)
    retain: list[QARecord] = field(default_factory=list)
    neighbours: list[QARecord] = field(default_factory=list)
    holdout: list[QARecord] = field(default_factory=list)
    world_facts: list[QARecord] = field(default_factory=list)
    forget_docs: list[DocRecord] = field(default_factory=list)
    retain_docs: list[DocRecord] = field(default_factory=list)
    neighbours_docs: list[DocRecord] = field(default_factory=list)
    holdout_docs: list[DocRecord] = field(default_factory=list)
    path: Path | None = None
    sources: dict[str, str] = field(default_factory=dict)  # split -> file it was read from (present splits)

    def source(self, name: str) -> str:
        """The file split ``name`` was read from, or would be read from if it is absent."""
        if name in self.sources:
            return self.sources[name]
        return split_source(self.path, name) if self.path is not None else f"split '{name}'"

    def training_records(self, without_forget: bool = False) -> list[QARecord]:
        """QA records the subject model is trained on (the oracle: ``without_forget=True``)."""
        head = [] if without_forget else list(self.forget)
        return head + list(self.retain) + list(self.neighbours) + list(self.world_facts)

    def training_docs(self, without_forget: bool = False) -> list[DocRecord]:
        """Documents the subject model is trained on (the oracle: ``without_forget=True``)."""
        head = [] if without_forget else list(self.forget_docs)
        return head + list(self.retain_docs) + list(self.neighbours_docs)


def load_world(data_dir: str | os.PathLike) -> WorldData:
    """Load a world directory; ``forget`` is required and must not be empty."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: directory not found")
    _refuse_single_dataset(data_dir)
    world = WorldData(path=data_dir)
    for name in QA_SPLITS + DOC_SPLITS:
        if name == "forget" or has_split(data_dir, name):
            setattr(world, name, load_split(data_dir, name))
            world.sources[name] = split_source(data_dir, name)
    if not world.forget:
        raise DataError(f"{world.source('forget')}: empty forget set")
    _check_twins(world)
    return world


def _check_twins(world: WorldData) -> None:
    """`twin_of` belongs to holdout records, and names a forget record."""
    ids = {r.id for r in world.forget}
    for name in QA_SPLITS:
        for r in getattr(world, name):
            if r.twin_of is not None and (name != "holdout" or r.twin_of not in ids):
                why = "only a holdout record is a twin" if name != "holdout" else f"no forget record has id {r.twin_of!r}"
                raise DataError(f"{world.source(name)}: record {r.id!r}: field 'twin_of': {why}")


def require_split(world: WorldData, name: str, why: str) -> list:
    """The records of split ``name``; a :class:`DataError` naming its file if it is absent or
    empty. ``why`` says who needs it: ``require_split(w, "retain", why="method graddiff needs a
    retain set")``."""
    if name not in QA_SPLITS + DOC_SPLITS:
        raise ValueError(f"unknown split {name!r}; splits: {', '.join(QA_SPLITS + DOC_SPLITS)}")
    records = getattr(world, name)
    if not records:
        state = "empty" if name in world.sources else "not found"
        raise DataError(f"{world.source(name)}: {state}, and {why}")
    return records


def overlap(forget: Iterable[QARecord], retain: Iterable[QARecord]) -> int:
    """Number of forget records whose (question, answer) pair also occurs in ``retain``.

    Every training phrasing counts (``question`` and ``alt_questions``): a forget record
    is counted if any of its phrasings, with its answer, is a training pair in ``retain``.
    """
    retain_pairs = {(q.strip(), r.answer.strip()) for r in retain for q in r.phrasings()}
    return sum(
        1 for r in forget if any((q.strip(), r.answer.strip()) in retain_pairs for q in r.phrasings())
    )


def check_overlap(world: WorldData) -> int:
    """The number of forget records also in the retain set (see :func:`overlap`).

    Some overlap is a warning for the caller to give; a retain set that holds every forget record
    (the same file given twice, say) is a :class:`DataError`: a method would be asked to forget
    and to keep the same facts."""
    n = overlap(world.forget, world.retain)
    if world.forget and n == len(world.forget):
        raise DataError(f"{world.source('retain')}: holds every record of {world.source('forget')} "
                        f"({n}): the forget and retain sets must differ")
    return n
