"""A real Slurm in the tests: a one-node cluster of Debian's ``slurmctld`` + ``slurmd`` (one 2-CPU
node, ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``) authenticated by its own
``munged``, all started by this test as root in a temporary folder and stopped at its end.
``scripts/slurm/submit.sh`` submits the whole chain — stage-0 array (2 shards) -> merge ->
stage-1 embed (torchrun, 2 ranks, through srun) -> stage-2 train (torchrun, 2 ranks) — on a small
Aff-Wild2-layout tree of real-face clips; the outputs are compared with the direct commands':
identical manifest and store arrays, the same checkpoint within float tolerance.

Skipped, with the reason, where the packages are not installed (``bash .ci/run`` installs them:
``apt-get install slurmctld slurmd slurm-client munge``) or the test does not run as root.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fer_pipeline.distributed import free_port
from fer_pipeline.store import EmbeddingStore
from tests.conftest import ROOT, TINY_SWIN, TORCHRUN

pytestmark = pytest.mark.slow
BINARIES = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun",
            "sinfo", "scancel")
OVERRIDES = TINY_SWIN + [
    "stage0.contact_sheet=false", "stage2.model.d_model=32", "stage2.model.ff=64",
    "stage2.model.heads=2", "stage2.model.layers=1", "stage2.data.clip_len=8",
    "stage2.train.batch_size=4", "stage2.train.warmup_epochs=0", "stage2.train.epochs=2",
    "device=cpu"]
SLURM_CONF = """ClusterName=fertest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.sock
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=3600
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.is_file() else ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        pytest.skip(f"Slurm/munge not installed (no {', '.join(missing)}): apt-get install "
                    f"slurmctld slurmd slurm-client munge (bash .ci/run installs them)")
    if os.geteuid() != 0:
        pytest.skip("the one-node Slurm cluster runs its daemons and jobs as root")
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "log"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o711)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, d=d, ctld_port=free_port(), slurmd_port=free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []

    def start(cmd, log):
        procs.append(subprocess.Popen(cmd, stdout=open(d / "log" / log, "w"), stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True))

    try:
        sock = d / "munge" / "munge.sock"
        start(["munged", "-F", "--force", f"--socket={sock}", f"--key-file={key}",
               f"--log-file={d}/log/munged.log", f"--pid-file={d}/munge/munged.pid",
               f"--seed-file={d}/munge/munged.seed"], "munged.out")
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.1)
        start(["slurmctld", "-D", "-i", "-f", str(conf)], "slurmctld.out")
        start(["slurmd", "-D", "-N", host, "-f", str(conf)], "slurmd.out")
        state = ""
        for _ in range(120):
            r = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
            state = r.stdout.strip()
            if state == "idle":
                break
            time.sleep(0.5)
        assert state == "idle", (f"node not idle ({state!r}):\n{_tail(d / 'log' / 'slurmctld.log')}\n"
                                 f"{_tail(d / 'log' / 'slurmd.out')}\n{_tail(d / 'log' / 'munged.out')}")
        yield env, d
    finally:
        ids = subprocess.run(["squeue", "-h", "-o", "%A"], env=env, capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["scancel", *ids], env=env, capture_output=True)
        for p in reversed(procs):          # slurmd, slurmctld, munged: the processes started here
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def affwild2_tree(root: Path) -> Path:
    """Two real-face clips in the Aff-Wild2 layout: one training, one validation video."""
    from fer_pipeline.media import VideoWriter
    from stage0_preprocess.annotations import write_expr_annotation
    from stage0_preprocess.decode import iter_frames

    frames = [f.image for f, _ in zip(iter_frames(ROOT.parent / "shared" / "assets" / "videos" / "d0.mp4"),
                                       range(64))]
    (root / "cropped_aligned").mkdir(parents=True)
    ann = root / "annotations" / "EXPR_Recognition_Challenge"
    for name, split, part in (("a", "Train_Set", frames[:32]), ("b", "Validation_Set", frames[32:])):
        with VideoWriter(root / "videos" / f"{name}.mp4", part[0].shape[1], part[0].shape[0], 25) as w:
            for f in part:
                w.write(f)
        write_expr_annotation(ann / split / f"{name}.txt", np.repeat([0, 4, 6, 4], 8))
    return root


def job_states(env: dict, ids: list[str]) -> list[tuple[str, str]]:
    """(state, reason) of every job (every array task) of ``ids``."""
    out = []
    for i in ids:
        text = subprocess.run(["scontrol", "-o", "show", "job", i], env=env, capture_output=True,
                              text=True).stdout
        for line in text.splitlines():
            state = re.search(r"JobState=(\S+)", line)
            reason = re.search(r"Reason=(\S+)", line)
            out.append((state.group(1) if state else "?", reason.group(1) if reason else ""))
    return out


