"""Compose page: levels -> the exact caption, presets saved and loaded, handing the caption to Generate."""

from __future__ import annotations

from app_helpers import page_path, shown

from app.compose import level_key
from db import repository as repo
from renal_ldm.captions import GENERATING_CAPTION, levels_to_caption
from renal_ldm.classes import by_name


def control(at, class_name):
    return at.segmented_control(key=level_key(by_name(class_name).id))


def compose(at, **levels):
    for name, level in levels.items():
        control(at, name.replace("_", " ")).set_value(level)
    return at.run()


def test_levels_give_the_exact_caption(app):
    compose(app, Glomeruli="high", Tubuli="medium")
    expected = levels_to_caption({"Glomeruli": "high", "Tubuli": "medium"})
    assert expected == GENERATING_CAPTION
    assert app.code[0].value == expected
    assert not app.exception


def test_header_only_when_nothing_chosen(app):
    assert app.code[0].value == levels_to_caption({})


def test_save_and_load_a_preset(app):
    compose(app, Glomeruli="high", Tubuli="medium")
    app.text_input[0].set_value("study caption")
    next(b for b in app.button if b.label == "Save as preset").click().run()
    assert [shown(s.value) for s in app.success] == ["Saved preset 'study caption'."]
    preset = repo.get_preset("study caption")
    assert preset.caption == GENERATING_CAPTION
    assert preset.levels == {"Tubuli": "medium", "Glomeruli": "high"}

    compose(app, Glomeruli="none", Tubuli="low")  # change the composer, then load the preset back
    assert app.code[0].value != GENERATING_CAPTION
    app.button(key=f"load_preset_{preset.id}").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert control(app, "Glomeruli").value == "high"
    assert control(app, "Tubuli").value == "medium"
    assert app.code[0].value == GENERATING_CAPTION


def test_free_text_preset_loads_into_free_text_mode(app):
    preset = repo.save_preset("odd", "pink tissue, lots of it")
    app.run()
    app.button(key=f"load_preset_{preset.id}").click().run()
    assert app.radio(key="compose_mode").value == "Free text"
    assert app.text_area(key="free_text").value == "pink tissue, lots of it"
    assert any("not in the trained caption form" in w.value for w in app.warning)


def test_use_caption_in_generate(app, tiny_model):
    compose(app, Glomeruli="high", Tubuli="medium")
    app.button(key="use_caption").click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.title[0].value == "Generate tissue"
    assert app.radio(key="gen.source").value == "Composed caption"
    assert GENERATING_CAPTION in [c.value for c in app.code]


def test_compose_page_path_helper_points_at_pages():
    assert page_path("compose.py").endswith("pages/compose.py")
