"""The weights where a launch keeps them (`launch.distributed`): whole in every process (one process,
DDP), sharded (FSDP2: each process one shard of every weight, a `DTensor`), or held by DeepSpeed
beside a float32 master copy that its step writes back over them (ZeRO-1/2: whole weights; ZeRO-3:
each process a partition). What the loop does to weights outside a plain step goes through here:
gather them at the end, copy and restore them (a calibrated run's backtracks), mask their gradients
(saliency), and move them for a sharpness-aware step."""
from __future__ import annotations

from typing import Any

import torch

from .launch import deepspeed, fsdp1, sharded


def trained_model(acc, model) -> tuple[Any, dict | None]:
    """(the unwrapped model in eval mode, its full state dict where the parameters are sharded across
    processes, else None). Gathering is a collective: every process calls it, and the main process
    saves what it returns (`models.load.save_model(state_dict=...)`); the others get an empty dict,
    which still says the weights are sharded."""
    full = None
    unwrapped = acc.unwrap_model(model).model
    if sharded(acc):
        gathered = acc.get_state_dict(model)
        full = {k.removeprefix("model."): v for k, v in (gathered or {}).items()}
    unwrapped.eval()
    return unwrapped, full


def sharded_masks(acc, model, grad_masks: dict[str, torch.Tensor]) -> tuple[list, list]:
    """(weight, mask) pairs for the prepared `model`, each mask on its weight's device and dtype and,
    under FSDP2, sharded as the weight is (`distribute_tensor`: every process computed the same full
    mask from the same starting weights); and the handles of gradient hooks, for DeepSpeed, which
    takes its step inside the backward pass, after it has reduced and partitioned the gradients:
    there each mask is a hook on its weight, which sees the whole gradient before the reduction
    (and no pair is returned). FSDP version 1 holds weights its own way: a one-line ValueError."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    hooked = deepspeed(acc)
    if fsdp1(acc):
        raise ValueError("--saliency with FSDP version 1: the masked gradients are not this loop's to touch there; "
                         "use fsdp_version: 2 (configs/accelerate/fsdp.yaml), or --saliency 0")
    params = dict(acc.unwrap_model(model).model.named_parameters())
    out, hooks = [], []
    for name, mask in grad_masks.items():
        p = params[name]
        m = mask.to(p.device, p.dtype)
        if hooked:
            hooks.append(p.register_hook(lambda g, m=m: g * m.to(g.dtype)))
        else:
            out.append((p, distribute_tensor(m, p.device_mesh, p.placements) if isinstance(p, DTensor) else m))
    return out, hooks


def mask_grads(masks: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Zero the gradients of the weights a saliency mask keeps still (`train(grad_masks=...)`)."""
    with torch.no_grad():
        for p, m in masks:
            if p.grad is not None:
                p.grad.mul_(m)


def sharpness_aware_backward(acc, model, batch, forget: list, radius: float,
                              masks: list | None = None) -> tuple[torch.Tensor, dict]:
    """Sharpness-aware unlearning (Fan et al. 2025, "Towards LLM unlearning resilient to relearning
    attacks: a sharpness-aware minimization perspective"): minimise the loss at the weights moved
    along the forget term's gradient, the direction in which the forget set comes back fastest (what
    a relearning attack follows), by `radius` x the trainable weights' norm (scale-free, like ASAM).
    The weights are put back and the optimiser steps with the gradient taken there, so the forget
    set stays forgotten in a neighbourhood of the result, not only at it. Two forward and backward
    passes a step. The perturbation follows the masked gradient: a saliency mask's zeros
    (`masks`, `unlearning.keep_salient`) keep the frozen weights where they are. Under FSDP2 each
    process moves its own shards, by the norms summed over every process's shards."""
    if not forget:
        raise ValueError("--sam needs an unlearning loss that returns its forget term (loss, logs, forget)")
    if deepspeed(acc):
        return sharpness_aware_backward_deepspeed(acc, model, batch, forget[0], radius)
    acc.backward(forget[0])
    mask_grads(masks or [])
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        local = [(local_shard(p), local_shard(p.grad)) for p in params]
        norms = torch.stack([sum((g.float() ** 2).sum() for _, g in local), sum((w.float() ** 2).sum() for w, _ in local)])
        if sharded(acc):  # FSDP2: each process holds one shard of every weight
            torch.distributed.all_reduce(norms)
        g, w = norms.sqrt()
        scale = float(radius * w / g.clamp_min(1e-12))  # a number: DTensors multiply by numbers, not tensors
        moves = [p.grad * scale for p in params]
        for p, e in zip(params, moves):
            p.add_(e)
    for p in params:
        p.grad = None
    with acc.autocast():
        loss, logs, *_ = model(batch)
    acc.backward(loss)
    with torch.no_grad():
        for p, e in zip(params, moves):
            p.sub_(e)
    return loss, logs


