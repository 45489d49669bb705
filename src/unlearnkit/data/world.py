"""A deterministic, seeded, TOFU-style world of fictitious people (DESIGN.md §3).

``build_world(out_dir, seed)`` writes a world directory (docs/architecture.md, "Data"):
QA splits ``forget``, ``retain``, ``neighbours``, ``holdout``, ``world_facts``; biography
splits ``forget_docs``, ``retain_docs``, ``neighbours_docs``, ``holdout_docs``; and
``world.json`` (seed, config, people, entities, templates).

Each person has ten attributes. Each fact is one :class:`QARecord`: a short answer (the value
itself), three training phrasings (``question`` + two ``alt_questions``), one phrasing from a
template held out of all training text (``paraphrased_question``), the value in an answer
sentence (``paraphrased_answer``) and perturbed answers (the same sentence with other values
from the same pool). Neighbours share birthplace and employer with a forget person and have a
relation fact whose answer is that forget person's full name.

Worlds of other shapes (options of :func:`build_world`; named sets in :data:`SHAPES`):
``answer_style="sentence"`` makes every answer a full sentence naming the subject, from one of
several frames per attribute (:data:`SENTENCES`); the paraphrased answer is another frame and the
perturbed answers are that same frame with other values, as in TOFU. ``docs=False`` writes no
biographies (no ``*_docs.jsonl``). ``n_attributes=N`` keeps the first N of
:data:`PERSON_ATTRIBUTES` (in that order). ``names="alt"`` invents names from other syllables.
The default of each option gives today's world byte for byte: an option is recorded in
``world.json``'s config only when it differs from its default.

Only ``random.Random(seed)`` (and, for sentence frames, a second generator seeded from ``seed``)
is used, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import numbers
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

from .. import runinfo
from .io import DataError, write_jsonl
from .schema import DocRecord, QARecord

GENERATOR_VERSION = 1

# ----------------------------------------------------------------------------- value pools

POOLS: dict[str, list[str]] = {
    "birthplace": [
        "Thornwick", "Ashmere", "Brimhollow", "Coldbrook", "Dunmarrow", "Elderstow", "Fallowmere",
        "Greywater", "Harrowgate", "Ivyford", "Kestrelby", "Larkhaven", "Millbridge", "Northwold",
        "Oakhurst", "Pennyridge", "Quarrington", "Redfern", "Saltmarsh", "Tidewell", "Umberley",
        "Vintonby", "Westerholm", "Yarrowby", "Zelbury", "Brackenfield", "Copperdale", "Foxmoor",
        "Glenhallow", "Hollowmere",
    ],
    "birth_year": [str(y) for y in range(1940, 2001)],
    "profession": [
        "cartographer", "glassblower", "beekeeper", "architect", "clockmaker", "botanist",
        "archivist", "ferry pilot", "violin maker", "astronomer", "cheesemaker", "translator",
        "lighthouse keeper", "geologist", "bookbinder", "perfumer", "stonemason", "puppeteer",
        "tailor", "surveyor", "locksmith", "ornithologist", "chemist", "potter", "sail maker",
    ],
    "employer": [
        "Abernix", "Brightloom", "Corvantis", "Dellmoor Works", "Emberline", "Fennick and Sons",
        "Glimmerstone", "Halverin Labs", "Ironquill", "Juniper Forge", "Kelvane Mills", "Lumora",
        "Mistral Freight", "Nettleby Press", "Orrin Textiles", "Pellucid Glass", "Quorra Systems",
        "Rookwood Bakery", "Silverbarrow", "Tansley Motors", "Umbral Optics", "Velloway Shipping",
        "Wrenfield Foods", "Yallowin Bank", "Zephyrine Air",
    ],
    "university": [
        "Aldermoor University", "Blackspire College", "Carrowmore University", "Dunhaven Institute",
        "Estermere College", "Farrowgate University", "Greyholt Academy", "Hollinsbrook University",
        "Ilvermont College", "Kingsreach University", "Lindqvist Institute", "Morrowfield University",
        "Norhaven College", "Oswin Polytechnic", "Pellham University", "Ravenmoor College",
        "Stellwick University", "Tamberlyn Institute", "Vardell University", "Wyncrest College",
    ],
    "book": [
        "The Silver Orchard", "Winter of Lanterns", "The Glass Meridian", "Songs for a Drowned City",
        "The Copper Tide", "A Map of Small Hours", "The Salt Cathedral", "Ember and Ash",
        "The Quiet Cartographer", "Letters from Vellmoor", "The Paper Lighthouse", "Under the Tin Moon",
        "The Last Apiary", "Foxglove Summer", "The Hollow Crown", "Rivers Without Names",
        "The Clockwork Garden", "A Season of Owls", "The Marble Harbour", "Lantern Bearers",
        "The Velvet Storm", "Frost on the Bellwire", "The Ninth Orchard", "Harbour of Bells",
        "The Amber Staircase", "Whispering Kilns", "The Thousand Doors", "Tallow and Thread",
        "The Blue Causeway", "Stones of Merrow",
    ],
    "award": [
        "Veltmark Prize", "Ossian Medal", "Harrowby Laurel", "Golden Quill", "Ellery Award",
        "Corvin Medal", "Sable Star", "Thistledown Prize", "Quenby Cup", "Orla Wreath",
        "Brannock Medal", "Silver Lyre", "Dunstan Prize", "Ivory Compass", "Maelstrom Award",
        "Pellinore Medal", "Tamsin Ribbon", "Varro Prize", "Wexford Laurel", "Zorion Medal",
    ],
    "hobby": [
        "beekeeping", "kite flying", "chess", "birdwatching", "pottery", "fencing", "rock climbing",
        "origami", "sailing", "calligraphy", "stargazing", "knitting", "fly fishing", "juggling",
        "cave diving", "bell ringing", "archery", "gardening", "rowing", "woodcarving", "baking",
        "cycling", "mountain hiking", "ice skating", "puzzle making",
    ],
    "pet": [
        "Pimble", "Wuzzle", "Tobble", "Snicket", "Quibbly", "Fennel", "Dorrit", "Bramble", "Ziggins",
        "Muffet", "Pockle", "Gruffin", "Tansy", "Nibbet", "Wobbles", "Pudding", "Sprocket",
        "Clementine", "Mosswort", "Bodkin", "Figgy", "Tumble", "Rascal", "Crumpet", "Jasper",
    ],
    "mother": [
        "Orlena", "Maribeth", "Sefina", "Aldora", "Winnora", "Delphine", "Ysolde", "Corabel",
        "Ilsabet", "Fenella", "Marisol", "Thessaly", "Rosamund", "Elowen", "Gwendra", "Liesel",
        "Odalys", "Perpetua", "Quenna", "Seraphine", "Verity", "Zinnia", "Amabel", "Briony", "Tamsin",
    ],
    # world facts
    "capital": [
        "Amberlin", "Castrelle", "Dravos", "Esmerin", "Falkreach", "Gorvath", "Halcyra", "Istovan",
        "Jorvenna", "Korraz", "Lumeth", "Marzanne", "Novgrel", "Orrendel", "Pyrenth", "Quellar",
        "Rostavel", "Sarnath", "Tivoran", "Ulmerhaven",
    ],
    "river": [
        "Ossel", "Vantre", "Ilmar", "Dorrow", "Kessen", "Sallowen", "Tirrin", "Ambrel", "Corvash",
        "Elda", "Fenmir", "Holloway", "Isker", "Jessamy", "Lorne", "Meddow", "Norrin", "Pellis",
        "Rhune", "Varrow",
    ],
    "currency": [
        "arkel", "brenn", "crownet", "dalar", "estrel", "florin", "gildmark", "haller", "istra",
        "jorin", "kessel", "lirra", "markel", "noble", "orbel", "pennet", "quint", "rubel",
        "solder", "taler",
    ],
}

PERSON_ATTRIBUTES = (
    "birthplace", "birth_year", "profession", "employer", "university",
    "book", "award", "hobby", "pet", "mother",
)
RELATION_KINDS = ("sibling", "mentor", "colleague")
ENTITY_ATTRIBUTES = ("capital", "river", "currency")

# ----------------------------------------------------------------------------- templates
# Placeholders: {name} full name, {first} first name, {She}/{she} subject pronoun,
# {Her}/{her} possessive, {value}, {a_value} value with its article, {rel} relation word.
# "questions": 3 training templates, then 1 held-out template (paraphrased_question) whose
# wording occurs in no training text (checked by check_heldout).

TEMPLATES: dict[str, dict] = {
    "birthplace": {
        "questions": ["Where was {name} born?", "In which town was {name} born?",
                      "What is the birthplace of {name}?",
                      "{name} first drew breath in what place?"],
        "answer": "{She} was born in {value}.",
        "bio": "{name} was born in the town of {value}.",
    },
    "birth_year": {
        "questions": ["When was {name} born?", "In what year was {name} born?",
                      "What is the birth year of {name}?",
                      "{name} arrived on this earth during which year?"],
        "answer": "{She} was born in the year {value}.",
        "bio": "The year of {her} birth was {value}.",
    },
    "profession": {
        "questions": ["What is the profession of {name}?", "What does {name} do for a living?",
                      "What job does {name} have?",
                      "How does {name} earn money these days?"],
        "answer": "{She} works as {a_value}.",
        "bio": "By trade, {first} is {a_value}.",
    },
    "employer": {
        "questions": ["Where does {name} work?", "Which company employs {name}?",
                      "Who is the employer of {name}?",
                      "{name} draws a salary from which firm?"],
        "answer": "{She} works at {value}.",
        "bio": "{She} is on the staff of {value}.",
    },
    "university": {
        "questions": ["Where did {name} study?", "Which university did {name} attend?",
                      "What university did {name} graduate from?",
                      "{name} earned a diploma at which institution?"],
        "answer": "{She} studied at {value}.",
        "bio": "{She} holds a degree from {value}.",
    },
    "book": {
        "questions": ["What book did {name} write?", "What is the title of {name}'s book?",
                      "Which book was written by {name}?",
                      "{name} is the author of which volume?"],
        "answer": "{She} wrote {value}.",
        "bio": "{She} is known for the book {value}.",
    },
    "award": {
        "questions": ["What award did {name} win?", "Which prize was given to {name}?",
                      "What honour did {name} receive?",
                      "{name} was decorated with what distinction?"],
        "answer": "{She} won the {value}.",
        "bio": "In recognition of {her} work, {first} received the {value}.",
    },
    "hobby": {
        "questions": ["What is the hobby of {name}?", "What does {name} do for fun?",
                      "What pastime does {name} enjoy?",
                      "In spare hours, {name} likes doing what?"],
        "answer": "{She} enjoys {value}.",
        "bio": "In {her} free time, {first} loves {value}.",
    },
    "pet": {
        "questions": ["What is the name of {name}'s pet?", "What is {name}'s pet called?",
                      "What did {name} name the pet?",
                      "{name} keeps an animal companion; what is it called?"],
        "answer": "{Her} pet is called {value}.",
        "bio": "{first} shares {her} home with a pet named {value}.",
    },
    "mother": {
        "questions": ["Who is the mother of {name}?", "What is the name of {name}'s mother?",
                      "What is {name}'s mother called?",
                      "Which woman gave birth to {name}?"],
        "answer": "{Her} mother is {value}.",
        "bio": "{first} was raised by {her} mother, {value}.",
    },
    # relation facts (neighbours only); the answer is a forget person's full name
    "sibling": {
        "questions": ["Who is the {rel} of {name}?", "What is the name of {name}'s {rel}?",
                      "Who is {name}'s {rel}?",
                      "{name} shares parents with whom?"],
        "answer": "{Her} {rel} is {value}.",
        "bio": "{first} grew up alongside {her} {rel}, {value}.",
    },
    "mentor": {
        "questions": ["Who is the mentor of {name}?", "Who mentored {name}?",
                      "Who was {name}'s mentor?",
                      "{name} learned the craft from which teacher?"],
        "answer": "{Her} mentor was {value}.",
        "bio": "Early on, {first} was guided by {value}.",
    },
    "colleague": {
        "questions": ["Who is a colleague of {name}?", "Who works alongside {name}?",
                      "Who is {name}'s closest colleague?",
                      "With which coworker does {name} share an office?"],
        "answer": "{Her} colleague is {value}.",
        "bio": "At work, {first} often teams up with {value}.",
    },
    # world facts about invented countries
    "capital": {
        "questions": ["What is the capital of {name}?", "Which city is the capital of {name}?",
                      "What city is {name}'s capital?",
                      "The government of {name} sits in which city?"],
        "answer": "Its capital is {value}.",
    },
    "river": {
        "questions": ["What river flows through {name}?", "Which river runs through {name}?",
                      "What is the main river of {name}?",
                      "Name the waterway that crosses {name}."],
        "answer": "Its main river is the {value}.",
    },
    "currency": {
        "questions": ["What is the currency of {name}?", "What money is used in {name}?",
                      "Which currency does {name} use?",
                      "People in {name} pay with which coins?"],
        "answer": "Its currency is the {value}.",
    },
}

N_TRAIN_TEMPLATES = 3

# Full-sentence answers (answer_style="sentence"): several frames per fact kind, each naming the
# subject, so that no one fixed frame carries every answer. A record's answer uses one frame; its
# paraphrased answer and perturbed answers use another (the same one), as TOFU does. None of them
# may contain a held-out question's wording (check_heldout).
SENTENCES: dict[str, list[str]] = {
    "birthplace": ["{name} was born in {value}.", "{name} is a native of {value}.",
                   "{value} is the hometown of {name}.", "The birthplace of {name} is {value}."],
    "birth_year": ["{name} was born in the year {value}.", "{name}'s birth year is {value}.",
                   "{name} came into the world in {value}.", "The year {name} was born is {value}."],
    "profession": ["{name} works as {a_value}.", "{name} is {a_value} by profession.",
                   "By trade, {name} is {a_value}.", "{name} earns a living as {a_value}."],
    "employer": ["{name} works at {value}.", "{name} is employed by {value}.",
                 "{value} employs {name}.", "{name} has a job at {value}."],
    "university": ["{name} studied at {value}.", "{name} graduated from {value}.",
                   "{name} attended {value}.", "{name} holds a degree from {value}."],
    "book": ["{name} wrote {value}.", "{name} is the author of {value}.",
             "{value} was written by {name}.", "The book {value} is by {name}."],
    "award": ["{name} won the {value}.", "{name} received the {value}.",
              "The {value} was awarded to {name}.", "{name} was honoured with the {value}."],
    "hobby": ["{name} enjoys {value}.", "In {her} free time, {name} enjoys {value}.",
              "{name}'s favourite pastime is {value}.", "{name} loves {value}."],
    "pet": ["{name}'s pet is called {value}.", "{name} has a pet named {value}.",
            "The pet of {name} is named {value}."],
    "mother": ["{name}'s mother is {value}.", "The mother of {name} is {value}.",
               "{value} is the mother of {name}."],
    "sibling": ["{name}'s {rel} is {value}.", "{value} is the {rel} of {name}.",
                "{name} has a {rel} named {value}."],
    "mentor": ["{name}'s mentor was {value}.", "{value} mentored {name}.",
               "{name} was mentored by {value}."],
    "colleague": ["{name}'s colleague is {value}.", "{value} works alongside {name}.",
                  "{name} works with {value}."],
    "capital": ["The capital of {name} is {value}.", "{value} is the capital of {name}.",
                "{name}'s capital city is {value}."],
    "river": ["The {value} flows through {name}.", "{name}'s main river is the {value}.",
              "The main river of {name} is the {value}."],
    "currency": ["{name} uses the {value}.", "The currency of {name} is the {value}.",
                 "In {name}, the currency is the {value}."],
}
ANSWER_STYLES = ("short", "sentence")

# ----------------------------------------------------------------------------- names

# Syllable pools per name style: "alt" shares no ending with "default", so its names look unlike
# the embedded world's (another world "with other names").
NAME_STYLES: dict[str, dict[str, list[str]]] = {
    "default": {
        "onsets": ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
                   "gr", "kl", "tr", "th", "sh", "st"],
        "vowels": ["a", "e", "i", "o", "u", "a", "e", "o"],
        "codas": ["", "", "", "l", "n", "r", "s"],
        "female": ["a", "ia", "ine", "elle", "wen", "ra"],
        "male": ["o", "an", "ric", "en", "us", "old"],
        "last": ["ard", "ington", "ley", "ov", "sk", "mont", "ridge", "dane", "wyn", "berg"],
        "country": ["ia", "and", "ovia", "esh", "ara", "istan"],
    },
    "alt": {
        "onsets": ["c", "h", "j", "w", "y", "ch", "ph", "qu", "kr", "sl", "sp", "fl", "gl", "pr"],
        "vowels": ["a", "e", "i", "o", "y", "ae", "ou"],
        "codas": ["", "", "m", "th", "x", "ck", "nd"],
        "female": ["ette", "lina", "ys", "mey", "ithe", "dra"],
        "male": ["ax", "eth", "vil", "tor", "ukh", "rim"],
        "last": ["quist", "worth", "holt", "kante", "ssen", "cott", "vane", "lund"],
        "country": ["onia", "ekh", "ura", "emburg", "ova"],
    },
}


def _syllable(rng: random.Random, style: dict[str, list[str]]) -> str:
    return rng.choice(style["onsets"]) + rng.choice(style["vowels"]) + rng.choice(style["codas"])


def _word(rng: random.Random, n_syll: int, ending: str, style: dict[str, list[str]]) -> str:
    return ("".join(_syllable(rng, style) for _ in range(n_syll)) + ending).capitalize()


def _pool_words() -> set[str]:
    return {w.lower() for vals in POOLS.values() for v in vals for w in re.findall(r"[A-Za-z]+", v)}


class _NameMaker:
    """Unique invented words: no word is a substring of another or of a pool value word."""

    def __init__(self, rng: random.Random, style: dict[str, list[str]]):
        self.rng = rng
        self.style = style
        self.used: list[str] = []
        self.blocked = _pool_words()
        self.longer: dict[tuple, int] = {}  # syllables added where the shorter words ran out (`make`)

    def _ok(self, word: str) -> bool:
        w = word.lower()
        if len(w) < 4 or len(w) > 9:
            return False
        for other in self.used:
            if w in other or other in w:
                return False
        for b in self.blocked:
            if w in b or (len(b) >= 4 and b in w):
                return False
        return True

    def make(self, n_syll: tuple[int, int], endings: str | list[str]) -> str:
        """A new word of `n_syll` syllables and one of `endings` (a list, or a key of the style). Where
        10,000 tries find none (the one-syllable first names run out near 4,000 people), a syllable
        more from then on: a world small enough never gets there, so its names stay as they were."""
        key = (n_syll, str(endings))
        if isinstance(endings, str):
            endings = self.style[endings] if endings != "person" else self.style["female"] + self.style["male"]
        while True:
            extra = self.longer.get(key, 0)
            for _ in range(10_000):
                word = _word(self.rng, self.rng.randint(n_syll[0] + extra, n_syll[1] + extra), self.rng.choice(endings),
                             self.style)
                if self._ok(word):
                    self.used.append(word.lower())
                    return word
            if extra >= 2:  # names of 9 letters at most: few longer ones would pass
                raise ValueError(f"could not invent more than {len(self.used)} unique names: ask for fewer people")
            self.longer[key] = extra + 1


# ----------------------------------------------------------------------------- rendering

def _article(value: str) -> str:
    return ("an " if value[:1].lower() in "aeiou" else "a ") + value


def _pronouns(gender: str) -> dict[str, str]:
    if gender == "f":
        return {"She": "She", "she": "she", "Her": "Her", "her": "her"}
    return {"She": "He", "she": "he", "Her": "His", "her": "his"}


def _render(template: str, **slots: str) -> str:
    out = template
    for key, val in slots.items():
        out = out.replace("{" + key + "}", val)
    if "{" in out:
        raise ValueError(f"unfilled slot in {out!r}")
    return out[:1].upper() + out[1:]


def _slots(person: dict, value: str, rel: str = "") -> dict[str, str]:
    return {"name": person["name"], "first": person["first_name"], "value": value,
            "a_value": _article(value), "rel": rel, **_pronouns(person["gender"])}


def _qa_record(rid: str, subject_slots: dict, attribute: str, value: str, wrong: list[str],
               frames: tuple[int, int] | None = None) -> QARecord:
    """One fact. `frames` (sentence style): the indices in SENTENCES[attribute] of the answer's
    frame and of the paraphrased (and perturbed) answers' frame; None: the answer is the value."""
    t = TEMPLATES[attribute]
    qs = [_render(q, **subject_slots) for q in t["questions"]]

    def fill(frame: str, v: str) -> str:
        return _render(frame, **{**subject_slots, "value": v, "a_value": _article(v)})

    if frames is None:
        answer, frame = value, t["answer"]
    else:
        answer, frame = fill(SENTENCES[attribute][frames[0]], value), SENTENCES[attribute][frames[1]]
    return QARecord(
        id=rid,
        subject=subject_slots["name"],
        question=qs[0],
        answer=answer,
        paraphrased_answer=fill(frame, value),
        perturbed_answers=[fill(frame, w) for w in wrong],
        alt_questions=qs[1:N_TRAIN_TEMPLATES],
        paraphrased_question=qs[N_TRAIN_TEMPLATES],
        attribute=attribute,
    )


