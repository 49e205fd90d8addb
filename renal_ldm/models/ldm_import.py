"""Import of latent-diffusion checkpoints (CompVis/latent-diffusion, PathLDM) into renal-ldm checkpoint directories.

    report = import_ldm("model.ckpt", "config.yaml", "models/pathldm")       # UNet + VQ first stage (+ text)
    report = import_vae("vq-f4.ckpt", None, "models/vq-f4")                  # the first stage alone

Guarantees (tests/renal_ldm/test_ldm_format.py):
- Every tensor of the source is converted, or reported with the reason it was left aside (the EMA copy, training
  losses, noise-schedule buffers that were checked against the YAML); anything else is an error that names it.
  A missing tensor or one of another shape is an error naming it, before anything is written.
- The modules are rebuilt from the ModelConfig written into the manifest, so `load_model` rebuilds exactly what
  was imported. They are built on the meta device and take the source tensors as they are (assign), tensor by
  tensor, each dropped from the source as it is taken: memory holds the checkpoint once, not twice
  (benchmarks/import_memory.py measures it).
- The text encoder: CLIP text weights in the checkpoint (cond_stage_model.transformer.*) are written as a CLIP text
  model directory inside the output (text_encoder/, with the tokenizer of --text-encoder plip:DIR or of the YAML's
  local `version` directory) and the manifest points at it; without text weights, --text-encoder is required.
- The output directory is written atomically (checkpoint.save_model); an existing one is replaced only with force.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from renal_ldm.models.build import build_noise_scheduler, build_unet, build_vae, count_parameters
from renal_ldm.models.checkpoint import LatentDiffusionModel, save_model
from renal_ldm.models.configs import AutoencoderConfig, ModelConfig
from renal_ldm.models.ldm_format import (
    EMA_COUNTERS,
    EMA_PREFIX,
    LDM_GROUPS,
    SCALE_FACTOR_KEY,
    SCHEDULE_BUFFERS,
    TEXT_PREFIX,
    TRAINING_ONLY_KEYS,
    UNET_PREFIX,
    VAE_PREFIX,
    LDMFormatError,
    LDMSpec,
    Pair,
    SourceTensors,
    autoencoder_from_yaml,
    check_schedule,
    ema_name,
    group_counts,
    load_source,
    read_yaml,
    schedule_buffers,
    spec_from_yaml,
    unet_pairs,
    vae_pairs,
)

TEXT_DIR = "text_encoder"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
CLIP_TOKEN_KEY = "text_model.embeddings.token_embedding.weight"
CLIP_POSITION_IDS = "text_model.embeddings.position_ids"  # a persistent buffer in older transformers
CLIP_HEAD_WIDTH = 64  # CLIP's text transformers use 64-wide heads (ViT-B/32: 512 / 8, ViT-L/14: 768 / 12)
DEFAULT_VAE_SIZE = 256  # the reference's patch size, for a first stage imported without a YAML
MAX_NAMED = 5  # names shown per kind of problem in one error message


@dataclass
class ImportReport:
    """What an import wrote and what it left aside, for the command line and tests."""

    out: Path
    kind: str
    converted: dict[str, int] = field(default_factory=dict)  # module -> tensors converted
    parameters: dict[str, int] = field(default_factory=dict)  # module -> parameters
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> tensors left aside
    notes: list[str] = field(default_factory=list)
    text_encoder: str | None = None

    def lines(self) -> list[str]:
        out = [f"wrote {self.kind} checkpoint {self.out}"]
        out += [
            f"  {module}: {count} tensors, {self.parameters.get(module, 0):,} parameters"
            for module, count in self.converted.items()
        ]
        if self.text_encoder:
            out.append(f"  text encoder: {self.text_encoder}")
        out += [f"  left aside: {count} tensors ({reason})" for reason, count in self.skipped.items()]
        out += [f"  note: {note}" for note in self.notes]
        return out


# The plan: which source tensor fills which module tensor -------------------------------------------------------


@dataclass
class _Plan:
    """Source name -> (module, Pair), checked for missing keys and shapes before any tensor is taken."""

    source: SourceTensors
    entries: dict[str, tuple[str, Pair]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def add(self, module: str, pairs: list[Pair], shapes: dict[str, tuple[int, ...]], name_of: Callable) -> None:
        for pair in pairs:
            name = name_of(pair)
            self.entries[name] = (module, pair)
            if name not in self.source:
                self.missing.append(name)
                continue
            want = pair.ldm_shape(shapes[pair.diffusers])
            have = self.source.shapes[name]
            if tuple(have) != tuple(want):
                self.shapes.append(f"{name} has shape {tuple(have)}; the config implies {tuple(want)}")

    def skip(self, reason: str, name: str) -> None:
        self.skipped.setdefault(reason, []).append(name)

    def raise_problems(self, what: str) -> None:
        problems = []
        for label, names in (
            ("missing", self.missing),
            ("unexpected (not part of the config's modules)", self.unexpected),
            ("of another shape", self.shapes),
        ):
            if names:
                shown = "; ".join(sorted(names)[:MAX_NAMED]) + (" ..." if len(names) > MAX_NAMED else "")
                problems.append(f"{len(names)} tensor{'s' if len(names) != 1 else ''} {label}: {shown}")
        if problems:
            raise LDMFormatError(f"{self.source.path} does not match {what}: " + " | ".join(problems))

    def fill(self, modules: dict[str, torch.nn.Module]) -> dict[str, int]:
        """Move the planned tensors into the modules (assign: no copy unless the dtype changes)."""
        states: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
        for name, (module, pair) in self.entries.items():
            tensor = pair.to_diffusers(self.source.take(name))
            if tensor.dtype != torch.float32:
                tensor = tensor.float()
            states[module][pair.diffusers] = tensor.contiguous()
        for name, module in modules.items():
            module.load_state_dict(states.pop(name), strict=True, assign=True)
            still_meta = [n for n, t in (*module.named_parameters(), *module.named_buffers()) if t.is_meta]
            if still_meta:  # pragma: no cover - a module with state outside its state_dict
                raise LDMFormatError(f"{name}: tensors not filled by the checkpoint: {', '.join(still_meta[:3])}")
        return {name: sum(1 for _, (m, _) in self.entries.items() if m == name) for name in modules}


def _meta_modules(config: ModelConfig, context_dim: int | None) -> dict[str, torch.nn.Module]:
    """The config's modules without memory (meta device): built only to be filled with the source's tensors."""
    with torch.device("meta"):
        modules = {"vae": build_vae(config)}
        if context_dim is not None:
            modules["unet"] = build_unet(config, context_dim)
    return modules


def _shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists; choose another --out or pass --force to replace it")


# import-ldm -----------------------------------------------------------------------------------------------------


def import_ldm(
    ckpt: str | Path,
    config: str | Path,
    out: str | Path,
    *,
    text_encoder: str | None = None,
    ema: bool = False,
    force: bool = False,
) -> ImportReport:
    """Convert a latent-diffusion checkpoint and its YAML into a renal-ldm checkpoint directory at `out`."""
    out = Path(out)
    _check_out(out, force)
    spec = spec_from_yaml(read_yaml(config), name=f"imported-{Path(ckpt).stem}")
    source = load_source(ckpt)
    notes = [f"{len(spec.training_only)} training-only YAML options left aside"] if spec.training_only else []
    if spec.not_read:
        notes.append(f"YAML options latent-diffusion does not have, not read: {', '.join(spec.not_read)}")

    scale = spec.config.autoencoder.scaling_factor
    if SCALE_FACTOR_KEY in source:  # a buffer when the model was trained with scale_by_std
        scale = float(source.take(SCALE_FACTOR_KEY))
        if abs(scale - spec.config.autoencoder.scaling_factor) > 1e-8:
            notes.append(
                f"scale_factor {scale:.6g} from the checkpoint (the YAML says {spec.config.autoencoder.scaling_factor})"
            )
    model_config = dataclasses.replace(
        spec.config, autoencoder=dataclasses.replace(spec.config.autoencoder, scaling_factor=scale)
    )
    modules = _meta_modules(model_config, spec.context_dim)
    plan = _Plan(source)
    unet_name = ema_name if ema else (lambda ldm: UNET_PREFIX + ldm)
    plan.add("unet", unet_pairs(model_config, modules["unet"]), _shapes(modules["unet"]), lambda p: unet_name(p.ldm))
    plan.add("vae", vae_pairs(model_config, modules["vae"]), _shapes(modules["vae"]), lambda p: VAE_PREFIX + p.ldm)
    _check_unet_source(source, ema)
    text = _TextPlan.make(source, spec, text_encoder)
    text_names = set(text.names)
    schedule: dict[str, torch.Tensor] = {}
    for name in [k for k in source.keys() if k not in plan.entries and k not in text_names]:
        if name in SCHEDULE_BUFFERS:
            schedule[name] = source.take(name)
        elif name in EMA_COUNTERS:
            plan.skip("EMA counters", name)
        elif name.startswith(EMA_PREFIX) and not ema:
            plan.skip("the EMA copy of the UNet; --ema imports it instead", name)
        elif name.startswith(UNET_PREFIX) and ema:
            plan.skip("the non-EMA UNet (--ema took the EMA copy)", name)
        elif name in TRAINING_ONLY_KEYS or name.startswith(VAE_PREFIX + "loss."):
            plan.skip("training-only", name)
        elif name.startswith("cond_stage_model.") and text.leave_aside:
            plan.skip(text.leave_aside, name)
        else:
            plan.unexpected.append(name)
    plan.raise_problems(f"its config ({Path(config).name})")
    check_schedule(schedule, schedule_buffers(model_config.noise, spec.v_posterior, spec.cosine_s), str(source.path))

    staged_text = text.stage(source, out)  # before save_model: a text encoder that fails leaves nothing behind
    try:
        converted = plan.fill(modules)
        text_spec = text.spec_for(out)
        model_config = dataclasses.replace(model_config, text_encoder=text_spec)
        model = LatentDiffusionModel(
            config=model_config,
            vae=modules["vae"].eval(),
            unet=modules["unet"].eval(),
            noise_scheduler=build_noise_scheduler(model_config),
            text_encoder=text_spec,
            context_dim=spec.context_dim,
            extra={"step": source.meta.get("global_step"), "imported_from": _provenance(source, config, ema)},
        )
        save_model(out, model)
        if staged_text is not None:
            staged_text.rename(out / TEXT_DIR)
    finally:
        if staged_text is not None and staged_text.exists():
            shutil.rmtree(staged_text, ignore_errors=True)
    report = ImportReport(out=out, kind="ldm", text_encoder=text_spec, notes=notes + text.notes)
    report.converted = converted
    report.parameters = {name: count_parameters(m) for name, m in modules.items()}
    if text.writes:
        report.converted["text_encoder"] = len(text.names) - text.position_ids
        report.parameters["text_encoder"] = text.parameters
    report.skipped = {reason: len(names) for reason, names in plan.skipped.items()}
    if schedule:
        report.skipped["noise-schedule buffers, checked against the YAML"] = len(schedule)
    return report


def _check_unet_source(source: SourceTensors, ema: bool) -> None:
    has_ema = any(k.startswith(EMA_PREFIX) and k not in EMA_COUNTERS for k in source.keys())
    has_unet = any(k.startswith(UNET_PREFIX) for k in source.keys())
    if ema and not has_ema:
        raise LDMFormatError(f"{source.path} holds no EMA weights ({EMA_PREFIX}*); import it without --ema")
    if not ema and not has_unet and has_ema:
        raise LDMFormatError(f"{source.path} holds only the EMA copy of the UNet ({EMA_PREFIX}*); pass --ema")


def _provenance(source: SourceTensors, config: str | Path | None, ema: bool) -> dict[str, Any]:
    return {
        "checkpoint": source.path.name,
        "config": Path(config).name if config else None,
        "bytes": source.path.stat().st_size,
        "ema": ema,
        **{k: v for k, v in source.meta.items() if k in ("global_step", "epoch", "pytorch-lightning_version")},
    }


# The text encoder -----------------------------------------------------------------------------------------------


@dataclass
class _TextPlan:
    """What becomes of the source's text stage: its CLIP weights written as a directory, or a spec from elsewhere."""

    spec: str | None = None  # the manifest's text encoder, unless the checkpoint's CLIP weights are written
    names: list[str] = field(default_factory=list)  # source names the CLIP directory takes
    position_ids: int = 0  # of those, the old persistent position_ids buffer (checked, not stored)
    parameters: int = 0
    clip_config: Any = None
    tokenizer_dir: Path | None = None
    leave_aside: str | None = None  # reason for cond_stage_model.* tensors that are not used
    notes: list[str] = field(default_factory=list)

    @property
    def writes(self) -> bool:
        return self.clip_config is not None

    @classmethod
    def make(cls, source: SourceTensors, spec: LDMSpec, given: str | None) -> _TextPlan:
        has_cond = any(k.startswith("cond_stage_model.") for k in source.keys())
        has_clip = TEXT_PREFIX + CLIP_TOKEN_KEY in source
        given_dir = _plip_dir(given)
        if given is not None and given_dir is None:  # minilm or another non-CLIP encoder
            _check_width(given, _spec_dim(given), spec.context_dim)
            return cls(spec=given, leave_aside=f"the checkpoint's text encoder; --text-encoder {given} is used")
        if has_clip:
            return cls._from_clip(source, spec, given_dir)
        if given is not None:
            _check_width(given, _spec_dim(given), spec.context_dim)
            reason = "the checkpoint's text encoder (not a CLIP text model); --text-encoder is used"
            return cls(spec=given, leave_aside=reason if has_cond else None)
        if spec.text is not None and spec.text.spec:
            _check_width(spec.text.spec, _spec_dim(spec.text.spec), spec.context_dim)
            return cls(spec=spec.text.spec)
        target = spec.text.target if spec.text is not None else "none"
        found = "a text encoder renal-ldm cannot load" if has_cond else "no text encoder weights"
        raise LDMFormatError(
            f"{source.path} holds {found} ({TEXT_PREFIX}{CLIP_TOKEN_KEY} absent; cond_stage_config target {target}); "
            f"pass --text-encoder plip:DIR (a local PLIP copy, as the reference used) or minilm, of width "
            f"{spec.context_dim}"
        )

    @classmethod
    def _from_clip(cls, source: SourceTensors, spec: LDMSpec, given_dir: Path | None) -> _TextPlan:
        from transformers import CLIPTextConfig

        plan = cls()
        version = spec.text.version if spec.text is not None else None
        local = given_dir or (Path(version).expanduser() if version and Path(version).expanduser().is_dir() else None)
        if local is not None and (local / "config.json").is_file():
            plan.clip_config = CLIPTextConfig.from_pretrained(str(local), local_files_only=True)
        else:
            plan.clip_config = _clip_config_from_shapes(source)
            plan.notes.append(
                f"CLIP text config derived from the weights ({plan.clip_config.num_attention_heads} heads of "
                f"{CLIP_HEAD_WIDTH}, quick_gelu, CLIP's token ids)"
            )
        if local is not None and all((local / f).is_file() for f in TOKENIZER_FILES[:2]):
            plan.tokenizer_dir = local
        else:
            plan.notes.append(
                f"no CLIP tokenizer found (pass --text-encoder plip:DIR); copy vocab.json and merges.txt of PLIP "
                f"into {TEXT_DIR}/ before sampling"
            )
        _check_width("the checkpoint's CLIP text model", plan.clip_config.hidden_size, spec.context_dim)
        if spec.text is not None and spec.text.max_length not in (None, 2 * 77):
            plan.notes.append(
                f"cond_stage_config max_length {spec.text.max_length}: renal-ldm's PLIP encoder reads 154 tokens "
                "(two 77-token chunks), as the reference did"
            )
        plan.names = [k for k in source.keys() if k.startswith(TEXT_PREFIX)]
        plan.position_ids = int(TEXT_PREFIX + CLIP_POSITION_IDS in source)
        return plan

    def stage(self, source: SourceTensors, out: Path) -> Path | None:
        """Write the CLIP text model directory beside `out` (moved inside once the checkpoint is written)."""
        if not self.writes:
            return None
        from transformers import CLIPTextModel

        with torch.device("meta"):
            model = CLIPTextModel(self.clip_config)
        expected = _shapes(model)
        state, problems = {}, []
        for name in self.names:
            rest = name[len(TEXT_PREFIX) :]
            if rest == CLIP_POSITION_IDS:
                source.take(name)
                continue
            key = rest if rest in expected else rest.removeprefix("text_model.")
            if key not in expected:
                problems.append(f"{name} is not part of a CLIP text model")
                continue
            if tuple(source.shapes[name]) != expected[key]:
                problems.append(f"{name} has shape {source.shapes[name]}; the CLIP config implies {expected[key]}")
                continue
            state[key] = source.take(name).float().contiguous()
        missing = sorted(set(expected) - set(state))
        if missing:
            problems.append(
                f"{len(missing)} CLIP text tensors missing: {', '.join(TEXT_PREFIX + m for m in missing[:3])}"
            )
        if problems:
            raise LDMFormatError(f"{source.path}: text encoder: " + " | ".join(problems[:MAX_NAMED]))
        model.load_state_dict(state, strict=True, assign=True)
        _restore_position_ids(model)
        self.parameters = count_parameters(model)
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.text.", dir=out.parent))
        try:
            model.save_pretrained(str(staged))
            if self.tokenizer_dir is not None:
                for name in TOKENIZER_FILES:
                    if (self.tokenizer_dir / name).is_file():
                        shutil.copy2(self.tokenizer_dir / name, staged / name)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged

    def spec_for(self, out: Path) -> str:
        return f"plip:{(out / TEXT_DIR).resolve()}" if self.writes else str(self.spec)


