"""Library page: every sample, filters (caption, model, dates), pages, details, regenerate, delete with confirm."""

from __future__ import annotations

import datetime as dt

import pytest
from app_helpers import page_path

from app import state
from app.generation import GenerationService
from app.library import PAGE_SIZE, date_bounds
from db import repository as repo
from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.sample import SampleRequest

LIBRARY = page_path("library.py")


@pytest.fixture
def samples(app_home, tiny_model):
    """13 samples of the study caption (seeds 100..112) and 1 of free text (seed 5), drawn by the tiny model."""
    service = GenerationService()
    try:
        for request in (
            SampleRequest(caption=GENERATING_CAPTION, n=PAGE_SIZE + 1, seed=100, steps=1, guidance=1.0, batch_size=16),
            SampleRequest(caption="pink tissue", n=1, seed=5, steps=1, guidance=1.0),
        ):
            snap = service.wait(service.submit(tiny_model, request), timeout=120)
            assert snap.state == "done", snap.error
    finally:
        service.shutdown()
    return sorted(repo.list_samples(), key=lambda s: s.seed)


def open_library(app):
    app.switch_page(LIBRARY).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def seeds_shown(app) -> list[int]:
    return [int(m.value.split("`")[1]) for m in app.markdown if m.value.startswith("**#")]


def test_empty_library_points_to_generate(app):
    open_library(app)
    assert any("No samples yet" in i.value for i in app.info)


def test_lists_filters_and_pages(app, samples):
    open_library(app)
    assert app.caption[1].value.startswith("14 sample(s)")
    assert len(app.image) == PAGE_SIZE
    assert sorted(seeds_shown(app)) == [5, *range(102, 113)]  # newest first: the oldest two are on page 2
    assert app.pagination[0].num_pages == 2
    app.pagination[0].select(2).run()
    assert sorted(seeds_shown(app)) == [100, 101]

    app.text_input(key="lib.caption").set_value("PINK").run()  # case-insensitive substring
    assert seeds_shown(app) == [5]
    app.text_input(key="lib.caption").set_value("glomeruli").run()
    assert sorted(seeds_shown(app)) == list(range(101, 113))
    assert not app.pagination or app.pagination[0].num_pages == 2

    app.text_input(key="lib.caption").set_value("").run()
    assert app.selectbox(key="lib.model").options == ["All models", "tiny"]
    app.selectbox(key="lib.model").set_value("tiny").run()
    assert app.caption[1].value.startswith("14 sample(s)")

    today = dt.datetime.now(dt.UTC).date()
    app.date_input(key="lib.dates").set_value((today - dt.timedelta(days=3), today - dt.timedelta(days=1))).run()
    assert any("No samples match" in i.value for i in app.info)
    app.date_input(key="lib.dates").set_value((today, today)).run()
    assert app.caption[1].value.startswith("14 sample(s)")


def test_details_show_every_parameter(app, samples):
    open_library(app)
    details = app.json[0].value
    for key in (
        "caption",
        "model",
        "model fingerprint",
        "seed",
        "steps",
        "guidance",
        "scheduler",
        "eta",
        "size",
        "created (UTC)",
        "run",
        "file",
        "sidecar",
    ):
        assert key in details


def test_generate_again_prefills_generate(app, samples):
    open_library(app)
    target = next(s for s in samples if s.seed == 5)
    app.button(key=f"lib.regen_{target.id}").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.title[0].value == "Generate tissue"
    assert any(f"Library sample #{target.id}" in i.value for i in app.info)
    assert app.radio(key="gen.seed_mode").value == "Fixed"
    assert app.number_input(key="gen.seed").value == 5
    assert app.number_input(key="gen.n").value == 1
    assert app.number_input(key="gen.steps").value == 1
    assert app.number_input(key="gen.guidance").value == 1.0
    assert app.selectbox(key="gen.size").value == 32
    assert app.selectbox(key="gen.model").value == "tiny"
    assert app.text_area(key="gen.free_text").value == "pink tissue"
    assert state.REGENERATE not in app.session_state


def test_delete_asks_first_then_removes_row_and_files(app, samples, app_home):
    open_library(app)
    target = next(s for s in samples if s.seed == 5)
    png = app_home / target.image_path
    assert png.is_file()
    app.button(key=f"lib.delete_{target.id}").click().run()
    assert any(f"Delete sample #{target.id}" in w.value for w in app.warning)
    app.button(key=f"lib.keep_{target.id}").click().run()
    assert repo.get_sample(target.id) is not None and png.is_file()
    assert not [w for w in app.warning if "Delete sample" in w.value]  # (the open-mode notice stays)

    app.button(key=f"lib.delete_{target.id}").click().run()
    app.button(key=f"lib.confirm_{target.id}").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert repo.get_sample(target.id) is None
    assert not png.exists() and not png.with_suffix(".json").exists()
    assert any(f"Deleted sample #{target.id}" in s.value for s in app.success)
    assert 5 not in seeds_shown(app)
    assert app.caption[1].value.startswith("13 sample(s)")


def test_date_bounds_cover_whole_days():
    day = dt.date(2026, 3, 4)
    assert date_bounds(()) == (None, None)
    since, until = date_bounds((day,))
    assert (since.isoformat(), until.isoformat()) == ("2026-03-04T00:00:00+00:00", "2026-03-05T00:00:00+00:00")
    assert date_bounds((day, day + dt.timedelta(days=2)))[1].date() == dt.date(2026, 3, 7)
