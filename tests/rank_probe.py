"""Run by tests/test_embcache.py as each of 2 torchrun ranks: load a store with
``embcache.node_shared`` and report where this rank's embedding array lives (the mapping of
/proc/self/maps that holds its first byte: file, inode, or anonymous memory).

    torchrun --standalone --nproc_per_node=2 tests/rank_probe.py STORE SHM_DIR OUT_DIR [--tiny-shm]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def mapping_of(address: int) -> dict:
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= address < hi:
            return {"inode": int(parts[4]), "path": parts[5] if len(parts) > 5 else "",
                    "perms": parts[1]}
    return {}


def main() -> None:
    store_path, shm_dir, out = sys.argv[1:4]
    import logging

    import numpy as np
    import torch

    from fer_pipeline import distributed, embcache
    from fer_pipeline.store import EmbeddingStore

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if "--tiny-shm" in sys.argv:                # a /dev/shm far too small for the copy
        embcache._free_bytes = lambda d: 4096
    d = distributed.init(prefer_cuda=False)
    store = EmbeddingStore.open(store_path)
    index = store.index()
    loaded = embcache.node_shared(store, index, shm_dir)
    t = torch.from_numpy(loaded.emb)            # what stage 2 trains from: the same memory
    ref = store.load()
    same = all(np.array_equal(getattr(loaded, k), getattr(ref, k)) for k in ("emb", "label", "face"))
    distributed.barrier()
    left = sorted(p.name for p in Path(shm_dir).iterdir())
    Path(out, f"rank{d.rank}.json").write_text(json.dumps({
        "rank": d.rank, "mapping": mapping_of(loaded.emb.ctypes.data),
        "tensor_shares_array": t.data_ptr() == loaded.emb.ctypes.data, "equal": same,
        "memmap": isinstance(loaded.emb, np.memmap), "shm_left": left}))
    distributed.cleanup()


if __name__ == "__main__":
    main()
