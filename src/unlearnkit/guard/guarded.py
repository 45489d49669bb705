"""A guard (index + detector + settings) and `GuardedLM`, a model wrapped in it.

`GuardedLM` has the two methods of `unlearnkit.scoring.LM`, `score` and `generate`, so the
evaluation suite and the attacks take it wherever they take a model.

Generation (`respond`, and `generate` which returns its texts): each prompt is detected; misses go
straight to the model; hits follow their target's action (its own `action`, else the guard's
`default_action`): the refusal text, decoding with the target's answers forbidden, the prompt with
a stand-in name for the target's, or the in-context-unlearning prompt (the last two decode again
with the target's answers forbidden when the answer states one of them). Then the output check
(`output.find_leak`) reads prompt + answer: if the answer names another target, or states a
target's value in its context, that target's action applies to the answer: `refuse` returns the
refusal; `forbid` (and `icu`, which has no meaning for a continuation) decodes again with its
answers forbidden; `pseudonymise` keeps the answer up to the end of the name, decodes the rest
from the text with the name replaced by the stand-in, and puts the name back (or, when a value came before the name,
decodes the whole answer again as under `forbid`). An answer that names the target but states none
of its values is kept under all three (it already is what they would give). A second target in
one answer, or a leak left after that, gets the refusal.

Scoring (the definition likelihood-based metrics and attacks see): `score` returns the answer's
token log-probs under the distribution the guarded system decodes its answer from.
  * miss: the model's.
  * icu: the model's, given the in-context-unlearning prompt.
  * pseudonymise: the model's, given the prompt with the stand-in name (as forbid when the prompt
    does not name the target).
  * forbid: the model's, with the target's forbidden tokens masked at every position (the same
    `ForbidTokensProcessor` as in decoding, applied under teacher forcing) and renormalised. A
    forbidden answer token has probability 0; it is reported as `forbidden_logprob` (default -20
    nats) so losses, truth ratios and attack scores stay finite.
  * refuse: a refusal has no likelihood of its own to offer (it is a point mass on one sentence),
    so it is scored like forbid: the answer as the model would have produced it with the target's
    facts unreachable. This is the guard's answer distribution had it answered, and the honest
    one for an attacker with log-prob access to the guarded system.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .actions import (REFUSAL, ForbidTokensProcessor, forbidden_strings, forbidden_token_sequences, icu_prompt,
                      pseudonymise, refusal, restore, stand_in)
from .detect import Calibration, Detection, Detector, calibrate
from .embedder import Embedder
from .files import atomic_write_bytes
from .store import TargetStore
from .targets import ACTIONS, Action, Target
from .output import ValueIndex, find_leak, states_value, values


class GuardSettings(BaseModel):
    """Stored as `guard.json` in the guard directory. An unknown name is an error, in code and in the
    file: a typo (`defualt_action`) was dropped without a word, leaving the default in force. Every
    guard.json written so far holds these fields only, so none stops loading."""
    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(default=0.8, ge=0, le=1.5)
    fuzzy_cutoff: float = Field(default=80.0, ge=50, le=100)
    default_action: Action = "refuse"
    refusal: str = REFUSAL
    icu_examples: int = Field(default=4, ge=1, le=32)
    forbidden_logprob: float = -20.0
    calibration: dict | None = None

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as e:  # one line naming the setting, not pydantic's several
            raise ValueError(settings_error(e)) from None


def settings_error(e: ValidationError) -> str:
    """The first thing wrong with guard settings, in one line: broken JSON, or which setting."""
    from ..methods.registry import describe

    err = e.errors()[0]
    if err["type"] == "json_invalid":
        return f"malformed JSON ({err['msg']})"
    if err["type"] == "value_error" and not err["loc"]:  # from the file: `__init__`'s line, wrapped by pydantic
        return str(err["ctx"]["error"])
    return describe("guard settings", GuardSettings, e)


class Guard:
    """Targets, the detector and the settings, optionally persisted in a guard directory."""

    def __init__(self, directory: str | os.PathLike | None = None, settings: GuardSettings | None = None,
                 embedder: Embedder | None = None):
        self.dir = Path(directory) if directory is not None else None
        self.store = TargetStore(self.dir, embedder=embedder)
        self._settings_stamp = self._stamp()
        self.settings_damage: str | None = None  # why guard.json could not be read at the last refresh
        if settings is None and self._settings_stamp is not None:
            settings = self._read_settings()
        self.settings = settings or GuardSettings()
        self.detector = Detector(self.store, threshold=self.settings.threshold,
                                 fuzzy_cutoff=self.settings.fuzzy_cutoff)
        self._stand_ins: dict[tuple[str, int], list[str]] = {}
        self._values: tuple[int, ValueIndex] | None = None

    # -- guard.json, which `guard calibrate` in another process may rewrite ------------------------
    def _stamp(self):
        if self.dir is None:
            return None
        try:
            st = (self.dir / "guard.json").stat()
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return None

    def _read_settings(self) -> GuardSettings:
        path = self.dir / "guard.json"
        try:
            return GuardSettings.model_validate_json(path.read_text(encoding="utf-8"))
        except ValidationError as e:
            raise ValueError(f"{path}: invalid guard settings ({settings_error(e)})") from None
        except ValueError as e:  # not UTF-8
            raise ValueError(f"{path}: invalid guard settings ({str(e).splitlines()[0]})") from None

    def refresh(self) -> bool:
        """Take up changes another process made to the guard directory (targets, and the settings
        a `guard calibrate` wrote); True if anything changed. A damaged file is not taken up: the
        last good state stays in force (see `damage`)."""
        changed = self.store.refresh()
        stamp = self._stamp()
        if stamp != self._settings_stamp and stamp is not None:
            try:
                self.settings = self._read_settings()
            except ValueError as e:
                self.settings_damage = str(e)
            else:
                self.settings_damage = None
                self.detector.threshold = self.settings.threshold
                self.detector.fuzzy_cutoff = self.settings.fuzzy_cutoff
                changed = True
            self._settings_stamp = stamp
        return changed

    @property
    def damage(self) -> str | None:
        """Why the guard directory could not be read when last refreshed (None: it could)."""
        return self.store.damage or self.settings_damage

    # -- targets ---------------------------------------------------------------------------
    def add(self, target: Target | dict) -> Target:
        return self.store.add(target)

    def add_many(self, targets) -> list[Target]:
        return self.store.add_many(targets)

    def remove(self, target_id: str) -> Target:
        return self.store.remove(target_id)

    def list(self) -> list[Target]:
        self.store.refresh()
        return self.store.list()

    # -- settings ------------------------------------------------------------------------------
    def save_settings(self) -> None:
        self.settings.threshold = self.detector.threshold
        if self.dir is not None:
            atomic_write_bytes(self.dir / "guard.json", self.settings.model_dump_json(indent=2).encode())
            self._settings_stamp = self._stamp()

    def calibrate(self, benign: list[str] | dict[str, list[str]], false_refusal: float = 0.01,
                  positives: list[str] | None = None) -> Calibration:
        """Calibrate the detector's threshold (see `detect.calibrate`) and save it."""
        cal = calibrate(self.detector, benign, false_refusal, positives)
        self.settings.calibration = {k: v for k, v in cal.__dict__.items()}
        self.save_settings()
        return cal

    def action_for(self, target: Target) -> str:
        return target.action or self.settings.default_action

    def detect(self, prompts: list[str]) -> list[Detection]:
        self.refresh()
        return self.detector.detect(prompts)

    def stand_in(self, target: Target) -> list[str]:
        """The target's stand-in name for ``pseudonymise`` (never a name token of any target)."""
        key = (target.id, self.store.version)
        if key not in self._stand_ins:
            self._stand_ins[key] = stand_in(target, avoid=self.detector.name_tokens())
        return self._stand_ins[key]

    def value_index(self) -> ValueIndex:
        """The targets' forgotten values, indexed for the output check (rebuilt when they change)."""
        if self._values is None or self._values[0] != self.store.version:
            self._values = (self.store.version, ValueIndex(self.store.targets))
        return self._values[1]

    def processor_for(self, target: Target, tokenizer) -> ForbidTokensProcessor:
        return ForbidTokensProcessor(forbidden_token_sequences(tokenizer, forbidden_strings(target)))


