"""CFC-SP decision rules: soft / hard cascade on hand-made probabilities, the hard rule against
the cascade on raw logits, evaluation under each rule, and the ``stage2 heads`` comparison."""
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from fer_pipeline import labels as L
from fer_pipeline.config import PostConfig
from fer_pipeline.metrics import confusion
from stage2_temporal.data import TemporalCache
from stage2_temporal.evaluate import evaluate
from stage2_temporal.heads import decide, probs8
from stage2_temporal import HEADS_ROWS
from tests.conftest import make_store
from tests.test_stage2_train import SMALL, cli


def cascade_on_logits(logits: torch.Tensor) -> torch.Tensor:
    """CFC-SP's cascade as two networks apply it: coarse-head argmax over [Neutral, Happiness,
    Surprise, Other, Negative]; when Negative, the negative-head argmax over [Anger, Disgust,
    Fear, Sadness]. (..., 9) logits -> (...) class ids."""
    coarse_ids = torch.tensor([L.NEUTRAL, L.HAPPINESS, L.SURPRISE, L.OTHER, -1])
    neg_ids = torch.tensor([L.ANGER, L.DISGUST, L.FEAR, L.SADNESS])
    coarse = logits[..., :5].argmax(-1)
    return torch.where(coarse == L.COARSE_NEGATIVE, neg_ids[logits[..., 5:].argmax(-1)],
                       coarse_ids[coarse])


def _p(**by_class) -> np.ndarray:
    p = np.zeros(L.NUM_CLASSES)
    for name, v in by_class.items():
        p[L.class_id(name)] = v
    return p


# ------------------------------------------------------------------ decide()
def test_soft_and_hard_on_hand_made_probabilities():
    # Neutral is the single most likely class, but the four negatives together outweigh it
    split_negative = _p(neutral=0.30, anger=0.26, disgust=0.20, fear=0.14, sadness=0.10)
    assert decide(split_negative, "soft") == L.NEUTRAL
    assert decide(split_negative, "hard") == L.ANGER
    # one negative class beats every coarse class: both rules pick it
    clear = _p(happiness=0.35, sadness=0.40, fear=0.05, other=0.20)
    assert decide(clear, "soft") == decide(clear, "hard") == L.SADNESS
    # negatives sum below the coarse winner: both rules pick the coarse class
    coarse = _p(surprise=0.50, anger=0.20, disgust=0.20, other=0.10)
    assert decide(coarse, "soft") == decide(coarse, "hard") == L.SURPRISE
    # any leading shape: (2, 3, 8) -> (2, 3)
    batch = np.stack([np.stack([split_negative, clear, coarse])] * 2)
    np.testing.assert_array_equal(decide(batch, "soft"), [[L.NEUTRAL, L.SADNESS, L.SURPRISE]] * 2)
    np.testing.assert_array_equal(decide(batch, "hard"), [[L.ANGER, L.SADNESS, L.SURPRISE]] * 2)
    with pytest.raises(ValueError, match="unknown decision rule 'argmax'"):
        decide(batch, "argmax")


def test_hard_rule_equals_the_cascade_on_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 9, generator=g) * torch.tensor([0.5, 1.0, 3.0])[
        torch.arange(4000) % 3, None]
    logits[::4, 4] += 2.0                                      # plenty of Negative coarse winners
    expected = cascade_on_logits(logits).numpy()
    p8 = probs8(logits, "cfcsp").numpy()
    np.testing.assert_array_equal(decide(p8, "hard"), expected)
    assert (expected == L.SADNESS).any() and (expected == L.OTHER).any()
    # the soft rule is a different decision on the same frames
    assert (decide(p8, "soft") != expected).sum() > 40


# ------------------------------------------------------------------ evaluate()
class LogitsAsEmbeddings(nn.Module):
    """A frame-wise 'model' whose output logits are its input tokens (9 = the cfcsp head)."""

    def forward(self, x, valid=None):
        return x

    def probs(self, logits):
        return probs8(logits, "cfcsp")


def _cache(n_videos=3, T=90, seed=0) -> TemporalCache:
    """Frames labelled Anger whose coarse head leans Negative while the negative head is unsure,
    so the soft probabilities often favour Neutral; every 7th frame is unannotated."""
    rng = np.random.default_rng(seed)
    N = n_videos * T
    logits = rng.normal(0, 0.3, (N, 9))
    logits[:, 4] += 1.0                                        # Negative
    logits[:, 0] += 0.8                                        # Neutral close behind
    logits[:, 5] += rng.normal(0.3, 0.2, N)                    # Anger, weakly ahead among negatives
    label = np.where(rng.random(N) < 0.7, L.ANGER, L.NEUTRAL)
    label[::7] = L.IGNORE
    return TemporalCache(torch.tensor(logits, dtype=torch.float16), torch.tensor(label),
                         torch.ones(N, dtype=torch.bool), np.arange(n_videos + 1) * T,
                         [f"v{i}" for i in range(n_videos)])


