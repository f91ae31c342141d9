"""Data-parallel plumbing: join a ``torchrun`` process group, a few collectives, and the relaunch command.

Only PyTorch's DistributedDataParallel is used: one process per GPU, started by ``torchrun`` (which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). Without those variables
everything here degrades to a single process and the collectives are no-ops, so the training loop has
one code path. The original TWilBERT had no data parallelism at all: it pinned alternate layers to
GPU 0 and GPU 1 (see docs/deviations.md).
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from twilbert.train.runtime import resolve_device

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def under_torchrun() -> bool:
    """True when this process was started by ``torchrun`` (its environment variables are set)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when started by ``torchrun``; otherwise describe a single process.

    ``device``: ``auto`` | ``cpu`` | ``cuda`` (``impl.device``). Under torchrun on CUDA each process
    takes GPU ``LOCAL_RANK`` and the backend is NCCL; on CPU it is gloo. Calling it twice is harmless.
    """
    use_cuda = resolve_device(device, error=RuntimeError).type == "cuda"
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        local = int(os.environ.get("LOCAL_RANK", 0))
        dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(dev)
        return DistInfo(0, local, 1, dev)
    rank, world, local = (int(os.environ[n]) for n in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if use_cuda:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            device_id=dev if use_cuda else None,
        )
    return DistInfo(rank, local, world, dev)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    return not is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (a no-op in a single process); returns the tensor."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` in a single process). For small things only."""
    if not is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def on_main_then_broadcast(choose: Callable[[], Path | None], errors: type[Exception]) -> Path | None:
    """Rank 0 runs ``choose`` (which may raise ``errors``); the path it returns, or its error, reaches
    every rank (other ranks raise ``errors(message)``)."""
    choice: list = [None, None]  # path, error message
    error: Exception | None = None
    if is_main():
        try:
            found = choose()
            choice[0] = str(found) if found is not None else None
        except errors as exc:
            error, choice[1] = exc, str(exc)
    if is_initialized():
        dist.broadcast_object_list(choice, src=0)
    if error is not None:
        raise error
    if choice[1] is not None:
        raise errors(choice[1])
    return Path(choice[0]) if choice[0] is not None else None


def rng_states_per_rank(device: torch.device) -> list:
    """Every rank's torch (and CUDA) RNG state, gathered (for checkpoints: dropout streams differ per rank)."""
    mine = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return all_gather_objects(mine)


def restore_rng_state(states: list, rank: int, device: torch.device) -> None:
    """Set this rank's RNG states from :func:`rng_states_per_rank`'s list (ignored for another world size)."""
    if len(states) != (dist.get_world_size() if is_initialized() else 1):
        return
    mine = states[rank]
    torch.set_rng_state(mine["torch"])
    if mine.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], device)


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def torchrun_command(
    n_gpus: int,
    argv: list[str],
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int | None = None,
) -> list[str]:
    """The command that runs ``argv`` (a script path or ``-m module``, then its arguments) under torchrun.

    One node: ``--standalone`` (torchrun picks a free port on localhost). Several nodes: the static
    rendezvous of the classic launcher (``--nnodes --node_rank --master_addr --master_port``); run the
    same command on every node with its own ``node_rank``. ``python -m torch.distributed.run`` is the
    ``torchrun`` console script, spelled so that it uses this interpreter.
    """
    if n_gpus < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise ValueError(f"need n_gpus >= 1, nnodes >= 1 and 0 <= node_rank < nnodes, got {n_gpus}, {nnodes}, {node_rank}")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n_gpus}"]
    if nnodes == 1 and master_addr is None and master_port is None:
        cmd.append("--standalone")
    else:
        cmd += [f"--nnodes={nnodes}", f"--node_rank={node_rank}"]
        cmd += [f"--master_addr={master_addr or '127.0.0.1'}", f"--master_port={master_port or 29500}"]
    return cmd + list(argv)


__all__ = [
    "DistInfo",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "cleanup",
    "init_distributed",
    "is_initialized",
    "is_main",
    "torchrun_command",
    "under_torchrun",
]
