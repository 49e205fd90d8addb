"""Survey images on disk and survey rows in the database: the use case that joins the two, with no widgets.

Normalised PNGs (renal_ldm.survey_images) are stored under opaque random names,
`survey/<random folder>/<random id>.png` under the data directory, and the survey's rows (db.repository) point
at them. The database keeps the truth; the file system and the participant's browser never see it. The pages
and the CLI (`renal-ldm survey-demo`) both create surveys through `create_image_survey`.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from db import repository
from renal_ldm import survey as vocabulary
from renal_ldm.paths import data_home, data_subdir
from renal_ldm.survey_images import encode_png, to_rgb

SURVEY_DIR = "survey"
"""The folder under the data directory that holds every survey's image folder."""


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


def store_images(images: Sequence[tuple[bytes, str]], *, rng: random.Random | None = None
                 ) -> tuple[Path, list[tuple[str, str]]]:
    """Write (png, truth) pairs under opaque names in a new folder; returns (folder, [(image_path, truth)]).

    The items come back in a random order (their survey positions), so question numbers say nothing about the
    truth either. image_path is relative to the data directory, as the database stores it.
    """
    order = list(images)
    (rng or random.SystemRandom()).shuffle(order)
    folder = new_survey_folder()
    home = data_home()
    items = []
    try:
        for png, truth in order:
            path = folder / f"{secrets.token_hex(12)}.png"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(png)
            os.replace(tmp, path)
            items.append((path.relative_to(home).as_posix(), truth))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder, items


def create_image_survey(title: str, real: Sequence[bytes], synthetic: Sequence[bytes], *, is_demo: bool = False,
                        status: str = vocabulary.OPEN, url: str | None = None) -> str:
    """Store normalised PNGs and create the survey (db.repository.create_survey); returns its token.

    Nothing is left behind when it fails: the image folder is removed if the database refuses the survey.
    """
    if not real and not synthetic:
        raise ValueError("a survey needs images: got no real and no synthetic images")
    folder, items = store_images([(p, vocabulary.REAL) for p in real] + [(p, vocabulary.SYNTHETIC) for p in synthetic])
    try:
        return repository.create_survey(title, items, is_demo=is_demo, status=status, url=url)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def resolve_image_path(image_path: str) -> Path:
    """The file of a stored (data-directory relative) image path; refuses paths leaving the data directory."""
    home = data_home()
    path = (home / image_path).resolve()
    if not path.is_relative_to(home):
        raise ValueError(f"image path {image_path!r} points outside the data directory")
    return path


def read_image_bytes(image_path: str) -> bytes:
    """The stored PNG bytes of a survey item or Library sample (served as bytes, never as a path)."""
    return resolve_image_path(image_path).read_bytes()


def thumbnail_png(image_path: str, size: int = 96) -> bytes:
    """A small PNG of a stored image, for researcher tables."""
    with Image.open(resolve_image_path(image_path)) as image:
        image = to_rgb(image)
        image.thumbnail((size, size))
        return encode_png(np.asarray(image))
