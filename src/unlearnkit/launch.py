"""How `accelerate launch` (or torchrun) started this process, and the `Accelerator` the training loop
runs under: data parallel (DDP), FSDP2 or DeepSpeed, on GPUs or, over gloo, on CPU processes. One place
decides what a launch is (`distributed`: none, ddp, fsdp1, fsdp2, deepspeed-zeroN) and refuses the
ones that cannot run here (`check_launch`)."""
from __future__ import annotations

import contextlib
import os
import sys
import warnings

import torch

# Launched by torchrun / `accelerate launch --multi_gpu` on a machine without GPUs: accelerate only
# picks gloo data parallelism (MULTI_CPU) when told it runs on CPU, before its state is first built.
# Not under DeepSpeed, which runs on CPU through its own accelerator (`process_state`).
if ("LOCAL_RANK" in os.environ and not torch.cuda.is_available()
        and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true"):
    os.environ.setdefault("ACCELERATE_USE_CPU", "true")
# DeepSpeed, which accelerate imports wherever it is installed (`unwrap_model`), prints to stdout
# that it found no accelerator when left to detect one on a machine that has none; told, it says nothing.
if not (torch.cuda.is_available() or hasattr(torch, "accelerator") and torch.accelerator.is_available()):
    os.environ.setdefault("DS_ACCELERATOR", "cpu")


def process_state():
    """accelerate's `PartialState` as the loop's `Accelerator` will find it. Under torchrun on a
    machine without GPUs that is gloo data parallelism (ACCELERATE_USE_CPU, set above); a bare
    `PartialState()` there sets each process up alone, and an `Accelerator` built after it inherits
    that: every process trains apart and writes the same files. Under DeepSpeed there, the backend
    is named: accelerate finds none for the CPU, lets DeepSpeed start its process group, and then
    counts one process (each would take the whole batch as the whole run's)."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    kw = {"backend": "gloo"} if _deepspeed_on_cpu() else {}
    deepspeed = parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")
    if deepspeed:
        _deepspeed_output()
        if os.environ.get("DS_ACCELERATOR") == "cpu":  # its CPU accelerator, in one process or several
            _gloo_alone()
    # DeepSpeed prints to stdout as its process group starts (its CPU comm op's "built successfully",
    # once a process, until `_gloo_alone`)
    with contextlib.redirect_stdout(sys.stderr) if deepspeed else contextlib.nullcontext():
        return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"), **kw)


def _gloo_alone() -> None:
    """DeepSpeed's CPU accelerator all-reduces over gloo, as DDP and FSDP do here, not through its
    shared-memory op: that op is C++ that each process compiles with the machine's g++ on its first
    launch in an environment (45 s on two idle cores, 90 s beside other work: a third of a ZeRO-3
    test's time, every fresh clone), and DeepSpeed's own comment says its kernels fault without
    AVX2 (AVX-512 in half precision) and leave the other processes waiting. Marked incompatible,
    DeepSpeed neither builds nor loads it (`deepspeed.comm.torch.build_shm_op`)."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _deepspeed_output() -> None:
    """DeepSpeed logs to stdout, where `unlearn forget` and `finetune` print the one line a script
    reads (the run's directory): its log goes to stderr. Dropped: its warning that a module's output
    holds no tensor, about the loop's wrapper when a check's scoring function returns other things (a
    repair round's answers, generated under no_grad: there is no backward pass for a hook to miss);
    and torch's FutureWarning that the collectives ZeRO calls at every step are deprecated, which
    came back at each step (something clears the warnings registry between steps: 600 lines of
    stderr in a 99-step run), and is DeepSpeed's to act on, not the user's."""
    import logging

    from deepspeed.utils import logger

    warnings.filterwarnings("ignore", r"`torch\.distributed\.\w+` is deprecated", FutureWarning)
    for h in logger.handlers:
        if isinstance(h, logging.StreamHandler) and h.stream is sys.stdout:
            h.setStream(sys.stderr)
    if _harmless not in logger.filters:
        logger.addFilter(_harmless)


def _harmless(record) -> bool:
    """False for DeepSpeed's warning about the loop's wrapper (`_deepspeed_output`)."""
    return not record.getMessage().startswith("A module has unknown inputs or outputs type")


def _processes_on_cpu() -> bool:
    """Launched across processes on a machine without GPUs."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def _deepspeed_on_cpu() -> bool:
    """Launched with DeepSpeed across processes on a machine without GPUs (its CPU accelerator, gloo)."""
    from accelerate.utils import parse_flag_from_env

    return _processes_on_cpu() and parse_flag_from_env("ACCELERATE_USE_DEEPSPEED")


def _fsdp_on_cpu() -> bool:
    """Launched with FSDP across processes on a machine without GPUs."""
    from accelerate.utils import parse_flag_from_env

    return _processes_on_cpu() and parse_flag_from_env("ACCELERATE_USE_FSDP")


def check_launch() -> None:
    """A one-line ValueError, before the model is loaded, for a sharded launch that cannot run on a
    machine without GPUs: FSDP version 1. FSDP version 2 shards over gloo on CPU (`accelerator`;
    configs/accelerate/fsdp_cpu.yaml), and so does DeepSpeed, through its CPU accelerator
    (`process_state`; deepspeed_cpu.yaml)."""
    if _fsdp_on_cpu() and os.environ.get("FSDP_VERSION", "1") != "2":
        raise ValueError(f"launched with FSDP version {os.environ.get('FSDP_VERSION', '1')}, which needs GPUs, and "
                         f"this machine has none: set fsdp_version: 2 (configs/accelerate/fsdp_cpu.yaml)")


def accelerator(cfg):
    """The run's `Accelerator` for `cfg` (a `train.TrainConfig`), with a DeepSpeed launch's config set
    to the run's batch size, gradient accumulation and clipping. Under an FSDP launch without GPUs,
    FSDP2 over gloo: accelerate sets FSDP up on accelerator devices only (on CPU each process would be
    plain data parallel, its weights whole), while `fully_shard` itself shards on CPU, so the state
    is told it is FSDP, with the plugin the launcher's FSDP_* settings describe. That is the path
    tests/test_distributed.py::test_sharded_two_cpu_processes_train_as_ddp_does runs."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    kw = dict(gradient_accumulation_steps=cfg.grad_accum, mixed_precision=cfg.mixed_precision)
    if not _fsdp_on_cpu():
        process_state()  # first: it names DeepSpeed's backend on CPU
        acc = Accelerator(**kw)
        if acc.state.deepspeed_plugin is not None:
            # DeepSpeed steps by its own config, not by the loop's: the run's settings go there (its
            # batch size is bookkeeping, which accelerate reads from a dataloader this loop has not)
            acc.state.deepspeed_plugin.deepspeed_config.update(
                train_micro_batch_size_per_gpu=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
                gradient_clipping=cfg.max_grad_norm or 0.0)
        return acc
    plugin = FullyShardedDataParallelPlugin()
    acc = Accelerator(cpu=True, fsdp_plugin=plugin, **kw)
    # both states, as accelerate's own FSDP set-up leaves them (a later AcceleratorState() copies PartialState's)
    acc.state.distributed_type = process_state().distributed_type = DistributedType.FSDP
    acc.state.fsdp_plugin = plugin
    return acc


def distributed(acc) -> str:
    """How the processes shared the work, as recorded with the run: none (one process), ddp, fsdp1,
    fsdp2, or deepspeed-zeroN. A launch that asked for one thing and ran another says so here (the
    first DeepSpeed launch on CPU ran plain DDP, and nothing said it)."""
    from accelerate.utils import DistributedType

    if deepspeed(acc):
        return f"deepspeed-zero{acc.state.deepspeed_plugin.zero_stage}"
    if acc.distributed_type == DistributedType.FSDP:
        return "fsdp1" if fsdp1(acc) else "fsdp2"
    return "ddp" if acc.num_processes > 1 else "none"


def sharded(acc) -> bool:
    """Whether the weights are the wrapper's to gather (FSDP, DeepSpeed): each process holds only
    its own shard of them (FSDP, ZeRO-3) or of their float32 master copy (ZeRO-1/2)."""
    from accelerate.utils import DistributedType

    return acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def fsdp1(acc) -> bool:
    """FSDP version 1, whose flat parameters hold the weights and gradients where this loop can
    neither mask nor move them (FSDP2's per-weight shards it can, and DeepSpeed's partitions
    through DeepSpeed's own accessors)."""
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.FSDP and not acc.state.is_fsdp2


def deepspeed(acc) -> bool:
    """Launched with DeepSpeed (any ZeRO stage), which steps inside the backward pass from a float32
    master copy of the weights that it holds apart from the module's."""
    from accelerate.utils import DistributedType

    return acc.distributed_type == DistributedType.DEEPSPEED
