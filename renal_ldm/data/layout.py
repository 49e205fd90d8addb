"""The patch data-set folder format: the one place that knows its names, its records and how a set is replaced.

    DATASET/
      images/NAME.png         RGB patch (uint8)
      masks/NAME.png          its label mask: mode L, values 0..7, same size; absent in an image-only set
      captions.jsonl          one record per pair, in writing order:
                              {"file": NAME.png, "caption": ..., "fractions": {class: fraction}, ...extras}
      phantom.json            how the phantom generator made the set (only that writer writes it)
      .captions-cache.jsonl   PatchDataset's cache of captions derived from masks

The phantom generator and the slide tiler write through `DatasetWriter`; `PatchDataset` reads through the
names here. Guarantees (tests/renal_ldm/test_layout.py):

- Refuse: a folder holding any of the entries above already holds a data set and is refused unless the
  writer is asked to overwrite (or to append). Files that are not the data set's are never touched, so a set
  may be written into a folder that holds other files.
- Overwrite replaces only the data set's own entries. The old ones are set aside, not deleted, until the new
  set is complete; a run that fails half-way puts them back exactly. A failed run into a fresh folder leaves
  no entry behind, and a failed append removes only the pairs it wrote.
- captions.jsonl is whole or absent: records go to a file beside it, renamed into place when the run ends.
- Records round-trip: `read_captions` returns what the writer wrote, in order; a record's caption and
  fractions are those of its mask (`captions.mask_to_caption`, `captions.mask_fractions`, 6 decimals).
- `PatchDataset` reads a written set, as a folder or through its captions.jsonl.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from renal_ldm.captions import LEVELS, level_for_fraction, mask_fractions, mask_to_caption
from renal_ldm.classes import CAPTIONED_CLASSES, by_id
from renal_ldm.fsutil import write_file_atomically

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
"""Image files the library reads as patches or samples (data sets, folders to segment, stitch or judge)."""

IMAGES_DIR = "images"
MASKS_DIR = "masks"
CAPTIONS_FILE = "captions.jsonl"
CACHE_FILE = ".captions-cache.jsonl"
PARAMETERS_FILE = "phantom.json"
DATASET_ENTRIES = (IMAGES_DIR, MASKS_DIR, CAPTIONS_FILE, PARAMETERS_FILE, CACHE_FILE)
"""A data set's own entries: any of them in a folder means it holds a data set; overwrite replaces these only."""
RECORD_KEYS = ("file", "caption", "fractions")
"""What every captions.jsonl record holds; a writer may add fields of its own (the tiler: x, y, level, ...)."""
IMAGE_PNG_LEVEL = 1
"""zlib level for patch PNGs: on real PAS patches 40% faster to write than the default 6, files 10% larger."""
MASK_PNG_LEVEL = 6
"""zlib level for mask PNGs: few labels compress fast even at the default level, and small."""


def image_path(root: str | Path, name: str) -> Path:
    """Where the image of pair `name` lies in the data set at `root`."""
    return Path(root) / IMAGES_DIR / name


def mask_path(root: str | Path, name: str) -> Path:
    """Where the mask of pair `name` lies in the data set at `root`."""
    return Path(root) / MASKS_DIR / name


# ----------------------------------------------------------------------------------------------- records


def pair_record(name: str, mask: np.ndarray, **extra) -> dict:
    """The captions.jsonl record of one pair: its file name, the caption and class fractions of its mask, extras."""
    clash = sorted(set(extra) & set(RECORD_KEYS))
    if clash:
        raise ValueError(
            f"extra record fields {clash} would hide the record's own; expected names other than "
            f"{', '.join(RECORD_KEYS)}"
        )
    fractions = {by_id(k).name: float(round(v, 6)) for k, v in mask_fractions(mask).items()}
    return {"file": name, "caption": mask_to_caption(mask), "fractions": fractions, **extra}


