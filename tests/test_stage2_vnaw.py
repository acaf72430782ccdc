"""V-NAW loss, token augmentation, CFC-SP head maths, post-processing, splits: hand values on
small tensors."""
import math

import numpy as np
import pytest
import torch

from fer_pipeline import labels as L
from fer_pipeline.config import PostConfig, TokenAugConfig, VNAWConfig
from fer_pipeline.naw import naw_weight
from stage2_temporal.augment import TokenAugment, channel_masks, drop_tokens
from fer_pipeline.postprocess import interpolate_no_face, smooth
from stage2_temporal.evaluate import postprocess
from stage2_temporal.heads import decide, frame_ce, probs8
from stage2_temporal.losses import balanced_class_weights, clip_majority, vnaw_loss
from stage2_temporal.splits import kfold_folds, random_split as kfold_split


# ------------------------------------------------------------------ augmentation
def _one_video_cache(T=300, D=16, seed=0):
    from stage2_temporal.data import TemporalCache

    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(T, D, generator=g).half()
    label = torch.randint(0, 8, (T,), generator=g)
    return TemporalCache(emb, label, torch.ones(T, dtype=torch.bool), np.array([0, T]), ["v"])


def _step(cache, cfg, model):
    from stage2_temporal.augment import raw_span
    from stage2_temporal.engine import clip_loss

    span = raw_span(cfg.stage2.data.clip_len, cfg.stage2.aug)
    clips = (torch.tensor([0]), torch.tensor([span]), None)
    torch.manual_seed(7)                       # the same drops, masks and dropout every call
    loss, _, logits, batch = clip_loss(model, cache, clips, cfg, 0.5)
    return loss, logits, batch


@pytest.mark.parametrize("mode", ["remove", "key_mask"])
def test_a_dropped_frame_changes_no_output_and_no_loss(mode):
    """Frame skipping removes frames: changing the embedding of a dropped frame changes neither
    a logit nor the loss (``remove``). Dropping only attention keys (``key_mask``) does not:
    the dropped frame is still predicted from its own embedding and scored."""
    from fer_pipeline.config import load_config
    from stage2_temporal.engine import build_model

    cfg = load_config(overrides=["stage2.model.d_model=32", "stage2.model.layers=2", "stage2.model.heads=2",
                                 "stage2.model.ff=64", "stage2.model.dropout=0.1", "stage2.data.clip_len=40",
                                 f"stage2.aug.drop_mode={mode}", "stage2.naw.form=paper"])
    cache = _one_video_cache()
    torch.manual_seed(0)
    model = build_model(cache.dim, cfg).train()
    loss, logits, batch = _step(cache, cfg, model)
    seen = batch.x[0][batch.inside[0]]                                   # (n, D) frames in the clip
    emb = cache.emb.float()
    present = [bool((seen == emb[r]).all(-1).any()) for r in range(60)]
    if mode == "remove":
        assert 20 < batch.inside[0].sum() <= 40 and not all(present[:40])
        last = max(r for r in range(60) if present[r])
        dropped = next(r for r in range(last) if not present[r])        # inside the clip's span
    else:
        assert all(present[:40])                                         # every frame still there
        torch.manual_seed(7)                  # the model's first draws: the key drop of _step
        keys = drop_tokens(batch.valid, cfg.stage2.aug.drop_min, cfg.stage2.aug.drop_max)
        dropped = int(torch.nonzero(~keys[0])[0])
    cache.emb[dropped] += 5.0
    loss2, logits2, _ = _step(cache, cfg, model)
    if mode == "remove":
        assert torch.equal(logits, logits2) and torch.equal(loss, loss2)
    else:
        assert not torch.equal(logits[0, dropped], logits2[0, dropped])   # it reads its own input
        assert not torch.equal(loss, loss2)


def test_token_drop_rate_and_valid_respected():
    g = torch.Generator().manual_seed(0)
    valid = torch.ones(300, 2000, dtype=torch.bool)
    valid[:, 1900:] = False
    keep = drop_tokens(valid, 0.2, 0.4, g)
    assert not keep[:, 1900:].any()                                  # invalid frames stay out
    per_clip = 1 - keep[:, :1900].float().mean(1)                    # ~ lambda (+/- 0.01 noise)
    assert 0.28 < per_clip.mean() < 0.32                             # E[lambda] = 0.3
    assert per_clip.min() > 0.17 and per_clip.max() < 0.43           # lambda in [0.2, 0.4]
    assert per_clip.std() > 0.04                                     # drawn per clip: U std 0.058


