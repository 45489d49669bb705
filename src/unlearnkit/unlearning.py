"""One unlearning run: a copy of a model, a method's loss, the one loop, a run directory.

`forget` is what `unlearn forget`, `api.forget` and a deletion request's `process` run. With no
budget flag it is calibrated (`calibrate`); it never writes to its source model, refuses settings
that make no sense where they enter, resumes only the same run, and says why it stopped.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import yaml
from accelerate.utils import set_seed

from . import DEFAULT_METHOD, HOLDOUT_METHOD, runinfo
from .data.batching import encode_pairs, forget_pairs, qa_pairs
from .data.io import WorldData, check_overlap, load_world, require_split
from .data.templates import parse_template
from .methods import Context, get_method
from .models.load import apply_lora, check_out, load_model, save_model, whole_adapter_model
from .launch import check_launch, process_state
from .scoring import nll
from .train import DivergedError, TrainConfig, config_dict, one_budget, train

log = logging.getLogger("unlearnkit")


def is_main() -> bool:
    """Whether this process writes files (the main one under accelerate)."""
    return process_state().is_main_process


BUDGET_KEYS = ("steps", "epochs")
NO_RETAIN_METHOD = "npo"  # the default where the data has no retain set (`default_plan`)
EARLIER = ".earlier"  # in a run directory: the outputs an --overwrite run replaces, until it has its own
MOVING = ".earlier-moving"  # outputs on their way into EARLIER or back out of it (`_put_back`)
DROPPED = ".earlier-dropped"  # EARLIER once the run has its own outputs, while it is deleted
RUN_OUTPUTS = ("model", "adapter", "checkpoints", "log.jsonl", "train.json", "calibration.json", "metrics.json")
# and repair-K/ (`_repair`)


def _check_resume(out: Path, config: dict) -> None:
    """A resumed run must be the same run: same method, data, settings and budget."""
    old_path = out / "config.yaml"
    if not old_path.is_file():
        return
    old = yaml.safe_load(old_path.read_text()) or {}
    skip = {"versions"}
    diff = [k for k in sorted(set(old) | set(config)) if k not in skip and old.get(k) != config.get(k)]
    if diff:
        k = diff[0]
        a, b = old.get(k), config.get(k)
        if isinstance(a, dict) and isinstance(b, dict):  # the setting inside, not two whole dicts (session 35)
            sub = next(x for x in sorted(set(a) | set(b)) if a.get(x) != b.get(x))
            k, a, b = f"{k}.{sub}", a.get(sub), b.get(sub)
        raise ValueError(f"--resume {out}: the run there differs in {', '.join(diff)} "
                         f"({k}: {a!r} there, {b!r} now); resume with the same settings or write to a new --out")


def _load_data(data, benchmark: str | None, split: str | None):
    """(world or None, benchmark or None) from a world directory or a benchmark's local copy."""
    from .benchmarks import check_split

    check_split(benchmark, split)
    if benchmark is None:
        w = load_world(data)
        if n := check_overlap(w):
            log.warning("%d forget records also appear in the retain set", n)
        return w, None
    from .benchmarks import load_benchmark

    bench = load_benchmark(benchmark, data, split)
    return bench.world, bench


def _training_data(w: WorldData | None, bench, method: str, needs_retain: bool):
    """(forget pairs, retain pairs or None) of `_load_data`'s world or benchmark."""
    if bench is None:
        if needs_retain:
            require_split(w, "retain", why=f"method {method} needs a retain set")
        return forget_pairs(w), qa_pairs(w.retain) if needs_retain else None
    if needs_retain and bench.retain is None:
        raise ValueError(f"method {method} needs a retain set, and the {bench.name} benchmark has none: "
                         f"choose a method without one (ga, npo)")
    return bench.forget(), bench.retain() if needs_retain else None