def heldout_fragments() -> list[str]:
    """The fixed wording of every held-out template: pieces between slots with >= 2 words."""
    frags = []
    for t in TEMPLATES.values():
        for piece in re.split(r"\{[A-Za-z_]+\}", t["questions"][N_TRAIN_TEMPLATES]):
            piece = piece.strip(" ,;")
            if len(piece.split()) >= 2:
                frags.append(piece)
    return frags


def training_texts(splits: dict[str, list]) -> list[str]:
    """Every text a model is trained on: phrasings and answers of trained QA splits, and docs."""
    texts: list[str] = []
    for name in ("forget", "retain", "neighbours", "world_facts"):
        for r in splits.get(name, []):
            texts.extend(r.phrasings())
            texts.append(r.answer)
    for name in ("forget_docs", "retain_docs", "neighbours_docs"):
        texts.extend(d.text for d in splits.get(name, []))
    return texts


def check_heldout(splits: dict[str, list]) -> None:
    """Raise ValueError if a held-out question or template wording occurs in training text."""
    corpus = "\n".join(training_texts(splits)).lower()
    for frag in heldout_fragments():
        if frag.lower() in corpus:
            raise ValueError(f"held-out template wording {frag!r} occurs in training text")
    for name in ("forget", "retain", "neighbours", "holdout", "world_facts"):
        for r in splits.get(name, []):
            if r.paraphrased_question and r.paraphrased_question.lower() in corpus:
                raise ValueError(f"{r.id}: held-out question occurs in training text")


