"""The Python API: the same verbs as the CLI (`unlearn world|finetune|forget|eval|demo`).

    from unlearnkit import api
    world = api.world("runs/w", seed=0)
    subject = api.finetune(world, "runs/subject")
    oracle = api.finetune(world, "runs/oracle", without_forget=True)
    run = api.forget(subject, world, "graddiff", "runs/unlearned")
    results = api.evaluate(run / "model", world, oracle=oracle)
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path


from . import runinfo
from .data.batching import encode_pairs, qa_pairs
from .data.io import load_world, require_split
from .data.templates import parse_template
from .methods import get_method
from .models.load import check_out, check_results_out, load_model, save_model
from .sft import sft_loss
from .launch import check_launch, process_state
from .train import TrainConfig, config_dict, one_budget, train
from .unlearning import is_main, run_lock, run_summary

log = logging.getLogger("unlearnkit")

# Training the embedded tiny model from scratch. On the default 60-person world (seeds 0 and 1) it
# answers every training question exactly after 10 epochs, but only knows its facts well enough
# beyond the trained wording (subject forget quality < 0.01 against the oracle) after ~20.
SCRATCH = dict(lr=3e-3, epochs=20, batch_size=32, warmup=0.05, schedule="cosine", weight_decay=0.0)
DOCS_BATCH = 1  # documents per step beside each QA batch (more made the knowledge shallower, not deeper)
FINETUNE = dict(lr=1e-4, epochs=3, batch_size=16, warmup=0.05, schedule="cosine")
# TrainConfig's fields that fine-tuning has no use for: saliency and sam shape an unlearning run's
# steps (`forget` takes them), finetune keeps no checkpoints (save_every), seed is its own argument
_UNLEARNING = " (an unlearning setting: `forget` takes it)"
NOT_FINETUNE = {"saliency": _UNLEARNING, "sam": _UNLEARNING, "save_every": " (finetune keeps no checkpoints)",
                "seed": "", "extra": ""}


def _check_finetune_options(overrides: dict) -> None:
    """An option `finetune` does not take is refused by name: `saliency=0.25` was accepted and ignored."""
    from dataclasses import fields

    options = [f.name for f in fields(TrainConfig) if f.name not in NOT_FINETUNE]
    for name in overrides:
        if name not in options:
            raise ValueError(f"finetune has no option {name!r}{NOT_FINETUNE.get(name, '')}; "
                             f"its options: {', '.join(options)}")


def world(out: str | os.PathLike, seed: int = 0, shape: str | None = None, **kwargs) -> Path:
    """Generate the fictitious world (JSONL splits + biographies) into `out`.

    `shape` names a set of options (`data.world.SHAPES`: default, sentences, large, ...); keyword
    arguments of `build_world` (n_people, forget_fraction, answer_style, docs, n_attributes, names)
    override it, None meaning "the shape's value"."""
    from .data.world import build_world, shape_options

    return Path(build_world(out, seed=seed, **shape_options(shape, **kwargs)))


def _all_texts(w) -> list[str]:
    texts = []
    for split in (w.forget, w.retain, w.neighbours, w.holdout, w.world_facts):
        for r in split:
            texts += r.phrasings() + [r.answer, r.paraphrased_answer, *r.perturbed_answers]
            if r.paraphrased_question:
                texts.append(r.paraphrased_question)
    for split in (w.forget_docs, w.retain_docs, w.neighbours_docs, w.holdout_docs):
        texts += [d.text for d in split]
    return texts


def finetune(data: str | os.PathLike, out: str | os.PathLike, *, model: str | None = None, without_forget: bool = False,
             seed: int = 0, size: str = "tiny", progress: bool = True, template: str | None = None,
             system: str | None = None, overwrite: bool = False, **train_overrides) -> Path:
    """Train a model on a world's training splits (subject), or without its forget set (oracle).

    Without `model`, a BPE tokenizer and a small Llama are trained from scratch; the tokenizer is
    trained on the whole world's text, so subject and oracle share one vocabulary.
    `template`/`system`: the prompt format (raw | chat | a format string with {question}).
    `out` holding an earlier checkpoint of `finetune` is refused unless `overwrite`; one holding
    anything else always is (`models.load.check_replaceable`).
    """
    from .models.load import check_replaceable

    if not isinstance(without_forget, bool):  # "no" trained an oracle until session 36
        raise TypeError(f"without_forget: expected True or False, got {without_forget!r}")
    _check_finetune_options(train_overrides)
    tpl = parse_template(template, system, model)
    train_overrides = one_budget(train_overrides)
    timer = runinfo.Timer()
    if model is not None:
        check_out(model, out)  # before any work: the source is never written to
    check_out(data, out, what="data")
    check_replaceable(out, overwrite)
    # the folder's lock from before training to after the save, as `forget` holds it, and the folder
    # checked again under it: two runs into one folder both trained, and the later one replaced the
    # other's checkpoint without --overwrite, until session 39. A folder made for the lock and left
    # empty by a failed run is taken away again.
    out = Path(out)
    made = not out.exists()
    try:
        with run_lock(out, lambda: check_replaceable(out, overwrite)):
            return _finetune(data, out, model, without_forget, seed, size, progress, tpl, train_overrides, timer)
    finally:
        if made and is_main() and out.is_dir() and not any(out.iterdir()):
            out.rmdir()


def _finetune(data, out: Path, model, without_forget: bool, seed: int, size: str, progress: bool, tpl,
              train_overrides: dict, timer) -> Path:
    """`finetune`'s training and save, under its lock."""
    w = load_world(data)
    require_split(w, "retain", why="the subject trains on forget + retain, and the oracle on retain alone")
    if model is None:
        from .models.tiny import new_model, train_tokenizer

        with timer("tokenizer"):
            tok = train_tokenizer(_all_texts(w))
        net = new_model(tok, size=size, seed=seed)
        defaults = SCRATCH
    else:
        check_launch()
        net, tok = load_model(model)
        defaults = FINETUNE
    cfg = TrainConfig(**{"stream_batch": {"docs": DOCS_BATCH}, **defaults, **train_overrides, "seed": seed})
    streams = {"train": encode_pairs(tok, *qa_pairs(w.training_records(without_forget=without_forget)), template=tpl)}
    loss_params = {}
    if docs := w.training_docs(without_forget=without_forget):
        streams["docs"] = encode_pairs(tok, [""] * len(docs), [d.text for d in docs])
        # each document counts as much as in one shuffled stream (sft.py)
        loss_params["docs_weight"] = (len(docs) / len(streams["train"])) / (
            cfg.stream_batch.get("docs", cfg.batch_size) / cfg.batch_size)
    with timer("train"):
        res = train(net, sft_loss(**loss_params), streams, cfg, pad_id=tok.pad_token_id, progress=progress,
                    desc="oracle" if without_forget else "subject")
    if is_main():
        save_model(res.model, tok, out, state_dict=res.full_state_dict, info={
            "kind": "oracle" if without_forget else "subject", "data": runinfo.where(data),
            "data_hash": runinfo.data_hash(data), "base_model": runinfo.where(model), "size": size if model is None else None, "seed": seed, "train": config_dict(cfg),
            "template": tpl.to_dict(),
            "examples": {k: len(v) for k, v in streams.items()}, "loss_params": loss_params, "seconds": timer.seconds,
            "train_stats": {"steps": res.steps, "seconds": res.seconds, "tokens": res.tokens, "processes": res.processes,
                            "mixed_precision": res.mixed_precision, "distributed": res.distributed},
            "versions": runinfo.versions(),
        })
    process_state().wait_for_everyone()  # every process returns once the model is written
    return out


