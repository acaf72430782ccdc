"""The image encoder: a timm backbone (Swin by default) with a linear head over the 8 classes.

The embedding is timm's pooled pre-logits feature, ``forward_head(forward_features(x),
pre_logits=True)``: (B, 3, H, W) -> (B, D), D = ``model.num_features`` (1024 for swin_base).
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
from pathlib import Path

import timm
import torch
from torch import nn

from fer_pipeline.config import EncoderModelConfig
from fer_pipeline.errors import UsageError
from fer_pipeline.labels import NUM_CLASSES

log = logging.getLogger(__name__)


def _timm_kwargs(cfg: EncoderModelConfig) -> dict:
    kwargs = {**cfg.kwargs, "img_size": cfg.img_size}
    for name in ("embed_dim", "window_size"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    for name in ("depths", "num_heads"):
        if getattr(cfg, name) is not None:
            kwargs[name] = tuple(getattr(cfg, name))
    return kwargs


def build_encoder(cfg: EncoderModelConfig, checkpoint: str | Path | None = None) -> nn.Module:
    """timm model with an 8-way head; weights from ``checkpoint``, else from what
    ``cfg.pretrained`` names (a file, ``bundled``, ``timm``; see ``pretrained``)."""
    from stage1_image_encoder.pretrained import (bundled_model_config, create_timm_pretrained,
                                                 weights_file)

    if cfg.pretrained == "bundled" and checkpoint is None:
        cfg = bundled_model_config().model_copy(update={"pretrained": "bundled"})
    use_timm = cfg.pretrained == "timm" and checkpoint is None
    kwargs = _timm_kwargs(cfg)

    def create(**kw):
        if use_timm:
            return create_timm_pretrained(cfg.name, num_classes=NUM_CLASSES, **kw)
        return timm.create_model(cfg.name, pretrained=False, num_classes=NUM_CLASSES, **kw)

    try:
        try:
            model = create(**kwargs)
        except TypeError as e:
            # CNNs take any input size and have no img_size argument: build them without it
            if "img_size" not in str(e):
                raise
            kwargs.pop("img_size")
            model = create(**kwargs)
    except (RuntimeError, TypeError, ValueError) as e:
        raise UsageError(f"stage1.model: cannot build timm model {cfg.name!r} ({e})") from None
    source = checkpoint or weights_file(cfg)
    if source:
        load_weights(model, source)
    return model


def has_classifier(state_keys, model: nn.Module) -> bool:
    """Whether a checkpoint's keys include the weights of ``model``'s classifier head."""
    head = model.get_classifier()
    names = {n for n, p in model.named_parameters() if any(p is q for q in head.parameters())}
    return bool(names) and names <= set(state_keys)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict from .safetensors or a weights-only torch file (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"encoder weights not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            raise UsageError(f"{path}: not a readable safetensors file ({why}); it should be the "
                             f"encoder's state dict saved with safetensors") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a state dict"
            raise UsageError(f"{path}: not a weights-only state dict ({e.__class__.__name__})") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path}: not a state dict of tensors")
    # a backbone without (or with another) classifier: the 8-way head keeps its fresh init
    head = {n for n, p in model.named_parameters()
            if any(p is q for q in model.get_classifier().parameters())}
    state = {k: v for k, v in state.items() if not (k in head and v.shape != model.state_dict()[k].shape)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k not in head]:
        raise UsageError(f"{path}: weights do not fit {type(model).__name__} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def for_inference(model: nn.Module, device: torch.device,
                  dtype: torch.dtype | None = None) -> tuple[nn.Module, torch.dtype]:
    """``model`` as the embed path runs it on ``device``, and the dtype its inputs take. On a GPU
    (or with ``dtype=torch.bfloat16``): a bf16 copy in channels-last; the caller's model keeps its
    float32 weights, which its classifier head and the store key (:func:`encoder_key`) use. Under
    bf16 autocast instead, a Swin's LayerNorms, GELUs and residual adds run in float32 and move
    twice the bytes: swin_base on an H200 at batch 64 gave 3,315 frames/s in bf16 weights against
    2,545 under autocast (docs/scaling.md G1). On a CPU: the model itself, in float32 (moved and
    put in eval mode in place, as ``Module.to`` does)."""
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    model = model.to(device).eval()
    if dtype == torch.float32:
        return model, dtype
    if next(model.parameters()).dtype != dtype:
        model = copy.deepcopy(model)
    return model.to(dtype=dtype, memory_format=torch.channels_last), dtype


def embed(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B, D) pooled pre-logits embeddings."""
    return model.forward_head(model.forward_features(images), pre_logits=True)


def preprocessing(cfg: EncoderModelConfig) -> dict:
    """Everything besides the weights that changes the embedding of a crop."""
    return {"name": cfg.name, "img_size": cfg.img_size, "mean": list(cfg.mean), "std": list(cfg.std),
            **({"grayscale": True} if cfg.grayscale else {}),
            "timm_kwargs": {k: list(v) if isinstance(v, tuple) else v
                            for k, v in _timm_kwargs(cfg).items()},
            "color": "RGB", "resize": "bilinear"}


def encoder_key(model: nn.Module, cfg: EncoderModelConfig) -> str:
    """Hash of weights + preprocessing: the store key (16 hex chars)."""
    h = hashlib.sha256(json.dumps(preprocessing(cfg), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy())
    return h.hexdigest()[:16]
