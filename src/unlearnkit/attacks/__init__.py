"""Attacks that try to bring forgotten knowledge back, and how much they recover.

    from unlearnkit.attacks import run_attack
    res = run_attack("relearn", "runs/unlearned/model", "runs/w", subject="runs/subject", oracle="runs/oracle")
    res["recovery"], res["oracle_recovery"]

Every attack is a *plan*: the forget records it is measured on (for relearn and incontext, the part
of the forget set the attack does not touch) and one or more *variants*. A variant changes the
prompts (probes, facts in the context) or a private copy of the weights (relearning, quantization).
The model, the subject and the oracle are each measured plainly (bare questions, own weights) and
under every variant, on the same records, with `recovery.forget_metrics`; `recovery.recovery` turns
those numbers into the recovery score (its docstring has the definition). The headline `recovery`
is the strongest variant's (the defender's worst case).

Inputs: `model`, `subject`, `oracle` are checkpoint paths, `scoring.LM` objects, (model, tokenizer)
pairs or Hugging Face models whose tokenizer loads from `name_or_path`. Weight attacks (relearn,
quantize) need weights; prompt attacks (probes, incontext) work with anything that has
`score`/`generate`. A guarded model (`guard.GuardedLM`) is attacked with its guard in front: weight
attacks change a private copy of the weights behind it. Source checkpoints are never written to.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .recovery import MIN_GAP, RECOVERY_METRICS, excess, forget_metrics, recovery

ATTACKS: dict[str, str] = {
    "relearn": "fine-tune a few steps on part of the forget set (or on neighbour data), evaluate on the rest",
    "quantize": "round-to-nearest weight quantization (8 and 4 bits, per channel or per group), then evaluate",
    "probes": "held-out paraphrases, fill-in-the-blank, multiple choice, conversation, many-shot and step-by-step prompts",
    "incontext": "put part of each forgotten person's facts in the prompt and ask about the rest",
}

ROLES = ("model", "subject", "oracle")


@dataclass
class Variant:
    """One way of attacking: new prompts for the plan's records and/or a transform of the weights."""
    prompts: list[str] | None = None           # one per plan record; None: the bare questions
    transform: Callable | None = None          # (net, tok) -> (net, info); gets a private copy
    extra: Callable | None = None              # lm -> dict of extra metrics (e.g. multiple-choice accuracy)
    info: dict = field(default_factory=dict)


@dataclass
class AttackPlan:
    records: list                              # the forget records measured
    variants: dict[str, Variant]
    options: dict                              # the attack's options, defaults filled in
    info: dict = field(default_factory=dict)   # what was used (relearn ids, ...)
    notes: list[str] = field(default_factory=list)


def check_attack(kind: str) -> None:
    """ValueError naming the valid attacks unless `kind` is one (a KeyError, printed with quotes
    around the message, until session 38; as `methods.get_method`)."""
    if kind not in ATTACKS:
        raise ValueError(f"unknown attack {kind!r}; valid attacks: {', '.join(ATTACKS)}")


def _module(kind: str):
    check_attack(kind)
    from importlib import import_module

    return import_module(f"{__name__}.{kind}")


def make_plan(kind: str, world, *, seed: int = 0, **options) -> AttackPlan:
    """The attack's plan on a `WorldData` (no model needed)."""
    mod = _module(kind)
    import inspect

    from .. import runinfo

    params = inspect.signature(mod.plan).parameters
    allowed = set(params) - {"world", "seed"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"attack {kind!r} has no option {sorted(unknown)[0]!r}; its options: {', '.join(sorted(allowed))}")
    # an option whose default is a number takes a number: steps="x" was a TypeError deep in the plan
    for name, value in options.items():
        default = params[name].default
        if runinfo.is_number(default) and not runinfo.is_number(value):
            raise ValueError(f"attack {kind!r}, option {name}={value!r}: must be a number, not {type(value).__name__}")
    return mod.plan(world, seed=seed, **options)


# ------------------------------------------------------------------------------ model handling

