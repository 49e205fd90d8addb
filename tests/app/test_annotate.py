"""Annotate use cases (app/annotate.py): saving masks per annotator, strokes applied on the server, region
states and counters, agreement, export (data set + GeoJSON) and import, a slide whose file has gone; and the
page under AppTest. One test per guarantee of app/annotate.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from app_helpers import MAIN, RUN_TIMEOUT, page_path, shown
from slide_samples import stitched_slide

from app import annotate as an
from app import slides as sl
from db import repository as repo
from renal_ldm.annotations import geojson
from renal_ldm.annotations.agreement import iou
from renal_ldm.annotations.masks import RegionBox
from renal_ldm.annotations.strokes import ERASE, PAINT
from renal_ldm.classes import GLOMERULI_ID
from renal_ldm.data.layout import read_captions

pytest.importorskip("openslide")

ANNOTATE = page_path("annotate.py")
SIDE = 64


@pytest.fixture
def slide(app_home, tmp_path):
    """A 128 x 128 px stitched slide (2 x 2 regions of 64 px), registered."""
    return sl.register_slide(stitched_slide(tmp_path / "server"))


def disc(cx=32, cy=32, r=12, shape=(64, 64)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def canvas(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((*mask.shape, 4), np.uint8)
    out[mask] = (60, 180, 75, 150)
    return out


def test_save_writes_a_new_file_and_a_second_annotator_keeps_their_own(slide, app_home):
    box = an.region(slide, SIDE, 0, 0)
    first = an.save_mask(slide, "ann", GLOMERULI_ID, box, disc())
    path = app_home / first.mask_path
    assert path.is_file() and first.mask_path.startswith(f"annotations/slide_{slide.id}/")
    assert (first.pixels, first.components) == (int(disc().sum()), 1)
    bob = an.save_mask(slide, "bob", GLOMERULI_ID, box, disc(cx=36))
    again = an.save_mask(slide, "ann", GLOMERULI_ID, box, disc(r=6), expected_revision=1)
    assert not path.exists() and (app_home / again.mask_path).is_file()
    assert (an.load_mask(an.find(slide.id, "bob", 4, box), box) == disc(cx=36)).all()
    assert bob.mask_path != again.mask_path


def test_a_failed_save_keeps_the_earlier_file_and_row(slide, app_home):
    box = an.region(slide, SIDE, 0, 0)
    first = an.save_mask(slide, "ann", GLOMERULI_ID, box, disc())
    with pytest.raises(repo.StaleAnnotationError):
        an.save_mask(slide, "ann", GLOMERULI_ID, box, disc(r=3), expected_revision=7)
    kept = an.find(slide.id, "ann", GLOMERULI_ID, box)
    assert kept.mask_path == first.mask_path and (an.load_mask(kept, box) == disc()).all()
    assert sorted(p.name for p in (app_home / f"annotations/slide_{slide.id}").iterdir()) == [
        first.mask_path.rsplit("/", 1)[1]
    ]


def test_the_editor_applies_paint_and_erase_strokes_and_undo(slide):
    box = an.region(slide, SIDE, 1, 0)
    editor = an.open_editor(slide, "ann", GLOMERULI_ID, box)
    assert not editor.dirty and editor.revision is None
    assert an.apply_canvas(editor, canvas(disc()), PAINT) and editor.dirty
    eraser = np.zeros((64, 64), bool)
    eraser[:, :32] = True
    an.apply_canvas(editor, canvas(eraser), ERASE)
    assert (editor.mask == disc() & ~eraser).all() and editor.canvas == 2
    assert an.undo(editor) and (editor.mask == disc()).all()
    an.apply_canvas(editor, canvas(eraser), ERASE)
    saved = an.save_editor(editor, slide, done=True)
    assert saved.done and not editor.dirty
    reopened = an.open_editor(slide, "ann", GLOMERULI_ID, box)
    assert (reopened.mask == disc() & ~eraser).all() and reopened.done and reopened.revision == 1


def test_region_states_counters_and_next_unfinished(slide):
    an.save_mask(slide, "ann", GLOMERULI_ID, an.region(slide, SIDE, 0, 0), disc() | disc(cx=5, cy=5, r=3), done=True)
    an.save_mask(slide, "ann", GLOMERULI_ID, an.region(slide, SIDE, 1, 0), disc())
    assert an.region_states(slide, "ann", GLOMERULI_ID, SIDE) == {(0, 0): an.DONE, (1, 0): an.IN_PROGRESS}
    assert an.region_states(slide, "bob", GLOMERULI_ID, SIDE) == {}
    p = an.progress(slide, "ann", GLOMERULI_ID, SIDE)
    assert (p.regions, p.done, p.in_progress, p.glomeruli_done, p.glomeruli) == (4, 1, 1, 2, 3)
    assert an.next_unfinished(slide, "ann", GLOMERULI_ID, SIDE) == (1, 0)
    assert an.next_unfinished(slide, "ann", GLOMERULI_ID, SIDE, after=(1, 0)) == (0, 1)
    overview = an.grid_overview(sl_overview(slide), slide, SIDE, {(0, 0): an.DONE}, (1, 1))
    assert overview.size == sl_overview(slide).size


def sl_overview(slide):
    from renal_ldm.slides.info import overview

    return overview(slide.path, 128)


def test_agreement_of_two_annotators(slide):
    box = an.region(slide, SIDE, 0, 0)
    an.save_mask(slide, "ann", GLOMERULI_ID, box, disc())
    an.save_mask(slide, "bob", GLOMERULI_ID, box, disc(cx=34))
    an.save_mask(slide, "ann", GLOMERULI_ID, an.region(slide, SIDE, 1, 1), disc())
    (found,) = an.agreements(slide.id)
    (row,) = an.agreement_rows([found])
    assert (row["first"], row["second"], row["region"]) == ("ann", "bob", "x 0-64, y 0-64")
    assert 0.8 < row["dice"] < 1 and row["iou"] < row["dice"]
    view = an.disagreement_view(slide, found, "ann", "bob")
    assert view.size == (64, 64)


def test_export_then_import_gives_the_masks_back(slide, tmp_path):
    masks = {
        (0, 0): disc(cx=60, r=10),
        (1, 0): disc(cx=-4, r=10),
        (0, 1): disc(cx=10, cy=10, r=5) ^ disc(cx=10, cy=10, r=2),
    }
    for cell, m in masks.items():
        an.save_mask(slide, "ann", GLOMERULI_ID, an.region(slide, SIDE, *cell), m, done=True)
    result = an.export_annotations(slide.id, tmp_path / "out", patch=SIDE)
    assert (result.pairs, result.regions, result.annotators) == (3, 3, ["ann"])
    assert [(r["x"], r["y"]) for r in read_captions(tmp_path / "out")] == [(0, 0), (64, 0), (0, 64)]
    doc = json.loads(result.geojson.read_text())
    # the disc across the border of (0, 0) and (1, 0) is one glomerulus; plus the ring of (0, 1)
    assert len(doc["features"]) == result.features == 2
    imported = an.import_geojson(slide.id, result.geojson.read_bytes(), "copy", side=SIDE)
    assert imported.regions == 3
    ious = []
    for cell, m in masks.items():
        box = an.region(slide, SIDE, *cell)
        ious.append(iou(an.load_mask(an.find(slide.id, "copy", GLOMERULI_ID, box), box), m))
    assert min(ious) >= 0.95, ious


def test_import_adds_to_what_is_saved_and_bad_files_change_nothing(slide):
    box = an.region(slide, SIDE, 0, 0)
    an.save_mask(slide, "ann", GLOMERULI_ID, box, disc(cx=10, cy=10, r=5))
    square = {"type": "Polygon", "coordinates": [[[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]]}
    feature = {"type": "Feature", "geometry": square, "properties": {"classification": {"name": "Glomerulus"}}}
    good = json.dumps({"type": "FeatureCollection", "features": [feature]})
    with pytest.raises(geojson.GeoJSONError, match="unknown classification"):
        an.import_geojson(slide.id, good, "ann", side=SIDE)
    with pytest.raises(geojson.GeoJSONError, match="not a GeoJSON FeatureCollection"):
        an.import_geojson(slide.id, json.dumps(feature), "ann", side=SIDE)
    assert an.find(slide.id, "ann", GLOMERULI_ID, box).revision == 1
    an.import_geojson(slide.id, good, "ann", mapping=["Glomerulus=Glomeruli"], side=SIDE)
    mask = an.load_mask(an.find(slide.id, "ann", GLOMERULI_ID, box), box)
    assert mask[10, 10] and mask[50, 50] and mask.sum() == disc(cx=10, cy=10, r=5).sum() + 400


def test_a_slide_whose_file_has_gone_is_refused_by_name(slide, tmp_path):
    box = an.region(slide, SIDE, 0, 0)
    an.save_mask(slide, "ann", GLOMERULI_ID, box, disc(), done=True)
    from pathlib import Path

    Path(slide.path).unlink()
    for call in (
        lambda: an.open_editor(slide, "ann", GLOMERULI_ID, box),
        lambda: an.export_annotations(slide.id, tmp_path / "out"),
        lambda: an.import_geojson(slide.id, "{}", "ann"),
    ):
        with pytest.raises(an.SlideGoneError, match="its file .* has gone; saved annotations are kept"):
            call()
    assert an.find(slide.id, "ann", GLOMERULI_ID, box).pixels == disc().sum()
    assert not (tmp_path / "out").exists()


def test_annotator_is_the_sign_in_name_else_the_typed_one():
    from types import SimpleNamespace

    assert an.annotator_name(SimpleNamespace(name="ada"), "bob") == "ada"
    assert an.annotator_name(None, "  bob ") == "bob"
    assert an.annotator_name(None, "") is None
    assert RegionBox(0, 0, 1, 1).label() == "x 0-1, y 0-1"


# ------------------------------------------------------------------------------------------------ the page


def _page(app_home):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)
    at.run()
    at.switch_page(ANNOTATE).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _texts(at) -> list[str]:
    return [
        shown(str(e.value))
        for kind in ("markdown", "caption", "info", "warning", "success", "error", "subheader")
        for e in getattr(at, kind)
    ]


def test_the_page_asks_for_a_name_then_shows_the_grid_and_the_agreement(slide, app_home):
    box = an.region(slide, SIDE, 0, 0)
    an.save_mask(slide, "bob", GLOMERULI_ID, box, disc(cx=34), done=True)
    an.save_mask(slide, "cy", GLOMERULI_ID, box, disc())
    at = _page(app_home)
    assert any("Type your name" in t for t in _texts(at))
    at.text_input(key="annotate.name").input("ann").run()
    at.selectbox(key="annotate.side").select(SIDE).run()
    assert not at.exception, [e.message for e in at.exception]
    texts = _texts(at)
    assert any("0 of 4 regions done" in t for t in texts), texts
    at.button(key="annotate.next").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("x 0-64, y 0-64" in t for t in _texts(at))
    at.button(key="annotate.done").click().run()
    assert an.find(slide.id, "ann", GLOMERULI_ID, box).done
    at.run()  # the canvas sends its value on its own (a rerun with no action): the notice must stay
    assert any(shown(s.value).startswith("Saved x 0-64, y 0-64") for s in at.success), [s.value for s in at.success]
    assert any("1 of 4 regions done" in t for t in _texts(at))
    frames = [f.value for f in at.table]
    assert any("dice" in df.columns and (df["first"] == "ann").any() for df in frames), frames


def test_a_signed_in_annotator_paints_under_their_account_name(slide, app_home):
    from app import accounts

    accounts.add_account("ann", "annotator", "a long enough password 1")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)
    at.run()
    at.text_input(key="sign_in_name").input("ann")
    at.text_input(key="sign_in_password").input("a long enough password 1")
    at.button[0].click().run()
    at.switch_page(ANNOTATE).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not [w for w in at.text_input if w.key == "annotate.name"]
    assert any("annotator ann" in t for t in _texts(at))


def test_a_reload_reopens_the_region_in_the_address_and_says_why_when_it_cannot(slide, app_home):
    """A reloaded page has a new session: the open region comes back from the address alone (who, slide, side,
    cell); a cell outside the slide's grid is named in a warning instead of being ignored."""
    from streamlit.testing.v1 import AppTest

    box = an.region(slide, SIDE, 1, 0)
    an.save_mask(slide, "ann", GLOMERULI_ID, box, disc())
    for cell, expected in (("1,0", "Region x 64-128, y 0-64"), ("5,5", "(cell 5,5) did not open")):
        at = AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)
        at.run()
        at.switch_page(ANNOTATE)
        at.query_params.update({"who": "ann", "slide": str(slide.id), "side": str(SIDE), "cell": cell})
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert any(expected in t for t in _texts(at)), _texts(at)