def test_feature_mask_same_across_frames_different_across_clips():
    torch.manual_seed(0)
    aug = TokenAugment(50, TokenAugConfig(drop_min=0.0, drop_max=0.0, mask_ratio=0.2)).train()
    x = torch.randn(6, 30, 50) + 10                                  # no natural zeros
    out, keys = aug(x, torch.ones(6, 30, dtype=torch.bool))
    zeroed = out == 0                                                 # (B, P, D)
    assert (zeroed.sum(-1) == 10).all()                              # exactly 20 % of 50
    assert (zeroed == zeroed[:, :1, :]).all()                        # same channels on every frame
    sets = {tuple(torch.nonzero(zeroed[b, 0]).flatten().tolist()) for b in range(6)}
    assert len(sets) == 6                                            # a different set per clip
    torch.testing.assert_close(out[~zeroed], x[~zeroed])
    assert keys.all()                                                 # no dropping configured
    m = channel_masks(3, 10, 0.2)
    assert m.sum(1).tolist() == [2, 2, 2]


def test_learned_mask_token_and_eval_mode_passthrough():
    aug = TokenAugment(8, TokenAugConfig(mask_token="learned", mask_ratio=0.5))
    with torch.no_grad():
        aug.mask_token.fill_(7.0)
    x = torch.zeros(2, 5, 8)
    out, _ = aug.train()(x, torch.ones(2, 5, dtype=torch.bool))
    assert ((out == 7.0).sum(-1) == 4).all()
    out_eval, keys = aug.eval()(x, torch.ones(2, 5, dtype=torch.bool))
    assert out_eval is x and keys.all()
    off = TokenAugment(8, TokenAugConfig(enabled=False)).train()
    o, k = off(x, torch.ones(2, 5, dtype=torch.bool))
    assert o is x and k.all()


# ------------------------------------------------------------------ V-NAW loss
def test_clip_majority():
    label = torch.tensor([[1, 1, 2, -1], [3, 3, 5, 5], [-1, -1, -1, -1]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, True], [True] * 4])
    assert clip_majority(label, mask).tolist() == [1, 3, -1]        # tie -> lowest id


def test_vnaw_loss_by_hand_frame_and_clip_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, requires_grad=True)
    label = torch.tensor([[4, 4, 1, -1], [0, -1, -1, -1]])
    mask = torch.ones(2, 4, dtype=torch.bool)
    naw = VNAWConfig()
    p = logits.softmax(-1)
    # clip 0: frames 0..2 annotated; clip 1: frame 0
    pbar = torch.stack([p[0, :3].mean(0), p[1, :1].mean(0)])
    ybar = torch.tensor([4, 0])
    w = naw_weight(pbar, ybar, 0.4)
    ce0 = -(p[0, 0, 4].log() + p[0, 1, 4].log() + p[0, 2, 1].log()) / 3
    ce1 = -p[1, 0, 0].log()
    expected = ((1 + w[0]) * ce0 + (1 + w[1]) * ce1) / 2
    loss, wm = vnaw_loss(logits, label, mask, 0.4, naw, target="frame")
    torch.testing.assert_close(loss, expected)
    assert float(wm) == pytest.approx(float(w.detach().mean()))
    clip_loss, _ = vnaw_loss(logits, label, mask, 0.4, naw, target="clip")
    expected_clip = ((1 + w[0]) * -pbar[0, 4].log() + (1 + w[1]) * -pbar[1, 0].log()) / 2
    torch.testing.assert_close(clip_loss, expected_clip)
    # NAW off = plain CE; masked-out frames do not count
    plain, w0 = vnaw_loss(logits, label, mask, 0.4, VNAWConfig(enabled=False), target="frame")
    torch.testing.assert_close(plain, (ce0 + ce1) / 2)
    assert float(w0) == 0
    mask2 = mask.clone()
    mask2[0, 2] = False
    part, _ = vnaw_loss(logits, label, mask2, 0.4, VNAWConfig(enabled=False), target="frame")
    torch.testing.assert_close(part, (-(p[0, 0, 4].log() + p[0, 1, 4].log()) / 2 + ce1) / 2)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 3].abs().sum() == 0