class _Target:
    """A model to attack: an LM for prompts, and weights + tokenizer for weight attacks (lazily)."""

    def __init__(self, x, role: str, template=None):
        self.x, self.role, self.template = x, role, template
        self._lm = self._net = self._tok = None

    def name(self) -> str:
        return str(self.x) if isinstance(self.x, (str, Path)) else type(self.x).__name__

    def weights(self):
        if self._net is None:
            from ..models.load import load_model
            from ..scoring import LM

            x = self.x
            if isinstance(x, (str, Path)):
                self._net, self._tok = load_model(x)
            elif isinstance(x, LM) or getattr(x, "guard", None) is not None:  # an LM, or a guarded one
                self._net, self._tok = x.model, x.tokenizer
            elif isinstance(x, tuple) and len(x) == 2:
                self._net, self._tok = x
            elif hasattr(x, "forward") and hasattr(x, "parameters"):
                from transformers import AutoTokenizer

                src = getattr(x, "name_or_path", None) or getattr(getattr(x, "config", None), "_name_or_path", None)
                if not src:
                    raise ValueError(f"{self.role}: a bare model without a tokenizer; pass (model, tokenizer) or a checkpoint path")
                self._net, self._tok = x, AutoTokenizer.from_pretrained(src)
            else:
                raise ValueError(f"{self.role}: weight attacks (relearn, quantize) need a checkpoint path, a scoring.LM or "
                                 f"(model, tokenizer); got {type(x).__name__}")
        return self._net, self._tok

    def lm(self):
        if self._lm is None:
            from ..scoring import LM, is_lm

            self._lm = self.x if is_lm(self.x) else LM(*self.weights(), template=self.template)
        return self._lm

    def attacked(self, v: Variant):
        """(LM, info) under variant `v`'s weight transform (on a private copy), or the plain LM."""
        if v.transform is None:
            return self.lm(), {}
        from ..scoring import LM

        net, tok = self.weights()
        net, info = v.transform(copy.deepcopy(net), tok)
        net.eval()
        lm = LM(net, tok, template=getattr(self.lm(), "template", self.template))
        if (guard := getattr(self.x, "guard", None)) is not None:  # the attacked weights stay behind the guard
            lm = type(self.x)(lm, guard)
        return lm, info


def _subject_from_run(model) -> tuple[str | None, str | None]:
    """(the source model recorded in an `unlearn forget` run directory's `<run>/config.yaml`, or None;
    and, where the run's config names none that can be used, why: a config that does not read, or a
    source that is gone). Not a run directory: (None, None)."""
    if not isinstance(model, (str, Path)):
        return None, None
    import yaml

    cfg = Path(model).parent / "config.yaml"
    if Path(model).name not in ("model", "adapter") or not cfg.is_file():
        return None, None
    try:
        src = (yaml.safe_load(cfg.read_text()) or {}).get("model")
    except Exception:  # noqa: BLE001 - not a run directory's config
        return None, f"{cfg} does not read as a run's config"
    if src and Path(src).exists():
        return str(src), None
    return None, f"{cfg} names the subject {src!r}, which is not there" if src else f"{cfg} names no subject"


def _key(kind, options, seed, data, role_input, template=None) -> str | None:
    """What a subject's or oracle's measurements under an attack depend on, for `reuse`: the attack,
    its options and seed, the data, the prompt format, and the checkpoint: its path and each file's
    size and modification time (until session 37 the path alone: a subject trained again in the same
    place was reused stale)."""
    from .. import runinfo

    if not isinstance(role_input, (str, Path)):
        return None
    path = Path(role_input).resolve()
    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else []
    stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return json.dumps([kind, options, seed, runinfo.data_hash(data), str(path), stamp,
                       template.to_dict() if template is not None else None], sort_keys=True)


# ------------------------------------------------------------------------------ the one entry point