def read_captions(path: str | Path) -> list[dict]:
    """The records of a captions.jsonl file (or of the data set folder holding one), in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / CAPTIONS_FILE
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def level_counts(records: Iterable[dict]) -> dict[str, dict[str, int]]:
    """Class name -> level -> number of records whose caption fractions fall at that level (coverage check)."""
    counts = {c.name: {level: 0 for level in LEVELS} for c in CAPTIONED_CLASSES}
    for record in records:
        for name, fraction in record["fractions"].items():
            if name in counts and fraction > 0:
                counts[name][level_for_fraction(fraction)] += 1
    return counts


# ------------------------------------------------------------------------------------------------ writing


def write_pair(root: str | Path, name: str, image: np.ndarray, mask: np.ndarray | None = None, **extra) -> dict | None:
    """Write images/NAME (RGB) and, with a mask, masks/NAME (mode L); the pair's record, None without a mask.

    All or nothing, and never over an existing file (FileExistsError). It touches only this pair's files, so
    worker processes may call it for a `DatasetWriter` in the parent, which then takes the records.
    """
    root = Path(root)
    if not name.endswith(".png") or Path(name).name != name:
        raise ValueError(f"pair file name {name!r} must be a plain file name ending in .png")
    rgb = np.asarray(image)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{name}: image of shape {rgb.shape} and dtype {rgb.dtype}; expected uint8 (H, W, 3) RGB")
    record = labels = None
    if mask is not None:
        record = pair_record(name, mask, **extra)  # checks the labels (0..7) before any file is written
        labels = np.asarray(mask).astype(np.uint8, copy=False)
        if labels.shape != rgb.shape[:2]:
            raise ValueError(f"{name}: mask of shape {labels.shape} for an image of {rgb.shape[:2]}; expected the same")
    written: list[Path] = []
    try:
        _save_png(image_path(root, name), rgb, IMAGE_PNG_LEVEL, written)
        if labels is not None:
            _save_png(mask_path(root, name), labels, MASK_PNG_LEVEL, written)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return record


def _save_png(path: Path, pixels: np.ndarray, level: int, written: list[Path]) -> None:
    try:
        fh = path.open("xb")  # exclusive: a pair already in the data set is never replaced
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; a data set never replaces a pair it holds") from None
    written.append(path)
    with fh:
        Image.fromarray(pixels).save(fh, format="PNG", compress_level=level)


def existing_entries(root: str | Path) -> list[str]:
    """The data set entries present in `root` (dirs with a trailing /); empty when it holds no data set."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"output path {root} exists and is not a folder; expected a folder for the data set")
    if not root.is_dir():
        return []
    return [
        name + ("/" if (root / name).is_dir() else "")
        for name in DATASET_ENTRIES
        if (root / name).exists() or (root / name).is_symlink()
    ]


def check_output(
    root: str | Path, *, overwrite: bool = False, append: bool = False, append_hint: str | None = None
) -> list[str]:
    """The one rule for an existing data set: refused unless overwrite or append. Returns the entries found.

    append_hint: what appending would do, named in the refusal (e.g. "to add this slide's patches"); None for
    a writer that cannot append.
    """
    if overwrite and append:
        raise ValueError("overwrite and append exclude each other; pass one of them")
    existing = existing_entries(root)
    if existing and not (overwrite or append):
        ways = "pass --overwrite (overwrite=True) to replace it"
        if append_hint:
            ways = f"{ways}, or --append (append=True) {append_hint}"
        raise FileExistsError(
            f"{root} already holds a data set ({', '.join(existing)}); choose an empty folder or {ways}"
        )
    return existing


