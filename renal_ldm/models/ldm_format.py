"""The latent-diffusion checkpoint format (CompVis/latent-diffusion, PathLDM) as data: safe loading, the YAML <->
ModelConfig translation, the state_dict name maps, and LDM's noise-schedule buffers. Import and export
(ldm_import.py, ldm_export.py) are built from these pieces.

Guarantees (tests/renal_ldm/test_ldm_format.py):
- A checkpoint is read with torch.load(weights_only=True, mmap=True): tensors stay in the file until a conversion
  takes them, and a pickle that would import or run code is refused with the globals it names. The one exception is
  a fixed list of names that Lightning checkpoints carry beside the weights (callback classes used as dict keys,
  numpy scalars, OmegaConf hyper-parameters): those are matched by name to inert stand-ins, never imported.
- The name maps are diffusers' own LDM converters (diffusers.loaders.single_file_utils) run over stand-ins for the
  LDM names of the architecture, so import and export use one correspondence, read in either direction. A map that
  does not pair every LDM name with exactly one diffusers name is an error, never a partial conversion. What
  diffusers' converters lack (the VQ codebook, quantize.embedding.weight) is added here by name.
- Every YAML option is translated, checked to hold the one value renal-ldm's modules can express, or listed as
  training-only. An architecture option with no equivalent is refused with its name and value.
- LDM fixes GroupNorm at 32 groups in both UNet and autoencoder; a renal-ldm model with another group count has
  no LDM form, and export says so.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from renal_ldm.models.configs import AutoencoderConfig, ModelConfig, NoiseScheduleConfig, UNetConfig

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."
SCALE_FACTOR_KEY = "scale_factor"
EMA_COUNTERS = ("model_ema.decay", "model_ema.num_updates")
SCHEDULE_BUFFERS = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
"""LatentDiffusion.register_schedule's persistent buffers (lvlb_weights is not persistent)."""
TRAINING_ONLY_KEYS = ("logvar",)
LDM_GROUPS = 32
"""GroupNorm groups everywhere in LDM (normalization() in the UNet, Normalize() in the autoencoder)."""
PLIP_MAX_LENGTH = 154  # the reference's FrozenCLIPEmbedder max_length: two 77-token chunks
LDM_TARGET = "ldm.models.diffusion.ddpm.LatentDiffusion"
UNET_TARGET = "ldm.modules.diffusionmodules.openaimodel.UNetModel"
VQ_TARGET = "ldm.models.autoencoder.VQModelInterface"
CLIP_TARGET = "ldm.modules.encoders.modules.FrozenCLIPEmbedder"
RENAL_TEXT_TARGET = "renal_ldm.text.get_text_encoder"
"""cond_stage_config target that export writes for a text encoder the original code does not have (MiniLM): it
carries the renal-ldm spec back through a round trip; the original code needs an encoder of its own for it."""

SAFETENSORS_SUFFIX = ".safetensors"
INERT_GLOBAL_PREFIXES = (
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "omegaconf.",
    "numpy.",
    "typing.",
    "pathlib.",
)
"""Globals that Lightning checkpoints carry outside the weights; they are read as inert stand-ins, never imported."""

BETA_SCHEDULES = {"linear": "scaled_linear", "sqrt_linear": "linear", "cosine": "squaredcos_cap_v2"}
"""LDM beta_schedule -> diffusers beta_schedule. LDM's "linear" is linspace(sqrt(start), sqrt(end)) ** 2, which
diffusers calls "scaled_linear"; LDM's "sqrt_linear" is diffusers' "linear"; "cosine" with cosine_s = 0.008 is
diffusers' "squaredcos_cap_v2" (both clip betas at 0.999)."""
COSINE_S = 0.008
PARAMETERIZATIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


class LDMFormatError(ValueError):
    """A checkpoint or YAML that cannot be converted; the message names the key or option and what was expected."""


# Safe loading --------------------------------------------------------------------------------------------------


class InertObject:
    """Stands in for an object of an allowed foreign class (INERT_GLOBAL_PREFIXES) while unpickling: it records
    what it was given and runs nothing."""

    global_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.global_name} (not loaded)>"


def _inert_class(name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (InertObject,), {"global_name": name})


@dataclass
class SourceTensors:
    """The tensors of a source checkpoint by name: shapes and dtypes without reading data, and take(), which hands a
    tensor over once and forgets it, so a conversion holds each tensor once (mmap'd from a .ckpt, or read on demand
    from a .safetensors file)."""

    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, torch.dtype]
    _take: Callable[[str], torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)  # global_step, epoch, ... of a Lightning checkpoint

    def keys(self) -> list[str]:
        return list(self.shapes)

    def __contains__(self, key: str) -> bool:
        return key in self.shapes

    def __len__(self) -> int:
        return len(self.shapes)

    def take(self, key: str) -> torch.Tensor:
        self.shapes.pop(key)
        self.dtypes.pop(key)
        return self._take(key)