def test_a_click_sent_with_a_new_region_side_opens_that_side_and_the_address_says_so(slide, app_home):
    """A person who picks a side and clicks "Open this region" before the page has redrawn sends both in one
    rerun, while the button still holds the callback of the run before (side 512). The region opened, and the
    address a reload comes back to, must be the side on screen, not the stale one."""
    from streamlit.testing.v1 import AppTest

    at = _page(app_home)
    at.text_input(key="annotate.name").input("ann").run()
    at.selectbox(key="annotate.side").select(SIDE)
    at.button(key="annotate.open").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Region x 0-64, y 0-64" in t for t in _texts(at)), _texts(at)
    address = {key: at.query_params[key] for key in ("who", "slide", "side", "cell")}
    assert address["side"] in (str(SIDE), [str(SIDE)]), address

    reloaded = AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)
    reloaded.run()
    reloaded.switch_page(ANNOTATE)
    reloaded.query_params.update(address)
    reloaded.run()
    assert not reloaded.exception, [e.message for e in reloaded.exception]
    assert any("Region x 0-64, y 0-64" in t for t in _texts(reloaded)), _texts(reloaded)


def test_choosing_another_side_closes_the_region_and_the_address_forgets_its_cell(slide, app_home):
    """Cell 1,0 of the 64 px grid is not cell 1,0 of another grid: a new side closes the region (a saved one stays
    saved) and the address keeps only what is still on screen, so a reload does not open a region nobody chose."""
    box = an.region(slide, SIDE, 1, 0)
    an.save_mask(slide, "ann", GLOMERULI_ID, box, disc())
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)
    at.run()
    at.switch_page(ANNOTATE)
    at.query_params.update({"who": "ann", "slide": str(slide.id), "side": str(SIDE), "cell": "1,0"})
    at.run()
    assert any("Region x 64-128, y 0-64" in t for t in _texts(at)), _texts(at)
    at.selectbox(key="annotate.side").select(128).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not any(t.startswith("Region x") for t in _texts(at)), _texts(at)
    assert at.query_params["side"] in ("128", ["128"]) and "cell" not in at.query_params
    assert an.find(slide.id, "ann", GLOMERULI_ID, box) is not None