def _located(model, target: str, template, seed: int):
    """A world whose forget split is what `model` reveals about `target` (its locate inventory)."""
    from .data.io import WorldData
    from .requests.locate import forget_records, locate
    from .scoring import LM

    lm = LM(*load_model(model), template=template)
    inv = locate(lm, target, seed=seed, confident=lm)  # the model itself was never unlearned
    if not inv["items"]:
        raise ValueError(f"--zero-shot: the model reveals nothing it knows about {target!r} "
                         f"({inv['counts']['probes']} probes asked): nothing to forget")
    return WorldData(forget=forget_records("zero-shot", target, inv["items"]))


def forget(model: str | os.PathLike, data: str | os.PathLike, method: str | None, out: str | os.PathLike, *,
           zero_shot: bool = False, **kwargs) -> Path:
    """`unlearning.forget` (see there): unlearn `data`'s forget set from a copy of `model` into `out`.
    `zero_shot` (RWKU, `split` = one target's name): no forget corpus; the forget set is what the
    model itself reveals about the target, found by `requests.locate` (RWKU's zero-shot setting)."""
    from .unlearning import forget as run

    if zero_shot:
        if kwargs.get("benchmark") != "rwku" or kwargs.get("split") in (None, "all"):
            raise ValueError("--zero-shot goes with --benchmark rwku --split TARGET (one target's name)")
        from .benchmarks import load_benchmark

        load_benchmark("rwku", data, kwargs["split"])  # the target is one of RWKU's (any name was taken until session 35)
        kwargs["world"] = _located(model, kwargs["split"], parse_template(kwargs.get("template"), kwargs.get("system")),
                                   kwargs.get("seed", 0))
    return run(model, data, method, out, **kwargs)


