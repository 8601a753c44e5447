"""Multi-process training with ``torch.distributed`` (launched by ``torchrun``), and the one-process case.

Every rank holds the whole models. After each backward pass the gradients are averaged over the ranks with one
all-reduce of a flat buffer (:func:`all_reduce_gradients`), so every rank takes the same optimizer step and the
models stay identical without DDP (whose hooks do not fit the double backward of the gradient penalties nor a
progressive network whose unused blocks change with the resolution). Only rank 0 writes files.

A collective that fails because another rank died, or stopped answering for the process group's timeout (30 minutes),
raises :class:`DistributedError`; a problem that one rank meets alone reaches the others through
:func:`first_problem`, so that they stop together instead of waiting for it in the next collective.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
import time

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False
    # For the small CPU-side exchanges (stop requests, errors, RNG states): a gloo group beside NCCL, so that they
    # never wait for the GPU; None: the default group (gloo already).
    control_group: object = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


class DeviceError(ValueError):
    """A ``--device`` that names no usable device."""


class DistributedError(RuntimeError):
    """The ranks cannot go on together: another one died or stopped answering, or their models differ."""


def _collective(function):
    """``function`` raising :class:`DistributedError` where its collective fails (gloo's "Connection closed by
    peer" when a rank died, a timeout, NCCL's errors: all ``RuntimeError``, which cannot tell another rank's end from
    an error of this rank's own GPU, so the message keeps torch's reason; this rank's running out of memory stays
    itself)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (DistributedError, torch.OutOfMemoryError):
            raise
        except RuntimeError as error:
            lines = str(error).strip().splitlines() or [type(error).__name__]
            reason = lines[0].split("] ", 1)[-1].split(". ")[0]  # without gloo's "[file.cc:line] " and advice
            raise DistributedError(f"a collective operation of the processes failed ({reason}): most likely another "
                                   "process of this run ended or stopped answering, and its own output says "
                                   "why") from None

    return wrapper


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:LOCAL_RANK`` when a GPU is visible, else ``cpu``; ``cuda`` -> ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA GPU is visible (use --device cpu)")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) are visible")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(resolved)
    return resolved


def init(device: str = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by ``torchrun`` (NCCL on GPUs, gloo on the CPU); else one process."""
    if not launched_by_torchrun():
        return DistInfo(), resolve_device(device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    resolved = resolve_device(device, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        kwargs = {"device_id": resolved} if resolved.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **kwargs)
    control_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    return DistInfo(rank, world_size, local_rank, True, control_group), resolved


# torch 2.6.0's gloo could hang for good in destroy_process_group: a minimal two-process script hung in 5 of 170 runs,
# and in none of 140 with a pause (GIL released) before it; torch 2.14.1: 0 of 30 without. Likely cause: a gloo worker
# thread that drops the last reference to a finished collective's tensor needs the GIL while it holds the group's work
# lock, and the group's destructor, run holding the GIL, waits for that lock. (A destroy in another thread, with a
# timeout, hung alike: the GIL is held.)
_SHUTDOWN_PAUSE_S = 0.2


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        time.sleep(_SHUTDOWN_PAUSE_S)  # see above
        dist.destroy_process_group()


@_collective
def all_reduce_gradients(parameters, info: DistInfo) -> None:
    """Average the gradients of ``parameters`` over the ranks (those without a gradient are skipped: every rank
    trains the same blocks, so every rank skips the same ones)."""
    if not info.enabled or info.world_size == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(info.world_size)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


@_collective
@torch.no_grad()
def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not info.enabled or info.world_size == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


@_collective
@torch.no_grad()
def check_in_sync(modules: dict, info: DistInfo) -> None:
    """Raise if the ranks' parameters differ (compared through per-tensor sums, exactly)."""
    if not info.enabled or info.world_size == 1:
        return
    for name, module in modules.items():
        sums = torch.stack([p.detach().double().sum() for p in module.parameters()])
        low, high = sums.clone(), sums.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise DistributedError(f"distributed training diverged: the ranks' {name} parameters differ")


@_collective
def mean_over_ranks(values: dict, info: DistInfo) -> dict:
    """The ranks' average of a dict of scalar tensors (one all-reduce)."""
    if not info.enabled or info.world_size == 1 or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float() for k in keys])
    dist.all_reduce(stacked)
    stacked /= info.world_size
    return dict(zip(keys, stacked.unbind(0)))


@_collective
def max_over_ranks(value: int, info: DistInfo) -> int:
    """The largest of the ranks' ``value`` (one all-reduce of one number, on the CPU)."""
    if not info.enabled or info.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=info.control_group)
    return int(tensor.item())


@_collective
def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not info.enabled or info.world_size == 1:
        return [obj]
    gathered = [None] * info.world_size
    dist.all_gather_object(gathered, obj, group=info.control_group)
    return gathered


def first_problem(problem: str | None, info: DistInfo) -> str | None:
    """The ``problem`` of the first rank that has one, on every rank (``None`` where none has): ranks that meet a
    problem alone (a damaged record, a file rank 0 cannot write) then stop together with the others, instead of
    leaving them waiting in the next collective. One all-reduce of a flag; the texts travel only when there is one."""
    if max_over_ranks(int(problem is not None), info) == 0:
        return None
    return next(text for text in gather_objects(problem, info) if text is not None)