class DatasetWriter:
    """One run writing a data set into `root`, under the rule of `check_output`; use it as a context manager.

    Construction only checks (nothing on disk changes yet). Entering sets an existing data set aside (when
    overwriting), creates the folders and writes `parameters` (as phantom.json) if given. Leaving normally
    puts captions.jsonl in place and drops the old set; leaving by an exception undoes the run.
    with_masks: pairs carry masks and records (False: an image-only set, no captions.jsonl).
    """

    def __init__(
        self,
        root: str | Path,
        *,
        with_masks: bool = True,
        overwrite: bool = False,
        append: bool = False,
        append_hint: str | None = None,
        parameters: dict | None = None,
    ) -> None:
        self.root, self.with_masks, self.parameters = Path(root), with_masks, parameters
        existing = check_output(self.root, overwrite=overwrite, append=append, append_hint=append_hint)
        self.replacing, self.appending = bool(existing) and overwrite, bool(existing) and append
        if self.appending and parameters is not None:
            raise ValueError(
                f"cannot append to {self.root} with new {PARAMETERS_FILE} parameters; they describe a "
                "whole data set, so write a new one instead"
            )
        if self.appending:
            has_masks = (self.root / MASKS_DIR).is_dir()
            if has_masks != with_masks:
                have = "has masks" if has_masks else "has no masks"
                this = "has a mask" if with_masks else "has no mask"
                raise ValueError(
                    f"cannot append to {self.root}: it {have} and this run {this}; use one kind per data set"
                )
        self._files: list[Path] = []  # pair files this run wrote
        self._created: list[Path] = []  # data set entries this run created (what a failed run removes)
        self._backup: Path | None = None  # the data set being replaced, until this run commits
        self._captions: Path | None = None
        self._fh = None
        self._created_root = False
        self._active = False  # inside the `with` block

    def __enter__(self) -> DatasetWriter:
        try:
            self._prepare()
        except BaseException:
            self._rollback()
            raise
        self._active = True
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._active = False
        if exc_type is not None:
            self._rollback()
            return False
        try:
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return False

    def add(self, name: str, image: np.ndarray, mask: np.ndarray | None = None, **extra) -> dict | None:
        """Write one pair and its record (see `write_pair`); returns the record."""
        if not self._active:
            raise RuntimeError("pairs can be added only inside `with DatasetWriter(...)`")
        if (mask is not None) != self.with_masks:
            kind = "a data set with masks" if self.with_masks else "an image-only data set"
            raise ValueError(f"{name}: {'no' if mask is None else 'a'} mask given for {kind}")
        record = write_pair(self.root, name, image, mask, **extra)
        if record is None:
            self._files.append(image_path(self.root, name))
        else:
            self.add_written(record)
        return record

    def add_written(self, record: dict) -> None:
        """Take the record of a pair already written by `write_pair` (e.g. in a worker process)."""
        if self._fh is None:
            raise RuntimeError("records can be added only inside `with DatasetWriter(...)`, to a set with masks")
        self._files += [image_path(self.root, record["file"]), mask_path(self.root, record["file"])]
        self._fh.write(json.dumps(record) + "\n")

    def _prepare(self) -> None:
        self._created_root = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if self.replacing:
            self._backup = self.root / f".dataset-replaced.{os.getpid()}"
            shutil.rmtree(self._backup, ignore_errors=True)
            self._backup.mkdir()
            for name in DATASET_ENTRIES:
                path = self.root / name
                if path.exists() or path.is_symlink():
                    os.replace(path, self._backup / name)
        for name in (IMAGES_DIR, MASKS_DIR) if self.with_masks else (IMAGES_DIR,):
            if not (self.root / name).is_dir():
                (self.root / name).mkdir()
                self._created.append(self.root / name)
        if self.parameters is not None:
            self._created.append(self.root / PARAMETERS_FILE)
            write_file_atomically(self.root / PARAMETERS_FILE, json.dumps(self.parameters, indent=2) + "\n")
        if self.with_masks:
            self._captions = self.root / f".{CAPTIONS_FILE}.{os.getpid()}.partial"
            self._fh = self._captions.open("w", encoding="utf-8")
            old = self.root / CAPTIONS_FILE
            if self.appending and old.is_file():  # earlier records stay in front
                text = old.read_text(encoding="utf-8")
                self._fh.write(text if not text or text.endswith("\n") else text + "\n")

    def _commit(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            os.replace(self._captions, self.root / CAPTIONS_FILE)
            self._captions = None
        if self._backup is not None:
            shutil.rmtree(self._backup, ignore_errors=True)
            self._backup = None

    def _rollback(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._captions is not None:
            self._captions.unlink(missing_ok=True)
            self._captions = None
        for path in self._files:
            path.unlink(missing_ok=True)
        for path in reversed(self._created):
            _remove(path)
        if self._backup is not None:
            for kept in self._backup.iterdir():
                os.replace(kept, self.root / kept.name)
            shutil.rmtree(self._backup, ignore_errors=True)
            self._backup = None
        if self._created_root and self.root.is_dir() and not any(self.root.iterdir()):
            self.root.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
