"""The linear probe docs/experiments.md quotes: separable prototypes are found, shuffled labels are not."""
import numpy as np

from bench.linear_probe import probe
from tests.conftest import make_store


def test_probe_separates_prototypes_and_not_noise(tmp_path):
    from fer_pipeline.store import EmbeddingStore

    path = make_store(tmp_path / "s", dim=16)
    res = probe(str(path), steps=300)
    assert res["val_macro_f1"] > 60 and res["train_frames"] > res["val_frames"] > 0
    # the same embeddings with labels shuffled across frames: nothing to find
    st = EmbeddingStore.open(path)
    rng = np.random.default_rng(0)
    noise = EmbeddingStore.create_or_open(tmp_path / "n", "synthkey", {"name": "synthetic"}, 16)
    for v in st.videos():
        rec = st.read_video(v)
        noise.write_video(v, rec.emb, rng.permutation(rec.label), rec.face, rec.attrs)
    assert probe(str(tmp_path / "n"), steps=300)["val_macro_f1"] < 30
