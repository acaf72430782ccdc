"""One distributed helper for every stage.

Launch either way:

    torchrun --nproc_per_node=8 -m fer_pipeline stage2 train ...      (RANK/WORLD_SIZE set by torchrun)
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
        gpus = torch.cuda.device_count()
        if local_rank >= gpus:      # torch's own message: "CUDA error: invalid device ordinal"
            from fer_pipeline.errors import ConfigError

            ranks = os.environ.get("LOCAL_WORLD_SIZE", str(local_rank + 1))
            raise ConfigError(f"{ranks} ranks on this node but {gpus} GPU(s) visible: local rank "
                              f"{local_rank} has none of its own; start one rank per GPU "
                              f"(--nproc {gpus}), or run the ranks on the CPU with device=cpu")
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


def gather_to_primary(obj) -> list | None:
    """Every rank's ``obj`` as a list on rank 0 (None on the others; ``[obj]`` in a single
    process): only the primary receives, so the other ranks never hold the whole."""
    if not info().enabled:
        return [obj]
    dist = _dist()
    out = [None] * dist.get_world_size() if info().primary else None
    dist.gather_object(obj, out, dst=0)
    return out


def shard(items: Sequence, rank: int | None = None, world: int | None = None,
          weights: Sequence[float] | None = None) -> list:
    """This rank's share of ``items``: disjoint, covering, in the given order. With ``weights``
    (e.g. frames per video) the shares hold near-equal total weight (``fer_pipeline.balance``:
    longest first, each to the lightest rank); without, every ``world``-th item."""
    d = info()
    rank = d.rank if rank is None else rank
    world = d.world_size if world is None else world
    items = list(items)
    if weights is None:
        return items[rank::world]
    from fer_pipeline.balance import balanced_part

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


def _spawned(local_rank: int, nproc: int, port: int, fn: Callable, args: tuple, errors) -> None:
    os.environ.update({"RANK": str(local_rank), "LOCAL_RANK": str(local_rank),
                       "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc),
                       "GROUP_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    try:
        if "OMP_NUM_THREADS" not in os.environ:   # share the cores instead of oversubscribing them
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
        fn(*args)
    except SystemExit as e:
        if e.code not in (0, None):
            errors.put((local_rank, "SystemExit", [f"exit code {e.code}"]))
        raise
    except BaseException as e:       # the parent raises it as one line
        errors.put((local_rank, type(e).__name__, str(e).strip().splitlines()[-1:] or [""]))
        if not isinstance(e, Exception):
            raise
        sys.exit(1)
    finally:
        cleanup()


# Self-spawned ranks are forked by a fork server that has imported torch and the worker's
# module but run nothing (no OpenMP pool, no CUDA context: safe to fork). The ranks then share
# the server's pages copy-on-write: torch's import alone is ~280 MiB of private memory per
# process with the CUDA build, paid once per node instead of once per rank (torchrun's ranks
# are fresh interpreters and each pays it; the launching process here never imports torch).
# The server freezes its objects last (fer_pipeline/forkserver_preload.py) so the ranks' garbage
# collector leaves those pages shared.
START_METHOD = "forkserver"


def spawn(fn: Callable, nproc: int, args: tuple = (), preload: tuple[str, ...] = ()) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes forming one group on this machine. The fork
    server imports torch, ``fn``'s module and the ``preload`` modules (what the ranks will
    import: imported after the fork, a module's memory is private to each rank). When one
    fails, the others are stopped and its error is raised here (a UsageError or RunFailed as
    itself, anything else as RunFailed naming it)."""
    import multiprocessing
    from multiprocessing.connection import wait

    from fer_pipeline.errors import RunFailed, UsageError

    ctx = multiprocessing.get_context(START_METHOD)
    ctx.set_forkserver_preload(list(dict.fromkeys(
        ["torch", "fer_pipeline.distributed", fn.__module__, *preload, "fer_pipeline.forkserver_preload"])))
    errors = ctx.SimpleQueue()
    port = free_port()
    procs = [ctx.Process(target=_spawned, args=(r, nproc, port, fn, args, errors), name=f"rank{r}")
             for r in range(nproc)]
    for p in procs:
        p.start()
    try:
        running = list(procs)
        while running:
            wait([p.sentinel for p in running])
            running = [p for p in running if p.exitcode is None]
            failed = [p for p in procs if p.exitcode not in (None, 0)]
            if failed:
                break
    finally:
        for p in procs:                      # a failed rank leaves the others in a collective
            if p.exitcode is None:
                p.terminate()
        for p in procs:
            p.join()
    reports = []
    while not errors.empty():
        reports.append(errors.get())
    bad = [p for p in procs if p.exitcode not in (0, None)]
    if not bad and not reports:
        return
    if reports:
        rank, kind, last = min(reports)
        msg = last[0] if last else ""
        for exc in (UsageError, RunFailed):
            if kind == exc.__name__:
                raise exc(msg)
        raise RunFailed(f"a worker process failed (rank {rank}): {kind}: {msg}")
    codes = ", ".join(f"rank {p.name[4:]} exit code {p.exitcode}" for p in bad)
    raise RunFailed(f"a worker process died: {codes}")


def quiet_non_primary() -> None:
    """Silence INFO logs and progress bars on ranks other than 0."""
    if not is_primary():
        logging.getLogger().setLevel(logging.WARNING)
        os.environ["FER_NO_PROGRESS"] = "1"
