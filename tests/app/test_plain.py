"""literal(): user text renders as typed in Markdown elements (checked with a CommonMark renderer)."""

from __future__ import annotations

import html
import re

import pytest
from markdown_it import MarkdownIt

from app.plain import literal

RENDER = MarkdownIt("commonmark")


def _rendered_text(markdown: str) -> str:
    out = RENDER.render(markdown)
    assert "<a " not in out and "<strong>" not in out and "<em>" not in out and "<code>" not in out
    return html.unescape(re.sub(r"<[^>]+>", "", out)).strip()


@pytest.mark.parametrize(
    "name",
    [
        "**bold** [x](http://evil.example)",
        "# heading",
        "`code`",
        "_under_ *star*",
        ":red[alert] :material/home:",
        "$x^2$",
        "<b>html</b>",
        "1. list",
        "- item",
        "back\\slash",
        "plain name",
    ],
)
def test_markdown_in_a_name_renders_literally(name):
    assert _rendered_text(f"Model {literal(name)} is ready") == f"Model {name} is ready"


def test_directives_and_latex_markers_are_escaped():
    assert literal(":red[x]") == "\\:red\\[x\\]"
    assert literal("$1") == "\\$1"