class GuardedLM:
    """`LM`-compatible wrapper: detection and an action in front of an unchanged model."""

    def __init__(self, lm, guard: Guard):
        self.lm, self.guard = lm, guard
        self.model, self.tokenizer = getattr(lm, "model", None), getattr(lm, "tokenizer", None)
        self._procs: dict[tuple[str, float], ForbidTokensProcessor] = {}
        self._lock = threading.RLock()

    def _proc(self, t: Target) -> ForbidTokensProcessor:
        key = (t.id, t.created_at)
        if key not in self._procs:
            self._procs[key] = self.guard.processor_for(t, self.tokenizer)
        return self._procs[key]

    def detect(self, prompts: list[str]) -> list[Detection]:
        return self.guard.detect(prompts)

    def route(self, prompts: list[str], detections: list[Detection] | None = None) -> list[tuple[str, Target | None]]:
        """(action, target) per prompt; action is "pass" for a miss."""
        dets = detections if detections is not None else self.detect(prompts)
        return [(self.guard.action_for(d.target), d.target) if d.hit else ("pass", None) for d in dets]

    def dispatch(self, prompts: list[str], detections: list[Detection] | None = None) -> list[tuple[str, Target | None, str, dict]]:
        """What the guarded system does with each prompt: (mode, target, prompt for the model, stand-in
        words to restore in the answer). Modes: "plain" (the model on that prompt: misses, icu and
        pseudonymised prompts), "forbid" (the target's answers masked), "refuse"."""
        out = []
        for p, (action, t) in zip(prompts, self.route(prompts, detections)):
            if action == "pass":
                out.append(("plain", None, p, {}))
            elif action == "icu":
                out.append(("plain", t, icu_prompt(t, p, self.guard.settings.icu_examples), {}))
            elif action == "pseudonymise":
                spans = self.guard.detector.name_spans(p, t)
                if spans:
                    out.append(("plain", t, *pseudonymise(p, spans, self.guard.stand_in(t))))
                else:  # a hit without the name (a description, a document): nothing to substitute
                    out.append(("forbid", t, p, {}))
            else:
                out.append((action, t, p, {}))
        return out

    # -- generation --------------------------------------------------------------------------
    def respond(self, prompts: list[str], max_new_tokens: int = 32, batch_size: int | None = None,
                logits_processor=None, detections: list[Detection] | None = None,
                contexts: list[str] | None = None) -> list["Reply"]:
        """The guarded answer to each prompt, with what the guard did (see the module docstring).
        `detections`: the input-side verdicts when the caller made them (chat: over every message);
        `contexts`: earlier text per prompt, for the output check's weak references."""
        plan = self.dispatch(prompts, detections)
        replies: list[Reply | None] = [None] * len(prompts)
        groups: dict[tuple, list[int]] = {}
        for i, (mode, t, _, _) in enumerate(plan):
            if mode == "refuse":
                replies[i] = Reply(refusal(t, self.guard.settings.refusal), "refuse", t, "input")
            else:
                groups.setdefault((mode, t.id if mode == "forbid" else None), []).append(i)
        for (mode, _), idx in groups.items():
            t = plan[idx[0]][1]
            gen = self._generate([plan[i][2] for i in idx], max_new_tokens, batch_size, logits_processor,
                                 t if mode == "forbid" else None)
            for i, g in zip(idx, gen):
                t = plan[i][1]
                replies[i] = Reply(restore(g, plan[i][3]), self.guard.action_for(t) if t else "pass", t,
                                   "input" if t else None)
        for i, r in enumerate(replies):
            # pseudonymise and icu leave the facts reachable: a model asked about a stand-in still
            # favours answers it memorised. Stating the target's value anyway: decode again with the
            # target's answers forbidden, on the same prompt.
            if r.stage == "input" and r.action in ("pseudonymise", "icu") and states_value(r.target, r.text):
                g = self._generate([plan[i][2]], max_new_tokens, batch_size, logits_processor, r.target)[0]
                replies[i] = Reply(restore(g, plan[i][3]), r.action, r.target, "input")
        for i, r in enumerate(replies):
            if r.stage != "input" or r.action != "refuse":
                ctx = contexts[i] if contexts is not None else ""
                replies[i] = self._check_output(prompts[i], r, plan[i], max_new_tokens, logits_processor, ctx)
        return replies

    def generate(self, prompts: list[str], max_new_tokens: int = 32, batch_size: int | None = None,
                 logits_processor=None, detections: list[Detection] | None = None) -> list[str]:
        """The guarded answers' texts (`respond` without the bookkeeping): what evaluation sees."""
        return [r.text for r in self.respond(prompts, max_new_tokens, batch_size, logits_processor, detections)]

    def _generate(self, prompts, max_new_tokens, batch_size, logits_processor, forbid: Target | None = None):
        from transformers import LogitsProcessorList

        lp = list(logits_processor) if logits_processor is not None else []
        if forbid is not None:
            lp.append(self._proc(forbid))
        # no lock: greedy decoding only reads the weights, so requests decode side by side
        return self.lm.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                logits_processor=LogitsProcessorList(lp) if lp else None)

    def _check_output(self, prompt: str, reply: "Reply", plan_row, max_new_tokens, logits_processor,
                      context: str) -> "Reply":
        """The output check on one answer, and the action it calls for (module docstring)."""
        handled = {reply.target.id} if reply.target is not None else set()
        leak = find_leak(self.guard.detector, prompt, reply.text, handled, context, self.guard.value_index())
        if leak is None:
            return reply
        t, action = leak.target, self.guard.action_for(leak.target)
        refused = Reply(refusal(t, self.guard.settings.refusal), "refuse", t, "output")
        if action == "refuse":
            return refused
        if leak.named and values(t) and not states_value(t, reply.text):
            # forbid, icu and pseudonymise keep the name, and nothing else in the answer is the
            # target's: it already is what the action would give (a neighbour's "Who is N's sister?")
            return reply
        if handled:  # a second target in one answer: nothing finer is safe
            return refused
        if action == "pseudonymise" and leak.named and not states_value(t, reply.text[:leak.cut]):
            combined, start = leak.combined, leak.prompt_len
            end = start + leak.cut
            head = combined[:end] if leak.cut else prompt
            spans = [sp for sp in leak.spans if sp[1] <= len(head)]
            fake, mapping = pseudonymise(head, spans, self.guard.stand_in(t))
            cont = restore(self._generate([fake], max_new_tokens, None, logits_processor)[0], mapping)
            if states_value(t, cont):  # as on the input side: decode again with its answers forbidden
                cont = restore(self._generate([fake], max_new_tokens, None, logits_processor, t)[0], mapping)
            kept = reply.text[:leak.cut]
            sep = " " if kept and cont[:1].isalnum() and kept[-1:].isalnum() else ""
            text = kept + sep + cont if leak.cut else cont
            new = Reply(text, "pseudonymise", t, "output")
        else:  # forbid, icu, or a value in a weak context: decode again with the answers forbidden
            new = Reply(self._generate([plan_row[2]], max_new_tokens, None, logits_processor, t)[0], "forbid", t, "output")
        again = find_leak(self.guard.detector, prompt, new.text, {t.id}, context, self.guard.value_index())
        if again is not None:
            return refused
        return new

    # -- scoring -----------------------------------------------------------------------------
    def score(self, prompts: list[str], answers: list[str], stats: bool = False, batch_size: int | None = None):
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        plan = self.dispatch(prompts)
        out = [None] * len(prompts)
        plain = [i for i, (mode, *_) in enumerate(plan) if mode == "plain"]
        if plain:
            with self._lock:
                res = self.lm.score([plan[i][2] for i in plain], [answers[i] for i in plain], stats=stats,
                                    batch_size=batch_size)
            for i, r in zip(plain, res):
                out[i] = r
        masked: dict[str, list[int]] = {}
        for i, (mode, t, _, _) in enumerate(plan):
            if mode in ("forbid", "refuse"):
                masked.setdefault(t.id, []).append(i)
        for _, idx in masked.items():
            proc = self._proc(plan[idx[0]][1])
            with self._lock:
                res = masked_score(self.lm, [prompts[i] for i in idx], [answers[i] for i in idx], proc,
                                   stats=stats, floor=self.guard.settings.forbidden_logprob)
            for i, r in zip(idx, res):
                out[i] = r
        return out


