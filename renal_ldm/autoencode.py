"""A patch data set as a model's autoencoder gives it back (encode, quantize, decode): the best any UNet of that
model can draw. The output is a data set of the same layout (the same names and masks), so every tool that reads
patches takes it: `realism` against the originals gives the autoencoder's ceiling, and a segmenter trained on
such copies beside the originals judges generated images as they really are (models/segmenter-phantom/README.md:
the shipped judge, trained so, reads autoencoded tissue at Dice 0.92 where one trained on sharp phantoms alone
reads 0.67).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from renal_ldm.data.layout import DatasetWriter
from renal_ldm.data.patches import PatchDataset
from renal_ldm.models.checkpoint import load_model
from renal_ldm.sample import to_uint8
from renal_ldm.training.autoencoder import reconstruct


@dataclass(frozen=True)
class AutoencodeReport:
    out: Path
    images: int
    psnr_db: float  # mean over images, pixels in [0, 1]
    seconds: float


def autoencode_dataset(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> AutoencodeReport:
    """Write every image of `data` (a folder with images/ + masks/, or a JSONL manifest) encoded, quantized and
    decoded by the autoencoder of `model_dir` (a latent diffusion model or an autoencoder-only checkpoint) to `out`
    as NAME.png, its mask unchanged; each record carries the image's PSNR. Everything that can be wrong with the
    input (sizes the autoencoder cannot take, two images of one name) is refused before anything is written.
    One image per call is the fastest on the 2-core CPU (256 px: 0.20 s per image, 0.29 s in calls of 8)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be an integer >= 1; got {batch_size}")
    started = time.perf_counter()
    dataset = PatchDataset(data, flips=False)
    with_masks = _with_masks(dataset, data)
    dataset.return_mask = with_masks
    writer = DatasetWriter(out, with_masks=with_masks, overwrite=overwrite)  # refuses an existing set now
    model = load_model(model_dir, device=device, require_unet=False)
    factor = model.config.autoencoder.downsampling_factor
    names = _output_names(dataset)
    sizes = [_size(record.image) for record in dataset.records]  # read once: checked here, batched below
    for record, (width, height) in zip(dataset.records, sizes, strict=True):
        if width % factor or height % factor:
            raise ValueError(
                f"{record.image}: {width}x{height} px; the autoencoder of {model_dir} takes sides that are multiples "
                f"of {factor} px (crop or tile the image first)"
            )
    vae = model.vae.eval().to(memory_format=torch.channels_last)  # oneDNN convolutions run faster in NHWC
    psnrs: list[float] = []
    with writer, torch.inference_mode():
        for batch in _same_size_batches(sizes, batch_size):
            items = [dataset[i] for i in batch]
            images = torch.stack([item["image"] for item in items]).to(device, memory_format=torch.channels_last)
            decoded = to_uint8(reconstruct(vae, images))
            for i, item, image in zip(batch, items, decoded, strict=True):
                original = ((item["image"].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255) / 255
                mse = float(np.mean((image.astype(np.float64) / 255 - original) ** 2))
                psnr = 10 * math.log10(1 / mse) if mse > 0 else math.inf
                psnrs.append(psnr)
                mask = item["mask"].numpy().astype(np.uint8) if with_masks else None
                writer.add(names[i], image, mask, psnr_db=round(psnr, 3))
            if progress is not None:
                progress(len(psnrs), len(dataset))
    return AutoencodeReport(Path(out), len(psnrs), float(np.mean(psnrs)), time.perf_counter() - started)


def _with_masks(dataset: PatchDataset, data) -> bool:
    with_masks = [r.mask is not None for r in dataset.records]
    if any(with_masks) and not all(with_masks):
        lacking = next(r.image for r in dataset.records if r.mask is None)
        raise ValueError(f"{data}: {lacking} has no mask but others have; expected all images with masks or none")
    return all(with_masks)


def _output_names(dataset: PatchDataset) -> list[str]:
    """NAME.png for each image (its file's stem); two images of one stem (a manifest over folders) are refused."""
    names, seen = [], {}
    for record in dataset.records:
        name = f"{record.image.stem}.png"
        if name in seen:
            raise ValueError(f"{seen[name]} and {record.image} would both be written as {name}; give them other names")
        seen[name] = record.image
        names.append(name)
    return names


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _same_size_batches(sizes: list[tuple[int, int]], batch_size: int):
    """Runs of consecutive indices of one image size, at most batch_size long (a data set's images may differ)."""
    batch: list[int] = []
    for i, size in enumerate(sizes):
        if batch and (size != sizes[batch[-1]] or len(batch) == batch_size):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch
