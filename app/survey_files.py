"""Gathering the files of a new survey's two halves, from uploads, Library samples or a server folder: no widgets.

The Manage surveys page passes what its form holds; `gather` returns SourceFiles (name, bytes and where the file
came from) for app.survey_admin.create_survey_from_files and one message per problem (a missing folder, a
deleted Library sample), so the researcher sees every problem of both halves at once. Files are checked by
content later (renal_ldm.survey_images); here they are only collected. The provenance (an upload's file name, a
Library sample's model, caption and sampling parameters) is stored beside the survey's images for the
researcher's export (app.survey_export), never shown to participants.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from app.downloads import sampling_params
from app.survey_store import read_image_bytes
from db import repository as repo

UPLOAD, LIBRARY, FOLDER = "Upload files", "Library samples", "Server folder"
REAL_SOURCES = (UPLOAD, FOLDER)
SYNTHETIC_SOURCES = (UPLOAD, LIBRARY, FOLDER)
LIBRARY_PAGE = 500
"""How many of the newest Library samples the form offers."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif")
"""What a server folder is scanned for (uploads are checked by content, never by name)."""

FROM_UPLOAD, FROM_FOLDER, FROM_LIBRARY = "upload", "server folder", "library sample"
"""The `source` of a provenance record."""


@dataclass(frozen=True)
class SourceFile:
    """A gathered file: the name the researcher knows it by, its bytes, and where it came from (provenance)."""

    name: str
    data: bytes
    provenance: dict[str, Any] = field(default_factory=dict)


Files = list[SourceFile]


class Upload(Protocol):
    """An uploaded file as Streamlit's file_uploader hands it over."""

    name: str

    def getvalue(self) -> bytes: ...


def gather(
    source: str,
    what: str,
    n: int,
    *,
    uploads: Sequence[Upload] | None = None,
    library_ids: Iterable[int] | None = None,
    folder: str | None = None,
) -> tuple[Files, list[str]]:
    """(files, problems) of one half: `what` is 'real' or 'synthetic', `n` the number of images asked for.

    Only the input of the chosen source is read; a server folder holding more than `n` images gives a random
    `n` of them (the others are never read).
    """
    if source == UPLOAD:
        return [SourceFile(f.name, f.getvalue(), {"source": FROM_UPLOAD, "file": f.name}) for f in uploads or []], []
    if source == LIBRARY:
        return library_files(library_ids or [])
    if source != FOLDER:
        raise ValueError(f"unknown image source {source!r}; expected one of {', '.join(SYNTHETIC_SOURCES)}")
    folder = (folder or "").strip()
    if not folder:
        return [], [f"Give the server folder of the {what} images."]
    try:
        return folder_files(folder, limit=int(n)), []
    except (OSError, ValueError) as exc:
        return [], [f"{what.capitalize()} images: {exc}"]


def folder_files(folder: str | os.PathLike, *, limit: int | None = None) -> Files:
    """The image files (by suffix) directly in a server folder, sorted by name.

    `limit` draws that many at random (system randomness) when the folder holds more. FileNotFoundError or
    NotADirectoryError name the folder; a folder with no image files is a ValueError listing the suffixes.
    """
    path = Path(folder).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"folder {str(path)!r} does not exist on the server")
    if not path.is_dir():
        raise NotADirectoryError(f"{str(path)!r} is not a folder; expected a folder of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"folder {str(path)!r} holds no image files; expected files ending in {', '.join(IMAGE_SUFFIXES)}"
        )
    if limit is not None and len(files) > limit:
        files = sorted(random.SystemRandom().sample(files, limit))
    return [
        SourceFile(p.name, p.read_bytes(), {"source": FROM_FOLDER, "folder": str(path), "file": p.name}) for p in files
    ]


def library_files(sample_ids: Iterable[int]) -> tuple[Files, list[str]]:
    """Library samples by id, with the model, caption and sampling parameters that drew them; a missing sample
    or file is one error naming it."""
    files, errors = [], []
    for sample_id in sample_ids:
        try:
            sample = repo.get_sample(int(sample_id))
            if sample is None:  # deleted from the Library since it was picked (another tab, another user)
                errors.append(f"Library sample #{sample_id}: no longer in the Library (deleted); pick another")
                continue
            provenance = {
                "source": FROM_LIBRARY,
                "sample_id": sample.id,
                "model": sample.model_name,
                "caption": sample.caption,
                **sampling_params(sample),
            }
            files.append(SourceFile(f"Library sample #{sample.id}", read_image_bytes(sample.image_path), provenance))
        except (ValueError, OSError) as exc:
            errors.append(f"Library sample #{sample_id}: cannot be read ({exc})")
    return files, errors


def library_choices() -> list:
    """The newest Library samples (records with id, caption, model_name, seed) for a multiselect."""
    return repo.list_samples(limit=LIBRARY_PAGE)


def library_label(sample) -> str:
    """How a Library sample reads in the picker: id, model, seed and the first line of its caption's body."""
    first = next((line for line in sample.caption.splitlines()[1:] if line.strip()), "(no caption)")
    return f"#{sample.id} · {sample.model_name} · seed {sample.seed} · {first}"
