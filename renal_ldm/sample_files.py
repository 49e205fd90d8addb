"""The files of a `renal-ldm sample` output folder: a PNG and a JSON sidecar per image, and manifest.csv.

Kept apart from renal_ldm.sample (which imports torch and diffusers) so that readers of such folders (stitching,
evaluation, the app) need no deep-learning stack.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from renal_ldm.sample import SampleResult

MANIFEST_CSV = "manifest.csv"
"""One row per image of a sample folder (image, caption, seed), in the order they were drawn."""
MANIFEST_FIELDS = ("image", "caption", "seed")


def write_samples(results: list[SampleResult], out_dir: str | Path) -> list[Path]:
    """PNG + JSON sidecar per result and rows appended to manifest.csv; existing files are never overwritten."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next_sample_id(out_dir)
    rows = write_sample_files(results, out_dir, range(first, first + len(results)))
    append_manifest(out_dir, rows)
    return [out_dir / row["image"] for row in rows]


def sample_stem(sample_id: int, seed: int) -> str:
    """The file name (without suffix) of sample number `sample_id` of a folder, drawn with `seed`."""
    return f"sample_{sample_id:05d}_seed{seed}"


def write_sample_files(results: Sequence[SampleResult], out_dir: Path, ids: Sequence[int]) -> list[dict[str, str]]:
    """PNG (written under a temporary name, then renamed) + JSON sidecar for each result, named by its id in
    `ids`; returns the manifest rows, in the order of `results`. Does not touch manifest.csv."""
    if len(ids) != len(results):
        raise ValueError(f"{len(results)} results but {len(ids)} sample ids")
    rows = []
    for sample_id, result in zip(ids, results, strict=True):
        stem = sample_stem(sample_id, result.seed)
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
        rows.append({"image": png.name, "caption": result.caption, "seed": str(result.seed)})
    return rows


def append_manifest(out_dir: Path, rows: Iterable[dict[str, str]]) -> None:
    """Append rows to manifest.csv (a header first when it is new). The whole file is rewritten under a
    temporary name and renamed, so a reader never sees half a row."""
    manifest = out_dir / MANIFEST_CSV
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(MANIFEST_FIELDS), extrasaction="ignore")
    old = manifest.read_bytes() if manifest.exists() else b""
    if not old:
        writer.writeheader()
    writer.writerows(rows)
    tmp = out_dir / f".{MANIFEST_CSV}.tmp"
    tmp.write_bytes(old + text.getvalue().encode())
    os.replace(tmp, manifest)


def next_sample_id(out_dir: Path) -> int:
    """The number the next image written into out_dir gets: one above the highest sample_NNNNN there."""
    ids = []
    for path in out_dir.glob("sample_*.png"):
        parts = path.stem.split("_")
        if len(parts) >= 2 and parts[1].isdigit():
            ids.append(int(parts[1]))
    return max(ids) + 1 if ids else 0


def read_manifest_csv(out_dir: str | Path) -> list[dict[str, str]]:
    with (Path(out_dir) / MANIFEST_CSV).open(newline="") as f:
        return list(csv.DictReader(f))
