"""The store of forget targets. :class:`TargetStore` keeps them (`targets.Target`) on disk
in a *guard directory* and in memory as one matrix of normalised sentence embeddings:

```
<guard-dir>/targets.jsonl     one Target per line (the source of truth)
<guard-dir>/embeddings.npy    float32 (rows, dim): the embedded texts of every target, in order
<guard-dir>/index.json        embedder name, dim, and (target id, row count) per target
<guard-dir>/guard.json        detector settings and calibration (written by detect.calibrate)
```

Files are written atomically under the directory lock (`files.py`), so a CLI ``unlearn guard add``
and a running server can share a directory. A target's vectors are reused when ``index.json`` holds
them for the same id, embedder and texts (a digest of them); otherwise the target is *pending*.

Pending targets have a place in the store and in the name channel at once, and no vectors yet:
`add_many(defer=True)` leaves them to whoever first searches the vectors (`complete()`, called by
the detector), so that a process that has not loaded the embedder (a command-line ``request add``:
loading it takes seconds) can put a person behind the guard in a fraction of a second; the server,
whose embedder is loaded, embeds the new target at its next request.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
from pydantic import ValidationError

from .embedder import Embedder, MiniLMEmbedder, get_embedder
from .files import atomic_write_bytes, atomic_write_npy, dir_lock
from .targets import Target, as_target, embed_texts, invalid_target


class TargetStore:
    """Targets and their embeddings, in memory and (with a directory) on disk.

    `version` increases with every change, so a detector can rebuild what it derives from the
    store. `refresh()` reloads when another process changed the directory (cheap: one stat).
    """

    def __init__(self, directory: str | os.PathLike | None = None, embedder: Embedder | None = None):
        self.dir = Path(directory) if directory is not None else None
        self._embedder = embedder
        self.targets: list[Target] = []
        self.emb = np.zeros((0, 0), np.float32)  # (rows, dim)
        self.row_target = np.zeros(0, np.int64)  # row -> position of its target in self.targets
        self.n_pending = 0  # targets without vectors yet (`pending`), counted at each change
        self._emb_name = ""  # the embedder that made self.emb
        self.version = 0
        self.damage: str | None = None  # why the directory could not be read at the last refresh
        self._mtime = None
        self._lock = threading.RLock()
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._load()

    # -- embeddings ------------------------------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
            if self.targets and self._emb_name != self._embedder.name:  # vectors from another backend
                self._set(self.targets, *self._embed(self.targets), name=self._embedder.name)
        return self._embedder

    def _embedder_name(self) -> str:
        """The embedder's name, without loading it just for that (the default one's, until loaded)."""
        return self._embedder.name if self._embedder is not None else MiniLMEmbedder.name

    def _embed(self, targets: list[Target]) -> tuple[np.ndarray, list[int]]:
        texts, counts = [], []
        for t in targets:
            tx = embed_texts(t)
            texts += tx
            counts.append(len(tx))
        e = self.embedder.encode(texts) if texts else np.zeros((0, self.embedder.dim), np.float32)
        return e, counts

    def _counts(self) -> list[int]:
        return np.bincount(self.row_target, minlength=len(self.targets)).tolist() if self.targets else []

    @property
    def pending(self) -> list[Target]:
        """Targets without vectors yet (module docstring): every target has at least its name to embed."""
        return [t for t, c in zip(self.targets, self._counts()) if c == 0]

    def _fill_pending(self) -> None:
        """Embed the pending targets and put their rows in place (the store's lock held)."""
        counts = self._counts()
        todo = [i for i, c in enumerate(counts) if c == 0]
        if not todo:
            return
        e, new = self._embed([self.targets[i] for i in todo])
        fresh = dict(zip(todo, np.split(e, np.cumsum(new)[:-1])))
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        blocks = [fresh[i] if i in fresh else self.emb[starts[i]:starts[i + 1]] for i in range(len(counts))]
        self._set(self.targets, np.concatenate(blocks), [len(b) for b in blocks])

    def complete(self) -> bool:
        """Embed the pending targets (loads the embedder) and, with a directory, save their vectors
        for the other processes; True if there were any."""
        with self._lock:
            if not self.n_pending:  # counted at each change: this is on the detector's path
                return False
            if self.dir is None or self.damage:
                self._fill_pending()
                return True
        with self._writing():
            self._fill_pending()
        return True

    def _set(self, targets: list[Target], emb: np.ndarray, counts: list[int], name: str | None = None) -> None:
        self._emb_name = name or self._embedder_name()
        self.targets = targets
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.row_target = np.repeat(np.arange(len(targets)), counts).astype(np.int64)
        self.n_pending = len(counts) - int(np.count_nonzero(counts))  # targets without vectors yet
        self.version += 1

    # -- disk ------------------------------------------------------------------------------
    def _paths(self):
        return self.dir / "targets.jsonl", self.dir / "embeddings.npy", self.dir / "index.json"

    def _stamp(self):
        p = self._paths()[0]
        try:
            st = p.stat()
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return None

    def _read_targets(self) -> list[Target]:
        p = self._paths()[0]
        if not p.exists():
            return []
        out = []
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.append(Target.model_validate_json(line))
                except ValidationError as e:  # what is wrong with the line: broken JSON, or which field
                    err = e.errors()[0]
                    what = f"malformed JSON ({err['msg']})" if err["type"] == "json_invalid" else invalid_target(e)
                    raise ValueError(f"{p}:{n}: {what}") from None
        return out

    def _load(self) -> None:
        """Read the targets and reuse each one's saved vectors when they were made by this embedder
        from the same texts; the others are pending (`complete()` embeds and saves them)."""
        tpath, epath, ipath = self._paths()
        targets = self._read_targets()
        saved: dict[str, tuple[str, np.ndarray]] = {}
        try:
            info = json.loads(ipath.read_text())
            e = np.load(epath)
            rows = [r for r in info.get("rows", []) if len(r) == 3]  # [id, row count, digest of the texts]
            if (info.get("embedder") == self._embedder_name() and e.dtype == np.float32 and e.ndim == 2
                    and len(rows) == len(info.get("rows", [])) and sum(r[1] for r in rows) == e.shape[0]):
                at = 0
                for tid, n, digest in rows:
                    saved[tid] = (digest, e[at:at + n])
                    at += n
        except (FileNotFoundError, ValueError, OSError):
            saved = {}
        blocks = []
        for t in targets:
            digest, block = saved.get(t.id, (None, None))
            blocks.append(block if block is not None and len(block) and digest == _digest(t) else None)
        dim = next((b.shape[1] for b in blocks if b is not None), 0)
        emb = np.concatenate([b for b in blocks if b is not None]) if dim else np.zeros((0, 0), np.float32)
        self._set(targets, emb, [0 if b is None else len(b) for b in blocks])
        self._mtime = self._stamp()

    def _save(self) -> None:
        tpath, epath, ipath = self._paths()
        counts = self._counts()
        name = self._embedder_name()
        text = "".join(t.model_dump_json() + "\n" for t in self.targets).encode("utf-8")  # fails before any write
        atomic_write_npy(epath, self.emb)
        atomic_write_bytes(ipath, json.dumps({
            "version": 2, "embedder": name, "dim": int(self.emb.shape[1]) if self.emb.ndim == 2 else 0,
            "rows": [[t.id, c, _digest(t)] for t, c in zip(self.targets, counts)]}).encode())
        atomic_write_bytes(tpath, text)
        self._mtime = self._stamp()

    def refresh(self) -> bool:
        """Reload if another process changed the guard directory; True if it did. A file that no
        longer parses (damaged from outside) is not taken up: the last good targets stay in force
        and `damage` says what is wrong, until a later refresh reads a good file."""
        if self.dir is None or self._stamp() == self._mtime:
            return False
        with self._lock, dir_lock(self.dir):
            stamp = self._stamp()
            if stamp != self._mtime:
                try:
                    self._load()
                except (ValueError, OSError) as e:
                    self.damage = str(e).splitlines()[0]
                    self._mtime = stamp  # reported once per change, not re-read on every request
                    import logging

                    logging.getLogger("unlearnkit.guard").error("guard directory damaged, last good index kept: %s",
                                                                self.damage)
                    return False
                self.damage = None
                return True
        return False

    @contextlib.contextmanager
    def _writing(self):
        with self._lock:
            if self.dir is None:
                yield
                return
            with dir_lock(self.dir):
                if self.damage:  # never write the last good state over a file someone must repair
                    raise ValueError(f"guard directory damaged: {self.damage}")
                if self._stamp() != self._mtime:  # another process wrote: merge on its state
                    self._load()
                try:
                    yield
                    self._save()
                except BaseException:  # what is not saved is not in force: back to the files (a failed
                    self._load()       # add stayed in memory, blocked later ones, until session 36)
                    raise

    # -- API -------------------------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        """Held while the store changes: hold it for a consistent view of targets and vectors."""
        return self._lock

    def set_precomputed(self, targets: list[Target], emb: np.ndarray, counts: list[int]) -> None:
        """Targets with vectors computed elsewhere (`counts[i]` rows of `emb` per target), in memory
        only: for benchmarks that cannot afford to embed thousands of targets."""
        if self.dir is not None:
            raise ValueError("precomputed vectors are for an in-memory store (directory=None)")
        with self._lock:
            self._set(list(targets), emb, list(counts))

    def add(self, target: Target | dict) -> Target:
        """Add one target (a Target or its dict form); returns it with its id. Raises KeyError if
        a target with the same id exists."""
        return self.add_many([target])[0]

    def add_many(self, targets: Iterable[Target | dict], defer: bool = False) -> list[Target]:
        """Add targets; with `defer` and no embedder loaded in this process, they go in pending
        (module docstring): searchable by name at once, embedded by the first vector search."""
        return self._put([as_target(t) for t in targets], defer, replace=False)

    def put(self, target: Target | dict, defer: bool = False) -> Target:
        """Add a target, or replace the one with its id, in one write under the directory lock (a
        remove, then an add, raised KeyError where another process put the same id between the two,
        until session 40). `defer` as in `add_many`."""
        return self._put([as_target(target)], defer, replace=True)[0]

    def _put(self, new: list[Target], defer: bool, replace: bool) -> list[Target]:
        ids = [t.id for t in new]
        if len(set(ids)) != len(ids):
            dup = next(i for i, n in Counter(ids).items() if n > 1)
            raise KeyError(f"duplicate target id {dup!r} in one request")
        if defer and self._embedder is None:
            e, counts = np.zeros((0, self.emb.shape[1] if self.emb.ndim == 2 else 0), np.float32), [0] * len(new)
        else:
            e, counts = self._embed(new)  # outside the lock: embedding is the slow part
        with self._writing():
            put = set(ids)
            gone = [i for i, t in enumerate(self.targets) if t.id in put]
            if gone and not replace:
                raise KeyError(f"target id already exists: {self.targets[gone[0]].id}")
            keep = ~np.isin(self.row_target, gone)
            old = [(t, c) for t, c in zip(self.targets, self._counts()) if t.id not in put]
            emb = self.emb[keep] if self.emb.size else self.emb
            emb = e if emb.size == 0 else (emb if e.size == 0 else np.concatenate([emb, e]))
            self._set([t for t, _ in old] + new, emb, [c for _, c in old] + counts)
        return new

    def remove(self, target_id: str) -> Target:
        """Remove a target by id; returns it. Raises KeyError if there is none."""
        with self._writing():
            pos = next((i for i, t in enumerate(self.targets) if t.id == target_id), None)
            if pos is None:
                raise KeyError(f"no target with id {target_id!r}")
            keep = self.row_target != pos
            counts = np.bincount(self.row_target, minlength=len(self.targets)).tolist()
            gone = self.targets[pos]
            self._set(self.targets[:pos] + self.targets[pos + 1:], self.emb[keep],
                      counts[:pos] + counts[pos + 1:])
        return gone

    def clear(self) -> None:
        with self._writing():
            self._set([], np.zeros((0, self.emb.shape[1] if self.emb.ndim == 2 else 0), np.float32), [])

    def get(self, target_id: str) -> Target:
        for t in self.targets:
            if t.id == target_id:
                return t
        raise KeyError(f"no target with id {target_id!r}")

    def list(self) -> list[Target]:
        return list(self.targets)

    def __len__(self) -> int:
        return len(self.targets)


def _digest(t: Target) -> str:
    """What a target's vectors were made from: a digest of its embedded texts."""
    return hashlib.sha256("\n".join(embed_texts(t)).encode("utf-8")).hexdigest()[:16]
