"""Which pages exist, grouped by role. One list, so navigation and tests agree on what the app offers."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"

# (section, file in pages/, title, icon). Pages that are not built yet are simply not listed.
ROLE_PAGES: list[tuple[str, str, str, str]] = [
    ("Generate", "compose.py", "Compose", ":material/edit_note:"),
    ("Generate", "generate.py", "Generate", ":material/auto_awesome:"),
    ("Generate", "library.py", "Library", ":material/photo_library:"),
    ("Survey", "survey_take.py", "Take the survey", ":material/quiz:"),
    ("Survey", "survey_manage.py", "Manage surveys", ":material/fact_check:"),
    ("Survey", "survey_results.py", "Results", ":material/analytics:"),
]

PARTICIPANT_PAGE: tuple[str, str, str] | None = ("survey_take.py", "Survey", ":material/quiz:")


def page_file(filename: str) -> str:
    """The absolute path of a page file, as st.switch_page expects it (paths resolve against app/, not the
    repository root, because app/main.py is the entry script)."""
    return str(PAGES_DIR / filename)


def existing_role_pages() -> list[tuple[str, str, str, str]]:
    return [p for p in ROLE_PAGES if (PAGES_DIR / p[1]).is_file()]


def role_pages() -> dict[str, list]:
    sections: dict[str, list] = {}
    for index, (section, filename, title, icon) in enumerate(existing_role_pages()):
        page = st.Page(PAGES_DIR / filename, title=title, icon=icon, default=index == 0)
        sections.setdefault(section, []).append(page)
    return sections


def participant_pages() -> list:
    if PARTICIPANT_PAGE is None:
        return [st.Page(_no_survey, title="Survey")]
    filename, title, icon = PARTICIPANT_PAGE
    return [st.Page(PAGES_DIR / filename, title=title, icon=icon, default=True)]


def _no_survey() -> None:
    st.title("Survey")
    st.info("No survey is hosted here yet.")
