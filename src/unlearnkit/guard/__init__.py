"""Inference-time unlearning: keep a model from revealing forget targets without touching weights.

    from unlearnkit.guard import Guard, GuardedLM, targets_from_world
    guard = Guard("runs/guard")                      # persists targets in that directory
    guard.add({"subject": "Alaric Thornwood", "facts": ["Alaric Thornwood was born in Thornwick."]})
    guard.calibrate(benign_prompts, false_refusal=0.01)
    glm = GuardedLM(LM(model, tok), guard)           # has LM's score() and generate()

See docs/guard.md. The names below are loaded on first use (PEP 562): putting a person behind the
guard (`TargetStore`, `Target`) must not wait for torch and transformers, which only the model-side
parts (`GuardedLM`, the token-forbidding processor) need.
"""
from importlib import import_module

_HOME = {  # name -> the module that defines it
    "REFUSAL": "actions", "ForbidTokensProcessor": "actions", "forbidden_strings": "actions", "icu_prompt": "actions",
    "Calibration": "detect", "Detection": "detect", "Detector": "detect", "calibrate": "detect",
    "Guard": "guarded", "GuardedLM": "guarded", "GuardSettings": "guarded", "guarded_lm": "guarded",
    "masked_score": "guarded", "open_guard": "guarded",
    "get_embedder": "embedder", "targets_from_world": "from_world", "TargetStore": "store",
    "ACTIONS": "targets", "QAPair": "targets", "Target": "targets",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
