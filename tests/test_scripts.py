"""The Slurm launchers in scripts/slurm: every script parses, submit.sh chains the four jobs with
the site settings, and the job scripts' own command lines run here — stage 0 as two array
tasks and the merge, stage 1 and stage 2 through their torchrun line with 2 gloo ranks on one
node (stage 2 inside a one-node Slurm allocation played by stand-in srun/scontrol)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fer_pipeline.distributed import free_port
from fer_pipeline.store import EmbeddingStore
from tests.conftest import ROOT, TINY_SWIN, make_store

SLURM = ROOT / "scripts" / "slurm"
SCRIPTS = sorted(SLURM.glob("*.sbatch")) + sorted(SLURM.glob("*.sh"))
SMALL_S2 = ["stage2.model.d_model=32", "stage2.model.ff=64", "stage2.model.heads=2",
            "stage2.model.layers=1", "stage2.data.clip_len=32", "stage2.train.batch_size=8",
            "stage2.train.warmup_epochs=0", "stage2.train.epochs=1"]


def job_env(tmp_path: Path, **settings) -> dict[str, str]:
    """This machine as a job would see it: no Slurm variables unless given, the test's Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "FER_"))}
    env.update(FER_ROOT=str(ROOT), FER_PYTHON=sys.executable, FER_NO_PROGRESS="1")
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_script(name: str, env: dict, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SLURM / name), *map(str, args)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def stub(bin_dir: Path, name: str, body: str) -> None:
    """A Python stand-in for a Slurm command on PATH."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if script.suffix == ".sbatch":
        text = script.read_text()
        assert "#SBATCH --job-name=" in text and "scripts/slurm/common.sh" in text


# ------------------------------------------------------------------------------ submit.sh
SBATCH_STUB = """import json, os, sys
log = os.environ["SBATCH_LOG"]
calls = open(log).read().splitlines() if os.path.exists(log) else []
open(log, "a").write(json.dumps(sys.argv[1:] + ["FER_SHARDS=" + os.environ["FER_SHARDS"]]) + "\\n")
print(f"{101 + len(calls)};cluster")
"""


def submit(tmp_path, *args, **settings):
    stub(tmp_path / "bin", "sbatch", SBATCH_STUB)
    log = tmp_path / "sbatch.log"
    log.unlink(missing_ok=True)
    env = job_env(tmp_path, SBATCH_LOG=log, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}",
                  FER_LOGS=tmp_path / "logs", **settings)
    r = subprocess.run(["bash", str(SLURM / "submit.sh"), *args], env=env, capture_output=True,
                       text=True, timeout=60)
    calls = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    for c in calls:     # the shard count the array tasks will see
        assert c.pop() == f"FER_SHARDS={settings.get('FER_SHARDS', 8)}"
    return r, calls


def script_of(call: list[str]) -> str:
    return next(Path(a).name for a in call if a.endswith(".sbatch"))


def test_submit_chains_stage0_array_merge_embed_train(tmp_path):
    r, calls = submit(tmp_path, "stage2.train.epochs=3", FER_SHARDS=4, FER_PARTITION="gpu",
                      FER_ACCOUNT="proj", FER_GPUS_PER_NODE=4, FER_TRAIN_NODES=2,
                      FER_EMBED_NODES=3)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["101", "102", "103", "104"]
    assert [script_of(c) for c in calls] == ["stage0_array.sbatch", "stage0_merge.sbatch",
                                             "stage1_embed.sbatch", "stage2_train.sbatch"]
    for i, c in enumerate(calls):
        assert {"--parsable", "--partition=gpu", "--account=proj", f"--chdir={ROOT}"} <= set(c)
        deps = [a for a in c if a.startswith("--dependency=")]
        assert deps == ([] if i == 0 else [f"--dependency=afterok:{100 + i}"])
        # options before the script, the config override after it
        assert c[-1] == "stage2.train.epochs=3" and c[-2].endswith(".sbatch")
    assert "--array=1-4" in calls[0]
    assert {"--nodes=3", "--gpus-per-node=4", "--ntasks-per-node=1"} <= set(calls[2])
    assert {"--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=1"} <= set(calls[3])
    assert (tmp_path / "logs").is_dir()


def test_submit_from_a_later_step_and_bad_steps(tmp_path):
    r, calls = submit(tmp_path, "--from", "embed")
    assert r.returncode == 0, r.stderr
    assert [script_of(c) for c in calls] == ["stage1_embed.sbatch", "stage2_train.sbatch"]
    assert not any(a.startswith("--dependency") for a in calls[0])
    assert "--dependency=afterok:101" in calls[1]
    r, calls = submit(tmp_path, "--from", "stage0", "--to", "merge")
    assert [script_of(c) for c in calls] == ["stage0_array.sbatch", "stage0_merge.sbatch"]
    r, calls = submit(tmp_path, "--from", "stage3")
    assert r.returncode == 2 and "unknown step 'stage3'" in r.stderr and calls == []


# ------------------------------------------------------------------------------ the jobs
@pytest.mark.slow
def test_stage0_array_tasks_then_merge(tmp_path, shared_assets):
    from fer_pipeline.media import VideoWriter
    from stage0_preprocess.decode import iter_frames

    frames = [f.image for f, _ in zip(iter_frames(shared_assets / "videos" / "d0.mp4"), range(12))]
    videos = tmp_path / "videos"
    for name in ("a", "b"):        # two short real-face clips: one video per array task
        with VideoWriter(videos / f"{name}.mp4", frames[0].shape[1], frames[0].shape[0], 25) as w:
            for f in frames:
                w.write(f)
    out = tmp_path / "s0"
    for k in (1, 2):
        env = job_env(tmp_path, SLURM_ARRAY_TASK_ID=k, SLURM_ARRAY_TASK_MAX=2,
                      SLURM_CPUS_PER_TASK=1, FER_VIDEOS=videos, FER_STAGE0_OUT=out)
        r = run_script("stage0_array.sbatch", env, "stage0.contact_sheet=false")
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"--shard {k}/2 --jobs 1" in r.stderr
    shards = [pd.read_parquet(out / f"manifest.shard-{k}-of-2.parquet") for k in (1, 2)]
    assert [sorted(s.video.unique()) for s in shards] == [["a"], ["b"]]
    assert not (out / "manifest.parquet").exists()
    r = run_script("stage0_merge.sbatch", job_env(tmp_path, FER_STAGE0_OUT=out))
    assert r.returncode == 0, r.stderr[-3000:]
    merged = pd.read_parquet(out / "manifest.parquet")
    assert sorted(merged.video.unique()) == ["a", "b"]
    assert len(merged) == sum(len(s) for s in shards)


@pytest.mark.slow
def test_stage1_embed_script_runs_its_torchrun_line_with_two_ranks(affwild2_tree, tmp_path):
    from fer_pipeline.config import load_config
    from stage0_preprocess import ingest_affwild2 as run_ingest

    _, manifest = run_ingest(affwild2_tree, tmp_path / "s0", load_config())
    store = tmp_path / "store"
    env = job_env(tmp_path, FER_STAGE0_OUT=tmp_path / "s0", FER_STORE=store,
                  FER_EXPORT_H5=tmp_path / "store.h5", FER_NPROC_PER_NODE=2,
                  FER_MASTER_PORT=free_port())
    r = run_script("stage1_embed.sbatch", env, *TINY_SWIN)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "--nnodes=1 --nproc_per_node=2 --rdzv_backend=c10d" in r.stderr
    assert "on 2 ranks" in r.stdout and r.stdout.count("stage1 embed:") == 1
    frames = pd.read_parquet(manifest).groupby("video").size()
    s = EmbeddingStore.open(store)
    assert s.videos() == sorted(frames.index)
    for v in s.videos():
        rec = s.read_video(v)
        assert rec.emb.shape == (frames[v], s.dim) and np.isfinite(rec.emb).all()
    assert (tmp_path / "store.h5").is_file()


SRUN_STUB = """import json, os, sys
# record the srun options, then run the command on this node (a one-node allocation)
args = sys.argv[1:]
i = next(i for i, a in enumerate(args) if not a.startswith("-"))
open(os.environ["SRUN_LOG"], "w").write(json.dumps(args[:i]))
os.execv(args[i], args[i:])
"""


@pytest.mark.slow
def test_stage2_script_trains_with_two_ranks_inside_a_slurm_allocation(tmp_path):
    store = make_store(tmp_path / "store")
    run = tmp_path / "run"
    bin_dir = tmp_path / "bin"
    stub(bin_dir, "srun", SRUN_STUB)
    stub(bin_dir, "scontrol", "print('localhost')\n")      # first host of SLURM_JOB_NODELIST
    port = free_port()
    env = job_env(tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}", SRUN_LOG=tmp_path / "srun.json",
                  SLURM_JOB_ID=4242, SLURM_NNODES=1, SLURM_JOB_NODELIST="node01",
                  SLURM_GPUS_ON_NODE=2, SLURM_CPUS_PER_TASK=2, FER_MASTER_PORT=port,
                  FER_STORE=store, FER_STAGE2_RUN=run)
    r = run_script("stage2_train.sbatch", env, *SMALL_S2)
    assert r.returncode == 0, r.stderr[-3000:]
    srun = json.loads((tmp_path / "srun.json").read_text())
    assert {"--nodes=1", "--ntasks=1", "--ntasks-per-node=1", "--cpus-per-task=2"} <= set(srun)
    # ranks per node from the GPUs Slurm gave the node; rendezvous on its first host
    assert (f"--nnodes=1 --nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=localhost:{port} "
            f"--rdzv_id=4242 -m fer_pipeline stage2 train --store {store} --out {run}") in r.stderr
    assert "on 2 ranks" in r.stderr
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in rows] == [0]
    assert (run / "checkpoint.safetensors").is_file() and (run / "eval" / "f1.json").is_file()
    assert r.stdout.count("stage2 train:") == 1
