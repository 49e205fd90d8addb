"""Names and texts people type (model, preset, survey title) render literally, never as Markdown."""

from __future__ import annotations

import html
import re

from app_helpers import page_path
from markdown_it import MarkdownIt

from db import repository as repo

MARKDOWN_NAME = "**bold** [click](http://evil.example) :red[x]"
RENDER = MarkdownIt("commonmark")


def rendered(markdown: str) -> str:
    """What a browser shows for a Markdown source (CommonMark, as Streamlit's renderer follows)."""
    out = RENDER.render(markdown)
    return html.unescape(re.sub(r"<[^>]+>", "", out)).strip()


def shown_texts(at) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "info", "warning", "success", "error", "title"):
        out += [rendered(str(e.value)) for e in getattr(at, kind)]
    out += [rendered(str(e.label)) for e in at.expander]
    return out


def test_a_model_named_with_markdown_renders_literally(app, app_home):
    repo.add_sample(
        image_path="samples/x.png", caption="c", model_name=MARKDOWN_NAME, seed=1, steps=2, guidance=1.5, size=32
    )
    app.switch_page(page_path("library.py")).run()
    assert not app.exception
    assert any(f"· {MARKDOWN_NAME}" in text for text in shown_texts(app)), shown_texts(app)
    assert not any("<a " in RENDER.render(str(m.value)) for m in app.markdown)


def test_an_unusable_model_with_markdown_in_its_name_is_named_literally(app, app_home, tmp_path):
    from db.repository.models_registry import register_model

    broken = tmp_path / "gone"
    broken.mkdir()
    (broken / "renal_ldm.json").write_text("{}")
    register_model(MARKDOWN_NAME, broken)
    app.switch_page(page_path("generate.py")).run()
    assert not app.exception
    assert any(f"Model '{MARKDOWN_NAME}' is registered but cannot be used" in t for t in shown_texts(app))


def test_a_preset_named_with_markdown_renders_literally(app, app_home):
    repo.save_preset(MARKDOWN_NAME, "This image showcases various types of tissue structures found in renal tissue.")
    app.switch_page(page_path("compose.py")).run()
    assert not app.exception
    assert MARKDOWN_NAME in shown_texts(app)


def test_a_survey_title_with_markdown_renders_literally(app, app_home):
    repo.create_survey(MARKDOWN_NAME, [("survey/a.png", "real"), ("survey/b.png", "synthetic")])
    app.switch_page(page_path("survey_manage.py")).run()
    assert not app.exception
    assert MARKDOWN_NAME in shown_texts(app)
