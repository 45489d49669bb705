"""Does a prompt ask about a forget target? Two channels, one decision.

* **Name channel** (decides on its own; `names.py`): the prompt's words, folded (invisible
  characters, homoglyphs and other scripts undone), are looked up in an inverted index of the
  targets' name tokens: exactly, fuzzily (rapidfuzz `ratio` >= `fuzzy_cutoff`), run together, or
  as initials. A whole name is a hit; a *partial* name is a hit unless a word beside it says it
  is someone else ("Bertram Thornwood" is not "Alaric Thornwood"; "A. Thornwood" is).
* **Embedding channel** (calibrated): the prompt's MiniLM embedding against every embedded text of
  every target (names, questions, facts, document chunks), as one matrix product over normalised
  embeddings, reduced to a per-target maximum cosine similarity. Above `threshold` is a hit. Beyond
  `direct_rows` rows the product runs over per-target centroids first and the exact maximum only
  over the best `rerank` targets, so the cost stays flat.

:func:`calibrate` sets `threshold` from benign prompts (retain and neighbour questions): the name
channel's false hits are fixed, and the threshold is the lowest value at which the two channels
together refuse at most `false_refusal` of the benign prompts.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .store import TargetStore
from .targets import Target
from .names import NameIndex, NameMatch, fold_text

@dataclass
class Detection:
    """The detector's verdict on one prompt."""
    hit: bool
    target: Target | None = None  # the best-matching target (also reported below threshold)
    score: float = 0.0  # max(name_score, embed_score)
    name_score: float = 0.0  # 1 = full exact name; 0.9 x similarity for a partial name
    embed_score: float = 0.0  # max cosine similarity to the target's texts
    channel: str = ""  # "name" or "embedding" when hit

    def public(self) -> dict:
        """What may be shown to a client: never the target's name or facts."""
        return {"hit": self.hit, "target_id": self.target.id if (self.hit and self.target) else None,
                "score": round(self.score, 4), "channel": self.channel}


@dataclass
class Calibration:
    """Result of :func:`calibrate` (all rates measured on the benign prompts given)."""
    threshold: float
    false_refusal: float  # the rate asked for
    achieved: float  # the rate on the calibration prompts at `threshold`
    name_channel_rate: float  # the part of it due to names alone (not tunable by the threshold)
    n_benign: int
    recall: float | None = None  # on positive prompts, if given
    n_positive: int = 0
    notes: list[str] = field(default_factory=list)
    per_group: dict[str, float] = field(default_factory=dict)  # achieved rate per benign group


