"""Which pages exist, grouped by section, and which role sees each. One list, so navigation, access control and
tests agree on what the app offers."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"

# (section, file in pages/, title, icon). Pages that are not built yet are simply not listed. Researchers see
# every page; annotators the pages of ANNOTATOR_PAGES (the Slides and Annotate pages, once they are built).
ROLE_PAGES: list[tuple[str, str, str, str]] = [
    ("Generate", "compose.py", "Compose", ":material/edit_note:"),
    ("Generate", "generate.py", "Generate", ":material/auto_awesome:"),
    ("Generate", "library.py", "Library", ":material/photo_library:"),
    ("Slides", "slides.py", "Slides", ":material/gallery_thumbnail:"),
    ("Slides", "annotate.py", "Annotate", ":material/brush:"),
    ("Survey", "survey_take.py", "Take the survey", ":material/quiz:"),
    ("Survey", "survey_manage.py", "Manage surveys", ":material/fact_check:"),
    ("Survey", "survey_results.py", "Results", ":material/analytics:"),
    ("Evaluate", "evaluate.py", "Evaluate", ":material/science:"),
]

ANNOTATOR_PAGES: frozenset[str] = frozenset({"slides.py", "annotate.py"})

PARTICIPANT_PAGE: tuple[str, str, str] | None = ("survey_take.py", "Survey", ":material/quiz:")


def page_file(filename: str) -> str:
    """The absolute path of a page file, as st.switch_page expects it (paths resolve against app/, not the
    repository root, because app/main.py is the entry script)."""
    return str(PAGES_DIR / filename)


def existing_role_pages(role: str | None = None) -> list[tuple[str, str, str, str]]:
    """The built pages a role sees (every page for a researcher, and in open mode where role is None)."""
    built = [p for p in ROLE_PAGES if (PAGES_DIR / p[1]).is_file()]
    if role in (None, "researcher"):
        return built
    if role == "annotator":
        return [p for p in built if p[1] in ANNOTATOR_PAGES]
    raise ValueError(f"unknown role {role!r}; expected researcher or annotator")


def role_pages(role: str | None = None) -> dict[str, list]:
    sections: dict[str, list] = {}
    for index, (section, filename, title, icon) in enumerate(existing_role_pages(role)):
        page = st.Page(PAGES_DIR / filename, title=title, icon=icon, default=index == 0)
        sections.setdefault(section, []).append(page)
    if not sections:  # an annotator before the annotation pages exist
        sections["Annotate"] = [st.Page(_nothing_for_role, title="Welcome", default=True)]
    return sections


def sign_in_pages() -> list:
    """The sign-in page at "/" and at the address of every product page: a signed-out visitor who opens
    /library gets the sign-in form there (not "page not found"), and lands on the Library once signed in."""
    from app.access import sign_in_page

    pages = [st.Page(sign_in_page, title="Sign in", icon=":material/lock:", default=True)]
    for _, filename, _, _ in existing_role_pages():
        pages.append(st.Page(sign_in_page, title="Sign in", url_path=Path(filename).stem))
    return pages


def _nothing_for_role() -> None:
    st.title("Welcome")
    st.info(
        "Your account is an annotator account: it opens the Slides and Annotate pages, which this "
        "installation does not have yet. Ask a researcher of your lab to update renal-ldm."
    )


def participant_pages() -> list:
    if PARTICIPANT_PAGE is None:
        return [st.Page(_no_survey, title="Survey")]
    filename, title, icon = PARTICIPANT_PAGE
    return [st.Page(PAGES_DIR / filename, title=title, icon=icon, default=True)]


def _no_survey() -> None:
    st.title("Survey")
    st.info("No survey is hosted here yet.")
