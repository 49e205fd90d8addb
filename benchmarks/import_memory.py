"""Peak memory of `renal-ldm import-ldm` on a reference-size latent-diffusion checkpoint (random weights).

Builds a model of the `pathldm` configuration (UNet 192 x (1, 2, 3, 5), VQ-f4 with 8192 codes) and, by default, a
PLIP-size CLIP text model (512 wide, 12 layers), writes them as an LDM .ckpt + YAML with export_ldm, then converts
the .ckpt back in a child process. The child's peak RSS is printed next to the checkpoint's size and next to a
baseline child that only imports the conversion stack; the target is a peak below 2.5 x the checkpoint (the
converter holds the checkpoint once: tensors are mmap'd and moved into meta-device modules, not copied).

    .venv/bin/python benchmarks/import_memory.py [--config pathldm|tiny] [--no-text] [--ema] [--workdir DIR]

`--config tiny` is a seconds-long smoke run at small widths (its ratio is dominated by the interpreter).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 2.5
CHILD = """
import os, sys, time
import torch
torch.set_num_threads(1)
from renal_ldm.models.ldm_import import import_ldm
import transformers.models.clip.modeling_clip  # what a text-carrying import loads, so the baseline has it too
mode, ckpt, config, out = sys.argv[1:5]
settled = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024
t = time.perf_counter()
if mode == "import":
    import_ldm(ckpt, config, out, force=True)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent, which holds the model
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(time.perf_counter() - t, settled, peak)
"""


def configs():
    from renal_ldm.models.configs import MODEL_CONFIGS

    reference = MODEL_CONFIGS["pathldm"]
    tiny = dataclasses.replace(
        reference,
        name="tiny-32-groups",
        image_size=64,
        autoencoder=dataclasses.replace(reference.autoencoder, block_out_channels=(32, 64, 64), num_vq_embeddings=256),
        unet=dataclasses.replace(reference.unet, base_channels=32),
    )
    return {"pathldm": (reference, 512, 12, 2048), "tiny": (tiny, 64, 2, 128)}  # (config, text width, layers, mlp)


def write_checkpoint(workdir: Path, name: str, text: bool, ema: bool) -> tuple[Path, Path]:
    """A random model of the named config as an LDM .ckpt + YAML (and, with text, a PLIP-size CLIP text model)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from renal_ldm.models.build import build_noise_scheduler, build_unet, build_vae
    from renal_ldm.models.checkpoint import LatentDiffusionModel
    from renal_ldm.models.ldm_export import export_ldm
    from renal_ldm.models.ldm_format import UNET_PREFIX, ema_name

    config, width, layers, mlp = configs()[name]
    torch.manual_seed(0)
    spec = "minilm"
    if text:
        clip = CLIPTextConfig(
            hidden_size=width, num_hidden_layers=layers, num_attention_heads=width // 64, intermediate_size=mlp
        )
        CLIPTextModel(clip).save_pretrained(workdir / "plip")
        spec = f"plip:{workdir / 'plip'}"
    model = LatentDiffusionModel(
        config=config,
        vae=build_vae(config),
        unet=build_unet(config, width if text else 384),
        noise_scheduler=build_noise_scheduler(config),
        text_encoder=spec,
        context_dim=width if text else 384,
    )
    ckpt, yaml = workdir / "model.ckpt", workdir / "model.yaml"
    export_ldm(model, ckpt, yaml, force=True)
    if ema:  # LitEma's copy of every UNet parameter, as LDM's use_ema writes it
        payload = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        state = payload["state_dict"]
        ema = {ema_name(k[len(UNET_PREFIX) :]): v.clone() for k, v in state.items() if k.startswith(UNET_PREFIX)}
        state.update(ema)  # copies, as LitEma holds them: shared storage would be saved once
        torch.save(payload, ckpt.with_suffix(".tmp"))  # not over the mmap'd file itself
        os.replace(ckpt.with_suffix(".tmp"), ckpt)
    return ckpt, yaml


def child(mode: str, ckpt: Path, yaml: Path, out: Path) -> tuple[float, float, float]:
    """(seconds, RSS after the imports, peak RSS) of a child that converts (mode "import") or only imports."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(ckpt), str(yaml), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} child failed:\n{done.stderr}")
    seconds, settled_kb, peak_kb = done.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(settled_kb) / 1024, float(peak_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pathldm", choices=["pathldm", "tiny"], help="model size (default pathldm)")
    parser.add_argument("--no-text", action="store_true", help="no CLIP text weights in the checkpoint (MiniLM spec)")
    parser.add_argument("--ema", action="store_true", help="also store an EMA copy of the UNet, as use_ema does")
    parser.add_argument("--workdir", type=Path, help="where to write the checkpoints (default: a temp dir, removed)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="import-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        ckpt, yaml = write_checkpoint(workdir, args.config, not args.no_text, args.ema)
        size_mb = ckpt.stat().st_size / 2**20
        print(f"wrote {ckpt} ({size_mb:.0f} MiB, config {args.config}) in {time.perf_counter() - t:.1f} s")
        _, _, baseline = child("baseline", ckpt, yaml, workdir / "out")
        seconds, settled, peak = child("import", ckpt, yaml, workdir / "out")
        print(f"baseline child (imports only): peak RSS {baseline:.0f} MiB")
        print(f"import-ldm child: {settled:.0f} MiB after the imports, peak RSS {peak:.0f} MiB, {seconds:.1f} s")
        ratio, above = peak / size_mb, (peak - settled) / size_mb
        verdict = "within" if ratio < TARGET_RATIO else "over"
        print(
            f"peak / checkpoint size: {ratio:.2f} x ({verdict} the {TARGET_RATIO} x target); "
            f"the conversion's own share (peak minus RSS after the imports): {above:.2f} x"
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