class Detector:
    """Scores prompts against a :class:`TargetStore` (see the module docstring)."""

    def __init__(self, store: TargetStore, threshold: float = 0.8, fuzzy_cutoff: float = 80.0,
                 direct_rows: int = 8192, rerank: int = 64, cache_size: int = 8192):
        self.store = store
        self.threshold = float(threshold)
        self.fuzzy_cutoff = float(fuzzy_cutoff)
        self.direct_rows, self.rerank = direct_rows, rerank
        self._built = -1
        self._lock = threading.RLock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    # -- derived structures ------------------------------------------------------------------
    def _build(self) -> None:
        s = self.store
        with self._lock:
            if self._built == s.version:
                return
            self._names = NameIndex([t.names for t in s.targets], self.fuzzy_cutoff)
            self._pos = {t.id: i for i, t in enumerate(s.targets)}
            n = len(s.targets)
            counts = np.bincount(s.row_target, minlength=n) if n else np.zeros(0, np.int64)
            self._starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if n else counts
            self._counts = counts
            self._emb = s.emb if s.emb.size else None
            if n and s.emb.shape[0] > self.direct_rows:
                c = np.add.reduceat(s.emb, self._starts, axis=0)
                self._centroids = c / (np.linalg.norm(c, axis=1, keepdims=True) + 1e-12)
            else:
                self._centroids = None
            self._built = s.version

    # -- embeddings of prompts (cached: evaluation asks about the same prompts many times) --------
    def embed(self, prompts: list[str]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            e = self.store.embedder.encode([fold_text(p) for p in missing])
            with self._lock:
                for p, v in zip(missing, e):
                    self._cache[p] = v
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        with self._lock:
            out = []
            for p in prompts:
                v = self._cache.get(p)
                if v is None:  # evicted meanwhile (tiny cache): recompute
                    v = self.store.embedder.encode([fold_text(p)])[0]
                out.append(v)
        return np.stack(out) if out else np.zeros((0, self.store.embedder.dim), np.float32)

    # -- the two channels --------------------------------------------------------------------
    def embed_scores(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(best target position, max cosine) per prompt; position -1 when the index is empty."""
        self.store.complete()  # targets added without vectors (`TargetStore.add_many(defer=True)`) get them now
        self._build()
        n = len(self.store.targets)
        if n == 0 or not prompts:
            return np.full(len(prompts), -1), np.zeros(len(prompts))
        q = self.embed(prompts)
        if self._centroids is None:
            sims = (self._emb @ q.T).T  # (prompts, rows): the one matrix product (BLAS; a matrix-vector
            per_target = np.maximum.reduceat(sims, self._starts, axis=1)  # product is memory-bound)
            best = per_target.argmax(1)
            return best, per_target[np.arange(len(prompts)), best].astype(np.float64)
        cand = (self._centroids @ q.T).T  # (prompts, targets)
        k = min(self.rerank, n)
        top = np.argpartition(-cand, k - 1, axis=1)[:, :k]
        best_pos, best_sim = np.empty(len(prompts), np.int64), np.empty(len(prompts))
        for i in range(len(prompts)):
            rows = np.concatenate([np.arange(self._starts[t], self._starts[t] + self._counts[t]) for t in top[i]])
            sc = self._emb[rows] @ q[i]
            j = int(sc.argmax())
            best_pos[i], best_sim[i] = self.store.row_target[rows[j]], sc[j]
        return best_pos, best_sim

    def name_scores(self, prompt: str) -> tuple[int, float]:
        """(target position, name score) of the best strong name match in the prompt; (-1, 0) if none."""
        strong, _ = self.mentions(prompt)
        if not strong:
            return -1, 0.0
        m = max(strong.values(), key=lambda m: m.score)
        return m.pos, m.score

    def mentions(self, text: str) -> tuple[dict[int, NameMatch], set[int]]:
        """How `text` refers to targets by name: ({target position: strong NameMatch}, positions
        referred to weakly: a partial name said to be someone else's, or a name's first letters)."""
        self._build()
        found, weak = self._names.match(text)
        strong = {p: m for p, m in found.items() if m.strong}
        # a contradicted partial name counts as a weak reference only when spelt exactly (score 0.9):
        # "Liine Gesberg" is someone else, and no context for "Linine"'s values
        return strong, weak | {p for p, m in found.items() if not m.strong and m.score >= 0.9 - 1e-9}

    def vetoed(self, prompt: str, pos: int, sim: float) -> float:
        """The embedding score, or 0 when the prompt names someone else who shares the best
        target's name ("Where was Bertram Vigormont born?" is close to the target's questions in
        embedding space only because of the shared surname). The output check still reads the
        answer: if the model then states the target's value, the action applies."""
        if pos < 0:
            return sim
        found, _ = self._names.match(prompt, only=pos)
        return 0.0 if pos in found and found[pos].contradicted and not found[pos].full else sim

    def name_spans(self, text: str, target: Target) -> list[tuple[int, int, int]]:
        """Where `text` names `target`: (start, end, token number) of every word that is one of its
        name tokens (exactly, fuzzily, as an initial; token number -1 for the whole name run
        together), the token number being its position in the target's name (what a stand-in
        name replaces)."""
        self._build()
        pos = self._pos.get(target.id)
        if pos is None:
            return []
        found, _ = self._names.match(text, only=pos)
        return found[pos].spans if pos in found else []

    def name_tokens(self) -> frozenset:
        """Every folded name token of the targets (what a stand-in name must avoid)."""
        self._build()
        return self._names.tokens()

    def targets_at(self, positions) -> list[Target]:
        """The targets at index positions (as returned by `mentions`)."""
        targets = self.store.targets
        return [targets[p] for p in positions]

    def clear_caches(self) -> None:
        """Forget cached prompt embeddings and fuzzy lookups (for uncached timings)."""
        self._build()
        with self._lock:
            self._cache.clear()
            self._names.clear_cache()

    # -- the decision --------------------------------------------------------------------------
    def detect(self, prompts: list[str]) -> list[Detection]:
        """One :class:`Detection` per prompt (batched embedding and search)."""
        prompts = texts(prompts, "prompts")
        self.store.refresh()
        if self.store.targets:
            self.embed(prompts)  # the slow part, outside the lock (cached below)
            self.store.complete()
        with self.store.lock:  # a consistent view while an admin call may be changing the store
            return self._detect(prompts)

    def _detect(self, prompts: list[str]) -> list[Detection]:
        self._build()
        targets = self.store.targets
        if not targets:
            return [Detection(False) for _ in prompts]
        epos, esim = self.embed_scores(prompts)
        out = []
        for i, p in enumerate(prompts):
            npos, nsc = self.name_scores(p)
            e = self.vetoed(p, int(epos[i]), float(esim[i]))
            if npos >= 0 and nsc > 0:
                out.append(Detection(True, targets[npos], max(nsc, e), nsc, e, "name"))
            elif e >= self.threshold:
                out.append(Detection(True, targets[epos[i]], e, 0.0, e, "embedding"))
            else:
                t = targets[epos[i]] if epos[i] >= 0 else None
                out.append(Detection(False, t, e, 0.0, e, ""))
        return out


def texts(x, what: str) -> list[str]:
    """A list of prompts: one string is one prompt (taken letter by letter, each a prompt, until
    session 36); anything else that is not a sequence of strings is a TypeError naming `what`."""
    if isinstance(x, str):
        return [x]
    x = list(x)
    if not all(isinstance(t, str) for t in x):
        raise TypeError(f"{what}: expected strings, got {type(next(t for t in x if not isinstance(t, str))).__name__}")
    return x


def check_false_refusal(false_refusal) -> float:
    """The share of benign prompts a calibration may refuse, a number in [0, 1), or a one-line ValueError."""
    if isinstance(false_refusal, bool) or not isinstance(false_refusal, (int, float)) or not 0 <= false_refusal < 1:
        raise ValueError(f"false_refusal must be a number in [0, 1), got {false_refusal!r}")
    return float(false_refusal)


def calibrate(detector: Detector, benign: list[str] | dict[str, list[str]], false_refusal: float = 0.01,
              positives: list[str] | None = None, min_threshold: float = 0.5) -> Calibration:
    """Set `detector.threshold` so that at most `false_refusal` of the `benign` prompts are hit.

    `benign` is a list of prompts or a dict of named groups (e.g. {"retain": [...], "neighbours":
    [...]}); with groups the rate must hold in *every* group, so a small group that sits close to
    the targets (neighbours) cannot absorb the whole budget. Name-channel hits count against a
    group's budget; the embedding threshold is placed just above the (k+1)-th highest benign
    embedding score of the group, k = the remaining budget; the final threshold is the largest over
    the groups and never below `min_threshold`. With `positives` (e.g. held-out paraphrases of
    forget questions) the recall at the new threshold is reported too.
    """
    check_false_refusal(false_refusal)
    groups = {k: texts(v, f"benign[{k!r}]") for k, v in benign.items()} if isinstance(benign, dict) else \
        {"benign": texts(benign, "benign")}
    positives = texts(positives, "positives") if positives is not None else None
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise ValueError("calibration needs at least one benign prompt")
    notes, thr = [], min_threshold
    scores = {}
    for name, prompts in groups.items():
        epos, esim = detector.embed_scores(prompts)
        esim = np.array([detector.vetoed(p, int(k), float(e)) for p, k, e in zip(prompts, epos, esim)])
        name_hit = np.array([detector.name_scores(p)[1] > 0 for p in prompts])
        scores[name] = (esim, name_hit)
        n = len(prompts)
        budget = math.floor(false_refusal * n + 1e-9) - int(name_hit.sum())
        rest = np.sort(esim[~name_hit])[::-1]
        if budget < 0:
            notes.append(f"{name}: the name channel alone hits {int(name_hit.sum())}/{n} prompts, more than "
                         f"the {false_refusal:.1%} asked for; the embedding channel is set to hit none")
            budget = 0
        if budget < len(rest):
            thr = max(thr, float(np.nextafter(rest[budget], np.inf)))
    detector.threshold = thr
    hits = np.concatenate([nh | (e >= thr) for e, nh in scores.values()])
    names = np.concatenate([nh for _, nh in scores.values()])
    cal = Calibration(threshold=thr, false_refusal=false_refusal, achieved=float(hits.mean()),
                      name_channel_rate=float(names.mean()), n_benign=int(hits.size), notes=notes)
    cal.per_group = {k: float((nh | (e >= thr)).mean()) for k, (e, nh) in scores.items()}
    if positives:
        det = detector.detect(positives)
        cal.recall = float(np.mean([d.hit for d in det]))
        cal.n_positive = len(positives)
    return cal
