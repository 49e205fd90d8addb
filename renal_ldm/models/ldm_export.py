"""Export of a renal-ldm model to latent-diffusion's layout: a .ckpt ({"state_dict": ...}) and the YAML the original
code (CompVis/latent-diffusion, PathLDM) builds its modules from.

    report = export_ldm("models/my-model", "model.ckpt", "model.yaml")

Guarantees (tests/renal_ldm/test_ldm_format.py):
- The names are the import maps read backwards (ldm_format.unet_pairs / vae_pairs, built on diffusers' converters),
  so export followed by import gives back the same tensors and the same samples for a seed.
- The state_dict carries the UNet (model.diffusion_model.*), the VQ first stage (first_stage_model.*), the noise
  schedule buffers LatentDiffusion registers, and, for a PLIP text encoder, its CLIP text weights
  (cond_stage_model.transformer.*). Every value is a tensor, number or string: the file loads with
  torch.load(weights_only=True).
- A model the original code cannot express (a pooled caption embedding, GroupNorm other than 32 groups) is refused
  with the option named; a MiniLM text encoder, which the original code lacks, is written as a cond_stage_config
  naming renal-ldm's spec, which import reads back.
- Both files are written beside their target and renamed into place; existing files are replaced only with force.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from renal_ldm import __version__
from renal_ldm.models.build import uses_caption_embedding
from renal_ldm.models.checkpoint import LatentDiffusionModel, load_model
from renal_ldm.models.ldm_format import (
    CLIP_TARGET,
    PLIP_MAX_LENGTH,
    RENAL_TEXT_TARGET,
    TEXT_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    LDMFormatError,
    check_ldm_expressible,
    ldm_yaml,
    load_source,
    schedule_buffers,
    unet_pairs,
    vae_pairs,
    write_yaml,
)

CLIP_TEXT_MODULES = ("embeddings.", "encoder.", "final_layer_norm.")
"""Top-level names of a CLIP text model's tensors when transformers saves a CLIPTextModel without `text_model.`."""


@dataclass
class ExportReport:
    ckpt: Path
    config: Path
    tensors: dict[str, int] = field(default_factory=dict)  # state_dict prefix -> tensors
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"wrote {self.ckpt} and {self.config}"]
        out += [f"  {prefix}: {count} tensors" for prefix, count in self.tensors.items()]
        out += [f"  note: {note}" for note in self.notes]
        return out


def export_ldm(
    model: str | Path | LatentDiffusionModel, ckpt: str | Path, config: str | Path, *, force: bool = False
) -> ExportReport:
    """Write `model` (a checkpoint directory or a loaded model) as a latent-diffusion .ckpt and YAML."""
    ckpt, config = Path(ckpt), Path(config)
    for path in (ckpt, config):
        if path.exists() and not force:
            raise FileExistsError(f"{path} already exists; choose another path or pass --force to replace it")
    if not isinstance(model, LatentDiffusionModel):
        model = load_model(model, require_unet=True)
    if model.unet is None:
        raise LDMFormatError("export-ldm needs a latent diffusion model (UNet and autoencoder); this one has no UNet")
    check_ldm_expressible(model.config)
    if uses_caption_embedding(model.unet):  # a module built apart from its config
        raise LDMFormatError("the UNet takes a pooled caption embedding, which latent-diffusion's UNetModel lacks")
    text_stage, text_state, notes = _text_stage(model.text_encoder)

    state: dict[str, torch.Tensor] = {}
    tensors: dict[str, int] = {}
    for prefix, module, pairs in (
        (UNET_PREFIX, model.unet, unet_pairs(model.config, model.unet)),
        (VAE_PREFIX, model.vae, vae_pairs(model.config, model.vae)),
    ):
        weights = module.state_dict()
        for pair in pairs:
            state[prefix + pair.ldm] = pair.to_ldm(weights[pair.diffusers].detach().cpu()).contiguous()
        tensors[prefix.rstrip(".")] = len(pairs)
    buffers = schedule_buffers(model.config.noise)
    state.update(buffers)
    tensors["noise-schedule buffers"] = len(buffers)
    if text_state:
        state.update(text_state)
        tensors[TEXT_PREFIX.rstrip(".")] = len(text_state)
    payload = {
        "state_dict": state,
        "global_step": int(model.extra.get("step") or 0),
        "epoch": 0,
        "renal_ldm": {
            "version": __version__,
            "fingerprint": model.fingerprint,
            "text_encoder": model.text_encoder,
            "model": str(model.path) if model.path is not None else None,
        },
    }
    header = (
        f"latent-diffusion config written by renal-ldm {__version__} export-ldm\n"
        f"model: {model.path} (fingerprint {model.fingerprint}); weights: {ckpt.name}"
    )
    yaml_data = ldm_yaml(model.config, model.context_dim, text_stage)
    _write_atomically(ckpt, lambda tmp: torch.save(payload, tmp))
    _write_atomically(config, lambda tmp: write_yaml(yaml_data, tmp, header))
    return ExportReport(ckpt=ckpt, config=config, tensors=tensors, notes=notes)


def _text_stage(spec: str) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """The cond_stage_config for a text encoder spec, and the CLIP text weights the .ckpt carries for PLIP."""
    if spec.startswith("plip:"):
        folder = Path(spec.split(":", 1)[1]).expanduser()
        stage = {"target": CLIP_TARGET, "params": {"version": str(folder), "max_length": PLIP_MAX_LENGTH}}
        return stage, _clip_text_weights(folder), []
    note = (
        f"the text encoder {spec!r} has no latent-diffusion equivalent: cond_stage_config names renal-ldm's spec "
        f"({RENAL_TEXT_TARGET}); the original code needs an encoder giving the same states to sample this model"
    )
    return {"target": RENAL_TEXT_TARGET, "params": {"spec": spec}}, {}, [note]


def _clip_text_weights(folder: Path) -> dict[str, torch.Tensor]:
    """A PLIP (CLIP) directory's text-model tensors under LDM's FrozenCLIPEmbedder names."""
    safetensors, binary = folder / "model.safetensors", folder / "pytorch_model.bin"
    if safetensors.is_file():
        from safetensors.torch import load_file

        weights = load_file(str(safetensors))
    elif binary.is_file():
        source = load_source(binary)  # weights_only, mmap where the format allows
        weights = {key: source.take(key) for key in source.keys()}
    else:
        raise FileNotFoundError(f"PLIP directory {folder} lacks model.safetensors (or pytorch_model.bin)")
    out = {}
    for key, tensor in weights.items():
        if key.startswith("text_model."):
            out[TEXT_PREFIX + key] = tensor
        elif key.startswith(CLIP_TEXT_MODULES):
            out[TEXT_PREFIX + "text_model." + key] = tensor
    if not out:
        raise LDMFormatError(f"{folder}: no CLIP text model tensors (text_model.*) in its weights")
    return out


def _write_atomically(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
