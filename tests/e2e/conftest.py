"""Playwright end-to-end fixtures: one Debian Chromium per session and a fresh page per test.

The servers, waits and screenshots are in helpers.py. Each test module starts its own app server (its own data
directory and SQLite database), so tests never see each other's samples. Screenshots go to artifacts/e2e/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ARTIFACTS, CHROMIUM, launch_chromium

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium for the session; skips with a reason where it is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request) -> Iterator:
    """A fresh browser context and page; a screenshot of the final state is kept as a test artifact."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-final.png"), full_page=True)
    except Exception:  # the page may already be gone after a failure; the artifact is a courtesy
        pass
    context.close()


@pytest.fixture(scope="module")
def demo_model_server(tmp_path_factory):
    """An app server on its embedded defaults (the shipped demo model); skipped where the model is absent."""
    from helpers import start_app_server, stop_app_server

    from renal_ldm.models.manifest import is_checkpoint
    from renal_ldm.paths import demo_model_dir

    if not is_checkpoint(demo_model_dir()):
        pytest.skip(f"the shipped demo model is not at {demo_model_dir()}")
    server = start_app_server(tmp_path_factory.mktemp("demo_home"))
    yield server
    stop_app_server(server)
