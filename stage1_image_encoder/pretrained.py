"""Where an encoder's starting weights come from (``stage1.model.pretrained``):

- ``null``: random init (seeded);
- a path to a ``.safetensors`` / ``.pth`` state dict;
- ``bundled``: the real-face encoder shipped in this package (``bundled/``: a stage-1 run
  trained on FERPlus, with its model card); its model config replaces ``stage1.model`` and
  its file is checked against the recorded SHA-256 before use;
- ``timm``: timm's own pretrained weights for ``stage1.model.name`` through timm's mechanism
  (the Hugging Face hub cache). Offline, a missing cache entry is one line naming the file to
  place and the environment variables that find it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from fer_pipeline.config import Config, EncoderModelConfig, load_config
from fer_pipeline.errors import UsageError
from fer_pipeline.io import file_sha256

BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
BUNDLED_NAME = "ferplus_resnet10t"


def bundled_run() -> Path:
    """The bundled stage-1 run dir (checkpoint.safetensors, config.yaml, MODEL_CARD.md)."""
    run = BUNDLED_DIR / BUNDLED_NAME
    if not (run / "checkpoint.safetensors").is_file():
        raise UsageError(f"the bundled encoder is missing: {run / 'checkpoint.safetensors'}")
    return run


sha256 = file_sha256          # the bundled weights' checksum (bundled.json)


def verified_bundled_checkpoint() -> Path:
    """The bundled checkpoint, after checking its SHA-256 against ``bundled.json``."""
    run = bundled_run()
    ckpt = run / "checkpoint.safetensors"
    expected = json.loads((run / "bundled.json").read_text())["sha256"]
    got = sha256(ckpt)
    if got != expected:
        raise UsageError(f"{ckpt}: corrupted bundled weights (SHA-256 {got[:16]}..., expected "
                         f"{expected}); reinstall the package or restore the file")
    return ckpt


def bundled_model_config() -> EncoderModelConfig:
    return load_config([bundled_run() / "config.yaml"], base=None).stage1.model


def resolve(cfg: Config) -> Config:
    """``cfg`` with ``stage1.model`` made concrete: ``pretrained: bundled`` takes the bundled
    run's architecture and preprocessing (name, input size, mean/std) and keeps pointing at
    ``bundled``; anything else is returned unchanged."""
    m = cfg.stage1.model
    if m.pretrained != "bundled":
        return cfg
    bundled = bundled_model_config().model_copy(update={"pretrained": "bundled"})
    return cfg.model_copy(update={"stage1": cfg.stage1.model_copy(update={"model": bundled})})


def weights_file(m: EncoderModelConfig) -> Path | None:
    """The local file ``pretrained`` names (the verified bundled checkpoint for ``bundled``);
    None for ``null`` and ``timm``."""
    if not m.pretrained or m.pretrained == "timm":
        return None
    if m.pretrained == "bundled":
        return verified_bundled_checkpoint()
    return Path(m.pretrained)


def hf_cache_hint(name: str) -> str:
    """Where timm's weights for ``name`` are looked up in the Hugging Face cache."""
    import timm

    pcfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(pcfg, "hf_hub_id", None) if pcfg is not None else None
    if not hub_id:
        return f"timm has no Hugging Face weights for {name!r}"
    home = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    repo = "models--" + hub_id.replace("/", "--")
    return (f"place model.safetensors from https://huggingface.co/{hub_id} at "
            f"{home}/hub/{repo}/snapshots/<commit>/model.safetensors (with refs/main naming "
            f"<commit>; HF_HOME sets the cache folder) and set HF_HUB_OFFLINE=1, or give the file "
            f"as stage1.model.pretrained=PATH")


def create_timm_pretrained(name: str, **kwargs):
    """``timm.create_model(name, pretrained=True, **kwargs)``: timm fetches (or finds in the hub
    cache) the weights and drops the ImageNet classifier for our 8-way head."""
    import timm

    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (RuntimeError, ValueError, TypeError) as e:
        if "img_size" in str(e):
            raise
        raise UsageError(f"stage1.model.pretrained=timm: cannot get timm's weights for {name!r} "
                         f"({str(e).splitlines()[0][:120]}); {hf_cache_hint(name)}") from None
    except Exception as e:  # noqa: BLE001 - hub/network errors come in many classes
        raise UsageError(f"stage1.model.pretrained=timm: timm's weights for {name!r} are not in "
                         f"the Hugging Face cache and cannot be downloaded here "
                         f"({e.__class__.__name__}); {hf_cache_hint(name)}") from None