def default_plan(method: str | None, settings, world: WorldData | None, has_retain: bool = True):
    """(method, calibration settings) of a run: the one place where a run's default method is chosen.
    `settings`: the run's `CalibrationSettings`, None for a fixed budget.

    A named method is kept, with its settings as given (the twins unless `reference` says
    otherwise). With none named, a calibrated run on data with a holdout split (and no `reference`
    given) is calibrated against the holdout people, with Twin RMU: of the methods measured, the
    one that lands on the holdout's level where membership inference has the power to tell
    (docs/methods-log.md, "The default, chosen by the data"); SimNPO does worse against the holdout
    than against twins. Otherwise (no holdout split, as in a deletion request; `reference=twins`;
    a fixed budget) the method is SimNPO; on data with no retain set (RWKU, its zero-shot setting) it
    is NPO, which needs none (the default refused RWKU for want of one until session 35)."""
    if method is not None:
        return method, settings
    if not has_retain:
        return NO_RETAIN_METHOD, settings
    if settings is not None and "reference" not in settings.model_fields_set and world is not None and world.holdout:
        settings = settings.model_copy(update={"reference": "holdout"})
    return (HOLDOUT_METHOD if settings is not None and settings.reference == "holdout" else DEFAULT_METHOD), settings


def keep_salient(model, examples, pad_id: int, fraction: float) -> dict:
    """The weights most salient to the forget set (SalUn, Fan et al. 2024): the magnitude of the
    forget NLL's gradient at the source weights, summed over the forget set, one threshold across all
    weights, keeping `fraction` of them. Returns a boolean mask per trainable weight (by name); `train`
    multiplies each weight's gradient by its mask (`grad_masks`), so neither Adam nor clipping moves
    the others, under FSDP too (each mask sharded like its weight) and DeepSpeed (a gradient hook)."""
    import torch

    from .methods.cache import device_batches
    from .scoring import answer_logprobs

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for _, p in named]
    for _, b in device_batches(model, examples, pad_id, max_tokens=4096, max_rows=64):  # with grad: smaller batches
        out = answer_logprobs(model, b["input_ids"], b["attention_mask"], b["labels"])
        grads = torch.autograd.grad(-out["logprobs"].sum(), [p for _, p in named], allow_unused=True)
        for acc, g in zip(total, grads):
            if g is not None:
                acc += g
    size = [t.abs().flatten() for t in total]
    flat = torch.cat(size)
    k = max(1, round(fraction * flat.numel()))
    threshold = flat.kthvalue(flat.numel() - k + 1).values
    return {n: (mag >= threshold).view_as(p) for (n, p), mag in zip(named, size)}


def _kept_share(masks: dict) -> float:
    """The share of the masked weights that train."""
    return sum(int(m.sum()) for m in masks.values()) / max(1, sum(m.numel() for m in masks.values()))


