"""Read one table (a hub dataset's config and split) from a local copy of the dataset, in the
layouts a Hugging Face dataset has on disk:

- `DIR/<config>.json` or `.jsonl` (JSON lines, or one JSON array), or `DIR/<config>.parquet`:
  TOFU's original files (`forget10.json`, ...), one file per config;
- `DIR/<config>/<split>-00000-of-00001.parquet` (what `push_to_hub(config_name=...)` writes and
  `huggingface-cli download` fetches), `DIR/<config>/<split>.parquet`, `DIR/<config>/<split>/*.parquet`,
  or `DIR/<config>/<split>.json(l)` (MUSE's GitHub `data/` folder);
- `DIR/<config>/` saved with `DatasetDict.save_to_disk` (the split inside) or `Dataset.save_to_disk`;
- `DIR/` itself saved with `DatasetDict.save_to_disk`, its split names being the config names.

Every problem is a `DataError` naming the directory or file, the row and the field.
"""
from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Sequence

from ..data.io import DataError, describe_saved, is_saved_dataset, iter_jsonl, saved_rows, saved_splits


def _json_rows(path: Path) -> list[dict]:
    """One JSON array, or JSON lines read by `iter_jsonl` (a byte-order mark, or a U+2028 inside a
    string, was refused as malformed, and bad UTF-8 named no file, until session 37)."""
    raw = path.read_bytes()
    if raw.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"["):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg}: column {e.colno})") from None
        return list(rows)
    return [obj for _, _, obj in iter_jsonl(path)]


def _parquet_rows(paths: Sequence[Path]) -> list[dict]:
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for p in sorted(paths):
        try:
            rows += pq.read_table(p).to_pylist()
        except Exception as e:  # noqa: BLE001 - any unreadable parquet is a data error
            raise DataError(" ".join(f"{p}: cannot read parquet ({e})".split())) from None
    return rows


def _saved_rows(path: Path, split: str | None) -> list[dict] | None:
    """Rows of a `save_to_disk` directory (a DatasetDict's `split`, or a Dataset), None if absent. Each
    split is loaded alone (`saved_rows`): an empty one (which `datasets` cannot load back) is a table
    with no rows, and the others load."""
    if (path / "dataset_dict.json").is_file():
        names = saved_splits(path)
        if split is None and len(names) == 1:
            split = names[0]
        return saved_rows(path / split) if split in names else None
    if is_saved_dataset(path):
        return saved_rows(path)
    return None


def find_rows(root: str | Path, config: str, split: str | None = None) -> list[dict] | None:
    """The rows of `config` (and `split`) under `root`, or None when no layout above holds them."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: directory not found")
    cdir = root / config
    if cdir.is_dir():
        if split is not None:
            layouts = [sorted(cdir.glob(f"{split}-*.parquet")), sorted(cdir.glob(f"{split}.parquet")),
                       sorted((cdir / split).glob("*.parquet")) if (cdir / split).is_dir() else []]
            if len(found := [x for x in layouts if x]) > 1:  # the shards of one copy are joined; two copies were too
                raise DataError(f"{cdir}: the table '{split}' is there twice ({found[0][0].name}, {found[1][0].name}): "
                                f"keep one copy")
            if found:
                return _parquet_rows(found[0])
            for ext in ("jsonl", "json"):
                if (cdir / f"{split}.{ext}").is_file():
                    return _json_rows(cdir / f"{split}.{ext}")
            if (cdir / split).is_dir() and (rows := _saved_rows(cdir / split, None)) is not None:
                return rows
        if (rows := _saved_rows(cdir, split)) is not None:
            return rows
        if split is None and (parquet := list(cdir.glob("*.parquet"))):
            return _parquet_rows(parquet)
    for ext in ("jsonl", "json"):
        if (root / f"{config}.{ext}").is_file():
            return _json_rows(root / f"{config}.{ext}")
    if (root / f"{config}.parquet").is_file():
        return _parquet_rows([root / f"{config}.parquet"])
    if (root / "dataset_dict.json").is_file():
        return _saved_rows(root, config)
    return None


def _saved_note(root: Path, config: str, split: str | None) -> str:
    """What the `save_to_disk` folders where a table was looked for hold instead, for `read_rows`'s
    error ('' if none): a single Dataset given for the benchmark's folder, or a DatasetDict without
    the split, was only "no table" until session 38."""
    want = f"a split '{split}'" if split else "one split"
    notes = []
    if (what := describe_saved(root)) is not None:
        notes.append(f"{root} is {what}, expected a split '{config}'" if what.startswith("a DatasetDict") else
                     f"{root} is {what}, expected a folder of tables ({config}/, ...) or a DatasetDict of them")
    if (root / config).is_dir() and (what := describe_saved(root / config)) is not None:
        notes.append(f"{root / config} is {what}, expected {want}")
    return "".join(f"; {n}" for n in notes)


# what a required column may hold (`read_rows`'s `kinds`; "text" unless named)
KINDS = {"text": (lambda v: isinstance(v, str), "a string"),
         "texts": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
         "any": (lambda v: True, "")}


def read_rows(root: str | Path, config: str, split: str | None = None, *, required: Sequence[str] = (),
              kinds: dict[str, str] | None = None) -> list[dict]:
    """`find_rows`, and a DataError naming what was looked for when nothing holds the table; every
    row must have the `required` columns (non-null), each of its kind (`KINDS`: a string unless
    `kinds` names another; a number where TOFU has text raised a TypeError deep in the loader)."""
    rows = find_rows(root, config, split)
    name = f"{config}" + (f"/{split}" if split else "")
    if rows is None:
        raise DataError(f"{root}: no table '{name}' (looked for {config}.json(l), {config}.parquet, "
                        f"{config}/{split or '<split>'}-*.parquet, {config}/{split or '<split>'}.json(l) and "
                        f"save_to_disk folders){_saved_note(Path(root), config, split)}")
    if not rows:
        raise DataError(f"{root}: table '{name}' is empty")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{root}[{name}] row {i + 1}: expected an object, got {type(row).__name__}")
        for col in required:
            if (v := row.get(col)) is None:
                raise DataError(f"{root}[{name}] row {i + 1}: field '{col}': missing")
            ok, what = KINDS[(kinds or {}).get(col, "text")]
            if not ok(v):
                raise DataError(f"{root}[{name}] row {i + 1}: field '{col}': expected {what}, got {type(v).__name__}")
    return rows

