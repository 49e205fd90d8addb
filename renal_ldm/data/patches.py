"""Patch data sets the model trains on: a folder of images/ + masks/, or a JSONL manifest, as a torch Dataset.

Captions are derived from masks exactly once per mask version (cache keyed by file name, mtime and size, kept in
`.captions-cache.jsonl` beside the data and in memory), because reading every mask on every run is the slow
part of opening a large data set. Images come out in [-1, 1] with the study's random h/v flips (p = 0.5).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset, get_worker_info

from renal_ldm.captions import mask_to_caption
from renal_ldm.data.layout import (
    CACHE_FILE,
    CAPTIONS_FILE,
    IMAGE_SUFFIXES,
    IMAGES_DIR,
    MASKS_DIR,
    image_path,
    mask_path,
)
from renal_ldm.data.masks import load_mask
from renal_ldm.data.slide_reader import to_rgb

MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".gif")
_RGB_MODES = ("RGB", "RGBA", "P")
_MEMORY_CACHE: dict[tuple[str, str, str], dict] = {}


@dataclass(frozen=True)
class PatchRecord:
    """One training example; `name` (image path relative to the data set root) identifies it in splits."""

    name: str
    image: Path
    mask: Path | None
    caption: str


class PatchDataset(Dataset):
    """Patches from a folder (images/ + masks/, same stems) or a JSONL manifest, with captions from masks.

    Items are dict(image=float32 (3, H, W) in [-1, 1], caption=str, name=str[, mask=int64 (H, W)]).
    Flips use `generator` when given (single process); inside DataLoader workers they use the worker's torch
    RNG, which DataLoader seeds per worker (seed it with DataLoader(generator=...)).
    `masks_read` counts the masks decoded to build captions at construction (0 when all were cached).
    """

    def __init__(
        self,
        source: str | Path,
        *,
        binary_class: str | None = None,
        zero_is_background: bool = False,
        flips: bool = True,
        return_mask: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        source = Path(source)
        self.mask_options = dict(binary_class=binary_class, zero_is_background=zero_is_background)
        self.flips, self.return_mask, self.generator = flips, return_mask, generator
        if source.is_dir():
            self.root = source
            pairs = _folder_pairs(source)
        elif source.is_file():
            self.root = source.parent
            pairs = _manifest_pairs(source)
        else:
            raise FileNotFoundError(
                f"data set not found: {source}; expected a folder with {IMAGES_DIR}/ and {MASKS_DIR}/ "
                "or a .jsonl manifest"
            )
        cache = _CaptionCache(self.root, self.mask_options)
        self.records: list[PatchRecord] = [cache.record(self.root, *pair) for pair in pairs]
        cache.save()
        self.masks_read = cache.masks_read

    @property
    def captions(self) -> list[str]:
        return [r.caption for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        rec = self.records[index]
        rgb = read_rgb(rec.image)
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        item = {"image": image, "caption": rec.caption, "name": rec.name}
        if self.return_mask:
            if rec.mask is None:
                raise ValueError(f"{rec.image}: no mask in the data set for this image, but return_mask=True")
            labels = load_mask(rec.mask, **self.mask_options)
            _check_same_size(rec.image, rgb.shape[1::-1], rec.mask, labels.shape[::-1])
            item["mask"] = torch.from_numpy(labels.astype(np.int64))
        if self.flips:
            generator = self.generator if get_worker_info() is None else None
            horizontal, vertical = (torch.rand(2, generator=generator) < 0.5).tolist()
            dims = [d for d, on in ((-1, horizontal), (-2, vertical)) if on]
            if dims:
                item["image"] = torch.flip(item["image"], dims)
                if "mask" in item:
                    item["mask"] = torch.flip(item["mask"], dims)
        return item


def data_fingerprint(dataset: PatchDataset | Subset) -> str:
    """sha256 (hex) over sorted names, file sizes and captions: cheap, and changes when the training data does."""
    digest = hashlib.sha256()
    for rec in sorted(_records_of(dataset), key=lambda r: r.name):
        mask_bytes = rec.mask.stat().st_size if rec.mask is not None else -1
        digest.update(json.dumps([rec.name, rec.image.stat().st_size, mask_bytes, rec.caption]).encode())
    return digest.hexdigest()


def split_dataset(dataset: PatchDataset, held_out: float | int = 0.1, *, seed: int = 0) -> tuple[Subset, Subset]:
    """(train, held-out) subsets; the held-out set is fixed by `seed` and the patch names, not by listing order.

    held_out: a fraction in [0, 1) or a count. Each patch's rank is sha256(seed, name), so adding patches later
    moves few existing patches between the two sets.
    """
    n = len(dataset)
    if isinstance(held_out, float) and not isinstance(held_out, bool):
        if not 0.0 <= held_out < 1.0:
            raise ValueError(f"held_out fraction must be in [0, 1); got {held_out}")
        count = round(n * held_out)
        if held_out > 0 and n >= 2:
            count = min(max(count, 1), n - 1)
    else:
        count = int(held_out)
        if not 0 <= count < max(n, 1):
            raise ValueError(f"held_out count must be 0..{max(n - 1, 0)} for {n} patches; got {held_out}")
    names = [r.name for r in dataset.records]
    ranked = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{names[i]}".encode()).hexdigest())
    held = sorted(ranked[:count])
    held_set = set(held)
    return Subset(dataset, [i for i in range(n) if i not in held_set]), Subset(dataset, held)


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of an image file; alpha composited over white; non-RGB images refused."""
    try:
        with Image.open(path) as img:
            if img.mode not in _RGB_MODES:
                raise ValueError(f"{path}: image mode {img.mode!r}; expected an RGB image (8-bit colour)")
            return to_rgb(np.asarray(img.convert("RGBA") if img.mode == "P" else img))
    except (UnidentifiedImageError, OSError) as exc:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _read_rgb_tiff(path)
        raise ValueError(f"{path}: not a readable image ({exc}); expected a PNG, TIFF or JPEG RGB image") from None