def forget(model: str | os.PathLike, data: str | os.PathLike, method: str | None, out: str | os.PathLike, *, seed: int = 0,
           lora: bool = False, merge: bool = False, resume: bool = False, overwrite: bool = False, params: dict | None = None,
           calibration: dict | None = None, progress: bool = True, save_every: int = 0, benchmark: str | None = None,
           split: str | None = None, template: str | None = None, system: str | None = None,
           world: WorldData | None = None, **train_overrides) -> Path:
    """Unlearn `data`'s forget set from a copy of `model` with `method`; write the run directory.
    `method` None: the default for the data (`default_plan`).

    `data` is a world directory, or with `benchmark` (tofu | muse | wmdp | rwku) a local copy of that
    benchmark, whose `split` names the forget set (docs/benchmarks.md). `world`: the forget set as
    records in memory instead (RWKU's zero-shot setting, `api.forget(zero_shot=True)`: what the model
    itself reveals about the target); it has no retain split.

    `out` holding an earlier run's outputs is refused unless `resume` (continue it from its last
    checkpoint) or `overwrite` (replace its outputs; other files there are left alone).

    `saliency` (a training setting, 0 < f < 1; a method may default to one): train only that fraction
    of the weights, those most salient to the forget set (`keep_salient`); 0 trains them all. With
    `lora` the adapter trains instead, so a method's default saliency is dropped (asking for both is
    an error).

    With no budget (`steps`/`epochs`), the run is calibrated (`unlearnkit.calibrate`): it stops when
    the forget set looks like data the model never saw, keeps the best weights above the retain
    utility floor, and says why it stopped in `out/calibration.json`. `calibration` overrides
    `CalibrationSettings`. With a budget, it trains for exactly that budget.

    `out/` gets `config.yaml`, `log.jsonl`, `model/` (or `adapter/` and, with `merge`, `model/`),
    `train.json` and `checkpoints/` while running. The source model is only read, and `out` may not
    lie inside it.
    """
    from .calibrate import Calibrator, settings_from

    if method is not None:
        get_method(method).params(params)  # an unknown method or setting fails before the data is read
    out = Path(out)
    check_out(data, out, what="data")  # a world's files, a benchmark's copy: never written to
    _check_options(model, out, lora=lora, merge=merge, resume=resume, overwrite=overwrite,
                   saliency=train_overrides.get("saliency"))
    train_overrides = one_budget(train_overrides)
    tpl = parse_template(template, system, model)
    calibrated = not any(train_overrides.get(k) is not None for k in BUDGET_KEYS)
    settings = settings_from(calibration) if calibrated else None
    if calibration and not calibrated:
        raise ValueError("--calibration goes with a calibrated run: drop --steps/--epochs, or drop --calibration")
    w, bench = (world, None) if world is not None else _load_data(data, benchmark, split)
    method, settings = default_plan(method, settings, w, has_retain=world is None and (
        bench.retain is not None if bench is not None else bool(w.retain)))
    m = get_method(method)
    hp = m.params(params)
    cfg = TrainConfig(**{**m.train_defaults, **train_overrides, "seed": seed, "save_every": save_every,
                         **({"saliency": 0.0} if lora else {})})
    if world is not None:
        if m.needs_retain:
            raise ValueError(f"method {method} needs a retain set, and RWKU's zero-shot setting has none: "
                             f"choose a method without one (ga, npo)")
        f_pairs, r_pairs = forget_pairs(world), None
    else:
        f_pairs, r_pairs = _training_data(w, bench, method, m.needs_retain)
    if calibrated and w is None:  # before the model is loaded: that can take minutes
        raise ValueError(f"the {benchmark} benchmark's forget set is documents, with no questions to calibrate on: "
                         f"give a budget (--steps or --epochs)")
    check_launch()
    with _run_lock(out, resume=resume, overwrite=overwrite):  # to the end: one run at a time in `out`
        net, tok = load_model(model)
        set_seed(seed)  # before the adapter: its initial weights come from the run's seed (as train() seeds)
        if lora:
            net = apply_lora(net)
        elif m.trainable is not None:
            m.trainable(net, hp)
        prompts, answers, *subjects = f_pairs  # subjects: from a world's records (benchmarks' pairs have none)
        streams = {"forget": encode_pairs(tok, prompts, answers, template=tpl, subjects=subjects[0] if subjects else None)}
        if m.needs_retain:
            streams["retain"] = encode_pairs(tok, *r_pairs, template=tpl)
        monitor = None
        if calibrated:
            monitor = Calibrator(tok, w, settings, seed=seed, forget_stream_len=len(streams["forget"]),
                                 batch_size=cfg.batch_size, template=tpl)
            cfg.steps = monitor.budget
        ctx = Context(params=hp, seed=seed, pad_id=tok.pad_token_id, tokenizer=tok, template=tpl,
                      forget_text=(prompts, answers, subjects[0]) if subjects else None,
                      strangers=_strangers(w, seed + 1) if w is not None else None)
        bench_info = ({"name": benchmark, "split": split,
                       **({"zero_shot": True, "forget_records": len(w.forget)} if world is not None else {})}
                      if benchmark else None)
        config = {"method": method, "model": runinfo.where(model), "data": runinfo.where(data), "data_hash": runinfo.data_hash(data),
                  "benchmark": bench_info, "template": tpl.to_dict(), "seed": seed, "lora": lora, "merge": merge,
                  "params": hp.model_dump(), "train": config_dict(cfg),
                  "calibration": settings.model_dump() if settings else None, "versions": runinfo.versions()}
        timer = runinfo.Timer()
        with _run_dir(out, config, resume):
            with timer("prepare"):
                masks = keep_salient(net, streams["forget"], tok.pad_token_id, cfg.saliency) if cfg.saliency else None
                if m.prepare is not None:
                    ctx.cache = m.prepare(net, streams, ctx)
            with timer("train"):
                res = train(net, m.loss, streams, cfg, pad_id=tok.pad_token_id, ctx=ctx, out_dir=out, resume=resume,
                            progress=progress, desc=method, monitor=monitor, grad_masks=masks)
            first = res
            if calibrated:
                with timer("repair"):
                    res = _repair(res, w, m, streams, cfg, ctx, tok, tpl, settings, seed, out, progress, method, masks)
            if is_main():
                _write_outputs(out, res, first, tok, lora=lora, merge=merge, seconds=timer.seconds, method=method,
                               saliency={"fraction": cfg.saliency, "weights_trained": _kept_share(masks)} if masks else None)
    process_state().wait_for_everyone()  # every process returns once the outputs are written
    return out