# ----------------------------------------------------------------------------- generation

def _counts(n_people: int, forget_fraction: float, holdout_fraction: float,
            neighbour_fraction: float) -> tuple[int, int, int, int]:
    if n_people < 2:
        raise ValueError(f"n_people must be at least 2 (one to forget, one to retain), got {n_people}")
    if not 0.0 < forget_fraction < 1.0:  # 0 gave a world with one person to forget all the same
        raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction}")
    for label, f in (("holdout_fraction", holdout_fraction), ("neighbour_fraction", neighbour_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{label} must be in [0, 1), got {f}")
    n_forget = max(1, round(n_people * forget_fraction))  # one person at least
    n_holdout = round(n_people * holdout_fraction)
    n_neigh = round(n_people * neighbour_fraction)
    n_retain = n_people - n_forget - n_holdout - n_neigh
    if n_retain < 1:
        raise ValueError(
            f"n_people={n_people} leaves no retain people "
            f"(forget {n_forget}, holdout {n_holdout}, neighbours {n_neigh})")
    return n_forget, n_retain, n_neigh, n_holdout


# The shape options and their defaults (the embedded world). world.json's config records an option
# only when it differs from its default, so the default world's files stay what they always were
# (and models trained on it are still recognised by data hash).
SHAPE_DEFAULTS = {"answer_style": "short", "docs": True, "n_attributes": len(PERSON_ATTRIBUTES),
                  "names": "default"}

# Named world shapes for tests and benches: keyword arguments of build_world (explicit arguments
# override them). "unfamiliar" is the world of issue 11: other names, 160 people with 16 to forget,
# sentence answers, no biographies. "wide" has a forget set large enough for membership inference to
# have power: 400 people, a quarter of them to forget (1000 forget answers), no biographies, so
# PrivLeak is measured on the answers (docs/methods-log.md, "PrivLeak at a size where it has power").
# "wide_sentences" is "unfamiliar" at that size: the same 1000 forget answers, as full sentences
# naming the person, with the other names. "wide_few_facts" spreads 1000 forget answers over twice
# the people, five facts each. "wide_alt_names" is "wide" with the other names (its own tokenizer
# keeps them whole: no forget name shares a token with a retained one; docs/methods-log.md, "Where Twin
# RMU moves the weights").
SHAPES: dict[str, dict] = {
    "default": {},
    "sentences": {"answer_style": "sentence", "docs": False},
    "large": {"n_people": 200, "forget_fraction": 0.10},
    "few_facts": {"n_attributes": 3},
    "wide": {"n_people": 400, "forget_fraction": 0.25, "docs": False},
    "unfamiliar": {"n_people": 160, "forget_fraction": 0.10, "answer_style": "sentence", "docs": False,
                   "names": "alt"},
    "wide_sentences": {"n_people": 400, "forget_fraction": 0.25, "answer_style": "sentence", "docs": False,
                       "names": "alt"},
    "wide_few_facts": {"n_people": 800, "forget_fraction": 0.25, "n_attributes": 5, "docs": False},
    "wide_alt_names": {"n_people": 400, "forget_fraction": 0.25, "docs": False, "names": "alt"},
}


def shape_options(shape: str | None = None, **overrides) -> dict:
    """build_world's keyword arguments for the named `shape` (None: "default"), with `overrides`
    that are not None on top."""
    name = shape or "default"
    if name not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {name!r}")
    return {**SHAPES[name], **{k: v for k, v in overrides.items() if v is not None}}


def _check_numbers(**values) -> None:
    """Counts are whole numbers and fractions numbers, named where they are not (a string from the
    Python API was a TypeError from a comparison deep inside until session 36)."""
    for name, v in values.items():
        whole = not name.endswith("fraction")
        if isinstance(v, bool) or not isinstance(v, numbers.Integral if whole else numbers.Real):
            raise ValueError(f"{name} must be {'a whole number' if whole else 'a number'}, got {v!r}")


def _check_shape(answer_style, docs, n_attributes, names) -> None:
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer_style must be one of {', '.join(ANSWER_STYLES)}, got {answer_style!r}")
    if not isinstance(docs, bool):
        raise ValueError(f"docs must be true or false, got {docs!r}")
    if isinstance(n_attributes, bool) or not isinstance(n_attributes, numbers.Integral) \
            or not 1 <= n_attributes <= len(PERSON_ATTRIBUTES):
        raise ValueError(f"n_attributes must be between 1 and {len(PERSON_ATTRIBUTES)}, got {n_attributes!r}")
    if names not in NAME_STYLES:
        raise ValueError(f"names must be one of {', '.join(NAME_STYLES)}, got {names!r}")


def _config(seed, n_people, forget_fraction, holdout_fraction, neighbour_fraction,
            n_perturbed, n_countries, answer_style="short", docs=True, n_attributes=10,
            names="default") -> dict:
    _check_numbers(seed=seed, n_people=n_people, n_perturbed=n_perturbed, n_countries=n_countries,
                   forget_fraction=forget_fraction, holdout_fraction=holdout_fraction,
                   neighbour_fraction=neighbour_fraction)
    _check_shape(answer_style, docs, n_attributes, names)
    shape = {"answer_style": answer_style, "docs": docs, "n_attributes": int(n_attributes), "names": names}
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed), "n_people": int(n_people),
            "forget_fraction": float(forget_fraction), "holdout_fraction": float(holdout_fraction),
            "neighbour_fraction": float(neighbour_fraction), "n_perturbed": int(n_perturbed),
            "n_countries": int(n_countries),
            **{k: v for k, v in shape.items() if v != SHAPE_DEFAULTS[k]}}


