"""The checkpoint manifest: the one file that makes a directory a renal-ldm checkpoint.

Kept apart from `checkpoint.py` (which imports torch and diffusers) so the app and the CLI can recognise and
describe a checkpoint without loading a deep-learning stack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MANIFEST = "renal_ldm.json"
"""File name of the manifest (kind, package version, ModelConfig, text encoder, fingerprints)."""


SAMPLING_KEY = "sampling"
"""Manifest key of the model's recommended sampling settings, {"guidance": G}, written by `train --guidance`."""


def recommended_guidance(manifest: dict[str, Any]) -> float | None:
    """The guidance scale a manifest recommends for its model, or None (then the reference's default applies).
    A value that is not a finite number >= 0 is an error naming it, so a hand-edited manifest fails clearly."""
    value = (manifest.get(SAMPLING_KEY) or {}).get("guidance")
    if value is None:
        return None
    try:
        guidance = float(value)
    except (TypeError, ValueError):
        guidance = float("nan")
    if not guidance >= 0 or guidance == float("inf"):
        raise ValueError(f"manifest {SAMPLING_KEY}.guidance must be a finite number >= 0; got {value!r}")
    return guidance


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a renal-ldm checkpoint directory (it holds the manifest); the one test of it."""
    return (Path(path) / MANIFEST).is_file()


RUN_MODEL = "model"
"""Where `renal-ldm train --out RUN` writes the finished model (RUN/model); RUN/checkpoint/model is the latest
resumable state of a run still training (raw weights, no EMA)."""
RUN_CHECKPOINT_MODEL = ("checkpoint", "model")


def locate_checkpoint(path: str | Path) -> tuple[Path, str | None]:
    """(checkpoint directory, note) for what a user points at: a checkpoint directory as it is, or a training
    run directory's finished model (RUN/model), else its latest checkpoint while it still trains; the note says
    which one was taken (None for a checkpoint directory). A path that is neither gets read_manifest's error."""
    path = Path(path).expanduser()
    if is_checkpoint(path):
        return path, None
    if is_checkpoint(path / RUN_MODEL):
        return path / RUN_MODEL, f"{path} is a training run: using its finished model {path / RUN_MODEL}"
    latest = path.joinpath(*RUN_CHECKPOINT_MODEL)
    if is_checkpoint(latest):
        return latest, (
            f"{path} is a training run that has not finished: using its latest checkpoint {latest} "
            "(raw weights; the EMA weights are written to RUN/model when it finishes)"
        )
    read_manifest(path)  # raises the clear error for a missing folder or a folder that is no checkpoint
    return path, None


def manifest_path(model_dir: str | Path) -> Path:
    """Where a checkpoint directory keeps its manifest."""
    return Path(model_dir) / MANIFEST


def read_manifest(model_dir: str | Path) -> dict[str, Any]:
    """The renal_ldm.json of a checkpoint directory, with clear errors for a missing or foreign folder."""
    model_dir = Path(model_dir)
    if not model_dir.exists():
        raise FileNotFoundError(f"model directory not found: {model_dir}")
    if not model_dir.is_dir():
        raise NotADirectoryError(f"model path is not a directory: {model_dir}")
    path = model_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a renal-ldm checkpoint: {MANIFEST} is missing "
            "(train one with `renal-ldm train`, or use the shipped models/demo)"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    for key in ("kind", "config"):
        if key not in manifest:
            raise ValueError(f"{path} lacks the key {key!r}")
    return manifest
