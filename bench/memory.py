"""Peak memory of a command and its process tree (PSS sampled from /proc, /dev/shm counted
whole), optionally inside a memory cgroup: what ``bench.scale_store`` and ``bench.flip_memory``
report."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Measured:
    rc: int
    wall_s: float
    maxrss: int        # bytes, kernel high-water mark of the largest single process in the tree
    tree_peak: int     # bytes, highest sampled RSS sum over the process and its descendants
    stdout: str
    stderr: str
    pss_peak: int = 0       # bytes, highest sampled memory of the tree (PSS, shm copy whole)
    unshared_peak: int = 0  # bytes, highest sampled anonymous + shmem PSS (not reclaimable)
    cgroup_peak: int = 0    # bytes, the cgroup's own peak usage (page cache included), if capped


def _rollup(pid: int) -> dict[str, int]:
    """Pss, Pss_Anon, Pss_File, Pss_Shmem of one process, bytes (zeros once it is gone)."""
    out = {"Pss": 0, "Pss_Anon": 0, "Pss_File": 0, "Pss_Shmem": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, val = line.partition(":")
            if key in out:
                out[key] = int(val.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def _shm_used(shm: str = "/dev/shm") -> int:
    try:
        return shutil.disk_usage(shm).used
    except OSError:
        return 0


def memory_cgroup(limit: int) -> Path | None:
    """A new memory cgroup under this process's own, limited to ``limit`` bytes; None where none
    can be made (no cgroup file system, no permission)."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hid, controllers, path = line.split(":", 2)
        if v2 and hid == "0":
            base, limit_file = Path("/sys/fs/cgroup") / path.lstrip("/"), "memory.max"
        elif not v2 and "memory" in controllers.split(","):
            base, limit_file = Path("/sys/fs/cgroup/memory") / path.lstrip("/"), "memory.limit_in_bytes"
        else:
            continue
        group = base / f"fer-bench-{os.getpid()}"
        try:
            group.mkdir(exist_ok=True)
            (group / limit_file).write_text(str(int(limit)))
            return group
        except OSError:
            try:
                group.rmdir()
            except OSError:
                pass
    return None


def _cgroup_peak(group: Path) -> int:
    for name in ("memory.peak", "memory.max_usage_in_bytes"):
        try:
            return int((group / name).read_text().split()[0])
        except (OSError, ValueError):
            continue
    return 0


def run_measured(cmd: list[str], env: dict | None = None, cgroup: Path | None = None,
                 every: float = 0.2) -> Measured:
    """Run ``cmd`` (inside ``cgroup`` when given) and record its peak memory: its own ru_maxrss,
    the sampled RSS sum of the tree, the sampled tree PSS (see the module docstring) and the
    sampled anonymous + shmem PSS."""
    import psutil

    if cgroup is not None:      # join the cgroup, then become the command
        cmd = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(cgroup), *cmd]
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    shm0 = _shm_used()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
    peak = {"rss": 0, "pss": 0, "unshared": 0}
    done = threading.Event()

    def sample():
        try:
            root = psutil.Process(proc.pid)
        except psutil.NoSuchProcess:
            return
        while not done.is_set():
            rss, roll = 0, {"Pss": 0, "Pss_Anon": 0, "Pss_Shmem": 0}
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss += p.memory_info().rss
                    except psutil.NoSuchProcess:
                        continue
                    r = _rollup(p.pid)
                    for k in roll:
                        roll[k] += r[k]
            except psutil.NoSuchProcess:
                break
            shm = max(roll["Pss_Shmem"], _shm_used() - shm0)
            peak["rss"] = max(peak["rss"], rss)
            peak["pss"] = max(peak["pss"], roll["Pss"] - roll["Pss_Shmem"] + shm)
            peak["unshared"] = max(peak["unshared"], roll["Pss_Anon"] + shm)
            done.wait(every)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    return Measured(proc.returncode, wall, usage.ru_maxrss * 1024, peak["rss"], out.read(), err.read(),
                    peak["pss"], peak["unshared"], _cgroup_peak(cgroup) if cgroup else 0)