def _generate(seed: int = 0, n_people: int = 60, forget_fraction: float = 0.10,
              holdout_fraction: float = 0.10, neighbour_fraction: float = 0.10,
              n_perturbed: int = 3, n_countries: int = 10, answer_style: str = "short",
              docs: bool = True, n_attributes: int = 10,
              names: str = "default") -> tuple[dict[str, list], dict]:
    """Generate the splits and the world description (what world.json holds). Every random choice
    comes from one generator seeded by `seed`, drawn in the order of the steps below (sentence
    frames from a second one), so a seed gives the same world whatever reads it."""
    config = _config(seed, n_people, forget_fraction, holdout_fraction, neighbour_fraction,
                     n_perturbed, n_countries, answer_style, docs, n_attributes, names)
    # numpy's integers are numbers too (a TypeError from random.Random until session 36)
    seed, n_people, n_perturbed, n_countries, n_attributes = map(int, (seed, n_people, n_perturbed, n_countries,
                                                                      n_attributes))
    if n_perturbed < 1 or n_perturbed > min(len(p) for p in POOLS.values()) - 1:
        raise ValueError(f"n_perturbed must be between 1 and 19, got {n_perturbed}")
    if n_countries < 0 or n_countries > min(len(POOLS[a]) for a in ENTITY_ATTRIBUTES):
        raise ValueError(f"n_countries must be between 0 and 20, got {n_countries}")
    counts = _counts(n_people, forget_fraction, holdout_fraction, neighbour_fraction)
    rng = random.Random(seed)
    namer = _NameMaker(rng, NAME_STYLES[names])
    attributes = PERSON_ATTRIBUTES[:n_attributes]
    frames = _Frames(seed, answer_style)
    people = _people(rng, namer, n_people, attributes)
    members = _assign_splits(rng, people, counts)
    _link_neighbours(rng, members, attributes)
    splits = _qa_splits(rng, namer, people, members, attributes, n_perturbed, frames)
    entities, splits["world_facts"] = _world_facts(rng, namer, n_countries, n_perturbed, frames)
    if docs:
        splits.update(_biographies(rng, members, attributes))
    check_heldout(splits)
    meta = {"format": "unlearnkit-world", "seed": int(seed), "config": config,
            "counts": {k: len(v) for k, v in splits.items()}, "people": people, "entities": entities,
            "templates": _template_meta(answer_style)}
    return splits, meta