def evaluate(model, data: str | os.PathLike, *, oracle=None, subject=None, suites=("tofu", "muse", "mia"),
             reference=None, out: str | os.PathLike | None = None, benchmark: str | None = None,
             split: str | None = None, template: str | None = None, system: str | None = None,
             guard: str | os.PathLike | None = None, **kwargs) -> dict:
    """Evaluate a model (a checkpoint path, or any object with `score`/`generate`) on a world, or
    with `benchmark` (tofu | muse | wmdp | rwku) on a local copy of that benchmark's `split`
    (docs/benchmarks.md); its suites are those of `suites` the benchmark has.

    `oracle`/`subject`/`reference` may be checkpoint paths, LMs, or earlier result dicts (or JSON files;
    for TOFU also TOFU's own saved eval_log_forget.json of a retain model). `template`/`system`: the
    prompt format for models loaded here (raw | chat | a format string with {question}); an object
    that already scores and generates keeps its own. `guard`: a guard directory to evaluate the
    model behind (`info` records the model and the guard: until session 35 a guarded evaluation
    said only "GuardedLM").
    """
    import inspect

    from .data.io import DataError
    from .evaluate import evaluate as run_eval, is_result

    # an option `evaluate` does not take, at the door (Python's TypeError from deep inside until session 39)
    options = set(inspect.signature(run_eval).parameters) - {"lm", "world", "oracle", "subject", "suites", "reference_lm"}
    if unknown := sorted(set(kwargs) - options):
        raise ValueError(f"unknown evaluation option {unknown[0]!r}; valid options: {', '.join(sorted(options))}")
    tpl = parse_template(template, system, model)
    suites = (suites,) if isinstance(suites, str) else tuple(suites)
    timer = runinfo.Timer()
    if out is not None and Path(out).is_dir():
        raise DataError(f"{out}: is a directory; the results go to a JSON file (e.g. {Path(out) / 'metrics.json'})")
    if out is not None:
        check_results_out(out, model=model, subject=subject, oracle=oracle, reference=reference, guard=guard, data=data)
    from .benchmarks import check_split

    check_split(benchmark, split)
    bench = None
    if benchmark is not None:
        from .benchmarks import load_benchmark

        bench = load_benchmark(benchmark, data, split)
        suites = tuple(s for s in suites if s in bench.suites)
        if bench.world is not None and not suites:
            raise ValueError(f"the {benchmark} benchmark has the suites {', '.join(bench.suites)} only")
        kwargs = {**bench.eval_options, **kwargs}
    w = load_world(data) if bench is None else bench.world
    made_on = runinfo.data_hash(data)  # once: what the results record, and what a given result must match
    lm, fp = as_lm(model, tpl)
    if guard is not None:
        from .guard.guarded import guarded_lm

        lm = guarded_lm(lm, guard)
    if bench is not None and bench.run is not None:
        if given := [k for k, v in (("oracle", oracle), ("subject", subject), ("reference", reference)) if v is not None]:
            raise ValueError(f"--{given[0]}: the {benchmark} benchmark scores the model on its own (its accuracy or "
                             f"probes), against no other model")  # ignored without a word until session 35
        with timer("eval"):
            res = bench.run(lm, batch_size=kwargs.get("batch_size"))
    else:
        converts = bench is not None and bench.convert_oracle is not None  # TOFU's own eval logs
        oracle_res = _as_result(oracle, w, suites, tpl, role="oracle", data=None if converts else (data, made_on))
        if converts and isinstance(oracle_res, dict):
            oracle_res = bench.convert_oracle(oracle_res)
            if not is_result(oracle_res):  # any JSON object passed, with a note, until session 35
                raise DataError(f"{oracle if isinstance(oracle, (str, Path)) else 'the oracle result'}: neither a "
                                f"result of `unlearn eval` nor {benchmark}'s own saved evaluation of a retain model")
        subject_res = (_as_result(subject, w, suites, tpl, oracle=oracle_res, role="subject", data=(data, made_on))
                       if subject is not None else None)
        _same_prompts(getattr(lm, "template", tpl), oracle=oracle_res, subject=subject_res)
        ref_lm = as_lm(reference, tpl)[0] if reference is not None else None
        with timer("eval"):
            res = run_eval(lm, w, oracle=oracle_res, subject=subject_res, suites=tuple(suites), reference_lm=ref_lm,
                           **kwargs)
    if bench is not None:
        res["benchmark"] = bench.describe()
    res["info"] = {"model": str(model) if isinstance(model, (str, Path)) else type(model).__name__, "fingerprint": fp,
                   **({"guard": str(Path(guard).resolve())} if guard is not None else {}),
                   "template": getattr(lm, "template", tpl).to_dict(),
                   "data": str(data), "data_hash": made_on, "versions": runinfo.versions(),
                   "seconds": timer.seconds}
    if out is not None:
        runinfo.write_json(out, res)
    return res