def test_vnaw_class_weights_and_empty_clips():
    logits = torch.zeros(2, 3, 8, requires_grad=True)
    label = torch.tensor([[0, 0, 7], [-1, -1, -1]])
    cw = torch.ones(8)
    cw[7] = 3.0
    loss, _ = vnaw_loss(logits, label, torch.ones(2, 3, dtype=torch.bool), 0.0,
                        VNAWConfig(enabled=False), target="frame", class_weights=cw)
    assert float(loss) == pytest.approx(math.log(8))                # uniform p: CE = log 8 anyway
    none, _ = vnaw_loss(logits, torch.full((2, 3), -1), torch.ones(2, 3, dtype=torch.bool), 0.0,
                        VNAWConfig())
    assert float(none) == 0.0
    w = balanced_class_weights(torch.tensor([0, 0, 0, 1, -1]))
    assert w[0] == pytest.approx(0.5) and w[1] == pytest.approx(1.5) and w[2] == 0


# ------------------------------------------------------------------ CFC-SP head
def test_cfcsp_probabilities_and_cascades():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, math.log(6.0), 0.0, math.log(3.0), 0.0, 0.0]])
    p8 = probs8(logits, "cfcsp")[0]
    # p5 = [1,1,1,1,6]/10; p4 = [1,3,1,1]/6
    assert float(p8.sum()) == pytest.approx(1.0)
    assert float(p8[L.NEUTRAL]) == pytest.approx(0.1) and float(p8[L.OTHER]) == pytest.approx(0.1)
    assert float(p8[L.DISGUST]) == pytest.approx(0.6 * 0.5)
    assert float(p8[L.ANGER]) == pytest.approx(0.6 / 6)
    assert int(decide(p8.numpy(), "hard")) == L.DISGUST
    happy = torch.tensor([[0.0, 5.0, 0, 0, 0, 9, 0, 0, 0]])
    assert int(decide(probs8(happy, "cfcsp").numpy(), "hard")[0]) == L.HAPPINESS   # coarse wins unless Negative
    # CE: coarse target always, negative head only on negative frames
    lab = torch.tensor([[L.HAPPINESS, L.DISGUST, -1]])
    lg = torch.randn(1, 3, 9)
    ce = frame_ce(lg, lab, "cfcsp")
    c5 = lg[0, :, :5].log_softmax(-1)
    c4 = lg[0, :, 5:].log_softmax(-1)
    torch.testing.assert_close(ce[0, 0], -c5[0, 1])
    torch.testing.assert_close(ce[0, 1], -c5[1, 4] - c4[1, 1])
    assert float(ce[0, 2]) == 0


# ------------------------------------------------------------------ post-processing
def test_interpolation_and_smoothing():
    probs = np.zeros((5, 8))
    probs[0, 1] = probs[4, 3] = 1.0
    face = np.array([True, False, False, False, True])
    out = interpolate_no_face(probs, face)
    np.testing.assert_allclose(out[2, [1, 3]], [0.5, 0.5])
    np.testing.assert_allclose(out[1, [1, 3]], [0.75, 0.25])
    np.testing.assert_array_equal(interpolate_no_face(probs, np.zeros(5, bool)), probs)
    s = smooth(np.eye(8)[[0, 0, 1, 0, 0]].astype(float), 3)
    np.testing.assert_allclose(s[2, :2], [2 / 3, 1 / 3])
    np.testing.assert_allclose(s[0, :2], [1.0, 0.0])                 # window shrinks at the edges
    np.testing.assert_allclose(s.sum(1), 1.0)
    both = postprocess(probs, face, PostConfig(smooth_window=3, interpolate=True))
    np.testing.assert_allclose(both.sum(1), 1.0)


# ------------------------------------------------------------------ splits
def test_kfold_split_ratio_groups_and_determinism():
    videos = [f"v{i}" for i in range(20)] + ["pair_left", "pair_right"]
    lengths = [100] * 22
    tr, va = kfold_split(videos, lengths, 0, 0.3, seed=0)
    assert set(tr).isdisjoint(va) and sorted(tr + va) == sorted(videos)
    assert 0.28 <= len(va) / 22 <= 0.42
    assert ("pair_left" in va) == ("pair_right" in va)
    assert kfold_split(videos, lengths, 0, 0.3, seed=0) == (tr, va)
    assert kfold_split(videos, lengths, 1, 0.3, seed=0)[1] != va