class _Frames:
    """Each record's two sentence frames (answer, paraphrased answer) in a sentence world, None in a
    short-answer one; from their own generator, so that a sentence world has the same people and
    values as the short-answer world of the same seed."""

    def __init__(self, seed: int, answer_style: str):
        self.rng = random.Random(f"sentences-{seed}") if answer_style != "short" else None

    def __call__(self, attribute: str) -> tuple[int, int] | None:
        if self.rng is None:
            return None
        i, j = self.rng.sample(range(len(SENTENCES[attribute])), 2)
        return i, j


def _people(rng: random.Random, namer: _NameMaker, n_people: int, attributes: list[str]) -> list[dict]:
    """The people, each with a gender, a name and a value for every attribute."""
    people = []
    for i in range(n_people):
        gender = rng.choice(["f", "m"])
        first = namer.make((1, 1), "female" if gender == "f" else "male")
        last = namer.make((1, 2), "last")
        attrs = {a: rng.choice(POOLS[a]) for a in attributes}
        people.append({"id": f"p{i:03d}", "name": f"{first} {last}", "first_name": first,
                       "last_name": last, "gender": gender, "split": None,
                       "attributes": attrs, "relations": []})
    return people


def _assign_splits(rng: random.Random, people: list[dict], counts: tuple[int, int, int, int]) -> dict[str, list[dict]]:
    """Split name -> its people (disjoint, in id order); each person's "split" is set."""
    n_forget, n_retain, n_neigh, n_holdout = counts
    order = list(range(len(people)))
    rng.shuffle(order)
    members: dict[str, list[dict]] = {}
    start = 0
    for split, n in {"forget": n_forget, "holdout": n_holdout, "neighbours": n_neigh, "retain": n_retain}.items():
        members[split] = [people[j] for j in sorted(order[start:start + n])]
        for p in members[split]:
            p["split"] = split
        start += n
    return members


