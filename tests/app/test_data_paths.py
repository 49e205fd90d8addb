"""Paths from the database are resolved inside the data directory before anything is read or deleted: a row
pointing at "../../etc/passwd", an absolute path or a symbolic link leading out is refused with a message
naming the path, and the file it points at is neither read nor deleted."""

from __future__ import annotations

import io
import zipfile

import pytest
from sqlalchemy import update

from app import downloads, library
from app import survey_store as store
from db import models
from db import repository as repo
from db.session import session_scope
from renal_ldm.paths import resolve_in_home

SECRET = b"outside the data directory: never to be read or deleted"


@pytest.fixture
def home(app_home, tmp_path):
    """The app's data directory (tests/app/conftest.py), with a file beside it that must stay untouched."""
    (tmp_path / "outside.png").write_bytes(SECRET)
    return app_home


def test_a_path_inside_resolves_to_its_file(home):
    (home / "samples").mkdir()
    (home / "samples" / "a.png").write_bytes(b"png")
    assert resolve_in_home("samples/a.png") == home.resolve() / "samples" / "a.png"
    assert resolve_in_home("samples/../samples/a.png").read_bytes() == b"png"  # '..' that stays inside is fine


@pytest.mark.parametrize(
    "stored, problem",
    [
        ("../outside.png", "leads outside the data directory"),
        ("../../etc/passwd", "leads outside the data directory"),
        ("samples/../../outside.png", "leads outside the data directory"),
        ("/etc/passwd", "is absolute"),
        ("", "is empty"),
        (".", "names the data directory itself"),
        ("samples/..", "names the data directory itself"),
    ],
)
def test_a_path_leaving_the_data_directory_is_refused_naming_it(home, stored, problem):
    with pytest.raises(ValueError, match=f"stored file path {stored!r} {problem}"):
        resolve_in_home(stored)


def test_a_symbolic_link_pointing_out_is_refused(home, tmp_path):
    (home / "samples").mkdir()
    (home / "samples" / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(ValueError, match="'samples/link.png' leads outside the data directory"):
        resolve_in_home("samples/link.png")


def tampered_sample(image_path: str) -> repo.Sample:
    """A Library row whose path was changed behind the product's back (add_sample itself refuses such paths)."""
    sample = repo.add_sample(
        repo.NewSample(
            image_path="samples/ok.png", caption="c", model_name="tiny", seed=1, steps=2, guidance=1.5, size=8
        )
    )
    with session_scope() as session:
        session.execute(update(models.Sample).where(models.Sample.id == sample.id).values(image_path=image_path))
    return repo.get_sample(sample.id)


@pytest.mark.parametrize("image_path", ["../outside.png", "../../etc/passwd", "/etc/passwd"])
def test_a_tampered_library_row_is_neither_read_nor_deleted(home, tmp_path, image_path):
    if image_path == "/etc/passwd":
        image_path = str(tmp_path / "outside.png")  # absolute, and pointing at a file that exists
    sample = tampered_sample(image_path)
    with pytest.raises(ValueError, match=f"stored file path {image_path!r} (leads outside|is absolute)"):
        downloads.png_bytes(sample)
    with pytest.raises(ValueError, match=f"stored file path {image_path!r} .*nothing read or deleted"):
        library.delete_sample(sample.id)
    assert repo.get_sample(sample.id) is not None  # the row stays: nothing changed
    assert (tmp_path / "outside.png").read_bytes() == SECRET  # the file it points at is untouched
    with zipfile.ZipFile(io.BytesIO(downloads.zip_samples([sample]))) as archive:
        assert archive.namelist() == ["samples.csv"]  # listed, not packed
        assert "(refused: outside the data directory)" in archive.read("samples.csv").decode()


def test_a_tampered_survey_item_is_never_served_copied_or_exported(home, tmp_path):
    from app import survey_export as export

    token = repo.create_survey("Tampered", [("../outside.png", "real"), ("/etc/passwd", "synthetic")])
    survey = repo.get_survey_by_token(token)
    for item in repo.survey_items_with_truth(survey.id):
        with pytest.raises(ValueError, match=f"stored file path {item.image_path!r}"):
            store.read_image_bytes(item.image_path)
        with pytest.raises(ValueError, match=f"stored file path {item.image_path!r}"):
            store.thumbnail_png(item.image_path)
    with pytest.raises(ValueError, match="stored file path '(../outside.png|/etc/passwd)'"):
        store.duplicate_image_survey(survey.id)
    survey_root = home / store.SURVEY_DIR
    assert len(repo.list_surveys()) == 1
    assert not survey_root.exists() or not any(survey_root.iterdir())  # the refused copy left no folder
    with zipfile.ZipFile(io.BytesIO(export.export_zip(survey.id))) as archive:
        items = archive.read(export.ITEMS_FILE).decode()
    assert items.count("not readable: stored file path") == 2 and SECRET.decode() not in items