def _restore_position_ids(model: torch.nn.Module) -> None:
    """The non-persistent position_ids buffer stays on the meta device after assign: give it its values."""
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            owner = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            leaf = name.rsplit(".", 1)[-1]
            owner.register_buffer(leaf, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)


def _clip_config_from_shapes(source: SourceTensors):
    from transformers import CLIPTextConfig

    shapes = source.shapes
    vocab, hidden = shapes[TEXT_PREFIX + CLIP_TOKEN_KEY]
    positions = shapes[TEXT_PREFIX + "text_model.embeddings.position_embedding.weight"][0]
    layer_prefix = TEXT_PREFIX + "text_model.encoder.layers."
    layers = len({k[len(layer_prefix) :].split(".")[0] for k in shapes if k.startswith(layer_prefix)})
    intermediate = shapes[layer_prefix + "0.mlp.fc1.weight"][0]
    if hidden % CLIP_HEAD_WIDTH:
        raise LDMFormatError(
            f"{source.path}: the CLIP text model is {hidden} wide, not a multiple of {CLIP_HEAD_WIDTH}, so its head "
            "count cannot be told from the weights; pass --text-encoder plip:DIR with its config.json"
        )
    return CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=hidden // CLIP_HEAD_WIDTH,
        max_position_embeddings=positions,
    )


