"""Survey storage: opaque names under the data directory, rows pointing at them, nothing left behind on refusal,
a random stamp per file so no survey (nor a duplicate) shares bytes with the Library or another survey, the
provenance beside the images, creation warnings, and the demo survey stored as an open demo."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from app import survey_store as store
from db import repository as repo
from db.migrate import init_db
from db.session import dispose_engines
from renal_ldm.survey_images import PRIVATE_CHUNK, normalise_image, png_chunks, stamp_png


@pytest.fixture
def home(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    monkeypatch.setenv("RENAL_LDM_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", url)
    init_db(url)
    yield tmp_path
    dispose_engines()


def pngs(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [normalise_image(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), 32) for _ in range(n)]


def test_stored_under_opaque_names_and_survey_created(home):
    real, synthetic = pngs(3, 0), pngs(3, 10)
    token = store.create_image_survey("Study", real, synthetic)
    survey = repo.get_survey_by_token(token)
    items = repo.survey_items_with_truth(survey.id)
    assert sorted(i.truth for i in items) == ["real"] * 3 + ["synthetic"] * 3
    folders = {i.image_path.rsplit("/", 1)[0] for i in items}
    assert len(folders) == 1 and re.fullmatch(r"survey/[0-9a-f]{16}", folders.pop())
    for item in items:
        assert re.fullmatch(r"survey/[0-9a-f]{16}/[0-9a-f]{24}\.png", item.image_path)
        data = store.read_image_bytes(item.image_path)
        stamp = dict(png_chunks(data))[PRIVATE_CHUNK]  # the input, byte for byte, plus the file's own stamp
        assert data in [stamp_png(png, stamp) for png in (real if item.truth == "real" else synthetic)]
    with pytest.raises(ValueError, match="'../etc/passwd' leads outside the data directory"):
        store.read_image_bytes("../etc/passwd")


def test_a_refused_survey_leaves_no_folder_behind(home):
    real, synthetic = pngs(2, 0), pngs(2, 10)
    store.create_image_survey("First", real, synthetic)
    before = set((home / store.SURVEY_DIR).iterdir())
    with pytest.raises(ValueError, match="survey title must be a non-empty text"):
        store.create_image_survey("   ", real, synthetic)
    assert set((home / store.SURVEY_DIR).iterdir()) == before
    with pytest.raises(ValueError, match="got no real and no synthetic images"):
        store.create_image_survey("Empty", [], [])


def test_title_longer_than_the_vocabulary_limit_is_refused_and_stores_nothing(home):
    from renal_ldm.survey import TITLE_MAX_CHARS

    assert store.create_image_survey("t" * TITLE_MAX_CHARS, pngs(1, 0), pngs(1, 1))
    before = set((home / store.SURVEY_DIR).iterdir())
    with pytest.raises(ValueError, match=f"at most {TITLE_MAX_CHARS} characters, got {TITLE_MAX_CHARS + 1}"):
        store.create_image_survey("t" * (TITLE_MAX_CHARS + 1), pngs(1, 0), pngs(1, 1))
    assert set((home / store.SURVEY_DIR).iterdir()) == before


def test_thumbnail_is_a_small_png(home):
    token = store.create_image_survey("Thumbs", pngs(1, 0), pngs(1, 1))
    item = repo.survey_items_with_truth(repo.get_survey_by_token(token).id)[0]
    with Image.open(io.BytesIO(store.thumbnail_png(item.image_path, 16))) as im:
        assert (im.format, im.size) == ("PNG", (16, 16))


def test_demo_survey_is_an_open_demo_with_both_halves(home, monkeypatch):
    import renal_ldm.paths
    from app.survey_demo import create_demo_survey

    monkeypatch.setenv(renal_ldm.paths.DEMO_MODEL_ENV, str(home / "no-demo-model"))
    stages = []
    demo = create_demo_survey(2, size=32, progress=lambda stage, done, total: stages.append(stage))
    survey = repo.get_survey_by_token(demo.token)
    assert survey.is_demo and survey.status == "open" and survey.item_count == 4 and survey.title == demo.title
    assert demo.link == f"?survey={demo.token}"
    assert stages[0] == "phantoms" and stages[-1] == "saving"


# --------------------------------------------------------------------------------- one encoding per file


def decoded(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def stored(token: str) -> list[tuple[repo.SurveyItem, bytes]]:
    items = repo.survey_items_with_truth(repo.get_survey_by_token(token).id)
    return [(i, store.read_image_bytes(i.image_path)) for i in items]


def library_sample(home, seed: int, size: int = 64) -> tuple[int, bytes]:
    """A Library sample written as the generator writes PNGs (8-bit RGB, same encoder): (id, its file bytes)."""
    from renal_ldm.survey_images import encode_png

    png = encode_png(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))
    (home / "samples").mkdir(exist_ok=True)
    (home / "samples" / f"s{seed}.png").write_bytes(png)
    sample = repo.add_sample(
        repo.NewSample(
            image_path=f"samples/s{seed}.png",
            caption=f"caption {seed}",
            model_name="tiny",
            seed=seed,
            steps=3,
            guidance=1.5,
            size=size,
        )
    )
    return sample.id, png


def test_a_survey_made_from_library_samples_at_the_survey_size_never_has_their_bytes(home):
    from app import survey_admin as admin
    from app import survey_files as files

    samples = [library_sample(home, seed) for seed in (1, 2)]
    # without the stamp, the survey file would be the Library file byte for byte (same pixels, same encoder)
    assert normalise_image(decoded(samples[0][1]), 64) == samples[0][1]
    synthetic, problems = files.gather(files.LIBRARY, "synthetic", 2, library_ids=[i for i, _ in samples])
    real = [
        (f"r{i}.png", normalise_image(np.random.default_rng(10 + i).integers(0, 256, (64, 64, 3), np.uint8), 64))
        for i in range(2)
    ]
    result = admin.create_survey_from_files(
        "From the Library", real, synthetic, n_real=2, n_synthetic=2, size=64, max_upload_mb=5, source_errors=problems
    )
    assert result.errors == [] and result.token
    library = {png: decoded(png) for _, png in samples}
    for item, data in stored(result.token):
        assert data not in library and data not in {png for _, png in real}
        if item.truth == "synthetic":  # the very pixels of one Library sample
            assert any(np.array_equal(decoded(data), pixels) for pixels in library.values())


def test_two_surveys_and_a_duplicate_of_the_same_images_share_no_bytes(home):
    real, synthetic = pngs(2, 0), pngs(2, 10)
    first = store.create_image_survey("First", real, synthetic)
    second = store.create_image_survey("Second", real, synthetic)
    copy = store.duplicate_image_survey(repo.get_survey_by_token(first).id)
    files = [data for token in (first, second, copy) for _, data in stored(token)]
    assert len(files) == 12 and len(set(files)) == 12
    for token in (first, second, copy):  # pixels untouched: each stored image decodes to one of the inputs
        for item, data in stored(token):
            half = real if item.truth == "real" else synthetic
            assert any(np.array_equal(decoded(data), decoded(png)) for png in half)


def test_the_stamp_is_the_same_kind_of_chunk_in_both_halves_and_tells_nothing(home):
    from renal_ldm.survey_images import PRIVATE_CHUNK_BYTES

    token = store.create_image_survey("Stamped", pngs(3, 0), pngs(3, 10))
    layouts, payloads = set(), set()
    for _item, data in stored(token):
        chunks = png_chunks(data)
        layouts.add(tuple((kind, len(body)) for kind, body in chunks if kind != b"IDAT"))
        payloads.add(dict(chunks)[PRIVATE_CHUNK])
    # one layout for all six files, real or synthetic: IHDR, the 16-byte stamp, IEND
    assert layouts == {((b"IHDR", 13), (PRIVATE_CHUNK, PRIVATE_CHUNK_BYTES), (b"IEND", 0))}
    assert len(payloads) == 6  # fresh random bytes per file: nothing shared within a half either


def test_a_duplicate_has_its_own_files_with_the_same_truths_positions_and_provenance(home):
    origins = [{"source": "upload", "file": f"r{i}.png"} for i in range(2)]
    token = store.create_image_survey("Original", pngs(2, 0), pngs(2, 10), real_provenance=origins)
    source = repo.get_survey_by_token(token)
    copy = repo.get_survey_by_token(store.duplicate_image_survey(source.id))
    assert (copy.title, copy.status, copy.item_count) == ("Original (copy)", "draft", 4)
    old, new = repo.survey_items_with_truth(source.id), repo.survey_items_with_truth(copy.id)
    assert [i.truth for i in old] == [i.truth for i in new]
    assert not {i.image_path for i in old} & {i.image_path for i in new}
    assert store.items_provenance([i.image_path for i in new]) == store.items_provenance([i.image_path for i in old])
    assert sorted(p.get("file", "") for p in store.items_provenance([i.image_path for i in new])) == [
        "",
        "",
        "r0.png",
        "r1.png",
    ]


def test_a_failed_duplicate_leaves_no_folder_behind(home, monkeypatch):
    token = store.create_image_survey("Original", pngs(1, 0), pngs(1, 10))
    before = set((home / store.SURVEY_DIR).iterdir())

    def refuse(*args, **kwargs):
        raise ValueError("database refused the copy")

    monkeypatch.setattr(store.repository, "duplicate_survey", refuse)
    with pytest.raises(ValueError, match="database refused the copy"):
        store.duplicate_image_survey(repo.get_survey_by_token(token).id)
    assert set((home / store.SURVEY_DIR).iterdir()) == before


def test_provenance_needs_one_record_per_image(home):
    before = set((home / store.SURVEY_DIR).iterdir()) if (home / store.SURVEY_DIR).exists() else set()
    with pytest.raises(ValueError, match="real provenance must give one record per image: 1 records for 2 images"):
        store.create_image_survey("Mismatch", pngs(2, 0), pngs(1, 1), real_provenance=[{"source": "upload"}])
    assert (set((home / store.SURVEY_DIR).iterdir()) if (home / store.SURVEY_DIR).exists() else set()) == before


# ------------------------------------------------------------------------------------ creation warnings


def encoded(arr: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format=fmt, **options)
    return out.getvalue()


def noise(size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_creation_warns_when_the_halves_differ_in_format_and_size(home):
    from app import survey_admin as admin

    real = [(f"scan{i}.jpg", encoded(noise(96, i), "JPEG", quality=90)) for i in range(2)]
    synthetic = [(f"sample{i}.png", encoded(noise(64, 10 + i), "PNG")) for i in range(2)]
    result = admin.create_survey_from_files("Mixed", real, synthetic, n_real=2, n_synthetic=2, size=64, max_upload_mb=5)
    assert result.errors == [] and result.token  # warned, not refused
    assert (
        "Native formats differ: the real half is all JPEG and the synthetic half all PNG: a participant can "
        "tell them apart by compression artefacts."
    ) in result.warnings
    assert any(
        w.startswith("Native sizes differ: the real half is all 96 x 96 px and the synthetic half all 64 x 64 px")
        for w in result.warnings
    )
    assert not any("modes" in w or "colour profiles" in w for w in result.warnings)


def test_alike_halves_give_no_warning(home):
    from app import survey_admin as admin

    real = [(f"r{i}.png", encoded(noise(64, i), "PNG")) for i in range(2)]
    synthetic = [(f"s{i}.png", encoded(noise(64, 10 + i), "PNG")) for i in range(2)]
    result = admin.create_survey_from_files("Alike", real, synthetic, n_real=2, n_synthetic=2, size=64, max_upload_mb=5)
    assert result.token and result.warnings == []


def test_a_small_image_is_refused_unless_up_scaling_is_allowed(home):
    from app import survey_admin as admin

    real = [("tiny.png", encoded(noise(40, 0), "PNG")), ("fine.png", encoded(noise(64, 1), "PNG"))]
    synthetic = [(f"s{i}.png", encoded(noise(64, 10 + i), "PNG")) for i in range(2)]
    args = {"n_real": 2, "n_synthetic": 2, "size": 64, "max_upload_mb": 5}
    refused = admin.create_survey_from_files("Small", real, synthetic, **args)
    assert refused.token is None and repo.list_surveys() == []
    assert refused.errors == [
        "Real image tiny.png: 40 x 40 px is smaller than the survey size of 64 x 64 px and "
        "would be up-scaled (up-scaled images look soft, which gives the answer away); "
        "expected at least 64 px on the shorter side: pick a smaller survey size, or tick "
        "'Allow up-scaling'"
    ]
    allowed = admin.create_survey_from_files("Small", real, synthetic, allow_upscale=True, **args)
    assert allowed.errors == [] and allowed.token
    assert (
        "Real image tiny.png: 40 x 40 px is up-scaled to 64 x 64 px (allowed): up-scaled images look soft, and "
        "soft images give the answer away when the other half is sharp" in allowed.warnings
    )


def test_survey_images_are_served_as_stored_whatever_their_size():
    """Streamlit re-encodes an image shown narrower than it is; the survey page never asks for that."""
    from app.survey_participant import DISPLAY_WIDTH, display_width
    from renal_ldm.survey_images import normalise_image

    for side in (64, 256, 768):
        png = normalise_image(np.zeros((side, side, 3), dtype=np.uint8), side)
        assert display_width(png) == max(DISPLAY_WIDTH, side)
