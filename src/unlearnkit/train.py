"""The one training loop. It runs every unlearning loss, the fine-tuning of subject and oracle
models, and the relearning attack.

Plain and visible, nanoGPT-style: sample a batch from each named stream, call the loss, step.
`accelerate` supplies devices, mixed precision and multi-process data parallelism (DDP/FSDP/
DeepSpeed through `accelerate launch`). Batches are a pure function of (seed, step), so a resumed run
sees exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from . import launch, runinfo, shards
from .data.batching import Encoded, collate

# TrainConfig's numeric fields; those that may also be None (no step budget, no clipping)
NUMBERS = ("lr", "steps", "epochs", "batch_size", "grad_accum", "warmup", "weight_decay", "saliency", "sam",
           "max_grad_norm", "seed", "save_every", "log_every")
OPTIONAL_NUMBERS = ("steps", "max_grad_norm")

Loss = Callable[..., "tuple[torch.Tensor, dict] | tuple[torch.Tensor, dict, torch.Tensor]"]  # (loss, logs[, forget term])


@dataclass
class TrainConfig:
    lr: float = 1e-4
    steps: int | None = None        # optimizer steps; if None, `epochs` over the first stream
    epochs: float = 1.0
    batch_size: int = 16            # per stream, per process, per micro-step
    stream_batch: dict = field(default_factory=dict)  # per-stream batch sizes overriding batch_size
    grad_accum: int = 1
    warmup: float = 0.0             # fraction of steps with linear warm-up
    schedule: str = "constant"      # constant | linear | cosine (decay after warm-up)
    weight_decay: float = 0.0
    saliency: float = 0.0           # unlearning: train only this fraction of the weights (unlearning.keep_salient; 0: all)
    sam: float = 0.0                # unlearning: sharpness-aware steps against relearning, radius as a fraction of the
                                    # trainable weights' norm (`sharpness_aware_backward`; 0: plain steps)
    max_grad_norm: float | None = 1.0
    seed: int = 0
    save_every: int = 0             # checkpoint every N steps (0: never)
    log_every: int = 10
    mixed_precision: str | None = None  # no | bf16 | fp16; None: the launcher's (`accelerate launch --mixed_precision`), else no
    group_by_length: bool = False   # batch similar lengths together (less padding; changes which examples meet)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        """Nonsense numbers are refused here, where they enter, with the option's name."""
        def bad(name, why):
            raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {why}")

        # first the types: a string ("1e-3", from the API or YAML) was refused as not > 0, or reached a
        # comparison as a TypeError. Refused, not converted: the dataclass converts nothing else either.
        for name in NUMBERS:
            v = getattr(self, name)
            if not (v is None and name in OPTIONAL_NUMBERS) and not runinfo.is_number(v):
                bad(name, f"must be a number, not {type(v).__name__}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            bad("lr", "the learning rate must be a finite number > 0")
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            bad("steps", "must be a whole number >= 1")
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            bad("epochs", "must be a finite number > 0")
        for name in ("batch_size", "grad_accum"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                bad(name, "must be a whole number >= 1")
        if any(int(v) != v or v < 1 for v in self.stream_batch.values()):
            raise ValueError(f"stream_batch {self.stream_batch}: batch sizes must be whole numbers >= 1")
        if not 0 <= self.warmup < 1:
            bad("warmup", "must be a fraction in [0, 1)")
        if self.schedule not in ("constant", "linear", "cosine"):
            bad("schedule", "choose one of constant, linear, cosine")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            bad("max_grad_norm", "must be > 0 (or None: no clipping)")
        if self.save_every < 0:
            bad("save_every", "must be >= 0 (0: never)")
        if not (isinstance(self.saliency, (int, float)) and 0 <= self.saliency < 1):
            bad("saliency", "the fraction of weights to train, 0 < f < 1 (0: all of them)")
        if not (isinstance(self.sam, (int, float)) and 0 <= self.sam < 1):
            bad("sam", "the radius of the sharpness-aware step, a fraction of the weights' norm in [0, 1) (0: off)")
        if self.sam and self.grad_accum != 1:
            bad("sam", "sharpness-aware steps take the gradient twice per step; use --grad-accum 1")
        if self.saliency and self.weight_decay:
            bad("saliency", "with weight_decay > 0 the weights it keeps fixed would still shrink: drop one of them")
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            bad("mixed_precision", "choose one of no, bf16, fp16")


class DivergedError(ValueError):
    """The loss became NaN or infinite: the run stops and nothing is saved."""


@dataclass
class TrainResult:
    """What `train()` returns: the (unwrapped, eval-mode) model and how the run went."""
    model: Any
    steps: int                      # optimizer steps run by this call
    last_step: int                  # the global step the run ended at
    seconds: float                  # training time, the part before a resume included
    tokens: int                     # tokens trained on, the part before a resume included
    full_state_dict: dict | None = None   # gathered weights under FSDP/ZeRO-3 (main process; {} on the others), else None
    stop: Any = None                # the monitor's account of why and where the run stopped
    processes: int = 1              # processes that trained it, each on its slice of every batch
    mixed_precision: str = "no"     # what the forward passes ran in: no (the weights' dtype), bf16, fp16
    distributed: str = "none"       # how the processes shared the work (`distributed`): none, ddp, fsdp2, deepspeed-zero3, ...
    resumed_from: int = 0           # the checkpoint's step this call went on from (0: it started the run)


class Monitor(Protocol):
    """Watches a run at the steps it says are `due` (and once before the first step) through a
    `Handle`, and decides whether it goes on. `calibrate.Calibrator` is the one that stops
    unlearning at its target."""
    def due(self, step: int) -> bool: ...                           # check after this step?

    def check(self, step: int, handle: "Handle") -> bool: ...      # True: stop now
    def finish(self, step: int, handle: "Handle") -> Any: ...      # at the end: restore the kept weights, say why
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class BatchSchedule:
    """Which examples each step sees: a seeded permutation per epoch, cut into global batches of
    `batch_size * processes`, then sliced by rank. A pure function of (seed, step): exactly resumable.

    With `group > 1`, each window of `group` batches is ordered by coarse length bucket (32 tokens)
    before cutting, so short QA pairs are not padded to a document's width. Buckets, not exact
    lengths: sorting by exact length clusters same-template questions and hurts optimisation."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, processes: int = 1, group: int = 0):
        self.lengths, self.gb, self.seed, self.processes, self.group = (lengths, batch_size * processes, seed,
                                                                        processes, group)
        self.per_epoch = max(1, math.ceil(len(lengths) / self.gb))
        self._cache: dict[int, list[list[int]]] = {}

    def _epoch(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            rng = random.Random(self.seed * 1_000_003 + epoch)
            perm = list(range(len(self.lengths)))
            rng.shuffle(perm)
            perm += perm[: self.per_epoch * self.gb - len(perm)]  # top up the last batch
            if self.group > 1:
                span = self.gb * self.group
                perm = [i for s in range(0, len(perm), span)
                        for i in sorted(perm[s:s + span], key=lambda i: self.lengths[i] // 32)]
            batches = [perm[k:k + self.gb] for k in range(0, len(perm), self.gb)]
            if self.group > 1:
                rng.shuffle(batches)
            self._cache = {epoch: batches}
        return self._cache[epoch]

    def indices(self, step: int, rank: int = 0) -> list[int]:
        epoch, k = divmod(step, self.per_epoch)
        return self._epoch(epoch)[k][rank::self.processes]


def _lr_lambda(cfg: TrainConfig, total: int):
    warm = int(cfg.warmup * total)

    def f(step):
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        frac = (step - warm) / max(1, total - warm)
        return max(0.0, 1 - frac) if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * frac))
    return f


def one_budget(overrides: dict) -> dict:
    """The caller's training overrides with one budget: `steps` or `epochs`, refused together (the steps
    won without a word until session 35); an epoch budget replaces a default step budget."""
    if overrides.get("steps") is not None and overrides.get("epochs") is not None:
        raise ValueError(f"--steps {overrides['steps']!r} and --epochs {overrides['epochs']!r}: give one budget, not both")
    return {**overrides, "steps": None} if overrides.get("epochs") is not None else overrides


def total_steps(cfg: TrainConfig, n_first: int, processes: int = 1) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    per_epoch = math.ceil(n_first / (cfg.batch_size * processes * cfg.grad_accum))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def _latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted((out_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


class _LossModule(torch.nn.Module):
    """The model with its loss as `forward`, so that the loss runs inside the DDP/FSDP/DeepSpeed
    wrapper's forward: the wrapper's gradient hooks and parameter gathering see every call the loss
    makes (backbone, chunked head, several passes), and the loss itself sees the plain model. A
    monitor's scoring passes go through the same door (`fn`)."""

    def __init__(self, model, loss_fn, ctx):
        super().__init__()
        self.model, self.loss_fn, self.ctx = model, loss_fn, ctx

    def forward(self, batch, fn=None):
        return (fn or self.loss_fn)(self.model, batch, self.ctx)


class Handle:
    """What a `Monitor` may do to a running training: score batches (no grad, through the
    distributed wrapper), copy and restore the trainable weights, scale the learning rate, and write
    a record to the run's log.jsonl (`log`)."""

    def __init__(self, wrapped, opt, sched, device, log: Callable[[dict], None]):
        self._wrapped, self._opt, self._sched, self.device, self.log = wrapped, opt, sched, device, log

    @torch.no_grad()
    def score(self, fn, batch: dict):
        was = self._wrapped.training
        self._wrapped.eval()
        try:
            return self._wrapped({k: v.to(self.device) for k, v in batch.items()}, fn=fn)
        finally:
            self._wrapped.train(was)

    def _params(self):
        self._reshard()
        return [(n, p) for n, p in self._wrapped.named_parameters() if p.requires_grad]

    def _reshard(self) -> None:
        """Under FSDP2, put every module's sharded weights back in place. After a forward with no
        backward (a check's) the root module keeps its gathered weights, as plain tensors, in their
        place: a copy taken then is not a shard, and one written there is lost at the next reshard."""
        from torch.distributed.fsdp import FSDPModule

        for m in self._wrapped.modules():
            if isinstance(m, FSDPModule):
                m.reshard()

    def snapshot(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the trainable weights as the next step starts from them (`master_copy`):
        this process's shard under FSDP, its partition of the float32 weights under ZeRO-3."""
        return {n: shards.master_copy(p).detach().to("cpu", copy=True) for n, p in self._params()}

    @torch.no_grad()
    def restore(self, snap: dict[str, torch.Tensor]) -> None:
        params = self._params()
        for n, p in params:
            shards.set_weights(p, snap[n])
        if any(shards.is_zero3(p) for _, p in params):
            # the whole copies ZeRO-3 keeps gathered between passes (weights it expects to use again
            # soon) hold the abandoned path: dropped, so that the next pass gathers the partitions
            shards.regather_zero3(self._wrapped, [p for _, p in params])
        self._opt.state.clear()  # moments of the abandoned path would push back towards it

    def scale_lr(self, factor: float) -> None:
        self._sched.base_lrs = [lr * factor for lr in self._sched.base_lrs]
        for g, lr, lam in zip(self._opt.param_groups, self._sched.base_lrs, self._sched.lr_lambdas):
            g["lr"] = lr * lam(self._sched.last_epoch)

    @property
    def lr(self) -> float:
        return self._opt.param_groups[0]["lr"]


def train(model, loss_fn: Loss, streams: dict[str, list[Encoded]], cfg: TrainConfig, *, pad_id: int,
          ctx: dict | None = None, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True, desc: str = "train", accelerator=None, stop: Callable[[int, dict], bool] | None = None,
          monitor: Monitor | None = None, grad_masks: dict[str, torch.Tensor] | None = None) -> TrainResult:
    """Optimise `loss_fn(model, batch, ctx) -> (loss, logs)`; return a `TrainResult` holding the
    (unwrapped, eval-mode) model. `grad_masks`: a boolean mask per weight of `model`, by name
    (`unlearning.keep_salient`), multiplying its gradient after every backward pass.

    `streams` maps names ("forget", "retain", "train", ...) to encoded examples; each step draws one
    batch from every stream: `batch[name]` holds `input_ids`, `attention_mask`, `labels` and `index`
    (positions in the stream, for per-example caches in `ctx`). With `out_dir`, logs go to
    `log.jsonl` and checkpoints to `checkpoints/step-N` every `cfg.save_every` steps; `resume`
    continues from the latest one. `stop(step, logs)` may end training early; so may `monitor`, which
    is asked before the first step and after each step it says is `due`, and at the end restores the
    weights it keeps. A NaN or infinite loss raises `DivergedError`.
    """
    from accelerate.utils import set_seed

    launch.check_launch()
    acc = accelerator or launch.accelerator(cfg)
    if cfg.sam and launch.fsdp1(acc):
        raise ValueError("--sam under FSDP version 1: sharpness-aware steps move the weights, which its flat "
                         "parameters hold where this loop cannot move them; use fsdp_version: 2, DDP or DeepSpeed")
    if cfg.sam and launch.deepspeed(acc) and acc.state.deepspeed_plugin.zero_stage != 3:
        raise ValueError(f"--sam under DeepSpeed ZeRO-{acc.state.deepspeed_plugin.zero_stage}: its gradient buckets "
                         f"do not take the step's extra gradient pass; use zero_stage: 3, FSDP2 or DDP")
    set_seed(cfg.seed)
    names = list(streams)
    for name in names:
        if not streams[name]:
            raise ValueError(f"training stream {name!r} is empty")
    steps = total_steps(cfg, len(streams[names[0]]), acc.num_processes)
    schedules = {name: BatchSchedule([len(e.input_ids) for e in streams[name]], cfg.stream_batch.get(name, cfg.batch_size),
                                     cfg.seed + 7919 * i, acc.num_processes, group=32 if cfg.group_by_length else 0)
                 for i, name in enumerate(names)}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    # `steps` already counts global steps; accelerate's prepared scheduler would advance
    # num_processes times per step, so ours is stepped by hand and checkpointed alongside
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    acc.register_for_checkpointing(sched)
    model, opt = acc.prepare(_LossModule(model, loss_fn, ctx), opt)
    masks, hooks = shards.sharded_masks(acc, model, grad_masks) if grad_masks else ([], [])
    model.train()

    out = Path(out_dir) if out_dir else None
    if out is not None and acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    start, before = 0, {"seconds": 0.0, "tokens": 0}
    if out is not None and resume and (ck := _latest_checkpoint(out)) is not None:
        acc.load_state(str(ck))
        state = json.loads((ck / "trainer_state.json").read_text())
        start, before = state["step"], {"seconds": state.get("seconds", 0.0), "tokens": state.get("tokens", 0)}
        if monitor is not None and "monitor" in state:
            monitor.load_state_dict({**state["monitor"], "snapshots": torch.load(ck / _monitor_file(acc))})
        if acc.is_main_process:
            _trim_log(out / "log.jsonl", start)
    log_f = open(out / "log.jsonl", "a" if start else "w") if (out and acc.is_main_process) else None
    def log(record: dict) -> None:
        if log_f:
            log_f.write(json.dumps(record) + "\n")
            log_f.flush()

    from tqdm.auto import tqdm

    # to a terminal at most ten times a second; to a log (CI, `make demo > log`) once in 10 s: every
    # step drew the bar twice there, 320 KB of bars in one `make demo` log until session 39
    bar = tqdm(total=steps, initial=start, desc=desc, disable=not (progress and acc.is_local_main_process),
               dynamic_ncols=True, leave=False, mininterval=0.1 if sys.stderr.isatty() else 10.0)
    handle = Handle(model, opt, sched, acc.device, log)
    t0, tokens, step = time.perf_counter(), 0, start

    def so_far() -> dict:  # the run's time and tokens up to now, for a checkpoint and the result
        return {"seconds": before["seconds"] + time.perf_counter() - t0,
                "tokens": before["tokens"] + tokens * acc.num_processes}
    stopped = monitor is not None and start == 0 and monitor.check(0, handle)
    while step < steps and not stopped:
        logs: dict = {}
        for micro in range(cfg.grad_accum):
            batch, n = _batch_at(streams, schedules, step * cfg.grad_accum + micro, acc, pad_id)
            tokens += n
            with acc.accumulate(model):
                with acc.autocast():
                    loss, micro_logs, *forget = model(batch)
                if cfg.sam:
                    loss, micro_logs = shards.sharpness_aware_backward(acc, model, batch, forget, cfg.sam, masks)
                else:
                    acc.backward(loss)
                shards.mask_grads(masks)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                if acc.sync_gradients:
                    sched.step()
                opt.zero_grad(set_to_none=True)
            for k, v in {"loss": loss, **micro_logs}.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / cfg.grad_accum
        if not math.isfinite(logs["loss"]):
            bar.close()
            if log_f:
                log_f.close()
            raise DivergedError(f"the loss became {logs['loss']} at step {step + 1} (learning rate "
                                f"{sched.get_last_lr()[0]:.3g}): stopped, nothing saved; try a smaller --lr")
        step += 1
        logs.update(step=step, lr=sched.get_last_lr()[0])
        bar.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)  # drawn with the step, as often as it is
        bar.update(1)
        if step % cfg.log_every == 0 or step == steps:
            log(logs)
        stopped = monitor is not None and monitor.due(step) and monitor.check(step, handle)
        if out is not None and cfg.save_every and step % cfg.save_every == 0 and step < steps and not stopped:
            _save_checkpoint(acc, out, step, monitor, so_far())
            runinfo.kill_point(f"checkpoint-{step}")
        stopped = stopped or (stop is not None and stop(step, logs))
    stop_info = monitor.finish(step, handle) if monitor is not None else None
    for h in hooks:
        h.remove()
    bar.close()
    if log_f:
        log_f.close()
    acc.wait_for_everyone()
    unwrapped, full = shards.trained_model(acc, model)
    total = so_far()
    return TrainResult(unwrapped, step - start, step, total["seconds"], total["tokens"], full,
                       stop_info, acc.num_processes, str(acc.mixed_precision), launch.distributed(acc), start)


def _trim_log(path: Path, step: int) -> None:
    """Before a resume from the checkpoint at `step`: drop the records a run logged after it (they are
    logged again), so that `log.jsonl` reads as one run's. A record's step is its own (`step`) or, for
    the monitor's records, that of the one dict it holds; one with none (the monitor's `stopped`,
    written at the end) or cut short by a kill is dropped."""
    def at(line: str) -> float:
        try:
            record = json.loads(line)
        except ValueError:
            return math.inf
        inner = [v for v in record.values() if isinstance(v, dict)]
        return record.get("step", inner[0].get("step", math.inf) if len(inner) == 1 else math.inf)

    if path.is_file():
        runinfo.write_text(path, "".join(line + "\n" for line in path.read_text().splitlines() if at(line) <= step))


def _batch_at(streams: dict[str, list[Encoded]], schedules: dict, micro_step: int, acc,
              pad_id: int) -> tuple[dict, int]:
    """One micro-batch from every stream, on the device: this process's slice of the global batch
    `micro_step` draws (`BatchSchedule`), each with `index`, the examples' positions in the stream;
    and its real tokens, counted on the CPU before the copy (no device sync on the hot path)."""
    batch, tokens = {}, 0
    for name, data in streams.items():
        idx = schedules[name].indices(micro_step, acc.process_index)
        b = collate([data[i] for i in idx], pad_id)
        b["index"] = torch.tensor(idx)
        tokens += int(b["attention_mask"].sum())
        batch[name] = {k: v.to(acc.device) for k, v in b.items()}
    return batch, tokens


def _save_checkpoint(acc, out: Path, step: int, monitor: Monitor | None = None, so_far: dict | None = None) -> None:
    """The run's state at `step`, written whole or not at: the optimizer's and scheduler's (accelerate),
    the step, the time and tokens so far (`so_far`), and the monitor's state and weight snapshots."""
    final = out / "checkpoints" / f"step-{step}"
    tmp = out / "checkpoints" / f".tmp-step-{step}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    state: dict = {"step": step, **(so_far or {})}
    if monitor is not None:
        state["monitor"] = monitor.state_dict()
        snapshots = state["monitor"].pop("snapshots", {})
        if acc.is_main_process or launch.sharded(acc):  # whole weights: the same snapshots in every process
            torch.save(snapshots, tmp / _monitor_file(acc))
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        tmp.rename(final)
        for old in (out / "checkpoints").glob("step-*"):  # keep the latest only
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def _monitor_file(acc) -> str:
    """A checkpoint's file for the monitor's snapshots of the weights: one, or, where each process
    holds its own shard of them (FSDP, ZeRO-3), one a process (until session 32 the main process's
    shards were restored into every process on `--resume`)."""
    return f"monitor-{acc.process_index}.pt" if launch.sharded(acc) else "monitor.pt"


def config_dict(cfg: TrainConfig) -> dict:
    """The settings as a run records them: with a step budget, no `epochs` (unused there; recorded
    beside the steps, as if both had been asked for, until session 36)."""
    d = asdict(cfg)
    if cfg.steps is not None:
        del d["epochs"]
    return d
