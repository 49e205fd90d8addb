"""Gathering a survey half's files from uploads, a server folder or Library samples, with one message per problem
and the provenance each file carries to the export."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app import survey_files as files


def png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


class FakeUpload:
    """What Streamlit's file_uploader hands over: a name and getvalue()."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def image_folder(path, n: int):
    path.mkdir()
    for i in range(n):
        (path / f"{i}.png").write_bytes(png(i))
    (path / "readme.md").write_text("not an image")
    return path


def test_uploads_are_taken_as_given_and_other_inputs_are_not_read(tmp_path):
    uploads = [FakeUpload("a.png", b"A"), FakeUpload("b.jpg", b"B")]
    got = files.gather(files.UPLOAD, "real", 1, uploads=uploads, folder=str(tmp_path / "missing"))
    assert got == (
        [
            files.SourceFile("a.png", b"A", {"source": "upload", "file": "a.png"}),
            files.SourceFile("b.jpg", b"B", {"source": "upload", "file": "b.jpg"}),
        ],
        [],
    )
    assert files.gather(files.UPLOAD, "real", 1, uploads=None) == ([], [])


def test_folder_gives_its_images_and_at_most_n_of_them(tmp_path):
    folder = image_folder(tmp_path / "real", 5)
    gathered, problems = files.gather(files.FOLDER, "real", 10, folder=f"  {folder}  ")
    assert problems == [] and [f.name for f in gathered] == [f"{i}.png" for i in range(5)]
    assert gathered[2].data == png(2)
    assert gathered[2].provenance == {"source": "server folder", "folder": str(folder), "file": "2.png"}
    some, problems = files.gather(files.FOLDER, "real", 2, folder=str(folder))
    assert problems == [] and len(some) == 2 and {f.name for f in some} <= {f"{i}.png" for i in range(5)}


@pytest.mark.parametrize(
    "folder, expected",
    [
        ("", "Give the server folder of the synthetic images."),
        ("   ", "Give the server folder of the synthetic images."),
        (None, "Give the server folder of the synthetic images."),
    ],
)
def test_folder_not_given_is_one_problem_naming_the_half(folder, expected):
    assert files.gather(files.FOLDER, "synthetic", 3, folder=folder) == ([], [expected])


def test_missing_or_imageless_folder_is_one_problem_naming_it(tmp_path):
    gathered, problems = files.gather(files.FOLDER, "real", 3, folder=str(tmp_path / "nowhere"))
    assert gathered == [] and problems == [
        f"Real images: folder {str(tmp_path / 'nowhere')!r} does not exist on the server"
    ]
    (tmp_path / "empty").mkdir()
    _, problems = files.gather(files.FOLDER, "synthetic", 3, folder=str(tmp_path / "empty"))
    assert (
        len(problems) == 1
        and problems[0].startswith("Synthetic images: folder")
        and "holds no image files" in problems[0]
    )
    (tmp_path / "a-file.png").write_bytes(png(0))
    _, problems = files.gather(files.FOLDER, "real", 3, folder=str(tmp_path / "a-file.png"))
    assert problems == [f"Real images: {str(tmp_path / 'a-file.png')!r} is not a folder; expected a folder of images"]


def test_folder_files_by_suffix_sorted_and_limited(tmp_path):
    folder = image_folder(tmp_path / "imgs", 5)
    assert [f.name for f in files.folder_files(folder)] == [f"{i}.png" for i in range(5)]
    assert len(files.folder_files(folder, limit=2)) == 2
    with pytest.raises(FileNotFoundError, match="does not exist"):
        files.folder_files(tmp_path / "missing")


def test_unknown_source_is_refused_naming_it():
    with pytest.raises(ValueError, match="unknown image source 'Camera'; expected one of Upload files, Library"):
        files.gather("Camera", "real", 3)


def test_library_samples_by_id_and_a_deleted_one_named(tmp_path, monkeypatch):
    from db import repository as repo
    from db.migrate import init_db
    from db.session import dispose_engines

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    monkeypatch.setenv("RENAL_LDM_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", url)
    init_db(url)
    try:
        (tmp_path / "samples").mkdir()
        (tmp_path / "samples" / "s1.png").write_bytes(png(1))
        kept = repo.add_sample(
            repo.NewSample(
                image_path="samples/s1.png",
                caption="c",
                model_name="tiny",
                seed=1,
                steps=2,
                guidance=1.5,
                size=8,
                scheduler="ddpm",
            )
        )
        gathered, problems = files.gather(files.LIBRARY, "synthetic", 2, library_ids=[kept.id, kept.id + 1])
        assert [(f.name, f.data) for f in gathered] == [(f"Library sample #{kept.id}", png(1))]
        assert gathered[0].provenance == {
            "source": "library sample",
            "sample_id": kept.id,
            "model": "tiny",
            "caption": "c",
            "seed": 1,
            "steps": 2,
            "guidance": 1.5,
            "scheduler": "ddpm",
            "eta": 0.0,
            "size": 8,
        }
        assert problems == [f"Library sample #{kept.id + 1}: no longer in the Library (deleted); pick another"]
        assert files.gather(files.LIBRARY, "synthetic", 2, library_ids=None) == ([], [])
    finally:
        dispose_engines()
