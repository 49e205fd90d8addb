"""AppTest fixtures: each test gets its own data directory and SQLite database; the session's tiny checkpoint
(`tiny_model_dir`, tests/conftest.py) is registered per test by `tiny_model`.

The app's process-wide resources (st.cache_resource: migrations per database URL, the generation worker)
live in this test process; a job writes to the data directory and database set when it was submitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from app_helpers import MAIN, RUN_TIMEOUT


@pytest.fixture
def app_home(tmp_path, monkeypatch) -> Iterator[Path]:
    """A fresh data directory and database for the app under test; no shipped demo model visible."""
    import renal_ldm.paths
    from db.migrate import init_db
    from db.session import dispose_engines

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("RENAL_LDM_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{home / 'renal_ldm.sqlite3'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(renal_ldm.paths.DEMO_MODEL_ENV, str(tmp_path / "no-demo-model"))
    init_db()
    yield home
    dispose_engines()


@pytest.fixture
def tiny_model(app_home, tiny_model_dir):
    """The tiny checkpoint registered as "tiny" in this test's database."""
    from db import repository as repo

    return repo.register_model("tiny", tiny_model_dir)


@pytest.fixture
def app(app_home):
    """An AppTest of the whole app (navigation included), run once."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at