def _plip_dir(spec: str | None) -> Path | None:
    if spec is None or not spec.startswith("plip:"):
        return None
    folder = Path(spec.split(":", 1)[1]).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--text-encoder {spec}: {folder / 'config.json'} not found (a local PLIP copy)")
    return folder


def _spec_dim(spec: str) -> int:
    """The width of a text encoder spec, read cheaply where possible (a PLIP config.json, MiniLM's constant)."""
    from renal_ldm.text import DEFAULT_TEXT_ENCODER, MiniLMTextEncoder, text_encoder_dim

    folder = _plip_dir(spec)
    if folder is not None:
        data = json.loads((folder / "config.json").read_text())
        return int((data.get("text_config") or data).get("hidden_size", 512))
    if spec == DEFAULT_TEXT_ENCODER:
        return MiniLMTextEncoder.dim
    return text_encoder_dim(spec)


def _check_width(what: str, width: int, context_dim: int) -> None:
    if width != context_dim:
        raise LDMFormatError(
            f"{what} is {width} wide, but the UNet's context_dim is {context_dim}; pass a text encoder of width "
            f"{context_dim}"
        )


# import-vae -----------------------------------------------------------------------------------------------------


def import_vae(ckpt: str | Path, config: str | Path | None, out: str | Path, *, force: bool = False) -> ImportReport:
    """The first stage alone (from a full LDM checkpoint or a first-stage training checkpoint) as an autoencoder-only
    renal-ldm checkpoint, the input of `renal-ldm train --vae DIR`."""
    out = Path(out)
    _check_out(out, force)
    source = load_source(ckpt)
    prefix = VAE_PREFIX if any(k.startswith(VAE_PREFIX) for k in source.keys()) else ""
    notes: list[str] = []
    if config is not None:
        autoencoder, size, scale = autoencoder_from_yaml(read_yaml(config))
    else:
        autoencoder, size, scale = infer_autoencoder(source, prefix), DEFAULT_VAE_SIZE, None
        notes.append(f"architecture read from the weights; image size {size} assumed (no YAML)")
    if scale is None and SCALE_FACTOR_KEY in source:
        scale = float(source.take(SCALE_FACTOR_KEY))
    autoencoder = dataclasses.replace(autoencoder, scaling_factor=1.0 if scale is None else scale)
    model_config = ModelConfig(name=f"imported-{Path(ckpt).stem}", image_size=size, autoencoder=autoencoder)
    modules = _meta_modules(model_config, None)
    plan = _Plan(source)
    plan.add("vae", vae_pairs(model_config, modules["vae"]), _shapes(modules["vae"]), lambda p: prefix + p.ldm)
    for name in [k for k in source.keys() if k not in plan.entries]:
        if prefix and not name.startswith(prefix):
            plan.skip("not part of the first stage: " + ", ".join(group_counts([name])), name)
        elif name.startswith(prefix + "loss."):
            plan.skip("training-only: the autoencoder's loss (discriminator, LPIPS)", name)
        elif name.startswith(EMA_PREFIX):
            plan.skip("the first stage's EMA copy", name)
        elif name == prefix + "colorize":
            plan.skip("training-only", name)
        else:
            plan.unexpected.append(name)
    plan.raise_problems(f"its config ({Path(config).name})" if config else "the first stage its weights describe")
    converted = plan.fill(modules)
    model = LatentDiffusionModel(
        config=model_config,
        vae=modules["vae"].eval(),
        extra={"step": source.meta.get("global_step"), "imported_from": _provenance(source, config, False)},
    )
    save_model(out, model)
    skipped: dict[str, int] = {}
    for reason, names in plan.skipped.items():
        key = "not part of the first stage" if reason.startswith("not part") else reason
        skipped[key] = skipped.get(key, 0) + len(names)
    report = ImportReport(out=out, kind="autoencoder", converted=converted, skipped=skipped, notes=notes)
    report.parameters = {"vae": count_parameters(modules["vae"])}
    return report


