"""The configuration schema: one strict pydantic class per section of ``pipeline.yaml``.

Every model forbids unknown keys and checks types strictly, so a misspelt or mistyped key is
an error (``fer_pipeline.config.loading`` turns it into one line naming the key). The defaults
here equal ``pipeline.yaml`` (a test keeps them in sync); the YAML file is where each knob is
documented. Sections: ``synth`` (demo data), ``stage0`` (detector, align, track, parallel,
ingest), ``stage1`` (model, data sources, augment, NLA, train, embed), ``stage2`` (data, token
augmentation, model, V-NAW, loss, train, post-processing) and the root ``Config``.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SynthConfig", "IngestConfig", "DetectorConfig", "AlignConfig", "TrackConfig",
           "ParallelConfig", "Stage0Config", "EncoderModelConfig", "EmbedConfig", "DataSource",
           "Stage1DataConfig", "AugmentConfig", "NAWKernelConfig", "NAWWeightConfig",
           "NLAConfig", "TrainConfig", "Stage1TrainConfig", "Stage1Config", "Stage2DataConfig",
           "TokenAugConfig", "TemporalModelConfig", "VNAWConfig", "Stage2LossConfig",
           "Stage2TrainConfig", "PostConfig", "Stage2Config", "Config", "VNAW_FORMS",
           "DEFAULT_SMOOTH_WINDOW"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


# ---------------------------------------------------------------------------------- synth
class SynthConfig(_Strict):
    n_videos: int = Field(12, ge=2)
    n_val: int = Field(4, ge=1)
    duration_s: list[float] = [10.0, 40.0]
    fps: list[int] = [25, 30]
    frame_sizes: list[list[int]] = [[320, 240], [360, 288], [288, 288]]
    crop_size: int = 112
    boundary_jitter_s: float = Field(0.25, ge=0)
    ambiguous_rate: float = Field(0.15, ge=0, le=1)
    no_face_fraction: float = Field(0.05, ge=0, le=0.5)
    occlusion_fraction: float = Field(0.05, ge=0, le=0.5)
    unannotated_fraction: float = Field(0.03, ge=0, le=0.5)
    stills_train_per_class: int = Field(80, ge=1)
    stills_test_per_class: int = Field(20, ge=1)
    still_size: int = 100
    jobs: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self):
        if self.n_val >= self.n_videos:
            raise ValueError("n_val must be smaller than n_videos")
        if len(self.duration_s) != 2 or not 0 < self.duration_s[0] <= self.duration_s[1]:
            raise ValueError("duration_s must be [min, max] seconds with 0 < min <= max")
        if any(len(s) != 2 for s in self.frame_sizes):
            raise ValueError("frame_sizes entries must be [width, height]")
        return self


# ---------------------------------------------------------------------------------- stage 0
class IngestConfig(_Strict):
    check_frame_count: bool = True
    default_fps: float = Field(30.0, gt=0)


class DetectorConfig(_Strict):
    name: Literal["retinaface", "scrfd", "yunet"] = "retinaface"
    onnx: str | None = None
    input_size: int = Field(640, ge=32)
    threshold: float = Field(0.5, ge=0, le=1)
    nms: float = Field(0.4, gt=0, le=1)
    batch_size: int = Field(8, ge=1)
    pad_retry: bool = True


class AlignConfig(_Strict):
    size: Literal[112, 224] = 112
    mode: Literal["five_point", "margin"] = "five_point"
    margin: float = Field(0.25, ge=0)


class TrackConfig(_Strict):
    iou: float = Field(0.3, ge=0, le=1)
    score_weight: float = Field(0.3, ge=0)
    min_area_ratio: float = Field(0.5, ge=0)
    patience_s: float = Field(0.5, ge=0)
    cut_threshold: float = Field(20.0, ge=0)
    acquire_min_score: float = Field(0.5, ge=0, le=1)
    acquire_aspect: list[float] = [0.8, 3.0]
    acquire_landmark_margin: float = Field(0.15, ge=0)
    acquire_eye_dist: list[float] = [-0.1, 0.7]

    @model_validator(mode="after")
    def _check(self):
        for name in ("acquire_aspect", "acquire_eye_dist"):
            lo_hi = getattr(self, name)
            if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
                raise ValueError(f"{name} must be [min, max] with min <= max")
        if self.acquire_aspect[0] <= 0:
            raise ValueError("acquire_aspect must be [min, max] with 0 < min")
        return self


class ParallelConfig(_Strict):
    backend: Literal["loky", "dask"] = "loky"
    jobs: int = Field(1, ge=1)
    scheduler_address: str | None = None


class Stage0Config(_Strict):
    detector: DetectorConfig = DetectorConfig()
    align: AlignConfig = AlignConfig()
    track: TrackConfig = TrackConfig()
    jpeg_quality: int = Field(95, ge=1, le=100)
    contact_sheet: bool = True
    parallel: ParallelConfig = ParallelConfig()
    ingest: IngestConfig = IngestConfig()


# ---------------------------------------------------------------------------------- stage 1
class EncoderModelConfig(_Strict):
    name: str = "swin_base_patch4_window7_224"
    pretrained: str | None = None
    img_size: int = Field(224, ge=16)
    embed_dim: int | None = None
    depths: list[int] | None = None
    num_heads: list[int] | None = None
    window_size: int | None = None
    mean: list[float] = [0.485, 0.456, 0.406]
    std: list[float] = [0.229, 0.224, 0.225]
    grayscale: bool = False
    kwargs: dict[str, Any] = {}


class EmbedConfig(_Strict):
    batch_size: int = Field(64, ge=1)
    # auto: 2 DataLoader worker processes on a GPU, 0 (a reading thread) on a CPU
    workers: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    dtype: Literal["float16"] = "float16"
    max_bad_crops: float = Field(0.05, ge=0, le=1)
    flip: bool = False


class DataSource(_Strict):
    format: Literal["rafdb", "folder", "ferplus", "affectnet"]
    root: str
    weight: float = Field(1.0, gt=0)
    class_map: dict[str, int] | None = None
    # FERPlus labels of the train split (the test split is always scored on majority labels):
    # majority = the FER+ paper's rule, plurality = the most voted class, soft = vote
    # distribution as target, vote_sample = one label drawn per image from its votes
    label_mode: Literal["majority", "plurality", "soft", "vote_sample"] = "majority"
    sample_seed: int = 0
    soft_labels: bool = False
    none_to_other: bool = True

    @model_validator(mode="after")
    def _soft_alias(self):
        if self.soft_labels and self.label_mode not in ("majority", "soft"):
            raise ValueError("soft_labels: true is label_mode: soft; set one of them")
        if self.soft_labels:
            object.__setattr__(self, "label_mode", "soft")
        return self


class Stage1DataConfig(_Strict):
    sources: list[DataSource] = []
    workers: int = Field(2, ge=0)


class AugmentConfig(_Strict):
    hflip: float = Field(0.5, ge=0, le=1)
    crop_scale: list[float] = [0.8, 1.0]
    color_jitter: float = Field(0.2, ge=0)
    erase: float = Field(0.25, ge=0, le=1)
    rotate: float = Field(0.0, ge=0, le=180)   # degrees: uniform in [-rotate, rotate]
    blur: float = Field(0.0, ge=0, le=1)       # probability of a 3x3 Gaussian blur


class NAWKernelConfig(_Strict):
    """Parameters of ``fer_pipeline.naw.naw_weight`` (shared by NLA and V-NAW). This schema (with
    ``pipeline.yaml``, which a test keeps equal to it) is the one home of the kernel defaults."""
    normalize: bool = True
    mu_t: list[float] = [0.5, 0.5]
    mu_f: list[float] = [0.30, 0.15]
    std_t: float = Field(0.8, gt=0)
    ratio_t: float = Field(2.0, gt=0)
    std_f: float = Field(0.91, gt=0)
    ratio_f: float = Field(6.0, gt=0)
    slope: float = Field(15.0, ge=0)

    def kernel_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in NAWKernelConfig.model_fields}


class NAWWeightConfig(NAWKernelConfig):
    """The kernel plus what both stages do with the weight. ``weight_grad`` has one meaning in
    both: true = gradients flow through w (as both official codes compute it), false = w is a
    per-sample constant. null = what the configured ``form`` says."""
    weight_grad: bool | None = None


class NLAConfig(NAWWeightConfig):
    enabled: bool = True
    form: Literal["release", "paper", "weighted_ce"] = "release"
    lam_ce: float = Field(0.5, ge=0)
    lam_naw: float = Field(0.5, ge=0)
    lam_jsd: float = Field(0.5, ge=0)
    lam_paper: float = Field(0.5, ge=0, le=1)
    jsd_reduction: Literal["sum", "mean"] = "sum"
    ce_epochs: int = Field(0, ge=0)

    def jsd_weight(self) -> float:
        """The weight of the form's flip-consistency JSD (0 = none: weighted_ce, or disabled)."""
        if not self.enabled:
            return 0.0
        return {"release": self.lam_jsd, "paper": 1.0 - self.lam_paper}.get(self.form, 0.0)

    def needs_flip(self) -> bool:
        """Whether the loss has a consistency term, i.e. needs the logits of flipped images."""
        return self.jsd_weight() > 0

    def grad_through_weight(self) -> bool:
        """All NLA forms compute w from the live softmax (the official code has no detach)."""
        return True if self.weight_grad is None else self.weight_grad


