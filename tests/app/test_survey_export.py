"""The survey export ZIP: the raw answers, the items with their truth and each image's provenance (a Library
sample's model, caption and sampling parameters; an upload's file name; a phantom's seed), every CSV cell
neutralised, and its button on Manage surveys."""

from __future__ import annotations

import csv
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from app import survey_admin as admin
from app import survey_export as export
from app import survey_files as files
from app import survey_store as store
from db import repository as repo
from renal_ldm.csv_cells import restore_cell

FORMULA = '=HYPERLINK("x")'


@pytest.fixture
def home(app_home):
    """The app's data directory and database (tests/app/conftest.py)."""
    return app_home


class Upload:
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def png(seed: int, size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def read_zip(data: bytes) -> dict[str, list[dict[str, str]]]:
    """Each CSV of the export as rows of raw cells (as a spreadsheet would receive them)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert sorted(archive.namelist()) == [export.ANSWERS_FILE, export.ITEMS_FILE]
        return {
            name: list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8")))) for name in archive.namelist()
        }


def library_and_upload_survey(home) -> int:
    (home / "samples").mkdir()
    ids = []
    for seed in (7, 8):
        (home / "samples" / f"s{seed}.png").write_bytes(png(seed))
        ids.append(
            repo.add_sample(
                repo.NewSample(
                    image_path=f"samples/s{seed}.png",
                    caption=f"-Tubuli, seed {seed}",
                    model_name="tiny-ldm",
                    seed=seed,
                    steps=25,
                    guidance=2.5,
                    size=64,
                    scheduler="ddim",
                )
            ).id
        )
    synthetic, problems = files.gather(files.LIBRARY, "synthetic", 2, library_ids=ids)
    real, _ = files.gather(
        files.UPLOAD, "real", 2, uploads=[Upload(f"{FORMULA}.png", png(1)), Upload("biopsy_12.png", png(2, 80))]
    )
    result = admin.create_survey_from_files(
        "Export study", real, synthetic, n_real=2, n_synthetic=2, size=64, max_upload_mb=5, source_errors=problems
    )
    assert result.errors == [] and result.token
    return repo.get_survey_by_token(result.token).id


def test_export_has_answers_items_and_each_items_provenance(home):
    survey_id = library_and_upload_survey(home)
    token = repo.get_survey(survey_id).token
    resume = repo.start_participant(token, 4)
    while (item := repo.next_unanswered_item(resume)) is not None:
        repo.record_answer(resume, item.public_id, "real")
    tables = read_zip(export.export_zip(survey_id))

    answers = tables[export.ANSWERS_FILE]
    assert (
        len(answers) == 4 and {a["experience"] for a in answers} == {"4"} and {a["answer"] for a in answers} == {"real"}
    )
    items = tables[export.ITEMS_FILE]
    stored = repo.survey_items_with_truth(survey_id)
    assert [(int(r["question"]), r["public_id"], r["truth"], r["file"]) for r in items] == [
        (i.position + 1, i.public_id, i.truth, i.image_path.rsplit("/", 1)[-1]) for i in stored
    ]
    library = sorted((r for r in items if r["source"] == "library sample"), key=lambda r: r["seed"])
    assert [
        (r["model"], restore_cell(r["caption"]), r["seed"], r["steps"], r["guidance"], r["scheduler"]) for r in library
    ] == [("tiny-ldm", f"-Tubuli, seed {s}", str(s), "25", "2.5", "ddim") for s in (7, 8)]
    assert {r["truth"] for r in library} == {"synthetic"}
    uploads = {restore_cell(r["original_file"]): r for r in items if r["source"] == "upload"}
    assert set(uploads) == {f"{FORMULA}.png", "biopsy_12.png"} and {r["truth"] for r in uploads.values()} == {"real"}
    assert (uploads["biopsy_12.png"]["native_size"], uploads["biopsy_12.png"]["native_format"]) == ("80 x 80", "PNG")


def test_every_export_cell_is_neutralised(home):
    survey_id = library_and_upload_survey(home)
    with zipfile.ZipFile(io.BytesIO(export.export_zip(survey_id))) as archive:
        text = archive.read(export.ITEMS_FILE).decode("utf-8")
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert f"'{FORMULA}.png" in cells and f"{FORMULA}.png" not in cells  # a spreadsheet shows it, never runs it
    assert "'-Tubuli, seed 7" in cells
    assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for cell in cells)


def test_demo_phantoms_carry_their_seed(home, monkeypatch):
    import renal_ldm.paths
    from app.survey_demo import create_demo_survey
    from renal_ldm.survey_demo import PHANTOM_SYNTHETIC_SEED_OFFSET

    monkeypatch.setenv(renal_ldm.paths.DEMO_MODEL_ENV, str(home / "no-demo-model"))
    demo = create_demo_survey(2, size=32, seed=5)
    items = read_zip(export.export_zip(repo.get_survey_by_token(demo.token).id))[export.ITEMS_FILE]
    seeds = {(r["truth"], int(r["phantom_seed"])) for r in items}
    assert {r["source"] for r in items} == {"demo phantom"}
    assert seeds == {
        ("real", 5),
        ("real", 6),
        ("synthetic", PHANTOM_SYNTHETIC_SEED_OFFSET + 5),
        ("synthetic", PHANTOM_SYNTHETIC_SEED_OFFSET + 6),
    }


def test_a_survey_without_recorded_provenance_says_so(home):
    token = store.create_image_survey("Old", [png(1)], [png(2)])
    survey = repo.get_survey_by_token(token)
    (folder,) = (home / store.SURVEY_DIR).iterdir()
    (folder / store.PROVENANCE_FILE).unlink()  # as for a survey made before provenance was recorded
    items = read_zip(export.export_zip(survey.id))[export.ITEMS_FILE]
    assert [r["source"] for r in items] == [export.NOT_RECORDED] * 2
    assert read_zip(export.export_zip(survey.id))[export.ANSWERS_FILE] == []


def test_export_name_is_file_safe():
    survey = repo.Survey(3, "t", 'Renal / "June" study: pilot', False, "open", None, 0, 0, 0)
    assert export.export_name(survey) == "survey_3_Renal-June-study-pilot.zip"


def test_manage_surveys_offers_the_export(home, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app.accounts import ADMIN_NAME
    from app.survey_auth import ADMIN_PASSWORD_ENV

    monkeypatch.setenv(ADMIN_PASSWORD_ENV, "correct horse battery staple")
    survey_id = library_and_upload_survey(home)
    at = AppTest.from_file(str(export.__file__).replace("survey_export.py", "main.py"), default_timeout=60)
    at.run()
    at.text_input(key="sign_in_name").input(ADMIN_NAME)
    at.text_input(key="sign_in_password").input("correct horse battery staple")
    at.button[0].click().run()
    at.switch_page("../pages/survey_manage.py").run()
    assert not at.exception, at.exception
    buttons = [b for b in at.get("download_button") if b.proto.label == "Export (ZIP)"]
    assert len(buttons) == 1 and buttons[0].proto.id and f"export_{survey_id}" in buttons[0].proto.id