def _check_options(model, out: Path, *, lora: bool, merge: bool, resume: bool, overwrite: bool,
                   saliency: float | None) -> None:
    """`forget`'s options that make no sense together, or an `out` it must not write to, refused in
    one line before any work: the source model's folder (or one inside it), a file, a folder holding
    an earlier run (without `resume` or `overwrite`), `resume` where no run was started, `merge` without `lora`, `saliency` with `lora`."""
    check_out(model, out)
    if out.is_file():  # a traceback (FileExistsError) until session 34
        raise ValueError(f"--out {out}: is a file; a run is a folder")
    if resume and overwrite:
        raise ValueError("--resume and --overwrite: resume continues the run there, overwrite replaces it; give one")
    _check_run_dir(out, resume=resume, overwrite=overwrite)
    if merge and not lora:  # accepted, and recorded as merge: true, until session 34
        raise ValueError("--merge goes with --lora: it merges the trained adapter into the model")
    if saliency and lora:
        raise ValueError(f"--saliency {saliency!r} goes with full fine-tuning: LoRA trains its own "
                         f"small matrices; drop one of them")


def _check_run_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """What `out` holds, against `resume` and `overwrite`: checked before any work, and again under
    the run's lock (`_run_lock`), where no other run can write there between the check and the run."""
    if not (resume or overwrite) and (earlier := [n for n in RUN_OUTPUTS if (out / n).exists()]):
        # an earlier run's model, checkpoints and metrics were replaced without a word until session 34
        raise ValueError(f"--out {out}: holds an earlier run ({', '.join(earlier[:3])}): --resume it, --overwrite "
                         f"it, or choose another folder")
    if resume and not (out / "config.yaml").is_file():  # started a new run without a word until session 36
        raise ValueError(f"--resume {out}: no run there to resume (no config.yaml); check the folder, or drop "
                         f"--resume to start one")


@contextmanager
def run_lock(out: Path, check: Callable[[], None]):
    """The main process holds `out`'s lock (`runinfo.exclusive`, the folder made if need be) while
    the block runs, and runs `check` under it first, where no other run can write there between
    the check and the run; the other processes pass through. A second run into the same folder is
    refused while one runs there (until session 37 two `forget` runs both ran, and left one's config
    and log beside the other's weights; until session 39 two `finetune` runs both trained)."""
    if not is_main():
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with runinfo.exclusive(out, f"--out {out}: another run is writing there now; wait for it to end, or "
                                f"choose another folder"):
        check()
        yield


def _run_lock(out: Path, *, resume: bool, overwrite: bool):
    """`run_lock` for an unlearning run: under it, the earlier run that an overwriting run killed
    mid-move had half set aside is put back (`_put_back`), and `out` is checked again."""
    def check() -> None:
        _put_back(out)
        _check_run_dir(out, resume=resume, overwrite=overwrite)
    return run_lock(out, check)


@contextmanager
def _run_dir(out: Path, config: dict, resume: bool):
    """The run directory while the run writes it (`_open_run_dir`). A new run sets the outputs of an
    earlier one aside (`--overwrite`) in `EARLIER`, and drops them once its own are written; if it
    fails, it takes its own outputs away and puts the earlier ones back (until session 35 an
    overwriting run that failed had already deleted them). A run that diverged leaves nothing, as it
    says: no checkpoint is worth resuming there, and a retry needs no --overwrite. Any other failure
    of a run with nothing set aside keeps its checkpoints, for `--resume`."""
    _open_run_dir(out, config, resume)
    try:
        yield
    except BaseException as e:
        if is_main() and (isinstance(e, DivergedError) or (out / EARLIER).is_dir()):
            _clear_outputs(out)
            if (out / EARLIER).is_dir():
                os.replace(out / EARLIER, out / MOVING)
                _put_back(out)
        raise
    if is_main() and (out / EARLIER).is_dir():
        os.replace(out / EARLIER, out / DROPPED)  # whole, at once: a kill in rmtree leaves no half EARLIER
        shutil.rmtree(out / DROPPED)