def as_lm(model, template=None):
    """(LM, fingerprint) from a path or an object that already scores and generates; a loaded model
    puts its prompts in `template`'s format (data/templates.py)."""
    from .models.load import fingerprint
    from .scoring import LM, is_lm

    if is_lm(model):
        return model, None
    net, tok = load_model(model)
    return LM(net, tok, template=parse_template(template)), fingerprint(net)


def _as_result(x, w, suites, template=None, oracle=None, *, role: str = "oracle",
               data: tuple[str | os.PathLike, str] | None = None):
    """`x` (the `role`, oracle or subject: a result dict, a results JSON, "self", a checkpoint or an
    LM) as a result dict; a model is evaluated here, against `oracle` (a result dict) where given: the
    verdict reads the subject's forget quality and PrivLeak, which need it (until session 34 a
    subject checkpoint came without them, and the verdict could not decide). A given result must be
    one of `evaluate`'s and, with `data` (the data and its `runinfo.data_hash`), made on the same data
    (its `info.data_hash`): until session 35 any JSON object passed, and another world's result was
    compared with this one's."""
    from .data.io import DataError
    from .evaluate import evaluate as run_eval, is_result

    if x == "self" and role == "subject":  # an AttributeError inside the verdict until session 36
        raise ValueError("subject='self': only the oracle can be the model itself; give the subject's checkpoint "
                         "or its result")
    if x is None or x == "self":
        return x
    p = Path(x) if isinstance(x, (str, Path)) else None
    if isinstance(x, dict) or (p is not None and p.suffix == ".json" and not p.is_dir()):
        res, where = (x, f"the {role} result") if isinstance(x, dict) else (_read_result(p), str(p))
        if data is not None and not is_result(res):
            raise DataError(f"{where}: not a results dict of `unlearn eval` (no verdict, per_sample or "
                            f"forget_quality field): give the {role}'s evaluation, or its checkpoint")
        made_on = (res.get("info") or {}).get("data_hash")
        if data is not None and made_on is not None and made_on != data[1]:
            raise DataError(f"{where}: the {role} was evaluated on other data ({res['info'].get('data')}, hash "
                            f"{made_on}; {data[0]} hashes to {data[1]}): evaluate it on {data[0]}")
        return res
    lm, _ = as_lm(x, template)
    return run_eval(lm, w, suites=tuple(suites), oracle=oracle if isinstance(oracle, dict) else None)


