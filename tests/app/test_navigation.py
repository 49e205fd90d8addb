"""Every page the app registers renders without an exception, and the navigation is grouped by role."""

from __future__ import annotations

import pytest
from app_helpers import page_path

from app.pages_registry import ROLE_PAGES, existing_role_pages

BUILT = existing_role_pages()


def test_generate_pages_are_registered_in_their_section():
    generate = [(f, t) for s, f, t, _ in ROLE_PAGES if s == "Generate"]
    assert generate[:3] == [("compose.py", "Compose"), ("generate.py", "Generate"), ("library.py", "Library")]
    assert {f for _, f, _, _ in BUILT} >= {"compose.py", "generate.py", "library.py"}


def test_default_page_is_compose(app):
    assert [t.value for t in app.title] == ["Compose a caption"]


@pytest.mark.parametrize("filename,title", [(f, t) for _, f, t, _ in BUILT], ids=[f for _, f, _, _ in BUILT])
def test_every_page_renders(app, filename, title):
    app.switch_page(page_path(filename)).run()
    assert not app.exception, [e.message for e in app.exception]
    assert len(app.main.children) > 0, f"{filename} shows nothing"
    if filename in {"compose.py", "generate.py", "library.py"}:
        assert (
            app.title[0].value
            == {"compose.py": "Compose a caption", "generate.py": "Generate tissue", "library.py": "Library"}[filename]
        )


def test_every_page_renders_with_a_model_and_samples(app, tiny_model):
    from app.generation import GenerationService
    from renal_ldm.sample import SampleRequest

    service = GenerationService()
    try:
        snap = service.wait(service.submit(tiny_model, SampleRequest(caption="", n=1, steps=2)))
        assert snap.state == "done", snap.error
    finally:
        service.shutdown()
    for _, filename, _, _ in BUILT:
        app.switch_page(page_path(filename)).run()
        assert not app.exception, (filename, [e.message for e in app.exception])
