"""Atomic file and directory replacement: a reader sees the old version or the new one, never half of either.

Guarantees (tests/renal_ldm/test_fsutil.py):

- `write_file_atomically` writes beside the target and renames it into place; a failed write leaves the old
  file untouched and no temporary file behind.
- `replace_dir_atomically` moves a finished directory onto `dst` by two renames: the old `dst` is set aside
  as `.<name>.old`, then the new one moved in, then the old one removed. If moving the new one in fails, the
  old one is put back before the error propagates. A crash between the two renames leaves only the set-aside
  copy, and `recover_dir` (called before reading `dst` again) puts it back.

Used by model checkpoints (`models/checkpoint.py`), training checkpoints (`training/`) and data sets.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def set_aside_path(dst: Path) -> Path:
    """Where `replace_dir_atomically` keeps the previous `dst` between its two renames."""
    return dst.with_name(f".{dst.name}.old")


def replace_dir_atomically(src: str | Path, dst: str | Path) -> None:
    """Move the finished directory `src` to `dst` (same file system); an existing `dst` is replaced whole."""
    src, dst = Path(src), Path(dst)
    old = set_aside_path(dst)
    shutil.rmtree(old, ignore_errors=True)  # a leftover of an earlier replace; dst itself (or src) is newer
    had_old = dst.exists()
    if had_old:
        os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        if had_old:
            os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(dst: str | Path) -> None:
    """After a crash between the two renames of `replace_dir_atomically`, put the previous directory back."""
    dst = Path(dst)
    old = set_aside_path(dst)
    if not dst.exists() and old.is_dir():
        os.replace(old, dst)


def write_file_atomically(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write `text` to `path` through a temporary file beside it, renamed into place in one step."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding=encoding)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_kind_json(path: str | Path, kind: str) -> dict:
    """A JSON object file whose "kind" is `kind` (a manifest); a ValueError names the file and what it holds."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else None
        raise ValueError(f"{path}: kind {found!r}; expected {kind!r}")
    return data