def _same_prompts(template, **results) -> None:
    """Given results must have put their questions in the same prompt format as this evaluation: a
    subject and oracle evaluated with `--template chat` beside a model evaluated raw made the verdict
    fail the model on utility (0.10 against the subject's 0.65) without a word, until session 36."""
    from .data.io import DataError

    mine = template.to_dict()
    for role, res in results.items():
        theirs = (res.get("info") or {}).get("template") if isinstance(res, dict) else None
        if theirs is not None and theirs != mine:
            raise DataError(f"--{role}: evaluated with the prompt format {theirs.get('kind')!r}, this evaluation "
                            f"uses {mine['kind']!r}: evaluate both with the same --template")


def _read_result(p: Path) -> dict:
    """A results JSON written by `evaluate`; a missing, unreadable or non-object file is a DataError naming it."""
    from .data.io import DataError

    return runinfo.read_json(p, DataError)


ATTACK_HEADLINE = ["recovery", "recovery_variant", "oracle_recovery", "excess_recovery", "plain_forget_rouge",
                   "attacked_forget_rouge"]


def reusable(ckpt: Path, data: Path, seed: int, kind: str, size: str = "tiny") -> bool:
    """Whether `ckpt` is a `kind` ("subject" or "oracle") already trained by `finetune` on this very
    data, from this seed, at this size (a model tuned from a base checkpoint has no size of its own)."""
    meta = ckpt / "unlearnkit.json"
    if not meta.is_file() or not (ckpt / "config.json").is_file():
        return False
    m = json.loads(meta.read_text())
    return (m.get("data_hash") == runinfo.data_hash(data) and m.get("seed") == seed and m.get("kind") == kind
            and m.get("size") in (None, size))


def _finetune_job(args):
    import torch

    torch.set_num_threads(1)
    data, ckpt, without_forget, seed, progress, overrides = args
    return str(finetune(data, ckpt, without_forget=without_forget, seed=seed, progress=progress, **overrides))


def train_pair(data: str | os.PathLike, todo: dict[str, str | os.PathLike], *, seed: int = 0, progress: bool = True,
               overwrite: bool = False, **train_overrides) -> None:
    """Train from scratch the models named in `todo` ("subject" and/or "oracle" -> checkpoint dir);
    `overwrite`: replace an earlier checkpoint there (`finetune`).

    Two at once run side by side, one process and one thread each: at this model size a step gains
    little from a second thread, so two processes nearly halve the wall time. The processes are
    spawned, so a script that calls this at its top level needs Python's usual
    `if __name__ == "__main__":` guard (without it, each new process runs the script again)."""
    train_overrides = {**train_overrides, "overwrite": overwrite}
    jobs = [(data, ckpt, kind == "oracle", seed, progress, train_overrides) for kind, ckpt in todo.items()]
    if len(jobs) < 2 or (os.cpu_count() or 1) < 2:
        for _, ckpt, without_forget, *_ in jobs:
            finetune(data, ckpt, without_forget=without_forget, seed=seed, progress=progress, **train_overrides)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        list(pool.map(_finetune_job, jobs))


def embedded(out: str | os.PathLike, *, seed: int = 0, n_people: int = 60, forget_fraction: float = 0.10,
             progress: bool = True, say=None, timer: runinfo.Timer | None = None) -> tuple[Path, dict[str, Path]]:
    """The embedded default in `out`: the world (`out/world`) and its subject and oracle
    (`out/models/{subject,oracle}`), trained side by side unless a model trained on the same world
    and seed is already there. Returns (world dir, {"subject": dir, "oracle": dir})."""
    say = say or (lambda *a, **k: None)
    timer = timer or runinfo.Timer()
    out = Path(out)
    with timer("world"):
        data = world(out / "world", seed=seed, n_people=n_people, forget_fraction=forget_fraction)
    say(f"[bold]1/6[/] world: {data}")
    models = {k: out / "models" / k for k in ("subject", "oracle")}
    todo = [k for k, ckpt in models.items() if not reusable(ckpt, data, seed, k)]
    for k in models:
        say(f"[bold]2/6[/] {k}: " + ("training a small Llama from scratch" if k in todo else f"reusing {models[k]}"))
    with timer("subject+oracle"):
        train_pair(data, {k: models[k] for k in todo}, seed=seed, progress=progress, overwrite=True)  # its own stage
    return data, models


DEMO_ATTACKS = ("relearn", "quantize", "probes", "incontext")
DEMO_GUARD = "pseudonymise"  # the guard action the demo evaluates (the one that answers like the oracle)


