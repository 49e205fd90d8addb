"""What a checkpoint holds, without building a model: kind, sizes, config, text encoder, fingerprints and parameter
counts per top-level module, for `renal-ldm inspect PATH`.

- A renal-ldm checkpoint directory: its manifest, and the safetensors headers of vae/, unet/ and text_encoder/
  (shapes only: no tensor is read). The fingerprint is recomputed from the weight files and compared with the
  manifest's.
- A latent-diffusion .ckpt (or .pt/.pth/.bin): read through ldm_format.load_source, so the same safety rules apply
  (weights_only, mmap: tensor data stays on disk); groups follow LDM's prefixes (model.diffusion_model,
  first_stage_model, cond_stage_model, model_ema) and the architecture facts that the shapes tell are listed.
- A .safetensors file: its header.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from renal_ldm.models.manifest import MANIFEST, is_checkpoint, read_manifest, recommended_guidance

WEIGHTS = "diffusion_pytorch_model.safetensors"  # checkpoint.WEIGHTS, without importing torch for it
TEXT_WEIGHTS = "model.safetensors"
FINGERPRINTED = ("vae", "unet")  # checkpoint.save_model hashes these weight files, in this order
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
LDM_GROUPS = ("model.diffusion_model", "model_ema", "first_stage_model", "cond_stage_model")


@dataclass
class ModuleSummary:
    """One top-level module (or LDM prefix): its tensors, values and bytes, and values per child module."""

    name: str
    tensors: int = 0
    parameters: int = 0
    bytes: int = 0
    dtypes: set[str] = field(default_factory=set)
    children: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, shape: tuple[int, ...], dtype: str, nbytes: int, child_depth: int = 1) -> None:
        count = 1
        for dim in shape:
            count *= int(dim)
        self.tensors += 1
        self.parameters += count
        self.bytes += nbytes
        self.dtypes.add(dtype)
        parts = key.split(".")
        if child_depth and len(parts) > child_depth:
            child = ".".join(parts[:child_depth])
            self.children[child] = self.children.get(child, 0) + count


@dataclass
class CheckpointSummary:
    path: Path
    format: str
    kind: str
    size_bytes: int
    facts: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    modules: list[ModuleSummary] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "facts": self.facts,
            "config": self.config,
            "modules": [
                {
                    "name": m.name,
                    "tensors": m.tensors,
                    "parameters": m.parameters,
                    "bytes": m.bytes,
                    "dtypes": sorted(m.dtypes),
                    "children": m.children,
                }
                for m in self.modules
            ],
            "parameters": sum(m.parameters for m in self.modules),
            "fingerprints": self.fingerprints,
        }


def inspect_checkpoint(path: str | Path) -> CheckpointSummary:
    """Describe a renal-ldm checkpoint directory, an LDM .ckpt, or a .safetensors file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"not found: {path}")
    if path.is_dir():
        if not is_checkpoint(path):
            raise ValueError(f"{path} is a directory without {MANIFEST}: not a renal-ldm checkpoint")
        return _inspect_directory(path)
    if path.suffix.lower() == ".safetensors":
        return _inspect_safetensors(path)
    return _inspect_torch(path)


# renal-ldm directories ------------------------------------------------------------------------------------------


def _inspect_directory(path: Path) -> CheckpointSummary:
    manifest = read_manifest(path)
    files = [p for p in path.rglob("*") if p.is_file()]
    summary = CheckpointSummary(
        path=path,
        format="renal-ldm checkpoint directory",
        kind=str(manifest["kind"]),
        size_bytes=sum(p.stat().st_size for p in files),
        config=manifest["config"],
    )
    facts = summary.facts
    facts["files"] = len(files)
    facts["renal-ldm version"] = manifest.get("renal_ldm_version")
    facts["created"] = manifest.get("created_at")
    config = manifest["config"]
    facts["config"] = config.get("name")
    facts["image size"] = f"{config.get('image_size')} px"
    facts["latent"] = _latent_shape(config)
    facts["text encoder"] = manifest.get("text_encoder")
    facts["context dim"] = manifest.get("context_dim")
    guidance = recommended_guidance(manifest)
    if guidance is not None:
        facts["recommended guidance"] = guidance
    extra = manifest.get("extra") or {}
    for key in ("step", "ema", "imported_from"):
        if extra.get(key) is not None:
            facts[key.replace("_", " ")] = extra[key]
    for name in ("vae", "unet"):
        weights = path / name / WEIGHTS
        if weights.is_file():
            summary.modules.append(_summarise_header(name, read_safetensors_header(weights)))
    text = path / "text_encoder" / TEXT_WEIGHTS
    if text.is_file():
        summary.modules.append(_summarise_header("text_encoder", read_safetensors_header(text)))
    stored = manifest.get("fingerprint")
    digest = hashlib.sha256()
    for name in FINGERPRINTED:
        weights = path / name / WEIGHTS
        if weights.is_file():
            _hash_file(weights, digest)
    actual = digest.hexdigest()[:16]
    summary.fingerprints["fingerprint"] = (
        f"{stored} ({'matches the weights' if stored == actual else f'weights hash to {actual}'})"
    )
    if manifest.get("data_fingerprint"):
        summary.fingerprints["data fingerprint"] = manifest["data_fingerprint"]
    return summary


