"""Inference-time unlearning: keep a model from revealing forget targets without touching weights.

    from unlearnkit.guard import Guard, GuardedLM, targets_from_world
    guard = Guard("runs/guard")                      # persists targets in that directory
    guard.add({"subject": "Alaric Thornwood", "facts": ["Alaric Thornwood was born in Thornwick."]})
    guard.calibrate(benign_prompts, false_refusal=0.01)
    glm = GuardedLM(LM(model, tok), guard)           # has LM's score() and generate()

See docs/guard.md.
"""
from .actions import REFUSAL, ForbidTokensProcessor, forbidden_strings, icu_prompt
from .detect import Calibration, Detection, Detector, calibrate
from .guarded import Guard, GuardedLM, GuardSettings, guarded_lm, masked_score, open_guard
from .embedder import get_embedder
from .from_world import targets_from_world
from .store import TargetStore
from .targets import ACTIONS, QAPair, Target

__all__ = [
    "ACTIONS", "REFUSAL", "Calibration", "Detection", "Detector", "ForbidTokensProcessor", "Guard",
    "GuardSettings", "GuardedLM", "QAPair", "Target", "TargetStore", "calibrate", "forbidden_strings",
    "get_embedder", "guarded_lm", "icu_prompt", "masked_score", "open_guard", "targets_from_world",
]
