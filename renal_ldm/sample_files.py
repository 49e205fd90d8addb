"""The files of a `renal-ldm sample` output folder: a PNG and a JSON sidecar per image, and manifest.csv.

Kept apart from renal_ldm.sample (which imports torch and diffusers) so that readers of such folders (stitching,
evaluation, the app) need no deep-learning stack.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from renal_ldm.sample import SampleResult

MANIFEST_CSV = "manifest.csv"
"""One row per image of a sample folder (image, caption, seed), in the order they were drawn."""


def write_samples(results: list[SampleResult], out_dir: str | Path) -> list[Path]:
    """PNG + JSON sidecar per result and rows appended to manifest.csv; existing files are never overwritten."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST_CSV
    new_manifest = not manifest.exists()
    next_id = _next_sample_id(out_dir)
    written: list[Path] = []
    rows = []
    for offset, result in enumerate(results):
        stem = f"sample_{next_id + offset:05d}_seed{result.seed}"
        png = out_dir / f"{stem}.png"
        tmp = out_dir / f".{stem}.png.tmp"
        result.image.save(tmp, format="PNG")
        os.replace(tmp, png)
        sidecar = {
            **result.params,
            "image": png.name,
            "index": result.index,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (out_dir / f"{stem}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
        rows.append({"image": png.name, "caption": result.caption, "seed": result.seed})
        written.append(png)
    with manifest.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "caption", "seed"])
        if new_manifest:
            writer.writeheader()
        writer.writerows(rows)
    return written


def _next_sample_id(out_dir: Path) -> int:
    ids = []
    for path in out_dir.glob("sample_*.png"):
        parts = path.stem.split("_")
        if len(parts) >= 2 and parts[1].isdigit():
            ids.append(int(parts[1]))
    return max(ids) + 1 if ids else 0


def read_manifest_csv(out_dir: str | Path) -> list[dict[str, str]]:
    with (Path(out_dir) / MANIFEST_CSV).open(newline="") as f:
        return list(csv.DictReader(f))
