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
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .data.batching import Encoded, collate

Loss = Callable[..., "tuple[torch.Tensor, dict]"]

# Launched by torchrun / `accelerate launch --multi_gpu` on a machine without GPUs: accelerate only
# picks gloo data parallelism (MULTI_CPU) when told it runs on CPU, before its state is first built.
if "LOCAL_RANK" in os.environ and not torch.cuda.is_available():
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")


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
    max_grad_norm: float | None = 1.0
    seed: int = 0
    save_every: int = 0             # checkpoint every N steps (0: never)
    log_every: int = 10
    mixed_precision: str = "no"     # no | bf16 | fp16
    group_by_length: bool = False   # batch similar lengths together (less padding; changes which examples meet)
    extra: dict = field(default_factory=dict)


class Plan:
    """Which examples each step sees: a seeded permutation per epoch, cut into global batches of
    `batch_size * world`, then sliced by rank. A pure function of (seed, step): exactly resumable.

    With `group > 1`, each window of `group` batches is ordered by coarse length bucket (32 tokens)
    before cutting, so short QA pairs are not padded to a document's width. Buckets, not exact
    lengths: sorting by exact length clusters same-template questions and hurts optimisation."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, world: int = 1, group: int = 0):
        self.lengths, self.gb, self.seed, self.world, self.group = lengths, batch_size * world, seed, world, group
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
        return self._epoch(epoch)[k][rank::self.world]


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


def total_steps(cfg: TrainConfig, n_first: int, world: int = 1) -> int:
    if cfg.steps is not None:
        return int(cfg.steps)
    per_epoch = math.ceil(n_first / (cfg.batch_size * world * cfg.grad_accum))
    return max(1, math.ceil(cfg.epochs * per_epoch))


def _latest_checkpoint(out_dir: Path) -> Path | None:
    ckpts = sorted((out_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return ckpts[-1] if ckpts else None


class _LossModule(torch.nn.Module):
    """The model with its loss as `forward`, so that the loss runs inside the DDP/FSDP/DeepSpeed
    wrapper's forward: the wrapper's gradient hooks and parameter gathering see every call the loss
    makes (backbone, chunked head, several passes), and the loss itself sees the plain model."""

    def __init__(self, model, loss_fn, ctx):
        super().__init__()
        self.model, self.loss_fn, self.ctx = model, loss_fn, ctx

    def forward(self, batch):
        return self.loss_fn(self.model, batch, self.ctx)


def train(model, loss_fn: Loss, streams: dict[str, list[Encoded]], cfg: TrainConfig, *, pad_id: int,
          ctx: dict | None = None, out_dir: str | Path | None = None, resume: bool = False,
          progress: bool = True, desc: str = "train", accelerator=None, stop: Callable[[int, dict], bool] | None = None):
    """Optimise `loss_fn(model, batch, ctx) -> (loss, logs)` and return the (unwrapped) model.

    `streams` maps names ("forget", "retain", "train", ...) to encoded examples; each step draws one
    batch from every stream: `batch[name]` holds `input_ids`, `attention_mask`, `labels` and `index`
    (positions in the stream, for per-example caches in `ctx`). With `out_dir`, logs go to
    `log.jsonl` and checkpoints to `checkpoints/step-N` every `cfg.save_every` steps; `resume`
    continues from the latest one. `stop(step, logs)` may end training early.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, set_seed

    acc = accelerator or Accelerator(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    ctx = {} if ctx is None else ctx
    names = list(streams)
    for name in names:
        if not streams[name]:
            raise ValueError(f"training stream {name!r} is empty")
    steps = total_steps(cfg, len(streams[names[0]]), acc.num_processes)
    plans = {name: Plan([len(e.input_ids) for e in streams[name]], cfg.stream_batch.get(name, cfg.batch_size), cfg.seed + 7919 * i, acc.num_processes,
                        group=32 if cfg.group_by_length else 0)
             for i, name in enumerate(names)}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    # `steps` already counts global steps; accelerate's prepared scheduler would advance
    # num_processes times per step, so ours is stepped by hand and checkpointed alongside
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps))
    acc.register_for_checkpointing(sched)
    model, opt = acc.prepare(_LossModule(model, loss_fn, ctx), opt)
    model.train()

    out = Path(out_dir) if out_dir else None
    if out is not None and acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    start = 0
    if out is not None and resume and (ck := _latest_checkpoint(out)) is not None:
        acc.load_state(str(ck))
        start = json.loads((ck / "trainer_state.json").read_text())["step"]
    log_f = open(out / "log.jsonl", "a" if start else "w") if (out and acc.is_main_process) else None

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=start, desc=desc, disable=not (progress and acc.is_local_main_process),
               dynamic_ncols=True, leave=False)
    t0, tokens = time.perf_counter(), 0
    for step in range(start, steps):
        logs: dict = {}
        for micro in range(cfg.grad_accum):
            batch = {}
            for name in names:
                data = streams[name]
                idx = plans[name].indices(step * cfg.grad_accum + micro, acc.process_index)
                b = collate([data[i] for i in idx], pad_id)
                b["index"] = torch.tensor(idx)
                batch[name] = {k: v.to(acc.device) for k, v in b.items()}
                tokens += int(b["attention_mask"].sum())
            with acc.accumulate(model):
                with acc.autocast():
                    loss, micro_logs = model(batch)
                acc.backward(loss)
                if acc.sync_gradients and cfg.max_grad_norm:
                    acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                if acc.sync_gradients:
                    sched.step()
                opt.zero_grad(set_to_none=True)
            for k, v in {"loss": loss, **micro_logs}.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / cfg.grad_accum
        logs.update(step=step + 1, lr=sched.get_last_lr()[0])
        bar.update(1)
        bar.set_postfix(loss=f"{logs['loss']:.3f}")
        if log_f and ((step + 1) % cfg.log_every == 0 or step + 1 == steps):
            log_f.write(json.dumps(logs) + "\n")
            log_f.flush()
        if out is not None and cfg.save_every and (step + 1) % cfg.save_every == 0 and step + 1 < steps:
            _save_checkpoint(acc, out, step + 1)
        if stop is not None and stop(step + 1, logs):
            break
    bar.close()
    if log_f:
        log_f.close()
    acc.wait_for_everyone()
    ctx["train_stats"] = {"steps": steps - start, "seconds": time.perf_counter() - t0, "tokens": tokens * acc.num_processes}
    unwrapped = acc.unwrap_model(model).model
    if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # parameters are sharded across processes: gather a full state dict (a collective, every
        # process calls it) for the main process to save; `models.load.save_model` takes it
        full = acc.get_state_dict(model)
        ctx["full_state_dict"] = {k.removeprefix("model."): v for k, v in full.items()} if full else None
    unwrapped.eval()
    return unwrapped


def _save_checkpoint(acc, out: Path, step: int) -> None:
    final = out / "checkpoints" / f"step-{step}"
    tmp = out / "checkpoints" / f".tmp-step-{step}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({"step": step}))
        tmp.rename(final)
        for old in (out / "checkpoints").glob("step-*"):  # keep the latest only
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def config_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)
