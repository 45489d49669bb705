"""Files of a guard directory: atomic writes and the directory lock.

Every file is written atomically (temporary file in the same directory, then ``os.replace``), under
an exclusive ``fcntl`` lock on ``<guard-dir>/.lock`` that also covers the read-modify-write, so a CLI
``unlearn guard add`` and a running server can share a directory.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

from ..runinfo import write_bytes as atomic_write_bytes

__all__ = ["atomic_write_bytes", "atomic_write_npy", "dir_lock"]


def atomic_write_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def dir_lock(directory: Path):
    import fcntl

    with open(directory / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
