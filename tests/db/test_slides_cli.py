"""`renal-ldm slides add` registers a slide file and prints its id; `slides list` lists it (table or JSON), a
file that has gone marked missing; bad files are one line on stderr, exit 2, and change nothing."""

from __future__ import annotations

import json

import pytest
from slide_samples import stitched_slide

from db import repository as repo
from renal_ldm.cli import main

pytest.importorskip("openslide")


@pytest.fixture
def slide_file(tmp_path):
    return stitched_slide(tmp_path / "server")


def test_add_prints_the_id_and_list_shows_the_slide(db_url, slide_file, capsys):
    assert main(["slides", "add", str(slide_file), "--name", "kidney 2x2", "--db", db_url]) == 0
    out, err = capsys.readouterr()
    slide = repo.list_slides(url=db_url)[0]
    assert out == f"{slide.id}\n"
    assert f"registered slide #{slide.id} 'kidney 2x2' (stitched): 128x128 px, 2 level(s), 0.25 mpp" in err
    assert main(["slides", "list", "--db", db_url]) == 0
    table = capsys.readouterr().out
    assert "kidney 2x2" in table and str(slide_file.resolve()) in table and "MISSING" not in table
    slide_file.unlink()
    assert main(["slides", "list", "--json", "--url", db_url]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["id"] == slide.id and row["missing"] is True and row["levels"] == 2
    assert row["provenance"]["grid"] == {"cols": 2, "rows": 2}


def test_a_relative_path_is_taken_from_the_working_directory(db_url, slide_file, monkeypatch, capsys):
    monkeypatch.chdir(slide_file.parent)
    assert main(["slides", "add", slide_file.name, "--db", db_url]) == 0
    assert repo.list_slides(url=db_url)[0].path == str(slide_file.resolve())


def test_bad_files_are_one_line_and_change_nothing(db_url, slide_file, tmp_path, capsys):
    assert main(["slides", "add", str(slide_file), "--db", db_url]) == 0
    capsys.readouterr()
    notes = tmp_path / "notes.tif"
    notes.write_text("no slide")
    for given, message in (
        (tmp_path / "gone.tif", f"slide file {tmp_path / 'gone.tif'} does not exist"),
        (notes, f"{notes} is not a slide OpenSlide recognises"),
        (slide_file, f"slide file {slide_file.resolve()} is already listed, as slide #"),
    ):
        assert main(["slides", "add", str(given), "--db", db_url]) == 2
        err = capsys.readouterr().err
        assert err.startswith("renal-ldm slides: error: ") and message in err and err.count("\n") == 1
    assert len(repo.list_slides(url=db_url)) == 1


def test_an_empty_list_says_how_to_add_one(db_url, capsys):
    assert main(["slides", "list", "--db", db_url]) == 0
    assert "no slides registered" in capsys.readouterr().out
    assert main(["slides", "list", "--json", "--db", db_url]) == 0
    assert json.loads(capsys.readouterr().out) == []