def demo_guard(out: str | os.PathLike | None, data: str | os.PathLike, action: str | None = DEMO_GUARD,
               false_refusal: float = 0.01):
    """The guard of the demo in `out` (None: in memory): the forget people as targets with `action`
    (None: the guard's default action), calibrated at `false_refusal` on the retain and neighbour
    questions, with the held-out paraphrases of the forget questions for recall. Targets already
    there are replaced by id (a rerun is idempotent; targets added by hand stay). Returns the
    `Guard`; its `settings.calibration` holds the calibration."""
    from .guard import Guard, targets_from_world
    from .guard.detect import check_false_refusal

    w = load_world(data)
    if out is not None:  # its files went in among the world's, and changed its data hash, until session 36
        check_out(data, out, what="data")
    targets = targets_from_world(w, action=action)  # checked before the guard's folder is made
    check_false_refusal(false_refusal)
    g = Guard(out)
    have = {t.id for t in g.list()}
    for t in targets:
        if t.id in have:
            g.remove(t.id)
    g.add_many(targets)
    g.calibrate({"retain": [r.question for r in w.retain], "neighbours": [r.question for r in w.neighbours]},
                false_refusal, positives=[r.paraphrased_question for r in w.forget if r.paraphrased_question])
    return g


def guard_detections(guard, data: str | os.PathLike) -> dict:
    """The guard's detection score of every forget, retain and neighbour question, whether it acts
    on it, its threshold and its calibration: what the report draws against the threshold."""
    w = load_world(data)
    groups = {}
    for name, recs in (("forget", w.forget), ("retain", w.retain), ("neighbours", w.neighbours)):
        if recs:
            det = guard.detect([r.question for r in recs])
            groups[name] = {"score": [round(d.score, 4) for d in det], "hit": [d.hit for d in det],
                            "channel": [d.channel for d in det]}
    return {"threshold": guard.detector.threshold, "calibration": guard.settings.calibration, "groups": groups}


def report(inputs, html: str | os.PathLike, *, compare: bool = False) -> Path:
    """Write the self-contained HTML report of run directories or metrics JSON files to `html`
    (`compare=True`: runs side by side, see `unlearnkit.report.page`)."""
    from .report import write_html

    inputs = [inputs] if isinstance(inputs, (str, Path, dict)) else list(inputs)
    if bad := [x for x in inputs if not isinstance(x, (str, Path))]:  # a dict was read as its keys until session 36
        raise TypeError(f"inputs: run directories or results JSON files, not {type(bad[0]).__name__}; write a result "
                        f"with `evaluate(..., out=PATH)` and pass PATH")
    return write_html(inputs, html, compare=compare)


def report_home(home: str | os.PathLike, html: str | os.PathLike) -> Path:
    """The deployment home's ledger and versions (with their utility) as an HTML page at `html`, with
    one page per certificate beside it (`<html stem>-certificates/<request id>.html`)."""
    from . import requests as rq
    from .report.home import write_home_html

    h = rq.open_home(home)
    rows = rq.list_requests(h)
    certs = {r["id"]: rq.certificate(h, r["id"]) for r in rows if r["status"] == "verified" and r["certificate"]}
    return write_home_html(rows, certs, html, title=f"Forget requests: {Path(home).resolve().name}",
                           versions=rq.versions(h), floor=h.settings.utility_floor)


def is_home(path: str | os.PathLike) -> bool:
    return (Path(path) / "home.json").is_file()


def compare(inputs, html: str | os.PathLike) -> Path:
    """Methods or seeds side by side in one HTML page: `report(inputs, html, compare=True)`."""
    return report(inputs, html, compare=True)


