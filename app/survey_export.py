"""A survey's export for researchers: one ZIP of its answers, its items with their truth, and where each image
came from. No widgets; Manage surveys offers it as a download (researchers only: the page is theirs).

- `answers.csv`: the raw answers, as Results offers them (renal_ldm.survey.responses_csv);
- `items.csv`: one row per image in survey order: question number, public id, truth, the stored file's name,
  and its provenance (app.survey_store's provenance.json): for a Library sample the model, caption, seed, steps,
  guidance and scheduler; for an upload or a server folder the original file name; for a demo phantom its
  seed; and what the file was before normalisation (size, format, mode, colour profile).

Every CSV goes through renal_ldm.csv_cells.csv_text, so a file named `=HYPERLINK(...)` or a caption starting
with `-` never runs as a formula when the researcher opens the export in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from typing import Any

from app.survey_admin import survey_data
from app.survey_store import items_provenance
from db import repository as repo
from renal_ldm import survey as stats_lib
from renal_ldm.csv_cells import csv_text, restore_cell

ANSWERS_FILE, ITEMS_FILE = "answers.csv", "items.csv"
ITEM_COLUMNS = ("question", "public_id", "truth", "file")
PROVENANCE_COLUMNS = (
    "source",
    "original_file",
    "folder",
    "library_sample",
    "model",
    "caption",
    "seed",
    "steps",
    "guidance",
    "scheduler",
    "eta",
    "phantom_seed",
)
NATIVE_COLUMNS = ("native_size", "native_format", "native_mode", "native_profile")
NOT_RECORDED = "not recorded"
"""The source of an image of a survey made before provenance was recorded."""


def answers_csv(survey_id: int) -> str:
    """The raw answers as the Results page downloads them, every cell neutralised."""
    text = stats_lib.responses_csv(survey_data(survey_id).records)
    rows = [[restore_cell(cell) for cell in row] for row in csv.reader(io.StringIO(text))]
    return csv_text(rows[0], rows[1:])


def _item_row(item: repo.SurveyItem, origin: dict[str, Any]) -> list[Any]:
    native = origin.get("native") or {}
    size = f"{native['width']} x {native['height']}" if "width" in native and "height" in native else ""
    values = {
        "source": origin.get("source", NOT_RECORDED),
        "original_file": origin.get("file"),
        "folder": origin.get("folder"),
        "library_sample": origin.get("sample_id"),
        **{
            key: origin.get(key)
            for key in ("model", "caption", "seed", "steps", "guidance", "scheduler", "eta", "phantom_seed")
        },
    }
    row = [item.position + 1, item.public_id, item.truth, item.image_path.rsplit("/", 1)[-1]]
    row += ["" if values[c] is None else values[c] for c in PROVENANCE_COLUMNS]
    return row + [size, native.get("format", ""), native.get("mode", ""), native.get("profile", "")]


def items_csv(survey_id: int) -> str:
    """Each item in survey order with its truth and provenance, every cell neutralised."""
    items = repo.survey_items_with_truth(survey_id)
    origins = items_provenance([i.image_path for i in items])
    return csv_text(
        ITEM_COLUMNS + PROVENANCE_COLUMNS + NATIVE_COLUMNS,
        [_item_row(item, origin) for item, origin in zip(items, origins, strict=True)],
    )


def export_name(survey: repo.Survey) -> str:
    """The ZIP's download name: the survey id and a file-safe form of its title."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", survey.title).strip("-")[:40] or "survey"
    return f"survey_{survey.id}_{slug}.zip"


def export_zip(survey_id: int) -> bytes:
    """The ZIP of answers.csv and items.csv of one survey (NotFoundError for an unknown id)."""
    repo.get_survey(survey_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(ANSWERS_FILE, answers_csv(survey_id))
        archive.writestr(ITEMS_FILE, items_csv(survey_id))
    return buffer.getvalue()