def test_submit_sh_chain_on_a_real_slurm_matches_the_direct_commands(cluster, tmp_path, shared_assets):
    env, d = cluster
    root = affwild2_tree(tmp_path / "aw")
    s0, store, run, logs = tmp_path / "s0", tmp_path / "store", tmp_path / "run", tmp_path / "logs"
    job_env = {k: v for k, v in env.items() if not k.startswith(("SLURM_JOB", "FER_"))}
    job_env.update(FER_ROOT=str(ROOT), FER_PYTHON=sys.executable, FER_NO_PROGRESS="1",
                   FER_AFFWILD2=str(root), FER_STAGE0_OUT=str(s0), FER_STORE=str(store),
                   FER_STAGE2_RUN=str(run), FER_LOGS=str(logs), FER_SHARDS="2",
                   FER_STAGE0_CPUS="1", FER_GPUS_PER_NODE="0", FER_CPUS_PER_NODE="2",
                   FER_NPROC_PER_NODE="2", FER_TIME_STAGE0="00:20:00", FER_TIME_EMBED="00:20:00",
                   FER_TIME_TRAIN="00:20:00")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "slurm" / "submit.sh"), *OVERRIDES], env=job_env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    assert len(ids) == 4
    deadline = time.time() + 1200
    while True:
        states = job_states(env, ids)
        if all(s == "COMPLETED" for s, _ in states):
            break
        bad = [s for s in states if s[0] in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
                                              "OUT_OF_MEMORY") or s[1] == "DependencyNeverSatisfied"]
        if bad or time.time() > deadline:
            logs_text = "\n".join(f"--- {p.name}\n{_tail(p, 15)}" for p in sorted(logs.glob("*.out")))
            pytest.fail(f"Slurm jobs {ids}: {states}\n{logs_text}\n{_tail(d / 'log' / 'slurmctld.log')}")
        time.sleep(2)
    job_logs = {p.name: p.read_text() for p in logs.glob("*.out")}
    assert len(job_logs) == 5                                   # 2 array tasks + merge, embed, train
    embed_log = next(t for n, t in job_logs.items() if n.startswith("fer-stage1-embed"))
    train_log = next(t for n, t in job_logs.items() if n.startswith("fer-stage2-train"))
    assert "--nproc_per_node=2" in embed_log and "on 2 ranks" in embed_log
    assert "--nproc_per_node=2" in train_log and "stage2 train:" in train_log
    for k in (1, 2):                                            # the shards ran as the array
        assert (s0 / f"manifest.shard-{k}-of-2.parquet").is_file()
        assert (s0 / "shards" / f"{k}-of-2" / "run.json").is_file()

    # the same steps as direct commands, one process each (training: 2 ranks, as on Slurm)
    def direct(*args, launcher=(sys.executable, "-m")):
        p = subprocess.run([*launcher, "fer_pipeline", *map(str, args), *OVERRIDES], capture_output=True,
                           text=True, timeout=900, env={**os.environ, "FER_NO_PROGRESS": "1"})
        assert p.returncode == 0, p.stderr[-3000:]

    direct("stage0", "run", "--affwild2", root, "--out", tmp_path / "d_s0")
    assert (s0 / "manifest.parquet").read_bytes() == (tmp_path / "d_s0" / "manifest.parquet").read_bytes()
    direct("stage1", "embed", "--manifest", tmp_path / "d_s0" / "manifest.parquet", "--store",
           tmp_path / "d_store")
    a, b = EmbeddingStore.open(store), EmbeddingStore.open(tmp_path / "d_store")
    assert a.videos() == b.videos() == ["a", "b"] and a.encoder_key == b.encoder_key
    for v in a.videos():
        ra, rb = a.read_video(v), b.read_video(v)
        for k in ("emb", "label", "face"):
            assert np.array_equal(getattr(ra, k), getattr(rb, k)), (v, k)
        assert {k: x for k, x in ra.attrs.items() if k != "created"} == \
               {k: x for k, x in rb.attrs.items() if k != "created"}
    direct("stage2", "train", "--store", tmp_path / "d_store", "--out", tmp_path / "d_run",
           launcher=TORCHRUN)
    from safetensors.torch import load_file

    ca = load_file(str(run / "checkpoint.safetensors"))
    cb = load_file(str(tmp_path / "d_run" / "checkpoint.safetensors"))
    assert ca.keys() == cb.keys()
    for k in ca:
        torch.testing.assert_close(ca[k], cb[k], rtol=1e-5, atol=1e-6)
    preds = pd.read_parquet(run / "eval" / "predictions.parquet")
    assert sorted(preds.video.unique()) == ["b"]