def infer_autoencoder(source: SourceTensors, prefix: str = "") -> AutoencoderConfig:
    """A VQ first stage's architecture read from its tensor shapes (ch, ch_mult, res blocks, codebook, attention)."""
    shapes = source.shapes

    def shape(name: str) -> tuple[int, ...]:
        if prefix + name not in shapes:
            raise LDMFormatError(
                f"{source.path} has no {prefix + name}; expected a VQ first stage (latent-diffusion's VQModel)"
            )
        return shapes[prefix + name]

    shape("quantize.embedding.weight")
    shape("encoder.conv_in.weight")
    down = prefix + "encoder.down."
    levels = 1 + max(int(k[len(down) :].split(".")[0]) for k in shapes if k.startswith(down))
    if any(k.startswith(f"{down}{i}.attn.") for i in range(levels) for k in shapes):
        raise LDMFormatError(
            f"{source.path}: attention inside the encoder levels ({down}N.attn) has no equivalent in diffusers' VQModel"
        )
    block = f"{down}0.block."
    layers = len({k[len(block) :].split(".")[0] for k in shapes if k.startswith(block)})
    channels = [shape(f"encoder.down.{i}.block.0.conv1.weight")[0] for i in range(levels)]
    z_channels, embed_dim = shape("encoder.conv_out.weight")[0], shape("quant_conv.weight")[0]
    if z_channels != embed_dim:
        raise LDMFormatError(
            f"{source.path}: encoder output {z_channels} channels, codebook vectors {embed_dim}; renal-ldm's VQ first "
            "stage needs them equal"
        )
    return AutoencoderConfig(
        block_out_channels=tuple(channels),
        layers_per_block=layers,
        latent_channels=embed_dim,
        num_vq_embeddings=shape("quantize.embedding.weight")[0],
        norm_num_groups=LDM_GROUPS,
        mid_block_add_attention=prefix + "encoder.mid.attn_1.q.weight" in shapes,
    )
