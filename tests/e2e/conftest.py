"""Playwright end-to-end fixtures: a real app server on a free loopback port, and Debian's Chromium.

Each test module gets its own data directory and SQLite database, so tests never see each other's samples.
Screenshots go to artifacts/e2e/ (git-ignored), kept for a person to look at after a run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts" / "e2e"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.e2e


@dataclass
class AppServer:
    """A running `streamlit run app/main.py` with its own data directory and database."""

    url: str
    home: Path
    database_url: str
    process: subprocess.Popen
    log: Path

    def env(self) -> dict[str, str]:
        """Environment for code in the test process that must see the server's database."""
        return {"RENAL_LDM_HOME": str(self.home), "DATABASE_URL": self.database_url}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app_server(home: Path, extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> AppServer:
    """Start the app on a free loopback port and wait for /_stcore/health to answer "ok"."""
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    database_url = f"sqlite:///{home / 'renal_ldm.sqlite3'}"
    env = {
        **os.environ,
        "RENAL_LDM_HOME": str(home),
        "DATABASE_URL": database_url,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **(extra_env or {}),
    }
    log = home / "server.log"
    process = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "app" / "main.py"),
            "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return AppServer(url, home, database_url, process, log)
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"app server did not become healthy in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_app_server(server: AppServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def browser():
    """One headless Debian Chromium for the session; skips with a reason where it is not installed."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian chromium not found at {CHROMIUM}: `make test` installs it (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
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


def screenshot(page, name: str) -> Path:
    """Save a named screenshot under artifacts/e2e/ and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_for_app(page, timeout: float = 30_000) -> None:
    """Wait until Streamlit has finished running the page script (no 'Running...' status widget)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout
    )