def _read_rgb_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        arr = tifffile.imread(str(path))
    except Exception as exc:  # tifffile raises many kinds for a broken file
        raise ValueError(f"{path}: not a readable image ({exc}); expected a PNG, TIFF or JPEG RGB image") from None
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"{path}: image of shape {arr.shape}; expected an RGB image (H, W, 3)")
    return to_rgb(arr)


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header alone, after checking the image is readable RGB."""
    try:
        with Image.open(path) as img:
            if img.mode not in _RGB_MODES:
                raise ValueError(f"{path}: image mode {img.mode!r}; expected an RGB image (8-bit colour)")
            return img.size
    except (UnidentifiedImageError, OSError):
        arr = read_rgb(path)  # TIFFs PIL cannot parse; raises the clear error otherwise
        return arr.shape[1], arr.shape[0]


def _check_same_size(image: Path, image_size, mask: Path, mask_size) -> None:
    if tuple(image_size) != tuple(mask_size):
        (iw, ih), (mw, mh) = image_size, mask_size
        raise ValueError(f"{mask}: mask is {mw}x{mh} but its image {image.name} is {iw}x{ih}; expected the same size")


def _files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


def _folder_pairs(root: Path) -> list[tuple[Path, Path | None, str | None]]:
    expected = f"expected {root}/{IMAGES_DIR} and {root}/{MASKS_DIR} with matching file stems"
    images_dir, masks_dir = root / IMAGES_DIR, root / MASKS_DIR
    if not images_dir.is_dir():
        raise FileNotFoundError(f"no {IMAGES_DIR}/ folder in {root}; {expected}, or a JSONL manifest")
    if not masks_dir.is_dir():
        hint = f" (or pass the manifest {root / CAPTIONS_FILE})" if (root / CAPTIONS_FILE).is_file() else ""
        raise FileNotFoundError(f"no {MASKS_DIR}/ folder in {root}; {expected}{hint}")
    images = _files(images_dir, IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"no images in {images_dir}; expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    masks: dict[str, Path] = {}
    for m in _files(masks_dir, MASK_SUFFIXES):
        if m.stem in masks:
            raise ValueError(f"two masks for stem {m.stem!r}: {masks[m.stem].name} and {m.name}; keep one")
        masks[m.stem] = m
    missing = [p for p in images if p.stem not in masks]
    if missing:
        raise ValueError(
            f"{missing[0]}: no mask for this image ({len(missing)} of {len(images)} images lack one); expected "
            f"{masks_dir / missing[0].stem}{{{','.join(MASK_SUFFIXES)}}}"
        )
    return [(p, masks[p.stem], None) for p in images]


def _manifest_pairs(manifest: Path) -> list[tuple[Path, Path | None, str | None]]:
    root = manifest.parent
    pairs = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{manifest}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON ({exc.msg}); expected one object per line") from None
        if not isinstance(row, dict):
            raise ValueError(f'{where}: expected a JSON object with "image" and "mask" or "caption"')
        for key in ("image", "mask", "file"):
            if row.get(key) is not None and not isinstance(row[key], str):
                raise ValueError(f'{where}: "{key}" must be a file path (a string); got {row[key]!r}')
        if "image" in row:
            image = root / row["image"]
            mask = root / row["mask"] if row.get("mask") else None
        elif "file" in row:  # captions.jsonl beside images/ and masks/ (data.layout: phantom generator, tiler)
            image = image_path(root, row["file"])
            mask = mask_path(root, row["file"])
            mask = mask if mask.is_file() else None
        else:
            raise ValueError(f'{where}: no "image" (or "file") key; expected "image" and "mask" or "caption"')
        caption = row.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise ValueError(f'{where}: "caption" must be a string; got {type(caption).__name__}')
        if caption is None and mask is None:
            raise ValueError(f'{where}: neither "mask" nor "caption"; expected at least one')
        for path, what in ((image, "image"), (mask, "mask")):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"{where}: {what} file not found: {path}")
        pairs.append((image, mask, caption))
    if not pairs:
        raise ValueError(f"{manifest}: the manifest lists no patches")
    return pairs


def _records_of(dataset) -> list[PatchRecord]:
    if isinstance(dataset, Subset):
        return [_records_of(dataset.dataset)[i] for i in dataset.indices]
    return list(dataset.records)


def _stat(path: Path | None) -> list[int]:
    if path is None:
        return []
    st = path.stat()
    return [st.st_mtime_ns, st.st_size]


class _CaptionCache:
    """Caption and image size per (image, mask) version; a stale or missing entry is recomputed once."""

    def __init__(self, root: Path, options: dict) -> None:
        self.path = root / CACHE_FILE
        self.options = json.dumps(options, sort_keys=True)
        self.masks_read = 0
        self.changed = False
        self.disk: dict[tuple[str, str, str], dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    e = json.loads(line)
                    self.disk[(e["image"], e["mask"], e["options"])] = e
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a damaged cache line only costs a recomputation

    def record(self, root: Path, image: Path, mask: Path | None, caption: str | None) -> PatchRecord:
        name = _relative(image, root)
        key = (name, "" if mask is None else _relative(mask, root), self.options)
        stats = [_stat(image), _stat(mask), caption]
        memory_key = (str(image.resolve()), "" if mask is None else str(mask.resolve()), self.options)
        entry = _MEMORY_CACHE.get(memory_key) or self.disk.get(key)
        if entry is None or entry["stats"] != stats:
            entry = self._compute(key, stats, image, mask, caption)
        _MEMORY_CACHE[memory_key] = entry
        if self.disk.get(key) != entry:
            self.disk[key] = entry
            self.changed = True
        return PatchRecord(name=name, image=image, mask=mask, caption=entry["caption"])

    def _compute(self, key, stats, image: Path, mask: Path | None, caption: str | None) -> dict:
        size = _image_size(image)
        if caption is None:
            labels = load_mask(mask, **json.loads(self.options))
            self.masks_read += 1
            _check_same_size(image, size, mask, labels.shape[::-1])
            caption = mask_to_caption(labels)
        return {
            "image": key[0],
            "mask": key[1],
            "options": key[2],
            "stats": stats,
            "size": list(size),
            "caption": caption,
        }

    def save(self) -> None:
        if not self.changed:
            return
        tmp = self.path.with_name(f"{CACHE_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_text("".join(json.dumps(e) + "\n" for e in self.disk.values()), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:  # a read-only data set: the in-memory cache still serves this process
            tmp.unlink(missing_ok=True)


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)