def load_source(path: str | Path) -> SourceTensors:
    """The state_dict of an LDM checkpoint (.ckpt/.pt/.pth/.bin via torch, or .safetensors), read safely."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return _load_safetensors(path)
    obj = _torch_load(path)
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        meta = {k: v for k, v in obj.items() if k != "state_dict" and isinstance(v, (int, float, str, bool))}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        found = sorted(map(str, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise LDMFormatError(
            f"{path} holds no state_dict (a dict of tensors, or a dict with one under 'state_dict'); found {found}"
        )
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise LDMFormatError(f"{path}: state_dict entries that are not named tensors: {', '.join(bad[:5])}")
    return SourceTensors(
        path=path,
        shapes={k: tuple(v.shape) for k, v in state.items()},
        dtypes={k: v.dtype for k, v in state.items()},
        _take=state.pop,
        meta=meta,
    )


def _torch_load(path: Path) -> Any:
    try:
        return _torch_load_weights_only(path)
    except pickle.UnpicklingError as exc:
        failure = _reason(exc)
    except (RuntimeError, EOFError, ValueError) as exc:  # not a torch file, or a truncated one
        raise LDMFormatError(f"{path} cannot be read as a PyTorch checkpoint ({_reason(exc)})") from None
    unsafe = _unsafe_globals(path)
    if not unsafe:
        raise LDMFormatError(f"{path} cannot be read as a PyTorch checkpoint ({failure})")
    refused = sorted(g for g in unsafe if not g.startswith(INERT_GLOBAL_PREFIXES))
    if refused:
        raise LDMFormatError(
            f"{path} is not a plain weights checkpoint: unpickling it would import and run {', '.join(refused)}; "
            "refused (only tensors, numbers, strings and containers are read, as torch.load(weights_only=True) allows)"
        )
    with torch.serialization.safe_globals([(_inert_class(g), g) for g in unsafe]):
        return _torch_load_weights_only(path)


def _reason(exc: BaseException) -> str:
    """The informative line of a torch.load error (its weights-only errors open with a page of advice)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error" in line:
            return line.split("WeightsUnpickler error:", 1)[-1].strip()
    return lines[0] if lines else type(exc).__name__


def _torch_load_weights_only(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) format: no mmap


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # a legacy-format file: the scan needs the zip layout
        return []


