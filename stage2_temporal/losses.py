"""V-NAW loss on clips.

Per clip i with annotated frames A_i (label >= 0, and in the loss mask):

    p_bar_i = mean_{p in A_i} softmax(logits_ip)            clip-level prediction (paper eq. 9)
    y_bar_i = majority label over A_i                       clip label
    w_i     = naw_weight(p_bar_i, y_bar_i, epoch / epochs)  T kernel if argmax p_bar == y_bar, else F
    CE_i    = mean_{p in A_i} CE(logits_ip, y_ip)           loss.target = frame
            | -log p_bar_i[y_bar_i]                         loss.target = clip (paper eq. 10)
    loss    = mean_i (1 + w_i) * CE_i                       (paper eq. 12)

``naw.form: paper`` is eqs. 9-12 as written: clip target, w with gradient (no stop-gradient in
the paper; both official codes compute w from the live softmax), C as NLA. ``frame_detached`` is
the frame target with w a per-clip constant. ``official`` is the official code's training loss
(``vnaw_official_loss``: per-frame weights, 0.5 CE + 0.5 w-weighted CE + 0.4 JSD against the
clip of flipped crops). Clips without annotated frames do not count. ``naw.enabled = False`` gives w = 0 (plain CE).
Class weights, when given, weight each frame's CE by its class (frame target) or the clip's CE
by its majority class (clip target).
"""
from __future__ import annotations

import torch

from fer_pipeline.config import VNAWConfig
from fer_pipeline.labels import NUM_CLASSES
from fer_pipeline.naw import naw_weight
from stage2_temporal.heads import frame_ce, probs8


def clip_majority(label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, P) labels, (B, P) bool frames that count -> (B,) majority label (ties: lowest id),
    -1 for clips with no counted annotated frame."""
    counted = mask & (label >= 0)
    onehot = torch.zeros(*label.shape, NUM_CLASSES, device=label.device)
    onehot.scatter_(-1, label.clamp_min(0)[..., None], 1.0)
    counts = (onehot * counted[..., None]).sum(1)                      # (B, 8)
    maj = counts.argmax(-1)
    return torch.where(counts.sum(-1) > 0, maj, torch.full_like(maj, -1))


def vnaw_loss(logits: torch.Tensor, label: torch.Tensor, mask: torch.Tensor, progress: float,
              naw: VNAWConfig, head: str = "flat", target: str = "clip",
              class_weights: torch.Tensor | None = None,
              weight_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, P, out), label (B, P) with -1, mask (B, P) bool frames allowed in the loss
    -> (scalar loss, mean clip weight w, detached). ``weight_grad=False`` detaches w."""
    counted = mask & (label >= 0)                                      # (B, P)
    n = counted.sum(1)                                                 # (B,)
    clips = n > 0
    if not clips.any():
        zero = logits.sum() * 0.0
        return zero, zero.detach()
    p = probs8(logits, head)                                           # (B, P, 8)
    p_bar = (p * counted[..., None]).sum(1) / n.clamp_min(1)[:, None]  # (B, 8)
    y_bar = clip_majority(label, counted)                              # (B,)
    p_bar, y_bar, logits_c, label_c, counted_c = (
        p_bar[clips], y_bar[clips], logits[clips], label[clips], counted[clips])
    if target == "frame":
        ce_f = frame_ce(logits_c, torch.where(counted_c, label_c, -1), head)   # (b, P)
        wts = counted_c.float()
        if class_weights is not None:
            wts = wts * class_weights.to(ce_f.device)[label_c.clamp_min(0)]
        ce = (ce_f * wts).sum(1) / wts.sum(1).clamp_min(1e-12)
    else:
        ce = -(p_bar.gather(1, y_bar[:, None]).squeeze(1).clamp_min(1e-12)).log()
        if class_weights is not None:
            ce = ce * class_weights.to(ce.device)[y_bar]
    if naw.enabled:
        w = naw_weight(p_bar, y_bar, progress, **naw.kernel_kwargs())
        if not weight_grad:
            w = w.detach()
    else:
        w = torch.zeros_like(ce)
    return ((1.0 + w) * ce).mean(), w.detach().mean()