def run_attack(kind: str, model, data, *, subject=None, oracle=None, seed: int = 0, reuse: dict | None = None,
               progress: bool = False, min_gap: float = MIN_GAP, template=None, **options) -> dict:
    """Attack `model` on world `data` (a directory) and report the forget metrics and the recovery.

    kind: one of `ATTACKS`. subject: the model before unlearning (needed for recovery; found in the
    run directory's config.yaml when `model` is `<run>/model`). oracle: the model never trained on the
    forget set, attacked the same way as the baseline of what the attack itself teaches. reuse: an
    earlier result of the same attack, options, seed and world whose subject and oracle measurements
    are taken over (they do not depend on the attacked model). options: the attack's own (see
    `unlearnkit.attacks.<kind>.plan`), e.g. relearn `steps`, `lr`, `fraction`, `source`; quantize
    `bits`, `group_size`; probes `kinds`, `shots`; incontext `fraction`.
    template: the prompt format of models loaded here and of the relearning data (raw | chat | a
    format string with {question}; data/templates.py).
    Returns a JSON-serialisable dict; see docs/robustness.md for its fields.
    """
    from ..data.templates import parse_template

    if model is None:  # a result with nothing measured until session 36
        raise TypeError("model: the model to attack is required (a checkpoint, an LM or (model, tokenizer))")
    tpl = parse_template(template, model=model)
    from .. import runinfo
    from ..data.io import load_world

    t0 = time.perf_counter()
    w = load_world(data)
    p = make_plan(kind, w, seed=seed, **options, **({"template": tpl} if kind == "relearn" else {}))
    notes = list(p.notes)
    found, why = _subject_from_run(model) if subject is None else (None, None)
    if found is not None:
        subject = found
        notes.append(f"subject taken from the run directory's config.yaml: {found}")
    if subject is None:  # "no subject given" also where the run's config named one that is gone (session 35)
        notes.append(f"no subject given{f' ({why})' if why else ''}: recovery cannot be computed (it is measured "
                     f"against the subject; give --subject)")
    inputs = {"model": model, "subject": subject, "oracle": oracle}
    reused = {}
    for role in ("subject", "oracle"):
        k = _key(kind, p.options, seed, data, inputs[role], tpl)
        if reuse and k is not None and (reuse.get("keys") or {}).get(role) == k:
            reused[role] = reuse
    plain, attacked, vinfo = {}, {name: {} for name in p.variants}, {name: dict(v.info) for name, v in p.variants.items()}
    for role in ROLES:
        if inputs[role] is None:
            continue
        if role in reused:
            plain[role] = reused[role]["plain"][role]
            for name in p.variants:
                attacked[name][role] = reused[role]["variants"][name][role]
            continue
        target = _Target(inputs[role], role, tpl)
        plain[role] = forget_metrics(target.lm(), p.records)
        for name, v in p.variants.items():
            t = time.perf_counter()
            lm, info = target.attacked(v)
            m = forget_metrics(lm, p.records, v.prompts)
            if v.extra is not None:
                m.update(v.extra(lm))
            m["info"] = info
            m["seconds"] = time.perf_counter() - t
            attacked[name][role] = m
            del lm
    variants = {}
    for name in p.variants:
        a = attacked[name]
        entry = {"info": vinfo[name], **{r: a[r] for r in ROLES if r in a}}
        if "subject" in plain:
            entry["recovery"] = recovery(plain["model"], a["model"], plain["subject"], a["subject"], min_gap=min_gap)
            if "oracle" in plain:
                entry["oracle_recovery"] = recovery(plain["oracle"], a["oracle"], plain["subject"], a["subject"],
                                                    min_gap=min_gap)
                entry["excess_recovery"] = excess(entry["recovery"], entry["oracle_recovery"])
        variants[name] = entry
    res = {"attack": kind, "description": ATTACKS[kind], "options": p.options, "template": tpl.to_dict(),
           "seed": seed, "data": str(data),
           "n_eval": len(p.records), "eval_ids": [r.id for r in p.records], "plan": p.info, "plain": plain,
           "variants": variants}
    # the headline: the strongest variant whose recovery is defined (`recovery.recovery`)
    scored = {n: v for n, v in variants.items() if (v.get("recovery") or {}).get("score") is not None}
    if variants and "subject" in plain and not scored:
        notes.append("recovery undefined under every variant: " + "; ".join(
            dict.fromkeys(n for v in variants.values() for n in v["recovery"]["notes"])))
    if scored:
        best = max(scored, key=lambda n: scored[n]["recovery"]["score"])
        v = scored[best]
        res.update({"recovery": v["recovery"]["score"], "recovery_variant": best,
                    **{f"recovery_{m}": v["recovery"]["recovery"][m] for m in RECOVERY_METRICS},
                    "oracle_recovery": v["oracle_recovery"]["score"] if "oracle_recovery" in v else None,
                    "excess_recovery": v.get("excess_recovery")})
        for m in RECOVERY_METRICS:
            res[f"attacked_{m}"] = v["model"][m]
            res[f"plain_{m}"] = plain["model"][m]
    else:
        res.update({"recovery": None, "recovery_variant": None, "oracle_recovery": None, "excess_recovery": None})
    res["notes"] = notes
    res["keys"] = {role: _key(kind, p.options, seed, data, inputs[role], tpl) for role in ("subject", "oracle")}
    res["info"] = {role: (_Target(x, role).name() if x is not None else None) for role, x in inputs.items()}
    res["info"].update(seconds=time.perf_counter() - t0, versions=runinfo.versions(), data_hash=runinfo.data_hash(data))
    return runinfo.json_safe(res)


def list_attacks() -> list[tuple[str, str]]:
    return list(ATTACKS.items())


__all__ = ["ATTACKS", "check_attack", "AttackPlan", "Variant", "make_plan", "run_attack", "list_attacks", "recovery", "forget_metrics"]
