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


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a renal-ldm checkpoint directory (it holds the manifest); the one test of it."""
    return (Path(path) / MANIFEST).is_file()


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
