"""Downloads built in memory: one PNG, or a ZIP of PNGs with their JSON sidecars and a CSV index."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from db.repository import Sample
from renal_ldm.csv_cells import csv_text

SAMPLING_FIELDS = ("seed", "steps", "guidance", "scheduler", "eta", "size")
"""The parameters that, with caption and model, reproduce a sample."""
INDEX_FIELDS = ("file", "id", *SAMPLING_FIELDS, "model", "caption")


def sampling_params(sample: Sample) -> dict[str, Any]:
    return {name: getattr(sample, name) for name in SAMPLING_FIELDS}


def _home(home: str | Path | None) -> Path:
    if home is not None:
        return Path(home)
    from renal_ldm.paths import data_home

    return data_home()


def data_file(relative_path: str, home: str | Path | None = None) -> Path:
    """The absolute path of a file the database records relative to the data directory; ValueError naming the
    path when it leads outside (renal_ldm.paths.resolve_in_home), so nothing outside is read or deleted."""
    from renal_ldm.paths import resolve_in_home

    return resolve_in_home(relative_path, _home(home))


def sample_file(sample: Sample, home: str | Path | None = None) -> Path:
    """The absolute path of a sample's PNG."""
    return data_file(sample.image_path, home)


def shown_file(sample: Sample, home: str | Path | None = None) -> tuple[Path | None, str | None]:
    """(path, None) of a sample's PNG to show, or (None, why not): its file is gone, or its stored path points
    outside the data directory (named, never read)."""
    try:
        path = sample_file(sample, home)
    except ValueError as exc:
        return None, f"Sample #{sample.id}: {exc}"
    if not path.is_file():
        return None, f"seed {sample.seed}: image file missing"
    return path, None


def png_bytes(sample: Sample, home: str | Path | None = None) -> bytes:
    return sample_file(sample, home).read_bytes()


def png_name(sample: Sample) -> str:
    """The download name: the product's file name (run folder as prefix keeps names unique across runs)."""
    path = Path(sample.image_path)
    return f"{sample.run_id}_{path.name}" if sample.run_id else path.name


def zip_name(samples: list[Sample]) -> str:
    runs = {s.run_id for s in samples if s.run_id}
    return f"renal-ldm_{runs.pop()}.zip" if len(runs) == 1 else "renal-ldm_samples.zip"


def zip_samples(samples: Iterable[Sample], home: str | Path | None = None) -> bytes:
    """A ZIP of each sample's PNG and JSON sidecar (the stored parameters when the sidecar file is gone),
    in folders per run, plus samples.csv listing them all. Samples whose PNG is missing are listed, not packed."""
    home = _home(home)
    buffer = io.BytesIO()
    index: list[dict[str, Any]] = []  # samples.csv, every cell neutralised (a caption may read =HYPERLINK(...))
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for sample in samples:
            try:
                png = sample_file(sample, home)
            except ValueError:  # a row pointing outside the data directory: listed, never read
                png = None
            folder = sample.run_id or "samples"
            arc_png = f"{folder}/{Path(sample.image_path).name}"
            if png is not None and png.is_file():
                archive.write(png, arc_png)
                sidecar = png.with_suffix(".json")
                if sidecar.is_file():
                    archive.write(sidecar, f"{folder}/{sidecar.name}")
                else:
                    archive.writestr(f"{folder}/{sidecar.name}", json.dumps(sample.extra or {}, indent=2) + "\n")
            elif png is None:
                arc_png = f"(refused: outside the data directory) {sample.image_path}"
            else:
                arc_png = f"(missing) {sample.image_path}"
            index.append(
                {
                    "file": arc_png,
                    "id": sample.id,
                    **sampling_params(sample),
                    "model": sample.model_name,
                    "caption": sample.caption,
                }
            )
        archive.writestr("samples.csv", csv_text(INDEX_FIELDS, [[row[f] for f in INDEX_FIELDS] for row in index]))
    return buffer.getvalue()