@dataclass
class Reply:
    """A guarded answer: its text, the action taken ("pass" when none), the target it was taken
    for, and where the hit was found: "input" (the prompt), "output" (the model's text) or None."""
    text: str
    action: str
    target: Target | None = None
    stage: str | None = None


@torch.no_grad()
def masked_score(lm, prompts: list[str], answers: list[str], proc: ForbidTokensProcessor,
                 stats: bool = False, floor: float = -20.0):
    """Teacher-forced answer log-probs with `proc`'s banned tokens masked at each position (same
    encoding as `LM.score`: `[bos] + prompt + " " + answer + [eos]`)."""
    from ..data.batching import collate, encode_pairs
    from ..data.templates import RAW
    from ..scoring import SampleScore, backbone_and_head

    tok, model = lm.tokenizer, lm.model
    enc = encode_pairs(tok, prompts, answers, getattr(lm, "max_length", None), getattr(lm, "template", RAW))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    decoder, head = backbone_and_head(model)
    out = []
    for e in enc:  # one row at a time: the guarded path is a few prompts, and no padding to mask
        b = collate([e], tok.pad_token_id)
        ids = b["input_ids"].to(device)
        hidden = decoder(input_ids=ids, attention_mask=b["attention_mask"].to(device)).last_hidden_state[0]
        seq = e.input_ids
        positions = range(e.n_prompt - 1, len(seq) - 1)  # position p predicts seq[p + 1]
        logits = head(hidden[list(positions)]).float()
        lps, hits, mus, sigmas = [], [], [], []
        for row, p in enumerate(positions):
            lg = logits[row].clone()
            banned = proc.banned(seq[:p + 1])
            if banned:
                lg[sorted(banned)] = -float("inf")
            logp = torch.log_softmax(lg, -1)
            y = seq[p + 1]
            v = float(logp[y])
            lps.append(v if np.isfinite(v) else floor)
            hits.append(bool(lg.argmax() == y))
            if stats:
                pr = logp.exp()
                lfin = torch.where(torch.isfinite(logp), logp, torch.zeros_like(logp))
                mu = (pr * lfin).sum()
                var = (pr * lfin.square()).sum() - mu.square()
                mus.append(float(mu))
                sigmas.append(float(var.clamp_min(0).sqrt()))
        out.append(SampleScore(np.array(lps, np.float64), np.array(hits, bool),
                               np.array(mus, np.float64) if stats else None,
                               np.array(sigmas, np.float64) if stats else None,
                               eos=seq[-1] == tok.eos_token_id))
    model.train(was_training)
    return out


def guarded_lm(model, guard_dir: str | os.PathLike, template=None) -> GuardedLM:
    """`GuardedLM` for a model path (or an object with score/generate, or an `LM`) behind the guard
    stored in `guard_dir`: what `unlearn eval --guard` and `unlearn attack --guard` evaluate. A model
    loaded here writes its prompts in `template`'s format (data/templates.py)."""
    if not Path(guard_dir).is_dir():
        raise FileNotFoundError(f"{guard_dir}: guard directory not found")
    from ..data.templates import parse_template
    from ..models.load import load_model
    from ..scoring import LM, is_lm

    lm = model if is_lm(model) else LM(*load_model(model), template=parse_template(template))
    return GuardedLM(lm, Guard(guard_dir))


def open_guard(directory: str | os.PathLike | None = None, **kw) -> Guard:
    """Open (or create) the guard stored in `directory`; in memory when None."""
    return Guard(directory, **kw)


__all__ = ["Guard", "GuardSettings", "GuardedLM", "Reply", "guarded_lm", "masked_score", "open_guard", "ACTIONS"]