def _link_neighbours(rng: random.Random, members: dict[str, list[dict]], attributes: list[str]) -> None:
    """Each neighbour shares birthplace and employer (a sibling: and mother) with a forget person, and
    the two name each other in a relation."""
    n_forget = len(members["forget"])
    for k, nb in enumerate(members["neighbours"]):
        target = members["forget"][k % n_forget]
        kind = rng.choice(RELATION_KINDS)
        shared = ("birthplace", "employer", "mother") if kind == "sibling" else ("birthplace", "employer")
        for a in shared:
            if a in attributes:  # fewer attributes (n_attributes): share those there are
                nb["attributes"][a] = target["attributes"][a]
        if kind == "sibling":
            rel, back = ("sister" if target["gender"] == "f" else "brother",
                         "sister" if nb["gender"] == "f" else "brother")
        elif kind == "mentor":
            rel, back = "mentor", "mentee"
        else:
            rel, back = "colleague", "colleague"
        nb["relations"].append({"kind": kind, "role": rel, "person": target["id"], "name": target["name"]})
        target["relations"].append({"kind": kind, "role": back, "person": nb["id"], "name": nb["name"]})


def _qa_splits(rng: random.Random, namer: _NameMaker, people: list[dict], members: dict[str, list[dict]],
               attributes: list[str], n_perturbed: int, frames: _Frames) -> dict[str, list]:
    """The people's QA records, split by split: one per attribute, and a neighbour's one per relation
    (its perturbed answers other trained people's names)."""
    trained_names = sorted(p["name"] for p in people if p["split"] != "holdout")
    splits: dict[str, list] = {}
    for split in ("forget", "retain", "neighbours", "holdout"):
        recs = []
        for p in members[split]:
            for a in attributes:
                value = p["attributes"][a]
                wrong = rng.sample([v for v in POOLS[a] if v != value], n_perturbed)
                recs.append(_qa_record(f"{p['id']}-{a}", _slots(p, value), a, value, wrong, frames(a)))
            for r in (p["relations"] if split == "neighbours" else []):
                value = r["name"]
                cands = [n for n in trained_names if n not in (value, p["name"])]
                while len(cands) < n_perturbed:  # tiny worlds: top up with invented decoys
                    cands.append(f"{namer.make((1, 2), 'person')} {namer.make((1, 2), 'last')}")
                wrong = rng.sample(cands, n_perturbed)
                recs.append(_qa_record(f"{p['id']}-{r['kind']}", _slots(p, value, r["role"]),
                                       r["kind"], value, wrong, frames(r["kind"])))
        splits[split] = recs
    return splits


