"""A guard (index + detector + settings) and `GuardedLM`, a model wrapped in it.

`GuardedLM` has the two methods of `unlearnkit.scoring.LM`, `score` and `generate`, so the
evaluation suite and the attacks take it wherever they take a model.

Generation: each prompt is detected; misses go straight to the model; hits follow their target's
action (its own `action`, else the guard's `default_action`): the refusal text, decoding with the
target's answers forbidden, the prompt with a stand-in name for the target's, or the
in-context-unlearning prompt.

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

import json
import os
import threading
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from .actions import (REFUSAL, ForbidTokensProcessor, forbidden_strings, forbidden_token_sequences, icu_prompt,
                      pseudonymise, refusal, restore, stand_in)
from .detect import Calibration, Detection, Detector, calibrate
from .index import ACTIONS, Action, Embedder, Target, TargetStore, atomic_write_bytes


class GuardSettings(BaseModel):
    """Stored as `guard.json` in the guard directory."""
    model_config = ConfigDict(extra="ignore")
    threshold: float = Field(default=0.8, ge=0, le=1.5)
    fuzzy_cutoff: float = Field(default=80.0, ge=50, le=100)
    default_action: Action = "refuse"
    refusal: str = REFUSAL
    icu_examples: int = Field(default=4, ge=1, le=32)
    forbidden_logprob: float = -20.0
    calibration: dict | None = None


class Guard:
    """Targets, the detector and the settings, optionally persisted in a guard directory."""

    def __init__(self, directory: str | os.PathLike | None = None, settings: GuardSettings | None = None,
                 embedder: Embedder | None = None):
        self.dir = Path(directory) if directory is not None else None
        self.store = TargetStore(self.dir, embedder=embedder)
        if settings is None and self.dir is not None and (self.dir / "guard.json").exists():
            settings = GuardSettings.model_validate_json((self.dir / "guard.json").read_text())
        self.settings = settings or GuardSettings()
        self.detector = Detector(self.store, threshold=self.settings.threshold,
                                 fuzzy_cutoff=self.settings.fuzzy_cutoff)
        self._stand_ins: dict[tuple[str, int], list[str]] = {}

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
        return self.detector.detect(prompts)

    def stand_in(self, target: Target) -> list[str]:
        """The target's stand-in name for ``pseudonymise`` (never a name token of any target)."""
        self.detector._build()
        key = (target.id, self.detector._built)
        if key not in self._stand_ins:
            self._stand_ins[key] = stand_in(target, avoid=set(self.detector._names.vocab))
        return self._stand_ins[key]

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

    def plan(self, prompts: list[str], detections: list[Detection] | None = None) -> list[tuple[str, Target | None, str, dict]]:
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
    def generate(self, prompts: list[str], max_new_tokens: int = 32, batch_size: int | None = None,
                 logits_processor=None, detections: list[Detection] | None = None) -> list[str]:
        from transformers import LogitsProcessorList

        plan = self.plan(prompts, detections)
        out: list[str | None] = [None] * len(prompts)
        groups: dict[tuple, list[int]] = {}
        for i, (mode, t, _, _) in enumerate(plan):
            if mode == "refuse":
                out[i] = refusal(t, self.guard.settings.refusal)
            else:
                groups.setdefault((mode, t.id if mode == "forbid" else None), []).append(i)
        for (mode, _), idx in groups.items():
            lp = list(logits_processor) if logits_processor is not None else []
            if mode == "forbid":
                lp.append(self._proc(plan[idx[0]][1]))
            with self._lock:
                gen = self.lm.generate([plan[i][2] for i in idx], max_new_tokens=max_new_tokens, batch_size=batch_size,
                                       logits_processor=LogitsProcessorList(lp) if lp else None)
            for i, g in zip(idx, gen):
                out[i] = restore(g, plan[i][3])
        return out

    # -- scoring -----------------------------------------------------------------------------
    def score(self, prompts: list[str], answers: list[str], stats: bool = False, batch_size: int | None = None):
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        plan = self.plan(prompts)
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


def guarded_lm(model, guard_dir: str | os.PathLike) -> GuardedLM:
    """`GuardedLM` for a model path (or an object with score/generate, or an `LM`) behind the guard
    stored in `guard_dir`: what `unlearn eval --guard` and `unlearn attack --guard` evaluate."""
    if not Path(guard_dir).is_dir():
        raise FileNotFoundError(f"{guard_dir}: guard directory not found")
    from ..models.load import load_model
    from ..scoring import LM, is_lm

    return GuardedLM(model if is_lm(model) else LM(*load_model(model)), Guard(guard_dir))


def open_guard(directory: str | os.PathLike | None = None, **kw) -> Guard:
    """Open (or create) the guard stored in `directory`; in memory when None."""
    return Guard(directory, **kw)


__all__ = ["Guard", "GuardSettings", "GuardedLM", "guarded_lm", "masked_score", "open_guard", "ACTIONS"]