class TrainConfig(_Strict):
    """Optimisation knobs shared by the stage-1 and stage-2 engines (defaults per stage)."""
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0)
    wd: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = None
    amp: bool = True
    accum: int = Field(1, ge=1)


class Stage1TrainConfig(TrainConfig):
    pass


class Stage1Config(_Strict):
    model: EncoderModelConfig = EncoderModelConfig()
    data: Stage1DataConfig = Stage1DataConfig()
    augment: AugmentConfig = AugmentConfig()
    nla: NLAConfig = NLAConfig()
    train: Stage1TrainConfig = Stage1TrainConfig()
    embed: EmbedConfig = EmbedConfig()


# ---------------------------------------------------------------------------------- stage 2
class Stage2DataConfig(_Strict):
    clip_len: int = Field(100, ge=2)
    bad_frames: Literal["fail", "mask"] = "fail"
    stride_eval: int | None = None
    speed_jitter: float = Field(0.0, ge=0, lt=1)
    class_balanced: bool = False
    split: Literal["official", "kfold", "random"] = "official"
    folds: int = Field(3, ge=1)
    fold: int = Field(0, ge=0)
    val_ratio: float = Field(0.3, gt=0, lt=1)
    select_ratio: float = Field(0.15, ge=0, lt=1)
    preload: Literal["cpu", "device", "mmap"] = "cpu"
    shm_dir: str = "/dev/shm"
    cache_dir: str | None = None