def _latent_shape(config: dict[str, Any]) -> str:
    autoencoder = config.get("autoencoder") or {}
    levels = len(autoencoder.get("block_out_channels") or (0, 0, 0))
    factor = 2 ** (levels - 1)
    side = int(config.get("image_size") or 0) // factor
    return f"{side} x {side} x {autoencoder.get('latent_channels')} (factor {factor})"


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """name -> {"dtype", "shape", "data_offsets"} of a safetensors file, read from its JSON header alone."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if not 0 < size <= path.stat().st_size - 8:
            raise ValueError(f"{path} is not a safetensors file (header length {size})")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a safetensors file ({exc})") from None
    header.pop("__metadata__", None)
    return header


def _summarise_header(name: str, header: dict[str, dict[str, Any]]) -> ModuleSummary:
    module = ModuleSummary(name)
    for key, entry in header.items():
        start, end = entry["data_offsets"]
        module.add(key, tuple(entry["shape"]), entry["dtype"], end - start)
    return module


def _hash_file(path: Path, digest) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)


def _file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    _hash_file(path, digest)
    return digest.hexdigest()[:16]


# LDM checkpoints and safetensors files -------------------------------------------------------------------------


def _ldm_group(key: str) -> tuple[str, str]:
    """(group, name within it) of an LDM state_dict name; names without a module prefix are buffers."""
    for group in LDM_GROUPS:
        if key.startswith(group + "."):
            return group, key[len(group) + 1 :]
    if "." not in key:
        return "(buffers)", key
    head, rest = key.split(".", 1)
    return head, rest


def _summarise_tensors(entries: list[tuple[str, tuple[int, ...], str, int]]) -> list[ModuleSummary]:
    groups: dict[str, ModuleSummary] = {}
    for key, shape, dtype, nbytes in entries:
        group, rest = _ldm_group(key)
        depth = 2 if group == "cond_stage_model" else 1
        module = groups.setdefault(group, ModuleSummary(group))
        module.add(rest, shape, dtype, nbytes, child_depth=0 if group in ("model_ema", "(buffers)") else depth)
    return list(groups.values())


def _ldm_facts(shapes: dict[str, tuple[int, ...]]) -> tuple[str, dict[str, Any]]:
    """The kind of an LDM-layout state_dict and the architecture facts its shapes tell."""
    facts: dict[str, Any] = {}
    unet = "model.diffusion_model."
    has_unet = any(k.startswith(unet) for k in shapes)
    counters = ("model_ema.decay", "model_ema.num_updates")
    has_ema = sum(1 for k in shapes if k.startswith("model_ema.") and k not in counters)
    vae = "first_stage_model." if any(k.startswith("first_stage_model.") for k in shapes) else ""
    has_vae = vae + "quantize.embedding.weight" in shapes or vae + "encoder.conv_in.weight" in shapes
    if has_unet or has_ema:
        kind = "latent diffusion model (LDM layout)"
    elif has_vae:
        kind = "first stage / autoencoder (LDM layout)"
    else:
        kind = "tensors (no LDM UNet or first stage found)"
    conv_in = shapes.get(unet + "input_blocks.0.0.weight")
    if conv_in is not None:
        facts["unet base channels"] = conv_in[0]
        facts["unet latent channels"] = conv_in[1]
        blocks = {k.split(".")[3] for k in shapes if k.startswith(unet + "input_blocks.")}
        facts["unet input blocks"] = len(blocks)
    context = next((s for k, s in shapes.items() if k.startswith(unet) and k.endswith("attn2.to_k.weight")), None)
    if context is not None:
        facts["context dim"] = context[1]
    if has_ema:
        facts["EMA copy"] = f"{_count(has_ema, 'tensor')} (model_ema.*)"
    codebook = shapes.get(vae + "quantize.embedding.weight")
    if codebook is not None:
        facts["VQ codebook"] = f"{codebook[0]} x {codebook[1]}"
    conv = shapes.get(vae + "encoder.conv_in.weight")
    if conv is not None:
        down = vae + "encoder.down."
        levels = {k[len(down) :].split(".")[0] for k in shapes if k.startswith(down)}
        facts["first stage"] = f"ch {conv[0]}, {len(levels)} levels (factor {2 ** (len(levels) - 1)})"
    token = shapes.get("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight")
    if token is not None:
        prefix = "cond_stage_model.transformer.text_model.encoder.layers."
        layers = {k[len(prefix) :].split(".")[0] for k in shapes if k.startswith(prefix)}
        facts["text encoder"] = (
            f"CLIP text model: {token[1]} wide, {_count(len(layers), 'layer')}, vocabulary {token[0]}"
        )
    elif any(k.startswith("cond_stage_model.") for k in shapes):
        facts["text encoder"] = "weights present (not a CLIP text model)"
    else:
        facts["text encoder"] = "no weights (cond_stage_model.* absent)"
    return kind, facts


def _inspect_torch(path: Path) -> CheckpointSummary:
    from renal_ldm.models.ldm_format import load_source

    source = load_source(path)
    entries = [(k, source.shapes[k], str(source.dtypes[k]).removeprefix("torch."), 0) for k in source.keys()]
    entries = [(k, s, d, _nbytes(s, source.dtypes[k].itemsize)) for k, s, d, _ in entries]
    kind, facts = _ldm_facts(source.shapes)
    facts = {**{k: v for k, v in source.meta.items()}, **facts}
    summary = CheckpointSummary(
        path=path, format="PyTorch checkpoint", kind=kind, size_bytes=path.stat().st_size, facts=facts
    )
    summary.modules = _summarise_tensors(entries)
    summary.fingerprints["sha256"] = _file_fingerprint(path)
    return summary


def _inspect_safetensors(path: Path) -> CheckpointSummary:
    header = read_safetensors_header(path)
    shapes = {k: tuple(v["shape"]) for k, v in header.items()}
    ldm_layout = any(k.startswith(LDM_GROUPS) for k in shapes)
    kind, facts = _ldm_facts(shapes) if ldm_layout else ("tensors", {})
    summary = CheckpointSummary(
        path=path, format="safetensors file", kind=kind, size_bytes=path.stat().st_size, facts=facts
    )
    entries = [
        (k, tuple(v["shape"]), v["dtype"], v["data_offsets"][1] - v["data_offsets"][0]) for k, v in header.items()
    ]
    summary.modules = _summarise_tensors(entries)
    summary.fingerprints["sha256"] = _file_fingerprint(path)
    return summary


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _nbytes(shape: tuple[int, ...], itemsize: int) -> int:
    count = itemsize
    for dim in shape:
        count *= int(dim)
    return count


# Printing -------------------------------------------------------------------------------------------------------


def format_summary(summary: CheckpointSummary) -> str:
    """The plain-text report `renal-ldm inspect` prints."""
    lines = [
        f"path: {summary.path}",
        f"format: {summary.format}",
        f"kind: {summary.kind}",
        f"size: {_size(summary.size_bytes)}",
    ]
    lines += [f"{key}: {_value(value)}" for key, value in summary.facts.items()]
    if summary.config is not None:
        lines.append("model config:")
        lines += _config_lines(summary.config, "  ")
    lines += [f"{key}: {value}" for key, value in summary.fingerprints.items()]
    lines.append("parameters by module:")
    for module in summary.modules:
        held = f"{_count(module.tensors, 'tensor')}, {_size(module.bytes)}, {'/'.join(sorted(module.dtypes))}"
        lines.append(f"  {module.name}: {module.parameters:,} ({held})")
        lines += [f"    {child}: {count:,}" for child, count in module.children.items()]
    lines.append(f"total: {sum(m.parameters for m in summary.modules):,}")
    return "\n".join(lines)


def _config_lines(config: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for key, value in config.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines += _config_lines(value, indent + "  ")
        else:
            lines.append(f"{indent}{key}: {_value(value)}")
    return lines


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return str(tuple(value))
    return str(value)


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} B"
