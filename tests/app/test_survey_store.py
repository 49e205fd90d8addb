"""Survey storage: opaque names under the data directory, rows pointing at them, nothing left behind on refusal,
and the demo survey stored as an open demo."""

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
from renal_ldm.survey_images import normalise_image


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
        assert store.read_image_bytes(item.image_path) in (real if item.truth == "real" else synthetic)
    with pytest.raises(ValueError, match="outside the data directory"):
        store.resolve_image_path("../etc/passwd")


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
