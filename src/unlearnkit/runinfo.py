"""What every result records so that any number can be traced to the run that made it."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import signal
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

PACKAGES = ["unlearnkit", "torch", "transformers", "accelerate", "peft", "tokenizers", "scipy", "scikit-learn"]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


def where(x) -> str | None:
    """How a run records a model or data it read: a local path made absolute (relative to the
    working directory it was given in, it named nothing from anywhere else: session 36), else as
    given (a hub id)."""
    if x is None:
        return None
    p = Path(x).expanduser()
    return str(p.resolve()) if p.exists() else str(x)


def data_hash(data: str | os.PathLike) -> str:
    """sha256 over a data directory's files, at any depth (relative paths and bytes; hidden ones left
    out), or over one data file: what a cached result or a reused checkpoint is keyed on. (Until
    session 34 only a directory's top-level JSONL files counted: every benchmark directory of JSON,
    parquet or `save_to_disk` files hashed as the same empty input.)"""
    root = Path(data)
    files = [root] if root.is_file() else sorted(
        f for f in root.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))
    h = hashlib.sha256()
    for f in files:  # each file streamed (a benchmark's corpus can be large), as a home's manifest is
        h.update((f.name if f == root else f.relative_to(root).as_posix()).encode())
        h.update(file_sha256(f).encode())
    return h.hexdigest()[:16]


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def umask() -> int:
    """This process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_dir(path: Path) -> Path:
    """A new hidden folder beside `path`, to build it in and rename it into place, with the
    permissions a plain `mkdir` gives (mkdtemp's are the owner's alone: until session 35 every world
    and checkpoint folder was unreadable to the other users of a shared machine)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o777 & ~umask())
    return tmp


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write a file atomically: a temporary file in the same directory, flushed to disk, then
    renamed over `path`, so a reader sees the old file or the new one, never half of one. It gets
    the permissions a plain `open` gives (mkstemp's are the owner's alone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> dict:
    """A JSON object from a file written by this project (results, metrics); a missing, unreadable or
    non-object file raises `error` with one line naming the file (and the line, for bad JSON)."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: file not found")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise error(f"{p}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise error(f"{p}:{e.lineno}: malformed JSON ({e.msg}: column {e.colno})") from None
    if not isinstance(obj, dict):
        raise error(f"{p}: expected a JSON object, got a JSON {type(obj).__name__}")
    return obj


def is_number(x) -> bool:
    """A real number, not a bool and not a string of digits: what a numeric option takes (`train.TrainConfig`,
    `evaluate.evaluate`, an attack's plan each refuse anything else, naming the option)."""
    import numbers

    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def json_safe(obj):
    """A JSON-safe copy of `obj`: numpy scalars and arrays to Python, non-finite floats to None,
    mapping keys to strings (what results files hold: `evaluate`, the attacks)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write JSON atomically (see `write_bytes`)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(o):
    """What `json.dumps` cannot write by itself, as JSON: numpy scalars and arrays, paths."""
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Timer:
    """Wall time of named stages: `with timer("train"): ...`; `timer.seconds` is a dict."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - t, 3)


KILL_ENV = "UNLEARNKIT_KILL_AT"


def kill_point(name: str) -> None:
    """SIGKILL this process at `name` when UNLEARNKIT_KILL_AT says so (the reliability tests: a
    request home's stages, `requests.process`; a training checkpoint, `checkpoint-STEP`)."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def exclusive(folder: str | os.PathLike, busy: str):
    """Hold an exclusive lock on `folder` (an `fcntl` lock on the folder itself: no lock file left
    behind) while the block runs; ValueError(`busy`) at once where another process, or another
    block of this one, holds it. The kernel releases it when the process ends, SIGKILL included,
    so none is ever left stale."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(busy) from None
        yield
    finally:
        os.close(fd)
