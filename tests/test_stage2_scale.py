"""Stage 2 at scale, on small stores: the store is read once per run (evaluation reuses what
training loaded), ``preload: mmap`` trains exactly as ``preload: cpu``, and a multi-node
rehearsal — two torchrun launches of the Slurm job script with ``--nnodes 2``, c10d rendezvous
on localhost, gloo, 2 ranks each — ends with the checkpoint of one launch of 4 ranks."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from fer_pipeline.config import load_config
from fer_pipeline.distributed import free_port
from fer_pipeline.store import EmbeddingStore
from tests.conftest import make_store
from tests.test_scripts import SMALL_S2, job_env, run_script, SLURM

TINY = SMALL_S2 + ["stage2.train.epochs=2", "stage2.model.dropout=0.0", "device=cpu"]


def _cfg(*overrides):
    return load_config(overrides=list(TINY) + list(overrides))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("scale") / "store", n_train=5, n_val=3)


def test_store_is_read_once_and_mmap_trains_exactly_as_ram(store, tmp_path, monkeypatch):
    from stage2_temporal.api import train

    reads: list[str] = []
    real = EmbeddingStore.read_into

    def counting(self, index, *a, **k):
        reads.extend(index.videos)
        return real(self, index, *a, **k)

    monkeypatch.setattr(EmbeddingStore, "read_into", counting)
    ram = train(store, tmp_path / "ram", _cfg())
    names = EmbeddingStore.open(store).videos()
    assert sorted(reads) == names                # each video once: evaluation reused the load
    assert ram.report is not None and (tmp_path / "ram" / "eval" / "f1.json").is_file()

    reads.clear()
    cache_dir = tmp_path / "cache"
    mm = train(store, tmp_path / "mmap", _cfg("stage2.data.preload=mmap", f"stage2.data.cache_dir={cache_dir}"))
    # the store read once more, to write the cache file; training read through that file
    assert sorted(reads) == names and len(list(cache_dir.iterdir())) == 1
    a = load_file(str(tmp_path / "ram" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "mmap" / "checkpoint.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert mm.report.confusion.tolist() == ram.report.confusion.tolist()


def _launch(script_env, run):
    return subprocess.Popen(["bash", str(SLURM / "stage2_train.sbatch"), *TINY], env=script_env,
                            cwd=str(SLURM.parent.parent), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_nodes_of_two_ranks_end_like_one_node_of_four(store, tmp_path):
    # 2 "nodes" on localhost: the job script's torchrun line twice, --nnodes=2, one rendezvous
    port = free_port()
    env = job_env(tmp_path, SLURM_NNODES=2, FER_NPROC_PER_NODE=2, FER_MASTER_ADDR="127.0.0.1",
                  FER_MASTER_PORT=port, FER_STORE=store, FER_STAGE2_RUN=tmp_path / "2x2")
    nodes = [_launch(env, tmp_path / "2x2") for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in nodes]
    for p, (out, err) in zip(nodes, outs):
        assert p.returncode == 0, err[-3000:]
    assert any("--nnodes=2 --nproc_per_node=2 --rdzv_backend=c10d" in err for _, err in outs)
    assert sum("stage2 train:" in out for out, _ in outs) == 1     # one rank 0 in the world
    one = run_script("stage2_train.sbatch",
                     job_env(tmp_path, FER_NPROC_PER_NODE=4, FER_MASTER_PORT=free_port(),
                             FER_STORE=store, FER_STAGE2_RUN=tmp_path / "1x4"), *TINY, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    assert "--nnodes=1 --nproc_per_node=4" in one.stderr and "on 4 ranks" in one.stderr
    a = load_file(str(tmp_path / "2x2" / "checkpoint.safetensors"))
    b = load_file(str(tmp_path / "1x4" / "checkpoint.safetensors"))
    assert a.keys() == b.keys()
    for k in a:        # same ranks, clips and seeds; only the all-reduce's float order may differ
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    ma = [json.loads(x) for x in (tmp_path / "2x2" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "1x4" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in ma] == [0, 1] and ma[-1]["val_macro_f1"] == pytest.approx(
        mb[-1]["val_macro_f1"], abs=1e-6)


def test_spawned_ranks_start_with_the_shared_imports(tmp_path):
    """Self-spawned training ranks fork from a server that has imported torch, torch._dynamo
    (a torch optimizer imports it on its first parameter group: ~150 MiB per interpreter) and
    stage 2's modules, so they share those pages instead of each importing them; a module
    nobody preloads is absent; the launcher never imports torch."""
    import sys
    from pathlib import Path

    out = tmp_path / "probe"
    r = subprocess.run([sys.executable, "-c", f"import tests.spawn_probe as p; p.main({str(out)!r})"],
                       capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((out / f"rank{rank}.json").read_text())
        assert seen == {"torch": True, "torch._dynamo": True, "sympy": True,
                        "stage2_temporal.api": True, "json.tool": False}, (rank, seen)
    assert json.loads((out / "launcher.json").read_text()) == {"torch": False}
