"""Survey images on disk and survey rows in the database: the use case that joins the two, with no widgets.

Normalised PNGs (renal_ldm.survey_images) are stored under opaque random names,
`survey/<random folder>/<random id>.png` under the data directory, and the survey's rows (db.repository) point
at them. The database keeps the truth; the file system and the participant's browser never see it. The pages
and the CLI (`renal-ldm survey-demo`) both create surveys through `create_image_survey`; Manage surveys copies
one through `duplicate_image_survey`.

Every file written is stamped with fresh random bytes (renal_ldm.survey_images.stamp_png, both halves alike),
so no survey image, and no image of a duplicate, has the bytes (and so the Streamlit media URL) of anything
else the app serves, the Library card it was made from included.

Where each image came from (an upload's file name, a Library sample's model, caption and seed, a phantom's
seed) is kept for the researcher's export in `provenance.json` beside the images, keyed by file name. The
participant side reads image files by their row's path only and never opens it.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from db import repository
from renal_ldm import survey as vocabulary
from renal_ldm.paths import data_home, data_subdir, resolve_in_home
from renal_ldm.survey_images import encode_png, stamp_png, to_rgb

SURVEY_DIR = "survey"
"""The folder under the data directory that holds every survey's image folder."""
PROVENANCE_FILE = "provenance.json"
"""Beside a survey's images: {file name: where the image came from}, for the researcher's export only."""


def new_survey_folder() -> Path:
    """A fresh, opaquely named folder under data_home()/survey for one survey's images."""
    root = data_subdir(SURVEY_DIR)
    while True:
        folder = root / secrets.token_hex(8)
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_images(folder: Path, images: Sequence[tuple[bytes, Mapping[str, Any] | None]]) -> list[str]:
    """Stamp and write each PNG under a new opaque name in `folder`, with the provenance file; returns the
    data-directory relative paths in input order."""
    home = data_home()
    paths, provenance = [], {}
    for png, origin in images:
        path = folder / f"{secrets.token_hex(12)}.png"
        _write_atomic(path, stamp_png(png))
        provenance[path.name] = dict(origin or {})
        paths.append(path.relative_to(home).as_posix())
    _write_atomic(folder / PROVENANCE_FILE, (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode())
    return paths


def store_images(
    images: Sequence[tuple[bytes, str] | tuple[bytes, str, Mapping[str, Any] | None]],
    *,
    rng: random.Random | None = None,
) -> tuple[Path, list[tuple[str, str]]]:
    """Write (png, truth[, provenance]) under opaque names in a new folder; returns (folder, [(image_path, truth)]).

    The items come back in a random order (their survey positions), so question numbers say nothing about the
    truth either. image_path is relative to the data directory, as the database stores it.
    """
    order = [(item[0], item[1], item[2] if len(item) > 2 else None) for item in images]
    (rng or random.SystemRandom()).shuffle(order)
    folder = new_survey_folder()
    try:
        paths = _write_images(folder, [(png, origin) for png, _, origin in order])
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, [(path, truth) for path, (_, truth, _) in zip(paths, order, strict=True)]


def _aligned(pngs: Sequence[bytes], provenance: Sequence[Mapping[str, Any]] | None, what: str) -> list:
    if provenance is None:
        return [None] * len(pngs)
    if len(provenance) != len(pngs):
        raise ValueError(
            f"{what} provenance must give one record per image: {len(provenance)} records for {len(pngs)} images"
        )
    return list(provenance)


def create_image_survey(
    title: str,
    real: Sequence[bytes],
    synthetic: Sequence[bytes],
    *,
    is_demo: bool = False,
    status: str = vocabulary.OPEN,
    url: str | None = None,
    real_provenance: Sequence[Mapping[str, Any]] | None = None,
    synthetic_provenance: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """Store normalised PNGs and create the survey (db.repository.create_survey); returns its token.

    `*_provenance` give one record per image (where it came from, for the export). Nothing is left behind
    when it fails: the image folder is removed if the database refuses the survey.
    """
    if not real and not synthetic:
        raise ValueError("a survey needs images: got no real and no synthetic images")
    items = [(p, vocabulary.REAL, o) for p, o in zip(real, _aligned(real, real_provenance, "real"), strict=True)]
    items += [
        (p, vocabulary.SYNTHETIC, o)
        for p, o in zip(synthetic, _aligned(synthetic, synthetic_provenance, "synthetic"), strict=True)
    ]
    folder, stored = store_images(items)
    try:
        return repository.create_survey(title, stored, is_demo=is_demo, status=status, url=url)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def duplicate_image_survey(
    survey_id: int, *, title: str | None = None, status: str = vocabulary.DRAFT, url: str | None = None
) -> str:
    """A new survey with copies of the source's images (each with a new stamp, so no bytes are shared), the same
    truths, positions and provenance, and no participants; returns its token. Nothing is left on failure."""
    items = repository.survey_items_with_truth(survey_id, url=url)
    origins = items_provenance([item.image_path for item in items])
    images = [(read_image_bytes(item.image_path), origin) for item, origin in zip(items, origins, strict=True)]
    folder = new_survey_folder()
    try:
        paths = _write_images(folder, images)
        return repository.duplicate_survey(survey_id, paths, title=title, status=status, url=url)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def read_image_bytes(image_path: str) -> bytes:
    """The stored PNG bytes of a survey item or Library sample (served as bytes, never as a path); a path
    leading outside the data directory is a ValueError naming it (renal_ldm.paths.resolve_in_home)."""
    return resolve_in_home(image_path).read_bytes()


def folder_provenance(image_path: str) -> dict[str, dict[str, Any]]:
    """{file name: provenance} of the folder holding a stored survey image; {} for surveys made before
    provenance was recorded. For researchers' exports only."""
    path = resolve_in_home(image_path).with_name(PROVENANCE_FILE)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"the provenance file {str(path)!r} is damaged ({exc})") from None


def items_provenance(image_paths: Sequence[str]) -> list[dict[str, Any]]:
    """Where each stored survey image came from ({} when not recorded), each folder's file read once; an
    image whose path leads outside the data directory (or whose provenance file is damaged) gets a source
    saying so."""
    folders: dict[str, dict[str, dict[str, Any]]] = {}
    out = []
    for image_path in image_paths:
        folder = image_path.rsplit("/", 1)[0]
        if folder not in folders:
            try:
                folders[folder] = folder_provenance(image_path)
            except ValueError as exc:  # a path leading outside the data directory, a damaged file: said so
                out.append({"source": f"not readable: {exc}"})
                continue
        out.append(dict(folders[folder].get(Path(image_path).name) or {}))
    return out


def thumbnail_png(image_path: str, size: int = 96) -> bytes:
    """A small PNG of a stored image, for researcher tables."""
    with Image.open(resolve_in_home(image_path)) as image:
        image = to_rgb(image)
        image.thumbnail((size, size))
        return encode_png(np.asarray(image))