# The official code's own kernel (src/utils.py, Integrated_Co_GA_Loss.__init__, lines 264-271):
# mu_T = (0.50, 0.50), Sigma_T = [[0.75, -0.50 eps], [-0.50 eps, 0.75]], mu_F = (0.30, 0.15),
# Sigma_F = [[0.85, 0.80], [0.80, 0.85]], no normalising constant (co_gau, lines 302-307), written
# here in the std/ratio form of ``fer_pipeline.naw`` (var = s^2 (1 + 1/r^2), cov = s^2 (1 - 1/r^2)).
OFFICIAL_KERNEL = {"mu_t": (0.50, 0.50), "mu_f": (0.30, 0.15),
                   "std_t": 0.625 ** 0.5, "ratio_t": 5 ** 0.5,        # var 0.75, cov 0.50
                   "std_f": 0.825 ** 0.5, "ratio_f": 33 ** 0.5,       # var 0.85, cov 0.80
                   "normalize": False, "slope": 15.0}    # eps = 1 - exp(-15 epoch / epochs), l. 311
OFFICIAL_LAM_A, OFFICIAL_LAM_B = 0.5, 0.4                # train_exp.py --lam_a / --lam_b, ll. 35-36


def official_jsd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``jensen_shannon_divergence`` of the official code (src/utils.py, lines 253-258) on (N, K)
    logits: the midpoint is taken of the *logits*, m = (a + b) / 2, and each term is
    ``F.kl_div(log_softmax(x), softmax(m), reduction='sum')`` = KL(softmax(m) || softmax(x))
    summed over frames and classes; the result is half their sum."""
    import torch.nn.functional as F

    m = F.softmax(0.5 * (a + b), dim=1)
    return 0.5 * (F.kl_div(F.log_softmax(a, dim=1), m, reduction="sum")
                  + F.kl_div(F.log_softmax(b, dim=1), m, reduction="sum"))


def vnaw_official_loss(logits: torch.Tensor, flip_logits: torch.Tensor, label: torch.Tensor,
                       mask: torch.Tensor, progress: float,
                       class_weights: torch.Tensor | None = None,
                       weight_grad: bool = True,
                       jsd_reduction: str = "sum") -> tuple[torch.Tensor, torch.Tensor]:
    """The official V-NAW training loss (``naw.form: official``), term by term as
    ``train_exp.py`` lines 83-101 (``--type NLA``, the default; ``DDP_train_exp.py`` lines
    124-126 is the same) computes it on the (B * P) frames of a batch:

        loss = lam_a * CE + (1 - lam_a) * NAW + lam_b * JSD          lam_a 0.5, lam_b 0.4
        CE   = mean over frames of CE(logits_f, y_f)                 (nn.CrossEntropyLoss())
        NAW  = mean over frames of w_f * CE(logits_f, y_f)           (Integrated_Co_GA_Loss)
        w_f  = T or F kernel (``OFFICIAL_KERNEL``) at (p_f[y_f], largest other p_f) of the
               frame's own softmax, with gradient (the official code has no detach)
        JSD  = ``official_jsd(logits, flip_logits)`` summed over the frames

    ``flip_logits``: the same model on the clip of horizontally flipped crops (the official
    model runs the flipped clip through the temporal model separately, model.py
    ``VideoFeatureModel_concat.forward``). Frames that count: ``mask`` and annotated (the
    official data has a label on every frame). ``class_weights`` weight each frame's CE (the
    official code has none). ``jsd_reduction="mean"`` (a project variant, not the official
    code) divides the JSD by the number of frames counted, like the two CE terms. Returns
    (loss, mean frame weight, detached)."""
    import torch.nn.functional as F

    counted = mask & (label >= 0)
    if not counted.any():
        zero = logits.sum() * 0.0 + flip_logits.sum() * 0.0
        return zero, zero.detach()
    a, b, y = logits[counted].float(), flip_logits[counted].float(), label[counted].long()
    ce = F.cross_entropy(a, y, reduction="none")                      # (N,)
    wts = class_weights.to(ce.device)[y] if class_weights is not None else torch.ones_like(ce)
    w = naw_weight(a.softmax(1), y, progress, **OFFICIAL_KERNEL)
    if not weight_grad:
        w = w.detach()
    ce_term = (wts * ce).sum() / wts.sum()
    naw_term = (wts * w * ce).sum() / wts.sum()
    jsd = official_jsd(a, b)
    if jsd_reduction == "mean":
        jsd = jsd / len(a)
    loss = OFFICIAL_LAM_A * ce_term + (1 - OFFICIAL_LAM_A) * naw_term + OFFICIAL_LAM_B * jsd
    return loss, w.detach().mean()


def balanced_class_weights(labels: torch.Tensor) -> torch.Tensor:
    """Inverse-frequency weights over the 8 classes of annotated frames, mean 1 over the
    classes present (absent classes get 0)."""
    counts = torch.bincount(labels[labels >= 0].long(), minlength=NUM_CLASSES).float()
    w = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    present = counts > 0
    return w / w[present].mean() if present.any() else w
