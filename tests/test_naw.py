"""The NAW kernel against values computed by hand."""
import math

import numpy as np
import pytest
import torch

from fer_pipeline.naw import curriculum, kernel_cov, naw_inputs, naw_weight


def test_covariance_constants_match_spec():
    assert kernel_cov(0.8, 2.0) == pytest.approx((0.80, 0.48))
    assert kernel_cov(0.91, 6.0) == pytest.approx((0.8511, 0.8051), abs=5e-5)


def test_curriculum():
    assert curriculum(0.0) == 0.0
    assert curriculum(1.0) == pytest.approx(1 - math.exp(-15))
    assert curriculum(0.1) == pytest.approx(1 - math.exp(-1.5))


def _hand(x, mu, S, normalize=False):
    d = np.asarray(x) - np.asarray(mu)
    m = d @ np.linalg.inv(np.asarray(S)) @ d
    c = 1 / (2 * math.pi * math.sqrt(np.linalg.det(S))) if normalize else 1.0
    return c * math.exp(-0.5 * m)


def test_weights_by_hand():
    probs = torch.tensor([
        [0.70, 0.20, 0.10],   # target 0, correct: T kernel at (0.7, 0.2)
        [0.10, 0.60, 0.30],   # target 2, wrong:   F kernel at (0.3, 0.6)
        [0.40, 0.35, 0.25],   # target 0, correct: T kernel at (0.4, 0.35)
    ], dtype=torch.float64)
    target = torch.tensor([0, 2, 0])
    p_gt, p_nn = naw_inputs(probs, target)
    torch.testing.assert_close(p_gt, torch.tensor([0.7, 0.3, 0.4], dtype=torch.float64))
    torch.testing.assert_close(p_nn, torch.tensor([0.2, 0.6, 0.35], dtype=torch.float64))
    for progress in (0.0, 0.3, 1.0):
        eps = 1 - math.exp(-15 * progress)
        ST = [[0.8, -0.48 * eps], [-0.48 * eps, 0.8]]
        SF = [[0.8511, 0.8051], [0.8051, 0.8511]]
        for normalize in (False, True):
            w = naw_weight(probs, target, progress, normalize=normalize)
            expect = [_hand((0.7, 0.2), (0.5, 0.5), ST, normalize),
                      _hand((0.3, 0.6), (0.30, 0.15), SF, normalize),
                      _hand((0.4, 0.35), (0.5, 0.5), ST, normalize)]
            np.testing.assert_allclose(w.numpy(), expect, rtol=2e-4)


def test_weight_peaks_at_the_mean_and_is_one_unnormalised():
    probs = torch.tensor([[0.5, 0.5 - 1e-9, 1e-9]], dtype=torch.float64)
    w = naw_weight(probs, torch.tensor([0]), 1.0, normalize=False)
    assert w.item() == pytest.approx(1.0, abs=1e-6)


def test_gradient_flows_through_weight():
    logits = torch.randn(5, 8, requires_grad=True)
    target = torch.randint(0, 8, (5,))
    w = naw_weight(logits.softmax(-1), target, 0.5)
    w.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_shape_check():
    with pytest.raises(ValueError):
        naw_weight(torch.rand(3, 8), torch.zeros(4, dtype=torch.long), 0.0)


def test_vnaw_weight_gradient_switch():
    """weight_grad=False: same loss value, but the weight is a constant per clip, so the
    gradient is exactly that of (1 + w) * CE with w frozen."""
    from fer_pipeline.config import VNAWConfig
    from stage2_temporal.losses import vnaw_loss

    torch.manual_seed(1)
    base = torch.randn(3, 6, 8)
    label = torch.tensor([[1, 1, 1, 2, -1, 1], [0, 0, 3, 3, 3, 3], [5, 5, 5, 5, 5, 5]])
    mask = torch.ones(3, 6, dtype=torch.bool)
    grads, losses = {}, {}
    for flag in (True, False):
        logits = base.clone().requires_grad_(True)
        loss, _ = vnaw_loss(logits, label, mask, 0.5, VNAWConfig(), target="frame", weight_grad=flag)
        loss.backward()
        grads[flag], losses[flag] = logits.grad, loss.detach()
    torch.testing.assert_close(losses[True], losses[False])
    assert not torch.allclose(grads[True], grads[False])
    # reference: frozen weights times the plain per-clip CE
    logits = base.clone().requires_grad_(True)
    p = logits.softmax(-1)
    counted = label >= 0
    pbar = (p * counted[..., None]).sum(1) / counted.sum(1, keepdim=True)
    w = naw_weight(pbar.detach(), torch.tensor([1, 3, 5]), 0.5)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), label.clamp_min(0).flatten(),
                                           reduction="none").view(3, 6)
    ce = (ce * counted).sum(1) / counted.sum(1)
    ((1 + w) * ce).mean().backward()
    torch.testing.assert_close(grads[False], logits.grad)