class TokenAugConfig(_Strict):
    enabled: bool = True
    drop_min: float = Field(0.2, ge=0, lt=1)
    drop_max: float = Field(0.4, ge=0, lt=1)
    drop_mode: Literal["remove", "key_mask"] = "remove"
    drop_loss: Literal["keep", "exclude"] = "keep"
    mask_ratio: float = Field(0.2, ge=0, lt=1)
    mask_token: Literal["zeros", "learned"] = "zeros"

    @model_validator(mode="after")
    def _check(self):
        if self.drop_min > self.drop_max:
            raise ValueError("drop_min must be <= drop_max")
        return self


class TemporalModelConfig(_Strict):
    d_model: int = Field(512, ge=1)
    layers: int = Field(4, ge=1)
    heads: int = Field(1, ge=1)
    ff: int = Field(512, ge=1)
    dropout: float = Field(0.6, ge=0, lt=1)
    pos: Literal["none", "learned", "sine"] = "none"
    head: Literal["flat", "cfcsp", "cfcsp_shared"] = "flat"
    cascade: Literal["soft", "hard"] = "soft"

    @model_validator(mode="after")
    def _check(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        return self


# What each V-NAW form means (SPEC §5): the loss target and whether w carries gradient.
VNAW_FORMS: dict[str, dict[str, Any]] = {
    "paper": {"target": "clip", "weight_grad": True},            # eqs. 9-12 as written
    "frame_detached": {"target": "frame", "weight_grad": False},  # frame CE, w a constant
    "official": {"target": "frame", "weight_grad": True},         # the official training loss
}


class VNAWConfig(NAWWeightConfig):
    enabled: bool = True
    form: Literal["paper", "frame_detached", "official"] = "paper"
    # official form only: the flip-consistency JSD summed over the batch's frames (the official
    # code) or averaged over them (a project variant)
    jsd_reduction: Literal["sum", "mean"] = "sum"


class Stage2LossConfig(_Strict):
    target: Literal["frame", "clip"] | None = None
    class_weights: Literal["none", "balanced"] = "none"


class Stage2TrainConfig(TrainConfig):
    epochs: int = Field(30, ge=1)
    wd: float = Field(0.01, ge=0)
    grad_clip: float | None = 1.0
    early_stop: int = Field(0, ge=0)
    keep: Literal["best", "last"] = "best"


DEFAULT_SMOOTH_WINDOW = 15   # frames (half a second at 30 fps) when smoothing is asked for
                             # and stage2.post.smooth_window sets none


class PostConfig(_Strict):
    smooth_window: int = Field(0, ge=0)
    moment_weight: float = Field(0.0, ge=0, le=1)
    interpolate: bool = True

    def smoothing_window(self) -> int:
        """Window of Smooth Predicting: ``smooth_window`` when it smooths, else the default."""
        return self.smooth_window if self.smooth_window > 1 else DEFAULT_SMOOTH_WINDOW


class Stage2Config(_Strict):
    data: Stage2DataConfig = Stage2DataConfig()
    aug: TokenAugConfig = TokenAugConfig()
    model: TemporalModelConfig = TemporalModelConfig()
    naw: VNAWConfig = VNAWConfig()
    loss: Stage2LossConfig = Stage2LossConfig()
    train: Stage2TrainConfig = Stage2TrainConfig()
    post: PostConfig = PostConfig()

    @model_validator(mode="after")
    def _check(self):
        if self.data.fold >= self.data.folds:
            raise ValueError(f"data.fold ({self.data.fold}) must be < data.folds ({self.data.folds})")
        if self.naw.enabled and self.naw.form == "official":
            if self.model.head != "flat":
                raise ValueError("naw.form official is the official code's loss on the flat 8-way "
                                 f"head; model.head is {self.model.head}")
            if self.loss.target == "clip":
                raise ValueError("naw.form official weights frames: loss.target must be frame or null")
        return self

    def loss_target(self) -> str:
        """``loss.target``, or what ``naw.form`` says when it is null."""
        return self.loss.target or VNAW_FORMS[self.naw.form]["target"]

    def needs_flip(self) -> bool:
        """Whether training reads the flipped-crop embeddings (``naw.form: official``)."""
        return self.naw.enabled and self.naw.form == "official"

    def grad_through_weight(self) -> bool:
        """``naw.weight_grad``, or what ``naw.form`` says when it is null."""
        if self.naw.weight_grad is not None:
            return self.naw.weight_grad
        return VNAW_FORMS[self.naw.form]["weight_grad"]


# ---------------------------------------------------------------------------------- root
class Config(_Strict):
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    artifacts_dir: str = "artifacts"
    threads: int = Field(0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    synth: SynthConfig = SynthConfig()
    stage0: Stage0Config = Stage0Config()
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)
