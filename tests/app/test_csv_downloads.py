"""Every CSV the product offers for download neutralises a spreadsheet formula (renal_ldm.csv_cells).

Each test plants `=HYPERLINK("x")` where a user can put text (a strategy, a survey title, a caption) and reads
the bytes the page's download button serves: the cell arrives as `'=HYPERLINK("x")`, and no cell of the file
would run as a formula.
"""

from __future__ import annotations

import csv
import io
import zipfile

import pytest
from app_helpers import page_path
from test_survey_pages import MANAGE, RESULTS, admin, answer_directly, db_url, make_survey, repo_resume, signed_in

from db import repository as repo
from renal_ldm.csv_cells import neutralise_cell

FORMULA = '=HYPERLINK("x")'
__all__ = ["admin", "db_url"]  # fixtures borrowed from the survey page tests


@pytest.fixture
def served(monkeypatch) -> dict[str, bytes]:
    """file name -> the bytes each download button of the next runs serves (a lazy button's function called)."""
    from streamlit.elements.widgets import button

    files: dict[str, bytes] = {}
    original = button.marshall_file

    def capture(coordinates, data, proto, mimetype, file_name=None, **kwargs):
        payload = data() if callable(data) else data
        files[file_name] = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        return original(coordinates, data, proto, mimetype, file_name, **kwargs)

    monkeypatch.setattr(button, "marshall_file", capture)
    return files


def assert_neutralised(data: bytes) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    cells = [cell for row in rows for cell in row]
    assert "'" + FORMULA in cells, rows
    assert FORMULA not in cells
    assert all(neutralise_cell(cell) == cell for cell in cells), [c for c in cells if neutralise_cell(c) != c]
    return rows


def test_raw_answers_and_summary_downloads_neutralise_a_strategy(admin, served):
    token, survey_id = make_survey()
    answer_directly(token, 2)
    first = repo.survey_participants(survey_id)[0]
    repo.set_strategy(repo_resume(first.id), FORMULA)
    at = signed_in(RESULTS)
    assert {b.key for b in at.get("download_button")} >= {"download_answers", "download_summary"}
    raw = assert_neutralised(served[f"survey_{survey_id}_answers.csv"])
    assert raw[0][-1] == "strategy"
    summary = assert_neutralised(served[f"survey_{survey_id}_summary.csv"])
    assert [row[-1] for row in summary if row[0] == str(first.id)] == ["'" + FORMULA]


def test_invitations_download_neutralises_a_survey_title(admin, served):
    _, survey_id = make_survey(title=FORMULA)
    repo.create_invitations(survey_id, 2)
    signed_in(MANAGE)
    rows = assert_neutralised(served[f"survey_{survey_id}_invitations.csv"])
    assert rows[0] == ["survey", "link", "status", "created_at", "used_at"]
    assert [row[2] for row in rows[1:]] == ["unused", "unused"]


def test_library_zip_samples_csv_neutralises_a_caption(app_home, served):
    from app_helpers import MAIN, RUN_TIMEOUT
    from PIL import Image
    from streamlit.testing.v1 import AppTest

    (app_home / "samples").mkdir()
    Image.new("RGB", (8, 8), "pink").save(app_home / "samples" / "s.png")
    repo.add_sample(
        repo.NewSample(
            image_path="samples/s.png", caption=FORMULA, model_name="-tiny", seed=1, steps=2, guidance=1.5, size=8
        )
    )
    at = AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)
    at.run()
    at.switch_page(page_path("library.py")).run()
    assert not at.exception, [e.message for e in at.exception]
    (zip_name,) = [name for name in served if name.endswith(".zip")]
    with zipfile.ZipFile(io.BytesIO(served[zip_name])) as archive:
        rows = assert_neutralised(archive.read("samples.csv"))
    header, (row,) = rows[0], rows[1:]
    assert row[header.index("model")] == "'-tiny" and row[header.index("seed")] == "1"