def _load_safetensors(path: Path) -> SourceTensors:
    from safetensors import safe_open

    try:
        handle = safe_open(str(path), framework="pt")
        keys = list(handle.keys())
        shapes = {k: tuple(handle.get_slice(k).get_shape()) for k in keys}
        dtypes = {k: _SAFETENSORS_DTYPES.get(handle.get_slice(k).get_dtype(), torch.float32) for k in keys}
    except Exception as exc:  # safetensors raises its own error types for foreign or truncated files
        raise LDMFormatError(f"{path}: cannot read safetensors ({exc})") from None
    return SourceTensors(path=path, shapes=shapes, dtypes=dtypes, _take=handle.get_tensor, meta=handle.metadata() or {})


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file as a dict (PyYAML safe_load: no tags that build objects)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise LDMFormatError(f"{path} is not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise LDMFormatError(f"{path}: expected a YAML mapping with a 'model' section; got {type(data).__name__}")
    return data


def write_yaml(data: dict[str, Any], path: Path, header: str) -> None:
    import yaml

    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    path.write_text("".join(f"# {line}\n" for line in header.splitlines()) + text)


# YAML options ---------------------------------------------------------------------------------------------------

_MISSING = object()


class _Options:
    """One params mapping of the YAML, read option by option: what was not read is known afterwards, so an unknown
    architecture option can be refused by name."""

    def __init__(self, values: Any, where: str) -> None:
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise LDMFormatError(f"{where} must be a mapping; got {values!r}")
        self.values, self.where, self.read = dict(values), where, set()

    def get(self, name: str, default: Any = _MISSING) -> Any:
        self.read.add(name)
        if name in self.values:
            return self.values[name]
        if default is _MISSING:
            raise LDMFormatError(f"{self.where}.{name} is missing")
        return default

    def number(self, name: str, default: Any = _MISSING, kind: type = float) -> Any:
        value = self.get(name, default)
        try:
            number = kind(value)  # PyYAML reads 1e-4 (no dot) as a string
            if kind is int and number != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise LDMFormatError(f"{self.where}.{name} must be a {kind.__name__}; got {value!r}") from None
        return number

    def ints(self, name: str) -> tuple[int, ...]:
        value = self.get(name)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
            raise LDMFormatError(f"{self.where}.{name} must be a list of integers; got {value!r}")
        return tuple(value)

    def same_int(self, name: str, default: Any = _MISSING) -> int:
        """An integer, or a list of equal integers (per-level forms renal-ldm can express only when uniform)."""
        value = self.get(name, default)
        if isinstance(value, (list, tuple)) and value and len(set(value)) == 1:
            value = value[0]
        if not isinstance(value, int) or isinstance(value, bool):
            raise LDMFormatError(
                f"{self.where}.{name} = {value!r}: renal-ldm's modules take one integer for every level"
            )
        return value

    def expect(self, name: str, default: Any, *allowed: Any) -> Any:
        """The option, refused unless it holds one of the values renal-ldm's modules can express."""
        value = self.get(name, default)
        allowed = allowed or (default,)
        if value not in allowed:
            shown = " or ".join(repr(a) for a in allowed)
            raise LDMFormatError(
                f"{self.where}.{name} = {value!r} has no equivalent in renal-ldm's diffusers modules (expected {shown})"
            )
        return value

    def ignore(self, *names: str) -> list[str]:
        """Mark training-only options as read; returns those present."""
        self.read.update(names)
        return [f"{self.where}.{n}" for n in names if n in self.values]

    def unknown(self) -> list[str]:
        return sorted(set(self.values) - self.read)

    def refuse_unknown(self) -> None:
        unknown = self.unknown()
        if unknown:
            raise LDMFormatError(
                f"{self.where}: unknown architecture option(s) {', '.join(unknown)}; renal-ldm cannot tell how they "
                "change the modules, so it refuses the config"
            )


def _section(data: Any, where: str) -> tuple[str, _Options]:
    if not isinstance(data, dict) or "target" not in data:
        raise LDMFormatError(f"{where} must be a mapping with 'target' and 'params'; got {data!r}")
    return str(data["target"]), _Options(data.get("params"), f"{where}.params")


def _model_section(data: dict[str, Any], where: str) -> dict[str, Any]:
    model = data.get("model", data)
    if not isinstance(model, dict) or "target" not in model:
        raise LDMFormatError(f"{where}: expected a 'model' section with 'target' and 'params'")
    return model


@dataclass(frozen=True)
class TextStage:
    """The YAML's cond_stage_config: a CLIP text model (FrozenCLIPEmbedder), a renal-ldm spec, or something else."""

    target: str
    version: str | None = None  # FrozenCLIPEmbedder's version: a hub name or a local directory
    max_length: int | None = None
    spec: str | None = None  # RENAL_TEXT_TARGET's renal-ldm text encoder spec


@dataclass(frozen=True)
class LDMSpec:
    """What an LDM YAML says about the modules, in renal-ldm's terms, plus what was left aside."""

    config: ModelConfig
    context_dim: int
    text: TextStage | None
    v_posterior: float = 0.0
    cosine_s: float = COSINE_S
    training_only: tuple[str, ...] = ()  # options read and left aside: they shape training, not the modules
    not_read: tuple[str, ...] = ()  # model.params options latent-diffusion does not have (a fork's own)


TRAINING_ONLY_MODEL_OPTIONS = (
    "num_timesteps_cond",
    "log_every_t",
    "first_stage_key",
    "cond_stage_key",
    "cond_stage_trainable",
    "monitor",
    "use_ema",
    "scheduler_config",
    "loss_type",
    "ckpt_path",
    "ignore_keys",
    "load_only_unet",
    "clip_denoised",
    "original_elbo_weight",
    "l_simple_weight",
    "learn_logvar",
    "logvar_init",
    "use_positional_encodings",
    "base_learning_rate",
    "unconditional_prob_cfg",
    "scale_by_std",  # the scale factor it measured is the checkpoint's scale_factor buffer, which import reads
)


def spec_from_yaml(data: dict[str, Any], *, name: str = "imported") -> LDMSpec:
    """The renal-ldm ModelConfig (and context width, text stage) of a latent-diffusion YAML."""
    model = _model_section(data, "config")
    target = str(model["target"])
    if not target.endswith("LatentDiffusion"):
        raise LDMFormatError(f"model.target = {target!r}: expected a latent diffusion model ({LDM_TARGET})")
    params = _Options(model.get("params"), "model.params")
    ignored = params.ignore(*TRAINING_ONLY_MODEL_OPTIONS)

    autoencoder, ae_resolution, ae_ignored = _autoencoder_from(params.get("first_stage_config"), "first_stage_config")
    unet, context_dim, latent_size = _unet_from(params.get("unet_config"), autoencoder)
    noise, v_posterior, cosine_s = _noise_from(params)

    concat_mode = params.get("concat_mode", True)  # LatentDiffusion's default when conditioning_key is unset
    conditioning = params.get("conditioning_key", None)
    if conditioning is None:
        conditioning = "concat" if concat_mode else "crossattn"
    if conditioning != "crossattn":
        raise LDMFormatError(
            f"model.params.conditioning_key = {conditioning!r}: renal-ldm models condition through cross-attention "
            "only (expected 'crossattn')"
        )
    params.expect("cond_stage_forward", None)
    text = _text_stage(params.get("cond_stage_config"))
    channels = params.number("channels", autoencoder.latent_channels, int)
    if channels != autoencoder.latent_channels:
        raise LDMFormatError(
            f"model.params.channels = {channels}, but the first stage has {autoencoder.latent_channels} latent channels"
        )
    latent = params.number("image_size", latent_size or 0, int) or (ae_resolution // autoencoder.downsampling_factor)
    scale = params.number(SCALE_FACTOR_KEY, 1.0)
    autoencoder = dataclasses.replace(autoencoder, scaling_factor=scale)
    config = ModelConfig(
        name=name,
        image_size=latent * autoencoder.downsampling_factor,
        autoencoder=autoencoder,
        unet=unet,
        noise=noise,
    )
    _check_size(config)
    not_read = tuple(f"model.params.{n}" for n in params.unknown())
    return LDMSpec(config, context_dim, text, v_posterior, cosine_s, tuple(ignored + ae_ignored), not_read)


def autoencoder_from_yaml(data: dict[str, Any]) -> tuple[AutoencoderConfig, int, float | None]:
    """The first stage of a YAML: a full LDM config (its first_stage_config; the rest is not read, so a UNet option
    renal-ldm lacks does not block the autoencoder) or an autoencoder training config (model.target VQModel).
    Returns (config, image size, the LDM's scale_factor or None)."""
    model = _model_section(data, "config")
    params = model.get("params") or {}
    if isinstance(params, dict) and "first_stage_config" in params:
        autoencoder, resolution, _ = _autoencoder_from(params["first_stage_config"], "first_stage_config")
        ldm = _Options(params, "model.params")
        latent = ldm.number("image_size", 0, int)
        size = latent * autoencoder.downsampling_factor if latent else resolution
        return autoencoder, size, ldm.number(SCALE_FACTOR_KEY, 1.0)
    autoencoder, resolution, _ = _autoencoder_from(model, "model")
    return autoencoder, resolution, None


def _autoencoder_from(section: Any, where: str) -> tuple[AutoencoderConfig, int, list[str]]:
    target, params = _section(section, where)
    if target.endswith("AutoencoderKL"):
        raise LDMFormatError(
            f"{where}.target = {target!r}: a KL autoencoder; renal-ldm models use a VQ first stage (VQModelInterface)"
        )
    if not target.endswith(("VQModelInterface", "VQModel")):
        raise LDMFormatError(f"{where}.target = {target!r}: expected a VQ first stage ({VQ_TARGET})")
    ignored = params.ignore(
        "lossconfig",
        "ckpt_path",
        "ignore_keys",
        "image_key",
        "colorize_nlabels",
        "monitor",
        "batch_resize_range",
        "scheduler_config",
        "lr_g_factor",
        "sane_index_shape",
        "use_ema",
        "base_learning_rate",
    )
    params.expect("remap", None)
    embed_dim = params.number("embed_dim", kind=int)
    n_embed = params.number("n_embed", kind=int)
    dd = _Options(params.get("ddconfig"), f"{where}.params.ddconfig")
    ignored += dd.ignore("dropout")
    dd.expect("double_z", False)
    dd.expect("in_channels", 3)
    dd.expect("out_ch", 3)
    dd.expect("resamp_with_conv", True)
    dd.expect("use_linear_attn", False)
    dd.expect("give_pre_end", False)
    dd.expect("tanh_out", False)
    attn_type = dd.expect("attn_type", "vanilla", "vanilla", "none")
    attn_resolutions = dd.get("attn_resolutions", [])
    if attn_resolutions:
        raise LDMFormatError(
            f"{where}.params.ddconfig.attn_resolutions = {attn_resolutions!r}: attention inside the encoder and "
            "decoder levels has no equivalent in diffusers' VQModel (expected [])"
        )
    z_channels = dd.number("z_channels", kind=int)
    if z_channels != embed_dim:
        raise LDMFormatError(
            f"{where}.params.embed_dim = {embed_dim} differs from ddconfig.z_channels = {z_channels}; renal-ldm's VQ "
            "first stage quantizes the encoder's channels as they are"
        )
    ch = dd.number("ch", kind=int)
    config = AutoencoderConfig(
        block_out_channels=tuple(ch * m for m in dd.ints("ch_mult")),
        layers_per_block=dd.same_int("num_res_blocks"),
        latent_channels=z_channels,
        num_vq_embeddings=n_embed,
        norm_num_groups=LDM_GROUPS,
        mid_block_add_attention=attn_type == "vanilla",
    )
    resolution = dd.number("resolution", 256, int)
    dd.refuse_unknown()
    params.refuse_unknown()
    return config, resolution, ignored


UNET_DEFAULTS_REQUIRED = {
    "conv_resample": True,
    "dims": 2,
    "num_classes": None,
    "use_scale_shift_norm": False,
    "resblock_updown": False,
    "n_embed": None,
    "use_linear_in_transformer": False,
    "disable_self_attentions": None,
    "num_attention_blocks": None,
    "disable_middle_self_attn": False,
    "adm_in_channels": None,
}
"""UNetModel options whose other values change the modules in ways renal-ldm's diffusers UNet cannot express."""


def _unet_from(section: Any, autoencoder: AutoencoderConfig) -> tuple[UNetConfig, int, int | None]:
    target, params = _section(section, "unet_config")
    if not target.endswith("UNetModel"):
        raise LDMFormatError(f"unet_config.target = {target!r}: expected {UNET_TARGET}")
    params.ignore("dropout", "use_checkpoint", "use_fp16", "ckpt_path", "ignore_keys", "legacy")
    # Only AttentionBlock (no spatial transformer) reads these two; with the transformer they change nothing.
    params.ignore("num_heads_upsample", "use_new_attention_order")
    params.expect("use_spatial_transformer", False, True)
    for option, default in UNET_DEFAULTS_REQUIRED.items():
        params.expect(option, default)
    for option in ("in_channels", "out_channels"):
        channels = params.number(option, kind=int)
        if channels != autoencoder.latent_channels:
            raise LDMFormatError(
                f"unet_config.params.{option} = {channels}: expected the first stage's {autoencoder.latent_channels} "
                "latent channels (renal-ldm conditions by cross-attention, not by concatenated channels)"
            )
    base = params.number("model_channels", kind=int)
    mult = params.ints("channel_mult")
    layers = params.same_int("num_res_blocks")
    resolutions = params.get("attention_resolutions")
    if not isinstance(resolutions, (list, tuple)) or not all(isinstance(r, int) for r in resolutions):
        raise LDMFormatError(
            f"unet_config.params.attention_resolutions must be a list of integers; got {resolutions!r}"
        )
    attention_levels = tuple(i for i in range(len(mult)) if 2**i in resolutions)
    depth = params.same_int("transformer_depth", 1)
    context_dim = params.same_int("context_dim")
    heads = _ldm_heads(
        params.number("num_heads", -1, int),
        params.number("num_head_channels", -1, int),
        base,
        mult,
        layers,
        resolutions,
    )
    latent = params.get("image_size", None)
    params.refuse_unknown()
    unet = UNetConfig(
        base_channels=base,
        channel_mult=mult,
        layers_per_block=layers,
        attention_levels=attention_levels,
        num_attention_heads=heads,
        transformer_depth=depth,
        norm_num_groups=LDM_GROUPS,
        caption_embedding=False,
    )
    return unet, context_dim, int(latent) if isinstance(latent, int) else None


def _ldm_heads(num_heads: int, head_channels: int, base: int, mult: tuple[int, ...], layers: int, resolutions) -> int:
    """The head count of every spatial transformer, as UNetModel.__init__ computes it (num_head_channels, when set,
    rewrites num_heads level by level); renal-ldm's UNet has one count for all of them."""
    if num_heads == -1 and head_channels == -1:
        raise LDMFormatError("unet_config.params: set num_heads or num_head_channels (latent-diffusion needs one)")
    counts: list[tuple[int, int]] = []

    def block(ch: int) -> None:
        nonlocal num_heads
        if head_channels != -1:
            num_heads = ch // head_channels
        counts.append((ch, num_heads))

    ds = 1
    for level, m in enumerate(mult):
        for _ in range(layers):
            if ds in resolutions:
                block(base * m)
        if level != len(mult) - 1:
            ds *= 2
    block(base * mult[-1])  # the middle block always has one
    for level, m in reversed(list(enumerate(mult))):
        for i in range(layers + 1):
            if ds in resolutions:
                block(base * m)
            if level and i == layers:
                ds //= 2
    distinct = sorted({h for _, h in counts})
    if len(distinct) != 1:
        raise LDMFormatError(
            f"unet_config.params.num_head_channels = {head_channels} gives {distinct} heads at different levels; "
            "renal-ldm's UNet has one head count for all levels"
        )
    bad = sorted({ch for ch, h in counts if h < 1 or ch % h})
    if bad:
        raise LDMFormatError(f"unet_config.params.num_heads = {distinct[0]} does not divide the channels {bad}")
    return distinct[0]


def _noise_from(params: _Options) -> tuple[NoiseScheduleConfig, float, float]:
    schedule = params.expect("beta_schedule", "linear", *BETA_SCHEDULES)
    cosine_s = params.number("cosine_s", COSINE_S)
    if schedule == "cosine" and abs(cosine_s - COSINE_S) > 1e-12:
        raise LDMFormatError(
            f"model.params.cosine_s = {cosine_s}: diffusers' cosine schedule (squaredcos_cap_v2) fixes s = {COSINE_S}"
        )
    params.expect("given_betas", None)
    parameterization = params.expect("parameterization", "eps", *PARAMETERIZATIONS)
    noise = NoiseScheduleConfig(
        num_train_timesteps=params.number("timesteps", 1000, int),
        beta_start=params.number("linear_start", 1e-4),
        beta_end=params.number("linear_end", 2e-2),
        beta_schedule=BETA_SCHEDULES[schedule],
        prediction_type=PARAMETERIZATIONS[parameterization],
    )
    return noise, params.number("v_posterior", 0.0), cosine_s


def _text_stage(section: Any) -> TextStage | None:
    if section == "__is_unconditional__":
        raise LDMFormatError(
            "model.params.cond_stage_config = '__is_unconditional__': an unconditional model; renal-ldm models are "
            "conditioned on captions"
        )
    if section is None:
        return None
    target, params = _section(section, "cond_stage_config")
    if target == RENAL_TEXT_TARGET:
        return TextStage(target, spec=str(params.get("spec")))
    if target.endswith("FrozenCLIPEmbedder"):
        version = params.get("version", None)
        length = params.get("max_length", 77)
        return TextStage(target, version=str(version) if version else None, max_length=int(length))
    return TextStage(target)


def _check_size(config: ModelConfig) -> None:
    if config.image_size < config.size_multiple or config.image_size % config.size_multiple:
        raise LDMFormatError(
            f"image size {config.image_size} (latent {config.latent_size} x factor "
            f"{config.autoencoder.downsampling_factor}) is not a multiple of {config.size_multiple}, which the UNet's "
            f"{config.unet.downsamplings} downsamplings need"
        )


def ldm_yaml(config: ModelConfig, context_dim: int, text: dict[str, Any]) -> dict[str, Any]:
    """The latent-diffusion YAML of a renal-ldm model (the inverse of spec_from_yaml); `text` is the
    cond_stage_config. A model LDM cannot express raises LDMFormatError naming the option."""
    check_ldm_expressible(config)
    ae, u, n = config.autoencoder, config.unet, config.noise
    ch = ae.block_out_channels[0]
    schedule = {v: k for k, v in BETA_SCHEDULES.items()}[n.beta_schedule]
    parameterization = {v: k for k, v in PARAMETERIZATIONS.items()}[n.prediction_type]
    ddconfig: dict[str, Any] = {
        "double_z": False,
        "z_channels": ae.latent_channels,
        "resolution": config.image_size,
        "in_channels": 3,
        "out_ch": 3,
        "ch": ch,
        "ch_mult": [c // ch for c in ae.block_out_channels],
        "num_res_blocks": ae.layers_per_block,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    if not ae.mid_block_add_attention:
        ddconfig["attn_type"] = "none"
    params: dict[str, Any] = {
        "linear_start": n.beta_start,
        "linear_end": n.beta_end,
        "timesteps": n.num_train_timesteps,
        "beta_schedule": schedule,
        "parameterization": parameterization,
        "num_timesteps_cond": 1,
        "log_every_t": 200,
        "first_stage_key": "image",
        "cond_stage_key": "caption",
        "image_size": config.latent_size,
        "channels": ae.latent_channels,
        "cond_stage_trainable": False,
        "conditioning_key": "crossattn",
        "monitor": "val/loss",
        "use_ema": False,
        "scale_factor": float(ae.scaling_factor),
        "scale_by_std": False,
        "unet_config": {
            "target": UNET_TARGET,
            "params": {
                "image_size": config.latent_size,
                "in_channels": ae.latent_channels,
                "out_channels": ae.latent_channels,
                "model_channels": u.base_channels,
                "attention_resolutions": [2**level for level in u.attention_levels],
                "num_res_blocks": u.layers_per_block,
                "channel_mult": list(u.channel_mult),
                "num_heads": u.num_attention_heads,
                "use_spatial_transformer": True,
                "transformer_depth": u.transformer_depth,
                "context_dim": int(context_dim),
                "use_checkpoint": False,
            },
        },
        "first_stage_config": {
            "target": VQ_TARGET,
            "params": {
                "embed_dim": ae.latent_channels,
                "n_embed": ae.num_vq_embeddings,
                "ddconfig": ddconfig,
                "lossconfig": {"target": "torch.nn.Identity"},
            },
        },
        "cond_stage_config": text,
    }
    if schedule == "cosine":
        params["cosine_s"] = COSINE_S
    return {"model": {"base_learning_rate": 2.5e-5, "target": LDM_TARGET, "params": params}}


def check_ldm_expressible(config: ModelConfig) -> None:
    """Refuse, naming the option, a renal-ldm config that latent-diffusion's modules cannot express."""
    ae, u = config.autoencoder, config.unet
    if u.caption_embedding:
        raise LDMFormatError(
            "unet.caption_embedding = True (a pooled caption added to the timestep embedding, diffusers' projection "
            "class embedding) has no equivalent in latent-diffusion's UNetModel; export a model trained without it"
        )
    if u.caption_mask:
        raise LDMFormatError(
            "unet.caption_mask = True (cross-attention skips the caption's padding tokens) has no equivalent in "
            "latent-diffusion, whose UNetModel attends to every token; export a model trained without it"
        )
    if u.padding_mode != "zeros":
        raise LDMFormatError(
            f"unet.padding_mode = {u.padding_mode!r} has no equivalent in latent-diffusion, whose UNetModel pads "
            "every convolution with zeros; export a model trained with zeros"
        )
    for where, groups in (
        ("unet.norm_num_groups", u.norm_num_groups),
        ("autoencoder.norm_num_groups", ae.norm_num_groups),
    ):
        if groups != LDM_GROUPS:
            raise LDMFormatError(
                f"{where} = {groups}: latent-diffusion fixes GroupNorm at {LDM_GROUPS} groups, so this model has no "
                "LDM form"
            )
    ch = ae.block_out_channels[0]
    if any(c % ch for c in ae.block_out_channels):
        raise LDMFormatError(
            f"autoencoder.block_out_channels = {ae.block_out_channels}: LDM's ddconfig needs every level a multiple "
            f"of the first ({ch})"
        )
    if config.noise.beta_schedule not in BETA_SCHEDULES.values():
        raise LDMFormatError(
            f"noise.beta_schedule = {config.noise.beta_schedule!r} has no latent-diffusion equivalent "
            f"(expected one of {', '.join(BETA_SCHEDULES.values())})"
        )
    if config.noise.prediction_type not in PARAMETERIZATIONS.values():
        raise LDMFormatError(f"noise.prediction_type = {config.noise.prediction_type!r} has no LDM parameterization")


# Name maps ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One tensor's LDM name (without the module prefix) and diffusers name. squeezed: LDM holds it as a 1x1
    convolution weight (out, in, 1, 1) where diffusers holds a linear weight (out, in)."""

    ldm: str
    diffusers: str
    squeezed: bool = False

    def ldm_shape(self, diffusers_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*diffusers_shape, 1, 1) if self.squeezed else tuple(diffusers_shape)

    def to_diffusers(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, :, 0, 0] if self.squeezed else tensor

    def to_ldm(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, :, None, None] if self.squeezed else tensor


class _Tag:
    """Stands in for an LDM tensor while a diffusers converter runs over names only: it remembers the LDM name and
    whether the converter sliced it ([:, :, 0, 0], a 1x1 convolution read as a linear layer)."""

    __slots__ = ("key", "shape", "squeezed")

    def __init__(self, key: str, ndim: int, squeezed: bool = False) -> None:
        self.key, self.shape, self.squeezed = key, (1,) * ndim, squeezed

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: Any) -> _Tag:
        return _Tag(self.key, 2, True)


class _Names:
    """LDM state_dict names with each tensor's rank, in the order the LDM module registers them."""

    def __init__(self) -> None:
        self.ndim: dict[str, int] = {}

    def conv(self, p: str) -> None:
        self.ndim.update({f"{p}.weight": 4, f"{p}.bias": 1})

    def linear(self, p: str, bias: bool = True) -> None:
        self.ndim[f"{p}.weight"] = 2
        if bias:
            self.ndim[f"{p}.bias"] = 1

    def norm(self, p: str) -> None:
        self.ndim.update({f"{p}.weight": 1, f"{p}.bias": 1})


def ldm_unet_names(config: ModelConfig) -> dict[str, int]:
    """The state_dict names of latent-diffusion's UNetModel (spatial transformer, no scale-shift) for a config."""
    u, names = config.unet, _Names()

    def resblock(p: str, skip: bool) -> None:
        names.norm(f"{p}.in_layers.0")
        names.conv(f"{p}.in_layers.2")
        names.linear(f"{p}.emb_layers.1")
        names.norm(f"{p}.out_layers.0")
        names.conv(f"{p}.out_layers.3")
        if skip:
            names.conv(f"{p}.skip_connection")

    def transformer(p: str) -> None:
        names.norm(f"{p}.norm")
        names.conv(f"{p}.proj_in")
        for d in range(u.transformer_depth):
            b = f"{p}.transformer_blocks.{d}"
            for attn in ("attn1", "attn2"):
                for proj in ("to_q", "to_k", "to_v"):
                    names.linear(f"{b}.{attn}.{proj}", bias=False)
                names.linear(f"{b}.{attn}.to_out.0")
            names.linear(f"{b}.ff.net.0.proj")
            names.linear(f"{b}.ff.net.2")
            for norm in ("norm1", "norm2", "norm3"):
                names.norm(f"{b}.{norm}")
        names.conv(f"{p}.proj_out")

    names.linear("time_embed.0")
    names.linear("time_embed.2")
    names.conv("input_blocks.0.0")
    channels = [u.base_channels]
    ch, k, last = u.base_channels, 1, len(u.channel_mult) - 1
    for level, mult in enumerate(u.channel_mult):
        for _ in range(u.layers_per_block):
            out = u.base_channels * mult
            resblock(f"input_blocks.{k}.0", skip=ch != out)
            if level in u.attention_levels:
                transformer(f"input_blocks.{k}.1")
            ch = out
            channels.append(ch)
            k += 1
        if level != last:
            names.conv(f"input_blocks.{k}.0.op")
            channels.append(ch)
            k += 1
    resblock("middle_block.0", skip=False)
    transformer("middle_block.1")
    resblock("middle_block.2", skip=False)
    k = 0
    for level, mult in reversed(list(enumerate(u.channel_mult))):
        for i in range(u.layers_per_block + 1):
            out = u.base_channels * mult
            resblock(f"output_blocks.{k}.0", skip=ch + channels.pop() != out)
            ch, idx = out, 1
            if level in u.attention_levels:
                transformer(f"output_blocks.{k}.1")
                idx = 2
            if level and i == u.layers_per_block:
                names.conv(f"output_blocks.{k}.{idx}.conv")
            k += 1
    names.norm("out.0")
    names.conv("out.2")
    return names.ndim


def ldm_vae_names(ae: AutoencoderConfig) -> dict[str, int]:
    """The state_dict names of latent-diffusion's VQModel (Encoder, Decoder, quantizer, 1x1 convs) for a config."""
    names = _Names()

    def resnet(p: str, cin: int, cout: int) -> None:
        names.norm(f"{p}.norm1")
        names.conv(f"{p}.conv1")
        names.norm(f"{p}.norm2")
        names.conv(f"{p}.conv2")
        if cin != cout:
            names.conv(f"{p}.nin_shortcut")

    def mid(p: str, ch: int) -> None:
        resnet(f"{p}.mid.block_1", ch, ch)
        if ae.mid_block_add_attention:
            names.norm(f"{p}.mid.attn_1.norm")
            for conv in ("q", "k", "v", "proj_out"):
                names.conv(f"{p}.mid.attn_1.{conv}")
        resnet(f"{p}.mid.block_2", ch, ch)

    chans, levels = ae.block_out_channels, len(ae.block_out_channels)
    names.conv("encoder.conv_in")
    cin = chans[0]
    for i, cout in enumerate(chans):
        for j in range(ae.layers_per_block):
            resnet(f"encoder.down.{i}.block.{j}", cin, cout)
            cin = cout
        if i != levels - 1:
            names.conv(f"encoder.down.{i}.downsample.conv")
    mid("encoder", chans[-1])
    names.norm("encoder.norm_out")
    names.conv("encoder.conv_out")
    names.conv("decoder.conv_in")
    mid("decoder", chans[-1])
    cin = chans[-1]
    for i in reversed(range(levels)):
        for j in range(ae.layers_per_block + 1):
            resnet(f"decoder.up.{i}.block.{j}", cin, chans[i])
            cin = chans[i]
        if i != 0:
            names.conv(f"decoder.up.{i}.upsample.conv")
    names.norm("decoder.norm_out")
    names.conv("decoder.conv_out")
    names.conv("quant_conv")
    names.linear("quantize.embedding", bias=False)
    names.conv("post_quant_conv")
    return names.ndim


def unet_pairs(config: ModelConfig, unet: torch.nn.Module) -> list[Pair]:
    """LDM <-> diffusers names of a UNet, from diffusers' convert_ldm_unet_checkpoint."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    return _pairs(
        ldm_unet_names(config),
        UNET_PREFIX,
        lambda tags: convert_ldm_unet_checkpoint(tags, dict(unet.config)),
        set(unet.state_dict()),
        "UNet",
    )


VAE_ADDED_BY_HAND = ("quantize.embedding.weight",)
"""What diffusers' convert_ldm_vae_checkpoint (written for KL autoencoders) does not map: the VQ codebook."""


def vae_pairs(config: ModelConfig, vae: torch.nn.Module) -> list[Pair]:
    """LDM <-> diffusers names of a VQ autoencoder, from diffusers' convert_ldm_vae_checkpoint plus the codebook."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    def convert(tags: dict[str, _Tag]) -> dict[str, Any]:
        converted = convert_ldm_vae_checkpoint(tags, dict(vae.config))
        converted.update({name: tags[VAE_PREFIX + name] for name in VAE_ADDED_BY_HAND})
        return converted

    return _pairs(ldm_vae_names(config.autoencoder), VAE_PREFIX, convert, set(vae.state_dict()), "autoencoder")


def _pairs(
    names: dict[str, int], prefix: str, convert: Callable[[dict], dict], module_keys: set[str], what: str
) -> list[Pair]:
    tags = {prefix + name: _Tag(name, ndim) for name, ndim in names.items()}
    converted = convert(tags)
    unmapped = sorted(k for k, v in converted.items() if not isinstance(v, _Tag))
    pairs = [Pair(v.key, k, v.squeezed) for k, v in converted.items() if isinstance(v, _Tag)]
    used = [p.ldm for p in pairs]
    problems = []
    if unmapped:
        problems.append(f"diffusers names with no LDM name: {', '.join(unmapped[:3])}")
    if len(set(used)) != len(used):
        problems.append("LDM names mapped twice: " + ", ".join(sorted({u for u in used if used.count(u) > 1})[:3]))
    if set(names) - set(used):
        problems.append(f"LDM names diffusers' converter left out: {', '.join(sorted(set(names) - set(used))[:3])}")
    missing, extra = sorted(module_keys - set(converted)), sorted(set(converted) - module_keys)
    if missing:
        problems.append(f"module tensors with no LDM name: {', '.join(missing[:3])}")
    if extra:
        problems.append(f"converted names the module lacks: {', '.join(extra[:3])}")
    if problems:
        raise LDMFormatError(
            f"{what}: diffusers' LDM converter and the LDM layout disagree for this architecture "
            f"({'; '.join(problems)})"
        )
    return pairs


def ema_name(ldm_unet_name: str) -> str:
    """LitEma's buffer name of a UNet tensor: the DiffusionWrapper path with its dots removed."""
    return EMA_PREFIX + ("diffusion_model." + ldm_unet_name).replace(".", "")


# Noise schedule buffers -----------------------------------------------------------------------------------------


def ldm_betas(noise: NoiseScheduleConfig, cosine_s: float = COSINE_S) -> np.ndarray:
    """float64 betas as latent-diffusion's make_beta_schedule computes them."""
    schedule = {v: k for k, v in BETA_SCHEDULES.items()}.get(noise.beta_schedule)
    t, start, end = noise.num_train_timesteps, noise.beta_start, noise.beta_end
    if schedule == "linear":
        return (torch.linspace(start**0.5, end**0.5, t, dtype=torch.float64) ** 2).numpy()
    if schedule == "sqrt_linear":
        return torch.linspace(start, end, t, dtype=torch.float64).numpy()
    if schedule == "cosine":
        steps = torch.arange(t + 1, dtype=torch.float64) / t + cosine_s
        alphas = torch.cos(steps / (1 + cosine_s) * np.pi / 2).pow(2)
        alphas = alphas / alphas[0]
        return np.clip((1 - alphas[1:] / alphas[:-1]).numpy(), 0, 0.999)
    raise LDMFormatError(f"noise.beta_schedule = {noise.beta_schedule!r} has no latent-diffusion equivalent")


def schedule_buffers(noise: NoiseScheduleConfig, v_posterior: float = 0.0, cosine_s: float = COSINE_S) -> dict:
    """LatentDiffusion.register_schedule's persistent buffers (float64 math, float32 tensors), by name."""
    betas = ldm_betas(noise, cosine_s)
    alphas = 1.0 - betas
    cumprod = np.cumprod(alphas, axis=0)
    prev = np.append(1.0, cumprod[:-1])
    posterior = (1 - v_posterior) * betas * (1.0 - prev) / (1.0 - cumprod) + v_posterior * betas
    values = {
        "betas": betas,
        "alphas_cumprod": cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": np.sqrt(cumprod),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - cumprod),
        "log_one_minus_alphas_cumprod": np.log(1.0 - cumprod),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / cumprod),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / cumprod - 1),
        "posterior_variance": posterior,
        "posterior_log_variance_clipped": np.log(np.maximum(posterior, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(prev) / (1.0 - cumprod),
        "posterior_mean_coef2": (1.0 - prev) * np.sqrt(alphas) / (1.0 - cumprod),
    }
    return {name: torch.tensor(values[name], dtype=torch.float32) for name in SCHEDULE_BUFFERS}


def check_schedule(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str) -> None:
    """Refuse schedule buffers that differ from those the YAML's schedule gives (a YAML that is not the ckpt's)."""
    for name, tensor in found.items():
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise LDMFormatError(
                f"{where}: {name} has {tuple(tensor.shape)} entries; the config's timesteps give {tuple(want.shape)}"
            )
        if not torch.allclose(tensor.float(), want, rtol=1e-4, atol=1e-6):
            worst = float((tensor.float() - want).abs().max())
            raise LDMFormatError(
                f"{where}: {name} differs from the config's schedule (linear_start/linear_end/timesteps/beta_schedule) "
                f"by up to {worst:.3g}; is this the checkpoint's own YAML?"
            )


def group_counts(keys: Iterator[str] | list[str], depth: int = 1) -> dict[str, int]:
    """How many names fall under each prefix of `depth` dotted components (for reports)."""
    counts: dict[str, int] = {}
    for key in keys:
        head = ".".join(key.split(".")[:depth]) if "." in key else key
        counts[head] = counts.get(head, 0) + 1
    return counts