def test_vnaw_paper_form_matches_a_hand_computed_loss_and_gradient():
    """Eqs. 9-12 on two clips, in numpy from scratch: p_bar = mean softmax over the annotated
    frames, y_bar = majority label, w from the NAW kernel of (p_bar[y], max other) with C,
    loss = mean (1 + w) * -log p_bar[y]; the gradient w.r.t. the logits (central differences of
    the numpy loss) equals autograd's, w included (no stop-gradient)."""
    from fer_pipeline.config import load_config

    rng = np.random.default_rng(3)
    z = rng.normal(0, 1.5, (2, 3, 8))
    label = np.array([[4, 4, 1], [0, -1, 0]])
    progress = 0.3

    def gau(x, mu, cov):
        d = np.asarray(x) - np.asarray(mu)
        return math.exp(-0.5 * d @ np.linalg.inv(cov) @ d) / (2 * math.pi * math.sqrt(np.linalg.det(cov)))

    eps = 1 - math.exp(-15 * progress)
    t_cov = np.array([[0.8, -0.48 * eps], [-0.48 * eps, 0.8]])
    f_cov = np.array([[0.91 ** 2 + (0.91 / 6) ** 2, 0.91 ** 2 - (0.91 / 6) ** 2]] * 2)
    f_cov[1] = f_cov[1][::-1]

    def hand(z):
        e = np.exp(z - z.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
        total = 0.0
        for i in range(2):
            ann = label[i] >= 0
            pbar = p[i][ann].mean(0)
            y = np.bincount(label[i][ann], minlength=8).argmax()
            others = np.delete(pbar, y)
            correct = pbar[y] >= pbar.max()
            x = (pbar[y], others.max())
            w = gau(x, (0.5, 0.5), t_cov) if correct else gau(x, (0.30, 0.15), f_cov)
            total += (1 + w) * -math.log(pbar[y])
        return total / 2

    cfg = load_config(overrides=["stage2.naw.form=paper"])
    assert cfg.stage2.loss_target() == "clip" and cfg.stage2.grad_through_weight()
    logits = torch.tensor(z, requires_grad=True)
    loss, _ = vnaw_loss(logits, torch.tensor(label), torch.ones(2, 3, dtype=torch.bool), progress,
                        cfg.stage2.naw, "flat", cfg.stage2.loss_target(), None,
                        cfg.stage2.grad_through_weight())
    assert float(loss) == pytest.approx(hand(z), rel=1e-6)          # the loss computes in fp32
    loss.backward()
    num = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        dz = np.zeros_like(z)
        dz[idx] = 1e-6
        num[idx] = (hand(z + dz) - hand(z - dz)) / 2e-6
    np.testing.assert_allclose(logits.grad.numpy(), num, atol=2e-6)
    # the frame_detached variant has another gradient (w constant, frame CE)
    other = load_config(overrides=["stage2.naw.form=frame_detached"]).stage2
    assert other.loss_target() == "frame" and not other.grad_through_weight()


def test_kfold_folds_are_disjoint_cover_every_video_and_keep_pairs_together():
    rng = np.random.default_rng(0)
    videos = [f"v{i:02d}" for i in range(20)] + ["pair_left", "pair_right", "solo"]
    lengths = [int(n) for n in rng.integers(200, 3000, len(videos))]
    for k in (2, 3, 5):
        folds = kfold_folds(videos, lengths, k, seed=0)
        assert len(folds) == k and all(folds)
        flat = [v for f in folds for v in f]
        assert sorted(flat) == sorted(videos) and len(flat) == len(set(flat))   # each video once
        side = [i for i, f in enumerate(folds) if "pair_left" in f]
        assert side == [i for i, f in enumerate(folds) if "pair_right" in f]
        frames = [sum(lengths[videos.index(v)] for v in f) for f in folds]
        assert max(frames) <= 1.5 * min(frames)                                  # balanced by frames
    assert kfold_folds(videos, lengths, 3, seed=0) == kfold_folds(videos, lengths, 3, seed=0)
    # the seed orders videos of equal length (longest first decides the rest)
    same = [1000] * len(videos)
    assert kfold_folds(videos, same, 3, seed=0) != kfold_folds(videos, same, 3, seed=1)
    with pytest.raises(ValueError, match="folds"):
        kfold_folds(videos[:2], lengths[:2], 3, seed=0)


def test_smooth_predicting_mixes_period_and_moment():
    p = np.zeros((9, 8))
    p[:, 0] = 1.0
    p[4] = 0.0
    p[4, 4] = 1.0                                   # one frame of Happiness in Neutral
    period = smooth(p, 5)
    np.testing.assert_allclose(period[4, [0, 4]], [0.8, 0.2])
    mixed = smooth(p, 5, moment_weight=0.5)
    np.testing.assert_allclose(mixed[4, [0, 4]], [0.4, 0.6])     # 0.5 * period + 0.5 * moment
    np.testing.assert_allclose(mixed.sum(1), 1.0)
    np.testing.assert_array_equal(smooth(p, 5, 1.0), p)           # all moment: unchanged


def _official_code_loss(out, flipped, labels, eps):
    """The official V-NAW training loss transcribed line for line (train_exp.py 86-101 with
    --type NLA; src/utils.py jensen_shannon_divergence 253-258, Integrated_Co_GA_Loss 263-307):
    covariance matrices inverted with torch.linalg.inv, as there."""
    import torch.nn.functional as F

    def jsd(p, q):
        m = 0.5 * (p + q)
        return 0.5 * (F.kl_div(F.log_softmax(p, dim=1), F.softmax(m, dim=1), reduction="sum")
                      + F.kl_div(F.log_softmax(q, dim=1), F.softmax(m, dim=1), reduction="sum"))

    def co_gau(sv, cov, mu):
        diff = sv - mu
        return torch.diagonal(torch.exp(-0.5 * diff.t() @ torch.linalg.inv(cov) @ diff))

    t_mu, f_mu = torch.tensor([[0.5], [0.5]]), torch.tensor([[0.30], [0.15]])
    t_cov = torch.tensor([[0.75, -0.50 * eps], [-0.50 * eps, 0.75]])
    f_cov = torch.tensor([[0.85, 0.80], [0.80, 0.85]])
    probs = out.softmax(1)
    ce = F.cross_entropy(out, labels, reduction="none")
    p_t = probs.gather(1, labels[:, None]).squeeze()
    top2 = probs.topk(2, dim=1).values
    is_max = top2[:, 0] == p_t
    sv = torch.stack([p_t, torch.where(is_max, top2[:, 1], top2[:, 0])], 0)
    value = torch.where(is_max, co_gau(sv, t_cov, t_mu), co_gau(sv, f_cov, f_mu))
    nla = (ce * value).mean()
    return 0.5 * F.cross_entropy(out, labels) + 0.5 * nla + 0.4 * jsd(out, flipped)


def test_official_form_equals_the_official_code_on_two_clips():
    """Two clips of 4 frames; one unannotated frame and one frame outside the loss mask are left
    out, as the official code (labels on every frame) would never see them."""
    from stage2_temporal.losses import vnaw_official_loss

    g = torch.Generator().manual_seed(3)
    logits = (2 * torch.randn(2, 4, 8, generator=g)).requires_grad_()
    flipped = logits.detach() + 0.5 * torch.randn(2, 4, 8, generator=g)
    label = torch.tensor([[0, 0, 4, -1], [6, 2, 2, 2]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    epoch, epochs = 3, 10
    loss, w = vnaw_official_loss(logits, flipped, label, mask, epoch / epochs)
    keep = mask & (label >= 0)
    eps = 1 - math.exp(-15 * epoch / epochs)
    want = _official_code_loss(logits[keep], flipped[keep], label[keep], eps)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    # gradients agree too (w carries gradient in the official code)
    got_g, = torch.autograd.grad(loss, logits, retain_graph=True)
    want_g, = torch.autograd.grad(want, logits)
    torch.testing.assert_close(got_g, want_g, rtol=1e-4, atol=1e-6)
    detached, _ = vnaw_official_loss(logits, flipped, label, mask, epoch / epochs, weight_grad=False)
    assert detached.item() == pytest.approx(loss.item(), rel=1e-6)
    other, = torch.autograd.grad(detached, logits)
    assert not torch.allclose(other, got_g)
    # the jsd_reduction=mean variant: the same CE terms, the JSD over the 6 counted frames
    from stage2_temporal.losses import official_jsd

    jsd = official_jsd(logits[keep].float(), flipped[keep].float())
    mean, _ = vnaw_official_loss(logits, flipped, label, mask, epoch / epochs, jsd_reduction="mean")
    assert int(keep.sum()) == 6
    assert mean.item() == pytest.approx((want - 0.4 * jsd + 0.4 * jsd / 6).item(), rel=1e-5)


def test_official_form_is_refused_where_it_has_no_meaning():
    from fer_pipeline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="official.*flat"):
        load_config(overrides=["stage2.naw.form=official", "stage2.model.head=cfcsp"])
    with pytest.raises(ConfigError, match="loss.target must be frame"):
        load_config(overrides=["stage2.naw.form=official", "stage2.loss.target=clip"])
    assert load_config(overrides=["stage2.naw.form=official"]).stage2.needs_flip()