def _run_method(run: Path, asked: str | None) -> str | None:
    """The method a run used, from its config.yaml (the data's default, where none was asked for)."""
    import yaml

    return (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("method", asked)


def demo(out: str | os.PathLike = "runs/demo", *, seed: int = 0, method: str | None = None, n_people: int = 60,
         forget_fraction: float = 0.10, attacks: tuple[str, ...] = DEMO_ATTACKS, guard: str | None = DEMO_GUARD,
         progress: bool = True, console=None, requests: bool = False) -> dict:
    """The whole job on the embedded default: world → subject + oracle → unlearn → guard → evaluate →
    attack → report.

    Trained checkpoints in `out/models/` are reused by a later run on the same world and seed. The
    guard (inference-time unlearning, weights untouched) goes to `out/guard`, with the forget people as
    targets and action `guard` (None: no guard); its results are the model "guarded" (the subject
    behind it). Each attack's full result goes to `out/attacks/<kind>.json`; `metrics["attacks"]`
    keeps its headline. `metrics["guard"]` holds the guard's detection scores. The reports are
    `out/report.md` and `out/report.html` (self-contained, with plots).
    """
    from .guard import ACTIONS
    from .attacks import check_attack, run_attack
    from .evaluate import verdict as run_verdict
    from .report import write_report

    say = console.print if console is not None else (lambda *a, **k: None)
    for kind in attacks:  # fail on an unknown attack or method before any training
        check_attack(kind)
    if method is not None:
        get_method(method)
    if guard is not None and guard not in ACTIONS:
        raise ValueError(f"guard action {guard!r}: choose one of {', '.join(ACTIONS)}")
    out = Path(out)
    timer = runinfo.Timer()
    data, models = embedded(out, seed=seed, n_people=n_people, forget_fraction=forget_fraction, progress=progress,
                            say=say, timer=timer)
    say(f"[bold]3/6[/] unlearning the forget set with {method or 'the default method'}")
    with timer("forget"):
        run = forget(models["subject"], data, method, out / "unlearned", seed=seed, progress=progress,
                     overwrite=True)  # the demo's own stage
    say(f"      {run_summary(run)}")
    models["unlearned"] = run / "model"
    if guard is not None:
        say(f"[bold]4/6[/] guard: the forget people as targets, action {guard}")
        with timer("guard"):
            g = demo_guard(out / "guard", data, guard)
        models["guard"] = out / "guard"
    say("[bold]5/6[/] evaluating subject, oracle, unlearned" + (" and guarded models" if guard else " models"))
    results = {}
    with timer("eval"):
        results["oracle"] = evaluate(models["oracle"], data, oracle="self")
        results["subject"] = evaluate(models["subject"], data, oracle=results["oracle"])
        # the references judged as any model is, now that both are known (each said "cannot decide: give
        # --subject" in a demo that had evaluated the subject): the subject must fail, or no check has power
        for name in ("oracle", "subject"):
            results[name]["verdict"] = run_verdict(results[name], oracle=results["oracle"], subject=results["subject"])
        results["unlearned"] = evaluate(models["unlearned"], data, oracle=results["oracle"], subject=results["subject"])
        if guard is not None:
            from .guard import GuardedLM

            results["guarded"] = evaluate(GuardedLM(as_lm(models["subject"])[0], g), data, oracle=results["oracle"],
                                          subject=results["subject"])
    attack_results = {}
    with timer("attacks"):
        for kind in attacks:
            say(f"[bold]6/6[/] attack: {kind}")
            res = run_attack(kind, models["unlearned"], data, subject=models["subject"], oracle=models["oracle"],
                             seed=seed)
            runinfo.write_json(out / "attacks" / f"{kind}.json", res)
            attack_results[kind] = {k: res.get(k) for k in ATTACK_HEADLINE}
    guard_scores = None
    if guard is not None:
        with timer("guard scores"):  # for the report's plot of detection scores against the threshold
            guard_scores = guard_detections(g, data)
    if requests:
        from .requests.demo import demo_requests

        with timer("requests"):
            request_results = demo_requests(out, data, models["subject"], say=say, seed=seed)
    metrics = {
        "models": results,
        "attacks": attack_results,
        "unlearning": json.loads((run / "train.json").read_text()),
        **({"requests": request_results} if requests else {}),
        # the method the run used, the data's default included (null, shown as "method None", until session 36)
        "config": {"seed": seed, "method": _run_method(run, method),
                   "n_people": n_people, "forget_fraction": forget_fraction,
                   "attacks": list(attacks), "guard": guard, "out": str(out),
                   "paths": {k: str(v) for k, v in models.items()}},
        "versions": runinfo.versions(),
        "seconds": timer.seconds,
    }
    if guard_scores is not None:
        metrics["guard"] = guard_scores
    runinfo.write_json(out / "metrics.json", metrics)
    write_report(metrics, out / "report.md")
    report(out, out / "report.html")
    return metrics