def test_evaluation_under_hard_rule_differs_and_counts_match_decide():
    cache = _cache()
    post = PostConfig(smooth_window=9, interpolate=True)
    soft = evaluate(LogitsAsEmbeddings(), cache, clip_len=32, stride=16, post=post, rule="soft")
    hard = evaluate(LogitsAsEmbeddings(), cache, clip_len=32, stride=16, post=post, rule="hard")
    np.testing.assert_array_equal(soft.probs, hard.probs)      # same probabilities, other rule
    labels = cache.label.numpy()
    for res in (soft, hard):
        np.testing.assert_array_equal(res.report.confusion,
                                      confusion(labels, decide(res.probs, res.rule)))
        np.testing.assert_array_equal(res.post_report.confusion,
                                      confusion(labels, decide(res.post_probs, res.rule)))
        assert res.report.support.sum() == (labels >= 0).sum()
    assert hard.report.f1[L.ANGER] > soft.report.f1[L.ANGER] + 0.1
    assert not np.array_equal(soft.report.confusion, hard.report.confusion)
    assert not np.array_equal(soft.post_report.confusion, hard.post_report.confusion)
    # rescoring one evaluation under the other rule gives the other evaluation's counts
    raw, smoothed = soft.reports("hard")
    np.testing.assert_array_equal(raw.confusion, hard.report.confusion)
    np.testing.assert_array_equal(smoothed.confusion, hard.post_report.confusion)


# ------------------------------------------------------------------ stage2 heads
def _mean(cell: str) -> float:
    mean, std = cell.split(" ± ")
    assert float(std) >= 0
    return float(mean)


def test_heads_cli_reports_every_head_raw_and_smoothed(tmp_path):
    store = make_store(tmp_path / "store")
    out = tmp_path / "heads"
    r = cli("stage2", "heads", "--store", store, "--seeds", "1", "--out", out, *SMALL,
            "stage2.train.epochs=2", "stage2.post.smooth_window=5", "stage2.model.cascade=hard")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[-1].startswith("stage2 heads:")
    table = pd.read_csv(out / "heads.csv")
    assert list(table["row"]) == list(HEADS_ROWS)
    assert list(table.columns) == ["row", *L.CLASSES, "Avg"]
    values = np.array([[_mean(c) for c in table[col]] for col in [*L.CLASSES, "Avg"]])
    assert ((values >= 0) & (values <= 100)).all() and values[-1].max() > 0
    runs = pd.read_csv(out / "heads_runs.csv")
    assert len(runs) == 10 and list(runs["row"]) == list(HEADS_ROWS)
    assert set(runs.loc[runs.row.str.endswith("+ SP"), "smooth_window"]) == {5}
    assert table.loc[0, "Avg"] == f"{runs.loc[0, 'Avg']:.2f} ± 0.00"
    md = (out / "heads.md").read_text()
    assert all(f"| {row} " in md for row in HEADS_ROWS) and "5 frames" in md
    for head in ("flat", "cfcsp", "cfcsp_shared"):
        cfg = yaml.safe_load((out / head / "seed0" / "config.yaml").read_text())["stage2"]
        assert cfg["model"]["head"] == head and cfg["train"]["keep"] == "last"
        assert cfg["data"]["split"] == "official" and cfg["model"]["d_model"] == 32
    # the cfcsp run's own evaluation predicts with its configured (hard) rule
    preds = pd.read_parquet(out / "cfcsp" / "seed0" / "eval" / "predictions.parquet")
    p = preds[[f"p_{c}" for c in L.CLASSES]].to_numpy()
    np.testing.assert_array_equal(preds["pred"].to_numpy(), decide(p, "hard"))


def test_two_network_cfcsp_trains_and_predicts(tmp_path):
    """head=cfcsp is two temporal networks (coarse 5-way, negative 4-way) sharing no weights;
    the negative one learns only from negative frames; the run predicts through the cascade."""
    import torch

    from fer_pipeline.config import load_config
    from stage2_temporal.engine import build_model
    from stage2_temporal.model import CascadeTransformer
    from stage2_temporal.heads import frame_ce

    cfg = load_config(overrides=[*SMALL, "stage2.model.head=cfcsp"])
    model = build_model(16, cfg)
    assert isinstance(model, CascadeTransformer)
    coarse = {id(p) for p in model.coarse.parameters()}
    assert coarse.isdisjoint(id(p) for p in model.negative.parameters())
    x = torch.randn(2, 12, 16)
    valid = torch.ones(2, 12, dtype=torch.bool)
    logits = model.eval()(x, valid)
    assert logits.shape == (2, 12, 9)
    label = torch.full((2, 12), L.NEUTRAL)                          # no negative frame at all
    frame_ce(model.train()(x, valid), label, "cfcsp").sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.negative.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.coarse.parameters())
    # through the CLI: train, evaluate, predict-style probabilities from the run
    store = make_store(tmp_path / "store")
    r = cli("stage2", "train", "--store", store, "--out", tmp_path / "run", *SMALL,
            "stage2.train.epochs=2", "stage2.model.head=cfcsp")
    assert r.returncode == 0, r.stderr[-3000:]
    from stage2_temporal import load_model, predict_video
    from fer_pipeline.store import EmbeddingStore

    run_model, run_cfg, info, _ = load_model(tmp_path / "run")
    assert isinstance(run_model, CascadeTransformer)
    loaded = EmbeddingStore.open(store).load(info["val_videos"][:1])
    probs = predict_video(run_model, loaded, run_cfg)
    assert probs.shape == (len(loaded.label), 8) and np.allclose(probs.sum(1), 1, atol=1e-5)
    preds = pd.read_parquet(tmp_path / "run" / "eval" / "predictions.parquet")
    assert len(preds) and preds["pred"].between(0, 7).all()
