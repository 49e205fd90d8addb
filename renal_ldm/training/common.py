"""Pieces both training loops share: precision policy, deterministic data order, RNG state, metrics, run files.

Determinism: the order of the training items is a pure function of (seed, position in the stream), and any
randomness a data set draws inside __getitem__ from the global python / numpy / torch generators is seeded
from (seed, epoch, index) too. The loop's own randomness (flips, caption dropout, noise, timesteps) comes
from one torch.Generator per process whose state is checkpointed. So a resumed run sees exactly the batches
and noise an uninterrupted one would, even though accelerate's data loader fetches one batch ahead.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from renal_ldm.fsutil import recover_dir as recover_dir  # re-exported: the training loops import it from here
from renal_ldm.fsutil import replace_dir_atomically as replace_dir  # noqa: F401 - re-exported, as recover_dir
from renal_ldm.fsutil import write_file_atomically

FP16_REFUSED = (
    "--mixed-precision fp16 is refused: in the reference study fp16 autocast let gradients underflow to zero, "
    "so part of the weights never trained. Train in fp32 (--mixed-precision no, the default) or, on a CUDA "
    "GPU, in bf16 (--mixed-precision bf16)"
)
PRECISIONS = ("no", "bf16")


class TrainingDiverged(RuntimeError):
    """The loss (or the gradient norm) became NaN/inf; the last good checkpoint was kept."""


def check_mixed_precision(
    mixed_precision: str | None, *, cuda_available: bool | None = None, cpu_bf16: bool | None = None
) -> str:
    """ "no" (fp32, the default) or "bf16" (autocast; on a CUDA GPU, or on a CPU with native bf16 such as
    avx512_bf16 / AMX); fp16 and anything else is a ValueError that says why."""
    value = (mixed_precision or "no").strip().lower()
    if value in ("no", "fp32", "none"):
        return "no"
    if value == "fp16":
        raise ValueError(FP16_REFUSED)
    if value == "bf16":
        if cuda_available is None:
            cuda_available = torch.cuda.is_available()
        if cpu_bf16 is None:
            cpu_bf16 = cpu_has_native_bf16()
        if not (cuda_available or cpu_bf16):
            raise ValueError(
                "--mixed-precision bf16 needs a CUDA GPU or a CPU with native bf16 (avx512_bf16 or AMX) and this "
                "machine has neither; train in fp32 (--mixed-precision no, the default)"
            )
        return "bf16"
    raise ValueError(f"unknown mixed precision {mixed_precision!r}; expected one of {', '.join(PRECISIONS)}")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (emulated bf16 is slower than fp32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class StreamSampler(Sampler[int]):
    """Endless stream of keys epoch * n + index: each epoch a fresh permutation seeded by (seed, epoch).

    `start` skips that many items of the stream (the samples consumed before a resume, over all processes).
    It deliberately has no set_epoch(): accelerate would reset it to 0 on every new iterator.
    """

    def __init__(self, n: int, seed: int, start: int = 0, shuffle: bool = True) -> None:
        if n < 1:
            raise ValueError("the training data set is empty")
        self.n = n
        self.seed = seed
        self.start = start
        self.shuffle = shuffle

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(derive_seed(self.seed, 0x5A3, epoch))
        return torch.randperm(self.n, generator=g)

    def __iter__(self) -> Iterator[int]:
        epoch, offset = divmod(self.start, self.n)
        while True:
            order = self.order(epoch)
            for index in order[offset:].tolist():
                yield epoch * self.n + index
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # accelerate and DataLoader only need a large number here
        return 2**62


class SeededItems(Dataset):
    """Wraps a data set so item `epoch * n + index` is dataset[index] with its random draws seeded per item."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        self.seed = seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int) -> dict[str, Any]:
        epoch, index = divmod(int(key), self.n)
        item_seed = derive_seed(self.seed, 0xD47A, epoch, index)
        py_state = random.getstate()
        np_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(item_seed)
            np.random.seed(item_seed % 2**32)
            torch.manual_seed(item_seed)
            try:
                item = self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack images (float32 CHW in [-1, 1]) and list captions; other keys are ignored."""
    images = []
    for item in items:
        if not isinstance(item, dict) or "image" not in item or "caption" not in item:
            raise ValueError("training items must be dicts with 'image' (3xHxW in [-1, 1]) and 'caption' (str)")
        image = torch.as_tensor(item["image"], dtype=torch.float32)
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"training images must be float tensors of shape (3, H, W); got {tuple(image.shape)}")
        images.append(image)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"training images in one batch have different shapes {sorted(shapes)}; crop them to one size")
    return {"image": torch.stack(images), "caption": [str(item["caption"]) for item in items]}


def stream_loader(dataset: Dataset, *, seed: int, batch_size: int, num_workers: int, start: int = 0) -> DataLoader:
    """The training batches of a run: a seeded endless stream from position `start` (so resume is exact)."""
    return DataLoader(
        SeededItems(dataset, seed),
        batch_size=batch_size,
        sampler=StreamSampler(len(dataset), seed, start=start),  # type: ignore[arg-type]
        collate_fn=collate,
        num_workers=num_workers,
        drop_last=True,
    )


def encode_interior(vae, images: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """The VQ encoder's latents (before quantization) of images, each encoded inside `margin` px of its own mirror
    image and the latent cropped back to the image's cells.

    Why: the encoder pads with zeros, so the outermost latent cells of a plain encoding are unlike all the others
    (the demo autoencoder's differ from a mirrored encoding's by a third of the latents' spread, its interior cells
    by 3%), so a UNet trained on them has a special border ring to learn. With a margin every cell is an interior
    cell, as in a tile cut from a larger slide. (It was the suspect for the demo model's frame; fine-tuning on such
    latents did not remove the frame: models/demo/README.md.)
    """
    if margin == 0:
        return vae.encode(images).latents
    padded = torch.nn.functional.pad(images, (margin,) * 4, mode="reflect")
    latents = vae.encode(padded).latents
    cells = margin * latents.shape[-1] // padded.shape[-1]  # the margin in latent cells, from the encoder's factor
    return latents[..., cells:-cells, cells:-cells]


def check_encode_margin(margin: int, size: int, factor: int) -> None:
    """Refuse, naming the value, a margin encode_interior cannot use on images of this size."""
    if margin < 0 or margin % factor or margin >= size:
        raise ValueError(
            f"encode margin {margin} px: expected 0, or a multiple of the autoencoder's factor {factor} smaller than "
            f"the image size {size}"
        )


def check_image_size(size: int, multiple: int, what: str) -> None:
    if size % multiple:
        raise ValueError(f"{what}: image size {size} is not a multiple of {multiple}")


def first_image_size(dataset: Dataset) -> int:
    item = dataset[0]
    image = torch.as_tensor(item["image"])
    if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
        raise ValueError(f"training images must be square (3, H, H) tensors; got {tuple(image.shape)}")
    return int(image.shape[-1])


def random_flips(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Horizontal and vertical flips, each with p = 0.5 per image, drawn from `generator`."""
    b = images.shape[0]
    h = (torch.rand(b, generator=generator) < 0.5).to(images.device).view(b, 1, 1, 1)
    v = (torch.rand(b, generator=generator) < 0.5).to(images.device).view(b, 1, 1, 1)
    images = torch.where(h, images.flip(-1), images)
    return torch.where(v, images.flip(-2), images)


# ---- RNG state -------------------------------------------------------------------------------------------


def capture_rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) global states plus the loop's generator, as torch.load-safe values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


# ---- files -----------------------------------------------------------------------------------------------


class MetricsLog:
    """metrics.jsonl, one JSON object per line, flushed per line; truncate_after() drops steps to be redone."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._file = None

    def reset(self) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in read_jsonl(self.path) if int(line.get("step", 0)) <= step]
        self.path.write_text("".join(json.dumps(line) + "\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a")
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    lines = []
    for raw in Path(path).read_text().splitlines():
        raw = raw.strip()
        if raw:
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                break  # a torn last line from a crash; everything before it is good
    return lines


def write_json(path: Path, data: dict[str, Any]) -> None:
    """`data` as indented JSON, replaced in one step (a crash never leaves half a run.json)."""
    write_file_atomically(path, json.dumps(data, indent=2, default=str) + "\n")