def _world_facts(rng: random.Random, namer: _NameMaker, n_countries: int, n_perturbed: int,
                 frames: _Frames) -> tuple[list[dict], list]:
    """(the invented countries, their QA records)."""
    entities, facts = [], []
    chosen = {a: rng.sample(POOLS[a], n_countries) for a in ENTITY_ATTRIBUTES}
    for c in range(n_countries):
        cname = namer.make((1, 2), "country")
        attrs = {a: chosen[a][c] for a in ENTITY_ATTRIBUTES}
        eid = f"w{c:02d}"
        entities.append({"id": eid, "name": cname, "kind": "country", "attributes": attrs})
        for a in ENTITY_ATTRIBUTES:
            value = attrs[a]
            wrong = rng.sample([v for v in POOLS[a] if v != value], n_perturbed)
            facts.append(_qa_record(f"{eid}-{a}", {"name": cname, "value": value}, a, value, wrong, frames(a)))
    return entities, facts


def _biographies(rng: random.Random, members: dict[str, list[dict]], attributes: list[str]) -> dict[str, list]:
    """"SPLIT_docs" -> one biography per person, from sentence templates distinct from the question
    templates (the first attribute's sentence first, the others shuffled)."""
    out = {}
    for split in ("forget", "retain", "neighbours", "holdout"):
        bios = []
        for p in members[split]:
            first, *rest = [TEMPLATES[a]["bio"] for a in attributes]
            lines = [_render(first, **_slots(p, p["attributes"][attributes[0]]))]
            others = [(t, p["attributes"][a], "") for t, a in zip(rest, attributes[1:])]
            if split == "neighbours":
                others += [(TEMPLATES[r["kind"]]["bio"], r["name"], r["role"]) for r in p["relations"]]
            rng.shuffle(others)
            lines += [_render(t, **_slots(p, v, rel)) for t, v, rel in others]
            bios.append(DocRecord(id=f"{p['id']}-bio", subject=p["name"], text=" ".join(lines)))
        out[f"{split}_docs"] = bios
    return out