def sharpness_aware_backward_deepspeed(acc, model, batch, forget: torch.Tensor, radius: float) -> tuple[torch.Tensor, dict]:
    """`sharpness_aware_backward` under DeepSpeed ZeRO-3 (`train` refuses ZeRO-1/2, whose gradient
    buckets fail on the extra pass), which takes its step inside the backward pass and holds the
    weights' float32 master copy apart from the module's weights. The forget term's
    gradient is taken outside DeepSpeed's reduction (`torch.autograd.grad`; the saliency masks'
    hooks apply) and averaged over the processes, as DDP averages it. The move goes into the
    module's weights alone (this process's partition of each), not into the master copy, which the
    step then writes back over them: the step is taken from the weights as they were, with the
    gradient at the moved ones."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(forget, params, allow_unused=True)
    params, grads = zip(*[(p, g) for p, g in zip(params, grads) if g is not None])
    with torch.no_grad():
        for g in grads:
            torch.distributed.all_reduce(g)
            g.div_(acc.num_processes)
        g_norm = torch.stack([g.float().square().sum() for g in grads]).sum().sqrt()
        w_sq = torch.stack([p.ds_tensor.float().square().sum() for p in params]).sum()
        torch.distributed.all_reduce(w_sq)  # each process holds a partition of every weight
        scale = float(radius * w_sq.sqrt() / g_norm.clamp_min(1e-12))
        rank = torch.distributed.get_rank()
        for p, g in zip(params, grads):
            n = p.ds_tensor.numel()  # the partitions are equal, the last padded past the weight's end
            part = g.flatten()[rank * n:(rank + 1) * n] * scale
            p.ds_tensor[:part.numel()].add_(part.to(p.ds_tensor.dtype))
        regather_zero3(model, params)  # the next pass gathers the moved partitions
    # DeepSpeed's own hooks took the forget term's gradients into its buffers as well, where the
    # step would add them to the loss's (the weights ended 1e-2 from DDP's after 8 steps)
    model.optimizer.zero_grad()
    with acc.autocast():
        loss, logs, *_ = model(batch)
    acc.backward(loss)  # DeepSpeed steps from its master copy and writes it over the moved weights
    return loss, logs


def regather_zero3(engine, params) -> None:
    """After this process's ZeRO-3 partitions were written outside a step: drop the whole copies
    DeepSpeed keeps gathered between passes (so that the next pass gathers the partitions anew), and
    gather again the small weights it keeps whole in every process (`ds_persist`)."""
    engine.empty_partition_cache()
    if persist := [p for p in params if getattr(p, "ds_persist", False)]:
        persist[0].all_gather(persist)


def is_zero3(p: torch.Tensor) -> bool:
    """A weight DeepSpeed ZeRO-3 partitions across the processes (its module tensor is empty between
    passes; `ds_tensor` holds this process's partition)."""
    return hasattr(p, "ds_tensor")


def master_copy(p: torch.Tensor) -> torch.Tensor:
    """The copy of a trainable weight that the next optimiser step starts from: the weight itself,
    or under DeepSpeed its float32 master copy, which the step writes back over the weight (until
    session 33 a restore wrote the weight alone, and the next step undid it): under ZeRO-3 this
    process's partition of it, under ZeRO-1/2 the whole of it, gathered from every process's
    fragment (a collective: every process snapshots the same weights in the same order)."""
    if is_zero3(p):
        from deepspeed.utils import safe_get_local_fp32_param

        return safe_get_local_fp32_param(p)
    if hasattr(p, "_hp_mapping"):
        from deepspeed.utils import safe_get_full_fp32_param

        return safe_get_full_fp32_param(p)
    return p


def set_weights(p: torch.Tensor, value: torch.Tensor) -> None:
    """Write `value` (a `master_copy`) into the weight and, under DeepSpeed, into its master copy."""
    if is_zero3(p):
        from deepspeed.utils import safe_set_local_fp32_param

        safe_set_local_fp32_param(p, value.to(p.ds_tensor.device))
        p.ds_tensor.copy_(value.to(p.ds_tensor.device, p.ds_tensor.dtype))
        return
    p.copy_(value.to(p.device, p.dtype))
    if hasattr(p, "_hp_mapping"):
        from deepspeed.utils import safe_set_full_fp32_param

        safe_set_full_fp32_param(p, value.to(p.device))


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """A sharded weight's (or gradient's) own shard (`DTensor.to_local`, FSDP2, where every weight is
    sharded along its first dimension), else the tensor itself."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t
