"""torchrun / DDP set-up: one process per device, NCCL on GPUs, gloo on CPUs, reductions.

`torchcls train` alone is one process (world size 1, no process group); under `torchrun` the
environment names the rank and world size and the same code path runs with DistributedDataParallel,
with one process too (as torchvision's references do): --sync-bn and --dist-backend then mean what
they say.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from torchcls.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; the default is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group exists, even for one process

    @property
    def enabled(self) -> bool:
        return self.launched or self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo()  # one process, no process group


def init_distributed(device_type: str, backend: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (RANK and WORLD_SIZE set), for any
    world size; a plain `torchcls train` is a single process without one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and device_type != "cuda":
        raise UserError("--dist-backend nccl needs CUDA devices; on CPUs use gloo (the default there)")
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        # The store of a torchrun job outlives a restart (--max-restarts): without a fresh key prefix
        # per attempt, gloo would read the dead attempt's addresses and fail to connect.
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(
            backend=backend, store=dist.PrefixStore(f"torchcls/attempt{attempt}/", store), rank=rank, world_size=world
        )
    return DistInfo(rank, world, local_rank, launched=True)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device, info: DistInfo) -> list[float]:
    """Sum plain numbers over ranks (float64, so counts stay exact)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's `obj`, in rank order, on every rank (a collective: all ranks must call it)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
