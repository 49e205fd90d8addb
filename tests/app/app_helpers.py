"""Helpers for the AppTest tests (a module of its own: every conftest.py is named conftest)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN = str(REPO_ROOT / "app" / "main.py")
RUN_TIMEOUT = 60.0  # the first run in a process imports torch and diffusers


def page_path(filename: str) -> str:
    """A pages/ file as AppTest.switch_page wants it: relative to app/main.py's folder."""
    return os.path.relpath(REPO_ROOT / "pages" / filename, REPO_ROOT / "app")


def shown(markdown: str) -> str:
    """A Markdown element's text as the browser shows it: the escapes of app.plain.literal undone."""
    import re

    return re.sub(r"\\(.)", r"\1", markdown)