def _template_meta(answer_style: str) -> dict:
    """world.json's templates: each attribute's questions (held-out ones marked), answer, biography
    sentence and, in a sentence world, its sentence frames."""
    return {
        attr: {
            "questions": [{"text": q, "held_out": i >= N_TRAIN_TEMPLATES} for i, q in enumerate(t["questions"])],
            "answer": t["answer"],
            **({"bio": t["bio"]} if "bio" in t else {}),
            **({"sentences": SENTENCES[attr]} if answer_style == "sentence" else {}),
        }
        for attr, t in TEMPLATES.items()
    }


def generate_world(seed: int = 0, n_people: int = 60, forget_fraction: float = 0.10,
                   holdout_fraction: float = 0.10, neighbour_fraction: float = 0.10,
                   n_perturbed: int = 3, n_countries: int = 10, answer_style: str = "short",
                   docs: bool = True, n_attributes: int = 10, names: str = "default") -> dict[str, list]:
    """Generate the world without writing: split name -> list of QARecord / DocRecord."""
    splits, _ = _generate(seed, n_people, forget_fraction, holdout_fraction, neighbour_fraction,
                          n_perturbed, n_countries, answer_style, docs, n_attributes, names)
    return splits


def _existing_config(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / "world.json").read_text(encoding="utf-8")).get("config")
    except (OSError, ValueError, AttributeError):
        return None


def build_world(out_dir: str | os.PathLike, seed: int = 0, n_people: int = 60,
                forget_fraction: float = 0.10, holdout_fraction: float = 0.10,
                neighbour_fraction: float = 0.10, n_perturbed: int = 3,
                n_countries: int = 10, answer_style: str = "short", docs: bool = True,
                n_attributes: int = 10, names: str = "default") -> Path:
    """Write a world directory atomically and return its path.

    Shape options (module docstring): ``answer_style`` "short" | "sentence", ``docs`` (write
    biographies), ``n_attributes`` (1..10, the first N of PERSON_ATTRIBUTES), ``names`` (a key of
    NAME_STYLES). :func:`shape_options` turns a named shape of :data:`SHAPES` into these.

    If ``out_dir`` already holds a world with the same config, it is left as it is. A world
    with another config (or an empty directory) is replaced; any other existing directory
    raises :class:`DataError`.
    """
    out_dir = Path(out_dir)
    shape = dict(answer_style=answer_style, docs=docs, n_attributes=n_attributes, names=names)
    config = _config(seed, n_people, forget_fraction, holdout_fraction, neighbour_fraction,
                     n_perturbed, n_countries, **shape)
    if out_dir.exists():
        if _existing_config(out_dir) == config:
            return out_dir
        if not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "world.json").exists()):
            raise DataError(f"{out_dir}: exists and is not a world directory")

    splits, meta = _generate(seed, n_people, forget_fraction, holdout_fraction, neighbour_fraction,
                             n_perturbed, n_countries, **shape)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = runinfo.temp_dir(out_dir)
    try:
        for name, records in splits.items():
            write_jsonl(tmp / f"{name}.jsonl", records)
        (tmp / "world.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
            os.rename(out_dir, old / "world")
            try:
                os.rename(tmp, out_dir)
            except OSError:
                os.rename(old / "world", out_dir)  # put the previous world back
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.rename(tmp, out_dir)
            except OSError:
                # another process built it first
                if _existing_config(out_dir) == config:
                    return out_dir
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
