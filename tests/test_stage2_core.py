"""Stage 2 units on random tensors: clip gathering and sampling, masking, sliding windows."""
import numpy as np
import pytest
import torch

from fer_pipeline.config import load_config
from fer_pipeline.store import LoadedStore
from stage2_temporal.data import ClipSampler, TemporalCache, gather_clips
from fer_pipeline.optim import warmup_cosine
from stage2_temporal.heads import frame_ce
from stage2_temporal.evaluate import predict_probs, window_starts
from stage2_temporal.model import TemporalTransformer


def make_cache(lengths, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    N = sum(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    face = rng.random(N) > 0.1
    emb = (rng.standard_normal((N, dim)) * face[:, None]).astype(np.float16)
    label = rng.integers(-1, 8, N).astype(np.int8)
    loaded = LoadedStore([f"v{i}" for i in range(len(lengths))], offsets, emb, label, face,
                         [{}] * len(lengths), "k", dim)
    return TemporalCache.from_store(loaded)


def test_gather_clips_pads_and_masks():
    cache = make_cache([10, 4])
    batch = gather_clips(cache, torch.tensor([2, 10]), torch.tensor([8, 4]), clip_len=8)
    assert batch.x.shape == (2, 8, 6) and batch.x.dtype == torch.float32
    torch.testing.assert_close(batch.x[0], cache.emb[2:10].float())
    torch.testing.assert_close(batch.x[1, :4], cache.emb[10:14].float())
    assert (batch.x[1, 4:] == 0).all() and (batch.label[1, 4:] == -1).all()
    assert batch.inside[1].tolist() == [True] * 4 + [False] * 4
    assert batch.valid[1].tolist() == cache.face[10:14].tolist() + [False] * 4


@pytest.mark.parametrize("lengths,clip_len", [([250, 37, 100, 101], 50), ([5], 8), ([1000], 100)])
def test_sampler_covers_every_frame_about_once(lengths, clip_len):
    cache = make_cache(lengths)
    sampler = ClipSampler(cache, clip_len, batch_size=4, seed=0)
    counts = np.zeros(sum(lengths), int)
    for starts, lens, _ in sampler:
        assert (lens <= clip_len).all() and (lens > 0).all()
        for s, n in zip(starts.tolist(), lens.tolist()):
            counts[s:s + n] += 1
            v = np.searchsorted(cache.offsets, s, side="right") - 1
            assert s + n <= cache.offsets[v + 1]   # never crosses into the next video
    assert counts.min() >= 1 and counts.max() <= 2
    assert counts.mean() < 1.3
    n_clips = len(sampler.clips()[0])
    assert n_clips <= int(np.ceil(sum(lengths) / clip_len)) + 2 * len(lengths)


def test_sampler_phase_changes_with_epoch():
    cache = make_cache([500])
    s = ClipSampler(cache, 100, 8, seed=0)
    first = sorted(s.clips()[0].tolist())
    s.set_epoch(1)
    assert sorted(s.clips()[0].tolist()) != first


def test_model_shapes_masking_and_gradients():
    cfg = load_config(overrides=["stage2.model.d_model=32", "stage2.model.ff=64",
                                 "stage2.model.heads=2", "stage2.model.dropout=0.0"])
    torch.manual_seed(0)
    model = TemporalTransformer(6, cfg.stage2.model, max_len=16)
    x = torch.randn(3, 16, 6)
    valid = torch.ones(3, 16, dtype=torch.bool)
    valid[1, 8:] = False
    valid[2] = False                       # a clip with no face at all must not give NaN
    logits = model(x, valid)
    assert logits.shape == (3, 16, 8) and torch.isfinite(logits).all()
    # invalid keys do not influence valid frames
    x2 = x.clone()
    x2[1, 8:] = 100.0
    torch.testing.assert_close(model(x2, valid)[1, :8], logits[1, :8])
    label = torch.randint(-1, 8, (3, 16))
    loss = frame_ce(logits, label, "flat").sum() / (label >= 0).sum()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("pos", ["sine", "learned"])
def test_positional_options(pos):
    cfg = load_config(overrides=[f"stage2.model.pos={pos}", "stage2.model.d_model=16",
                                 "stage2.model.ff=16", "stage2.model.heads=2"])
    model = TemporalTransformer(4, cfg.stage2.model, max_len=20).eval()
    x = torch.randn(1, 20, 4).expand(1, 20, 4).clone()
    x[:] = x[:, :1]                        # identical frames: only positions can tell them apart
    out = model(x)
    assert not torch.allclose(out[0, 0], out[0, 10])


@pytest.mark.parametrize("pos", ["none", "sine", "learned"])
def test_frame_order_reaches_the_output_only_with_positions(pos):
    """Without positional encoding the Transformer is permutation-equivariant: shuffling a
    clip's frames shuffles its outputs the same way, so frame order cannot be used. With sine or
    learned positions the shuffled clip gives other outputs."""
    cfg = load_config(overrides=[f"stage2.model.pos={pos}", "stage2.model.d_model=16",
                                 "stage2.model.ff=16", "stage2.model.heads=2"])
    torch.manual_seed(0)
    model = TemporalTransformer(4, cfg.stage2.model, max_len=20).eval()
    x, valid = torch.randn(1, 20, 4), torch.ones(1, 20, dtype=torch.bool)
    valid[0, 3] = False
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out, shuffled = model(x, valid), model(x[:, perm], valid[:, perm])
    if pos == "none":
        torch.testing.assert_close(shuffled, out[:, perm], rtol=1e-5, atol=1e-5)
    else:
        assert (shuffled - out[:, perm]).abs().max() > 1e-3


def test_window_starts_cover_the_video():
    assert window_starts(30, 100, 50) == [0]
    assert window_starts(100, 100, 50) == [0]
    assert window_starts(230, 100, 50) == [0, 50, 100, 130]
    for T in (101, 157, 999):
        starts = window_starts(T, 100, 50)
        covered = np.zeros(T, bool)
        for s in starts:
            covered[s:s + 100] = True
        assert covered.all() and starts[-1] + 100 == T


def test_predict_probs_every_frame_once_normalised():
    cache = make_cache([37, 230, 5])
    cfg = load_config(overrides=["stage2.model.d_model=16", "stage2.model.ff=16",
                                 "stage2.model.heads=2"])
    model = TemporalTransformer(6, cfg.stage2.model, max_len=100)
    probs = predict_probs(model, cache, clip_len=100, stride=50, batch_size=2)
    assert probs.shape == (272, 8)
    torch.testing.assert_close(probs.sum(-1), torch.ones(272))
    # averaging is over the windows that cover each frame: frames of a 5-frame video come from
    # one window, identical to a direct forward pass
    direct = model.eval()(cache.emb[267:272].float()[None], cache.face[267:272][None]).softmax(-1)[0]
    torch.testing.assert_close(probs[267:272], direct.detach())


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0)
