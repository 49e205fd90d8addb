"""Helpers for the Playwright end-to-end tests: start and stop a real app server, launch Debian's Chromium, wait
for Streamlit, keep screenshots. A module of its own (conftest.py holds fixtures only); import it as `helpers`
(pytest puts tests/e2e/ on sys.path).

Waits are for states, never fixed sleeps: `wait_for_app` returns once the browser says the script run is over.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts" / "e2e"  # git-ignored; kept for a person to look at after a run
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
SERVER_START_TIMEOUT_S = 60.0
# Streamlit marks its root element with the script's run state and the websocket's state (its own e2e tests
# wait on the same attributes); the status widget is the "Running..." indicator.
APP_IDLE_JS = """() => {
  const app = document.querySelector("[data-testid='stApp']");
  return app !== null
    && app.getAttribute('data-test-script-state') === 'notRunning'
    && app.getAttribute('data-test-connection-state') === 'CONNECTED'
    && !document.querySelector("[data-testid='stStatusWidget']");
}"""


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


def start_app_server(
    home: Path, extra_env: dict[str, str] | None = None, timeout: float = SERVER_START_TIMEOUT_S
) -> AppServer:
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
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(REPO_ROOT / "app" / "main.py"),
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
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
            time.sleep(0.3)  # polling interval of the health check, not a synchronisation
    process.terminate()
    raise RuntimeError(f"app server did not become healthy in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_app_server(server: AppServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


def launch_chromium(playwright):
    """Debian's Chromium, headless, through a started sync_playwright(); the caller checks CHROMIUM exists."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def screenshot(page, name: str) -> Path:
    """Save a named screenshot under artifacts/e2e/ and return its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def wait_for_app(page, timeout: float = 30_000) -> None:
    """Wait until Streamlit has finished running the page script: connected, script state "notRunning", no
    'Running...' status widget (checked by the browser on every animation frame)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.wait_for_function(APP_IDLE_JS, timeout=timeout)


SELECT_ATTEMPTS, SELECT_TIMEOUT_MS = 5, 2_000


def choose_option(page, label: str, option: str) -> None:
    """Pick an option of a Streamlit selectbox by its label, as a person does: open the list, click the option.
    A click can land while Streamlit is still drawing (the list does not open) or redraw the list under the
    pointer (the option detaches): then open it again and click again, up to SELECT_ATTEMPTS times."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    box = page.get_by_role("combobox", name=label, exact=True)
    wanted = page.get_by_role("option", name=option, exact=True)
    for _ in range(SELECT_ATTEMPTS):
        if not wanted.is_visible():
            box.click()
        try:
            wanted.click(timeout=SELECT_TIMEOUT_MS)
            break
        except PlaywrightTimeoutError:
            continue
    else:
        raise AssertionError(f"could not pick {option!r} in the {label!r} list in {SELECT_ATTEMPTS} tries")
    wait_for_app(page)
