"""One distributed helper for every stage.

Launch either way:

    torchrun --nproc_per_node=8 -m pipeline stage2 train ...      (RANK/WORLD_SIZE set by torchrun)
    fer-pipeline stage2 train --nproc 2 ...                        (self-spawn on one machine)

NCCL on GPUs, gloo on CPU. Only the primary rank (0) logs and writes run files; evaluation
all-reduces confusion counts, never per-rank scores.

torch is imported on first use (a command module imports this one while the CLI builds its
parser); before torch is loaded no process group can exist, so :func:`info` answers alone.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        return self.rank == 0


def _dist():
    import torch.distributed as dist

    return dist


def _initialized() -> bool:
    """A process group exists (never before torch is imported: nothing could have made one)."""
    if "torch.distributed" not in sys.modules:
        return False
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(prefer_cuda: bool = True) -> DistInfo:
    """Join the process group when launched by torchrun / :func:`spawn`; no-op otherwise."""
    if _initialized():
        return info()
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistInfo()
    import torch

    dist = _dist()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_nccl = prefer_cuda and torch.cuda.is_available()
    if use_nccl:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return info()


def info() -> DistInfo:
    if not _initialized():
        return DistInfo()
    dist = _dist()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                    dist.get_backend())


def is_primary() -> bool:
    return info().primary


def barrier() -> None:
    if info().enabled:
        _dist().barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (in place, returned); identity in a single process."""
    if info().enabled:
        dist = _dist()
        backend = dist.get_backend()
        if backend == "nccl" and t.device.type != "cuda":
            moved = t.cuda()
            dist.all_reduce(moved)
            t.copy_(moved.cpu())
        else:
            dist.all_reduce(t)
    return t


def all_gather_objects(obj) -> list:
    if not info().enabled:
        return [obj]
    dist = _dist()
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(items: Sequence, rank: int | None = None, world: int | None = None,
          weights: Sequence[float] | None = None) -> list:
    """This rank's share of ``items``: disjoint, covering, in the given order. With ``weights``
    (e.g. frames per video) the shares hold near-equal total weight (``pipeline.balance``:
    longest first, each to the lightest rank); without, every ``world``-th item."""
    d = info()
    rank = d.rank if rank is None else rank
    world = d.world_size if world is None else world
    items = list(items)
    if weights is None:
        return items[rank::world]
    from pipeline.balance import balanced_part

    if len(weights) != len(items):
        raise ValueError(f"{len(items)} items but {len(weights)} weights")
    return [items[i] for i in balanced_part(weights, rank, world)]


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if not info().enabled:
        return obj
    import torch.distributed as tdist

    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def node_key() -> str:
    """Which machine ("node") this process runs on: the host name, plus torchrun's node rank
    (``GROUP_RANK``) so that two launches on one host (a multi-node rehearsal) are two nodes."""
    return f"{socket.gethostname()}#{os.environ.get('GROUP_RANK', '0')}"


def node_peers() -> tuple[bool, int, str]:
    """``(leader, local_ranks, key)``: whether this rank is the lowest rank on its node, how
    many ranks share the node, and the node key. Collective under DDP (every rank calls it)."""
    key = node_key()
    keys = all_gather_objects(key)
    mine = [r for r, k in enumerate(keys) if k == key]
    return info().rank == mine[0], len(mine), key


def cleanup() -> None:
    if _initialized():
        _dist().destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned(local_rank: int, nproc: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank),
                       "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
                       "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    if "OMP_NUM_THREADS" not in os.environ:   # share the cores instead of oversubscribing them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    try:
        fn(*args)
    finally:
        cleanup()


def spawn(fn: Callable, nproc: int, args: tuple = ()) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes forming one group on this machine."""
    import torch.multiprocessing as mp

    from pipeline.errors import RunFailed, UsageError

    try:
        mp.start_processes(_spawned, args=(nproc, free_port(), fn, args), nprocs=nproc,
                           start_method="spawn", join=True)
    except mp.ProcessRaisedException as e:
        # re-raise a worker's own error (its last traceback line) in the parent
        last = str(e).strip().splitlines()[-1]
        kind, _, msg = last.partition(": ")
        for exc in (UsageError, RunFailed):
            if kind.endswith(exc.__name__):
                raise exc(msg) from None
        raise RunFailed(f"a worker process failed: {last}") from None


def quiet_non_primary() -> None:
    """Silence INFO logs and progress bars on ranks other than 0."""
    if not is_primary():
        logging.getLogger().setLevel(logging.WARNING)
        os.environ["FER_NO_PROGRESS"] = "1"
