"""Checkpoint directories: one folder holds everything needed to sample, all weights as safetensors.

Layout (diffusers-compatible sub-folders, plus one JSON that ties them together):

    MODEL_DIR/
      <manifest> (models/manifest.py)     kind, package version, ModelConfig, text encoder, fingerprints
      vae/config.json                     VQModel config (diffusers)
      vae/diffusion_pytorch_model.safetensors
      unet/config.json                    UNet2DConditionModel config (diffusers)      [kind "ldm" only]
      unet/diffusion_pytorch_model.safetensors
      scheduler/scheduler_config.json     the training noise schedule (DDPM)          [kind "ldm" only]

An autoencoder-only directory (kind "autoencoder", written by `train-vae`) has no unet/ or scheduler/.
Modules are rebuilt from the manifest and then filled with weights, so a missing file or a shape that
differs from the config is reported by name instead of as a stack trace from deep inside diffusers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from renal_ldm import __version__
from renal_ldm.fsutil import replace_dir_atomically
from renal_ldm.models.build import build_noise_scheduler, build_unet, build_vae
from renal_ldm.models.configs import ModelConfig
from renal_ldm.models.manifest import MANIFEST, SAMPLING_KEY, read_manifest, recommended_guidance

WEIGHTS = "diffusion_pytorch_model.safetensors"
KIND_LDM = "ldm"
KIND_AUTOENCODER = "autoencoder"


@dataclass
class LatentDiffusionModel:
    """The modules and metadata of one checkpoint, ready for training or sampling."""

    config: ModelConfig
    vae: Any
    unet: Any = None
    noise_scheduler: Any = None
    text_encoder: str = "minilm"
    context_dim: int = 0
    data_fingerprint: str | None = None
    fingerprint: str | None = None
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    recommended_guidance: float | None = None  # the guidance scale sampling defaults to for this model

    def to(self, device: torch.device | str) -> LatentDiffusionModel:
        self.vae.to(device)
        if self.unet is not None:
            self.unet.to(device)
        return self


def save_model(
    model_dir: str | Path,
    model: LatentDiffusionModel,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (written beside, then renamed into place); returns it."""
    model_dir = Path(model_dir)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
    try:
        kind = KIND_LDM if model.unet is not None else KIND_AUTOENCODER
        digest = hashlib.sha256()
        _save_module(tmp / "vae", model.vae, digest)
        if model.unet is not None:
            _save_module(tmp / "unet", model.unet, digest)
            sched = model.noise_scheduler or build_noise_scheduler(model.config)
            sched.save_config(tmp / "scheduler")
        fingerprint = digest.hexdigest()[:16]
        manifest = {
            "kind": kind,
            "renal_ldm_version": __version__,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "config": model.config.to_dict(),
            "text_encoder": model.text_encoder,
            "context_dim": model.context_dim,
            "data_fingerprint": model.data_fingerprint,
            "fingerprint": fingerprint,
            "extra": {**model.extra, **(extra or {})},
        }
        if model.recommended_guidance is not None:
            manifest[SAMPLING_KEY] = {"guidance": float(model.recommended_guidance)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        replace_dir_atomically(tmp, model_dir)  # a crash never leaves a half-written model
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    model.fingerprint = fingerprint
    model.path = model_dir
    return model_dir


def _save_module(folder: Path, module, digest) -> None:
    folder.mkdir(parents=True)
    module.save_config(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    digest.update((folder / WEIGHTS).read_bytes())


def load_model(
    model_dir: str | Path, *, device: str | torch.device = "cpu", require_unet: bool = True
) -> LatentDiffusionModel:
    """Rebuild the modules from the manifest and load their weights; errors say what is missing or differs."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    config = ModelConfig.from_dict(manifest["config"])
    kind = manifest["kind"]
    if require_unet and kind != KIND_LDM:
        raise ValueError(
            f"{model_dir} holds a {kind!r} checkpoint (no denoising UNet); expected a latent diffusion model "
            "written by `renal-ldm train`"
        )
    needed = [f"vae/{WEIGHTS}"]
    if kind == KIND_LDM:
        needed += [f"unet/{WEIGHTS}", "scheduler/scheduler_config.json"]
    missing = [name for name in needed if not (model_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"checkpoint {model_dir} is incomplete: missing {', '.join(missing)}")

    vae = build_vae(config)
    _load_weights(vae, model_dir / "vae" / WEIGHTS, "vae")
    model = LatentDiffusionModel(
        config=config,
        vae=vae.eval(),
        text_encoder=manifest.get("text_encoder", config.text_encoder),
        context_dim=int(manifest.get("context_dim") or 0),
        data_fingerprint=manifest.get("data_fingerprint"),
        fingerprint=manifest.get("fingerprint"),
        path=model_dir,
        extra=manifest.get("extra", {}),
        recommended_guidance=recommended_guidance(manifest),
    )
    if kind == KIND_LDM:
        if model.context_dim <= 0:
            raise ValueError(f"{model_dir / MANIFEST}: context_dim must be a positive integer")
        unet = build_unet(config, model.context_dim)
        _load_weights(unet, model_dir / "unet" / WEIGHTS, "unet")
        model.unet = unet.eval()
        from diffusers import DDPMScheduler

        model.noise_scheduler = DDPMScheduler.from_pretrained(str(model_dir / "scheduler"))
    return model.to(device)


def _load_weights(module: torch.nn.Module, path: Path, what: str) -> None:
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise ValueError(f"{path}: cannot read weights ({exc})") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs config {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if mismatched:
        problems.append(f"{len(mismatched)} shapes differ: {'; '.join(mismatched[:3])}")
    if problems:
        raise ValueError(f"{what} weights in {path} do not match the model config: " + " | ".join(problems))
    module.load_state_dict(state, strict=True)
