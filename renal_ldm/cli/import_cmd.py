"""`renal-ldm import-ldm`, `import-vae`, `export-ldm` and `inspect`: checkpoints in and out of latent-diffusion's
layout (CompVis/latent-diffusion, PathLDM), and what a checkpoint holds. Thin wrappers over
renal_ldm.models.ldm_import, ldm_export and inspect."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-ldm",
        help="convert a latent-diffusion (CompVis, PathLDM) .ckpt and its YAML into a model directory",
        description="UNet (model.diffusion_model, or the EMA copy with --ema), VQ first stage and noise schedule "
        "become a renal-ldm checkpoint directory that `sample` and the app use; every source tensor is "
        "converted or reported.",
    )
    p.add_argument("--ckpt", required=True, help="latent-diffusion checkpoint (.ckpt, .pt, .safetensors)")
    p.add_argument("--config", required=True, help="its YAML (model.params with unet_config, first_stage_config)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument(
        "--text-encoder",
        help="plip:DIR (a local PLIP copy: its tokenizer, and its weights when the ckpt has none) or minilm; "
        "required when the ckpt holds no CLIP text weights",
    )
    p.add_argument("--ema", action="store_true", help="import the EMA weights (model_ema.*) instead of the UNet's")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run_import_ldm)

    p = subparsers.add_parser(
        "import-vae",
        help="convert a latent-diffusion VQ first stage into an autoencoder directory (for `train --vae`)",
        description="Reads the first stage of a full LDM checkpoint (first_stage_model.*) or of a first-stage "
        "training checkpoint (encoder.*, decoder.*, quantize.*); without --config the architecture is read "
        "from the tensor shapes.",
    )
    p.add_argument("--ckpt", required=True, help="checkpoint holding the first stage")
    p.add_argument("--config", help="YAML: a full LDM config or an autoencoder config (optional)")
    p.add_argument("--out", required=True, help="output autoencoder directory")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run_import_vae)

    p = subparsers.add_parser(
        "export-ldm",
        help="write a model directory as a latent-diffusion .ckpt and YAML the original code reads",
    )
    p.add_argument("--model", required=True, help="renal-ldm model directory")
    p.add_argument("--out", required=True, help="output .ckpt ({'state_dict': ...})")
    p.add_argument("--config", required=True, help="output YAML (latent-diffusion's model config)")
    p.add_argument("--force", action="store_true", help="replace the output files if they exist")
    p.set_defaults(func=run_export_ldm)

    p = subparsers.add_parser(
        "inspect",
        help="what a checkpoint holds: kind, sizes, config, text encoder, fingerprints, parameters per module",
    )
    p.add_argument("path", help="a renal-ldm model directory, a latent-diffusion .ckpt, or a .safetensors file")
    p.add_argument("--json", action="store_true", help="print JSON instead of plain lines")
    p.set_defaults(func=run_inspect)


def run_import_ldm(args: argparse.Namespace) -> int:
    from renal_ldm.models.ldm_import import import_ldm

    report = import_ldm(
        args.ckpt, args.config, args.out, text_encoder=args.text_encoder, ema=args.ema, force=args.force
    )
    print("\n".join(report.lines()))
    return 0


def run_import_vae(args: argparse.Namespace) -> int:
    from renal_ldm.models.ldm_import import import_vae

    report = import_vae(args.ckpt, args.config, args.out, force=args.force)
    print("\n".join(report.lines()))
    return 0


def run_export_ldm(args: argparse.Namespace) -> int:
    from renal_ldm.models.ldm_export import export_ldm

    report = export_ldm(args.model, args.out, args.config, force=args.force)
    print("\n".join(report.lines()))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from renal_ldm.models.inspect import format_summary, inspect_checkpoint

    summary = inspect_checkpoint(args.path)
    print(json.dumps(summary.to_dict(), indent=2, default=str) if args.json else format_summary(summary))
    return 0