def _open_run_dir(out: Path, config: dict, resume: bool) -> None:
    """Check a resumed run's config against the one it resumes; then (main process) set an earlier
    run's outputs aside in `EARLIER` (or, where one is set aside already by an overwriting run that
    was killed, clear that run's), clear what a resumed run makes again, and write `config.yaml`.
    The outputs move into `MOVING` first, which becomes `EARLIER` only once all are there: a run
    killed in between lost those not yet moved to the next run's clearing until session 37
    (`_put_back` now returns them)."""
    if resume:
        _check_resume(out, config)
    if not is_main():
        return
    out.mkdir(parents=True, exist_ok=True)
    if resume:
        for name in ("model", "adapter", "train.json", "calibration.json", *(p.name for p in out.glob("repair-*"))):
            _remove(out / name)  # made again: the repair rounds too run again after a resumed run
    elif (out / EARLIER).is_dir():
        _clear_outputs(out)
    elif earlier := _outputs(out):
        (out / MOVING).mkdir()
        for p in earlier:
            os.replace(p, out / MOVING / p.name)
        os.replace(out / MOVING, out / EARLIER)
    runinfo.write_text(out / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def _put_back(out: Path) -> None:
    """Finish what a killed run left half done in `out`: outputs in `MOVING` (an earlier run being
    set aside, or being put back after a failure) return to `out`, and a dropped `EARLIER` goes."""
    if (out / MOVING).is_dir():
        for p in (out / MOVING).iterdir():
            os.replace(p, out / p.name)
        (out / MOVING).rmdir()
    shutil.rmtree(out / DROPPED, ignore_errors=True)


def _outputs(out: Path) -> list[Path]:
    """What a run writes in `out` that is there now: `RUN_OUTPUTS`, its repair rounds and config."""
    return [p for p in (*(out / n for n in (*RUN_OUTPUTS, "config.yaml")), *out.glob("repair-*")) if p.exists()]


def _clear_outputs(out: Path) -> None:
    for p in _outputs(out):
        _remove(p)


def _remove(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def _write_outputs(out: Path, res, first, tok, *, lora: bool, merge: bool, seconds: dict, method: str,
                   saliency: dict | None) -> None:
    """The run's weights (`adapter/` with LoRA, `model/` merged or full), `calibration.json` when
    calibrated, and `train.json`: timings, the first run's training figures (`first`; `res` is after
    the repair rounds), how it stopped, the salient share trained, and the summary line."""
    if lora:
        save_model(res.model, tok, out / "adapter", state_dict=res.full_state_dict)
    if merge or not lora:
        save_model(res.model, tok, out / "model", merge=lora, state_dict=res.full_state_dict)
    stop = asdict(res.stop) if res.stop is not None else None
    if stop is not None:
        runinfo.write_json(out / "calibration.json", stop)
    runinfo.write_json(out / "train.json", {
        "seconds": seconds, "train_stats": {"steps": first.resumed_from + first.steps, "last_step": first.last_step,
                                            "resumed_from": first.resumed_from,
                                            "seconds": first.seconds, "tokens": first.tokens,
                                            "processes": first.processes,
                                            "mixed_precision": first.mixed_precision,
                                            "distributed": first.distributed},
        "stop": {k: v for k, v in stop.items() if k != "history"} if stop else {"reason": "budget"},
        **({"saliency": saliency} if saliency else {}),
        "summary": f"{method}, " + (res.stop.summary() if res.stop else f"fixed budget: {res.last_step} step{'s' * (res.last_step != 1)}")})


def _strangers(w: WorldData, seed: int) -> dict[str, list[str]]:
    """Each forget subject's `STRANGERS` strangers (`methods.Context.strangers`), named as the
    calibration's twins are (`data.twins.stranger_names`: the retain and neighbour people's name words
    recombined, else invented), the k-th subject's from `seed` + k; the run passes seed + 1, so that
    a method does not train towards the very twins the calibration compares with."""
    from .data.twins import STRANGERS, stranger_names

    people = sorted({r.subject for split in (w.retain, w.neighbours) for r in split})
    return {s: stranger_names(s, STRANGERS, people, seed=seed + k)
            for k, s in enumerate(sorted({r.subject for r in w.forget}))}


def _repair(res, w: WorldData, m, streams: dict, cfg: TrainConfig, ctx: Context, tok, tpl, settings, seed: int,
            out: Path, progress: bool, method: str, masks: dict | None = None):
    """At most `settings.repair_rounds` repair rounds after a calibrated run. One learning rate moves
    the whole forget set, and the run stops when the set as a whole matches its twins; a few facts
    still near certainty have barely moved by then. A round takes the forget records the kept
    weights still answer where their twins' answers are not given (`calibrate.Answers.survivors`) and
    unlearns them alone, calibrated again from the kept weights against their own twins, with the
    same retain data, at the method's own settings, and with a floor that keeps the rounds together
    at `settings.floor` x the run's start. It stops when nothing is left, or after a round that
    left every record it took (another would not do better); a round that left others (answers it
    brought back: a request home's batch) is followed by one on those. The run's saliency mask
    (`masks`) holds in every round. Under `repair_twins=holdout` a round's check compares its
    records with their own holdout twins (`Answers.twins`), not the calibration's. Each round's log
    and stop go to `out/repair-K/`; the last round's kept weights are the result, and the first
    round's `StopInfo` lists what survived it (`survivors`) and the rounds
    (`repairs`). Sharded weights (FSDP, ZeRO-3) cannot generate outside the training wrapper: each
    round starts from them whole (`_whole`), and its `train` shards them again.

    Then at most `settings.lift_rounds` lift rounds (with `repair_auc`; `calibrate` package
    docstring: Lift rounds): a group the rounds left below its twins (`Answers.told`) has its
    records scored below their twins' mean trained back by their NLL (`_lift_loss`) from the kept
    weights, with the check mirrored, against those records' own twins (`Answers.twins`: a request
    home's strangers), at the same floor, until one leaves every record it took. Their log and stop
    go to `out/repair-K/` too, numbered after the repair rounds, and `repairs` marks them
    `"lift": true`."""
    from dataclasses import replace

    from .calibrate import Answers, Calibrator

    first, kept = res.stop, res.stop.kept.get("utility") or 1.0
    net = _whole(res, tok, out / ".whole", m, ctx)
    given = Answers.generate(net, tok, w, settings, seed, tpl)
    first.survivors, below = given.told(settings, net, tok, tpl)  # below: what a lift round would take
    ids = first.survivors
    by_id = {r.id: r for r in w.forget}

    def round_(k: int, ids: list[str], lift: bool):
        """Round `k` on the records `ids`, from `net`; returns its result and what it left."""
        nonlocal net, given, kept, below
        recs = [by_id[i] for i in ids]
        prompts, answers, subjects = forget_pairs(replace(w, forget=recs, forget_docs=[]))
        sk = {**streams, "forget": encode_pairs(tok, prompts, answers, template=tpl, subjects=subjects)}
        floor = min(1.0, settings.floor / max(kept, 1e-12))
        reference = None  # the calibration's invented twins
        if lift or settings.repair_twins == "holdout":
            # the strangers its records were chosen against (`Answers`: a request home's), where a lift
            # climbs to and where the home's checks judge
            at = {r.id: j for j, r in enumerate(given.named)}
            reference = [t for i in ids for t in given.twins[at[i]]]
        monitor = Calibrator(tok, w, settings.model_copy(update={"floor": floor}), seed=seed,
                             forget_stream_len=len(sk["forget"]), batch_size=cfg.batch_size, template=tpl, forget=recs,
                             answers=given if settings.repair_stop == "answers" and not lift else None, lift=lift,
                             reference=reference)
        if not lift:
            ctx.forget_text = (prompts, answers, subjects)
            if m.prepare is not None:  # a method's reference (NPO's) is the round's start
                ctx.cache = m.prepare(net, sk, ctx)
        lr = _round_lr(cfg.lr, len(recs), len(w.forget), settings)
        res = train(net, _lift_loss if lift else m.loss, sk,
                    replace(cfg, lr=lr, steps=monitor.budget, save_every=0, **({"sam": 0.0} if lift else {})),
                    pad_id=tok.pad_token_id, ctx=ctx, out_dir=out / f"repair-{k}" if is_main() else None,
                    progress=progress, desc=f"{method} {'lift' if lift else 'repair'} {k}", monitor=monitor,
                    grad_masks=masks)
        st = res.stop
        kept *= st.kept.get("utility") or 1.0
        net = _whole(res, tok, out / ".whole", m, ctx)
        given = Answers.generate(net, tok, w, settings, seed, tpl)
        st.survivors, below = given.told(settings, net, tok, tpl)
        left = below if lift else st.survivors
        first.repairs.append({"records": len(recs), "reason": st.reason, "stopped_at": st.stopped_at,
                              "kept_step": st.kept_step, "utility": st.kept.get("utility"), "left": len(left),
                              "ids": ids, "dir": f"repair-{k}", "lr": lr, **({"lift": True} if lift else {})})
        if is_main():
            runinfo.write_json(out / f"repair-{k}" / "calibration.json", asdict(st))
        return res, left

    def spent(ids: list[str], lift: bool) -> bool:
        """Nothing left, or the last round of this kind left every record it took: another would not
        do better."""
        last = first.repairs[-1] if first.repairs else None
        return not ids or last is not None and bool(last.get("lift")) == lift and set(last["ids"]) <= set(ids)

    for k in range(1, settings.repair_rounds + 1):
        if spent(ids, lift=False):
            break
        res, ids = round_(k, ids, lift=False)
    for _ in range(settings.lift_rounds):  # then the groups the run and rounds took below their twins
        if spent(below, lift=True):
            break
        res, _ = round_(len(first.repairs) + 1, below, lift=True)
    res.stop = first
    return res


def _lift_loss(model, batch, ctx):
    """A lift round's loss (`_repair`): the NLL of the records it takes, which the run left less
    likely than their twins' answers; its mirrored check stops it at their level. No sharpness-aware
    step: that guards a descent's forget term against relearning, and here relearning is the aim. No
    retain term: with the retain NLL added, the utility fell along the same path (session 45: seed 1's
    batch of twelve, to 0.984 of the round's start as the person's mean log-prob rose from -12.7 to
    -9.4 nats, with or without it)."""
    forget_nll = nll(model, batch["forget"])
    return forget_nll, {"forget_nll": forget_nll.detach()}


def _round_lr(lr: float, records: int, of: int, settings) -> float:
    """A repair round's starting learning rate (`repair_lr`): the run's, or under `share` the run's x
    sqrt(records / of). Adam moves every weight whose gradient keeps its sign by about the learning
    rate a step, whatever the gradient's size; a round's gradient is that of a few facts, the same
    at every step, so at the run's rate a round of 2 of 34 facts took 5.6% of the utility in four
    steps (docs/requests-log.md, "Session 43"). The round's doublings raise a rate too low for its
    pace (`Calibrator`)."""
    return lr * math.sqrt(records / of) if settings.repair_lr == "share" and 0 < records < of else lr


def _whole(res, tok, tmp: Path, m, ctx):
    """`res`'s weights as one model in every process, to generate with and to train again:
    `res.model` itself, or, where they are sharded across processes (`res.full_state_dict`), the
    gathered weights, written once by the main process to `tmp` and read back by each (every process
    then holds the whole model between rounds, as the main one does to save it): a checkpoint, with
    the method's frozen weights frozen again (`trainable`), or under LoRA the gathered state of the
    whole adapter model, rebuilt with its adapter trainable (`models.load.whole_adapter_model`;
    until session 33 the rounds were skipped there)."""
    if res.full_state_dict is None:
        return res.model
    import torch

    state = process_state()
    lora = hasattr(res.model, "peft_config")
    if state.is_main_process:
        if lora:
            tmp.mkdir(parents=True, exist_ok=True)
            torch.save(res.full_state_dict, tmp / "weights.pt")
        else:
            save_model(res.model, tok, tmp, state_dict=res.full_state_dict)
    state.wait_for_everyone()
    if lora:
        net = whole_adapter_model(res.model, torch.load(tmp / "weights.pt"))
    else:
        net, _ = load_model(tmp)
        if m.trainable is not None:
            m.trainable(net, ctx.params)
    state.wait_for_everyone()  # every process has read it
    if state.is_main_process:
        shutil.rmtree(tmp)
    return net


def run_summary(run: str | os.PathLike) -> str:
    """One line on how a `forget` run ended (why it stopped, where, what it kept)."""
    info = json.loads((Path(run) / "train.json").read_text())
    return info.get("summary", "")
