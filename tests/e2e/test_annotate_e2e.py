"""Annotate in a real Chromium against a real server: open a region, paint a stroke, erase part of it, save,
reload the page and find the mask as painted, export it, and see the agreement with a second annotator.

The slide is a 128 x 128 px stitched slide (2 x 2 regions of 64 px) registered in the server's database; a
second annotator ("bob") has already saved a mask of region (0, 0). Waits are for states; the one fixed pause lets
the canvas settle after the switch to Erase (see there).
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from helpers import choose_option, screenshot, start_app_server, stop_app_server, wait_for_app
from playwright.sync_api import expect
from slide_samples import stitched_slide

pytestmark = pytest.mark.e2e
pytest.importorskip("openslide")

SIDE = 64


def bob_mask() -> np.ndarray:
    m = np.zeros((SIDE, SIDE), bool)
    m[22:42, 4:60] = True
    return m


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from app import annotate as an
    from app import slides as sl
    from db.migrate import init_db
    from db.session import dispose_engines

    no_demo = str(tmp_path_factory.mktemp("no_demo") / "absent")
    server = start_app_server(tmp_path_factory.mktemp("annotate_home"), extra_env={"RENAL_LDM_DEMO_MODEL": no_demo})
    init_db(server.database_url)
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        slide = sl.register_slide(stitched_slide(tmp_path_factory.mktemp("server_files")))
        an.save_mask(slide, "bob", 4, an.region(slide, SIDE, 0, 0), bob_mask(), done=True)
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    server.slide = slide
    yield server
    stop_app_server(server)
    dispose_engines()


def stroke(page, points: list[tuple[float, float]]) -> None:
    """Drag the mouse over the canvas through `points` (canvas pixels), as a person paints."""
    canvas = page.locator("canvas.upper-canvas")
    canvas.wait_for()
    canvas.evaluate("c => c.scrollIntoView({block: 'center'})")
    box = canvas.bounding_box()
    sx, sy = box["width"] / SIDE, box["height"] / SIDE
    x0, y0 = points[0]
    page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=12)
    page.mouse.up()
    wait_for_app(page)


def painted_caption(page):
    return page.get_by_text("px painted", exact=False)


def saved_mask(server):
    from app import annotate as an

    os.environ.update(server.env())
    slide = server.slide
    box = an.region(slide, SIDE, 0, 0)
    found = an.find(slide.id, "ann", 4, box, url=server.database_url)
    return found, (an.load_mask(found, box) if found else None)


def test_paint_erase_save_reload_export_and_agreement(server, page):
    page.goto(f"{server.url}/annotate")
    wait_for_app(page)
    page.get_by_label("Your name", exact=True).fill("ann")
    page.keyboard.press("Enter")
    wait_for_app(page)
    choose_option(page, "Region side (px, full resolution)", "64")
    page.get_by_role("button", name="Open this region").click()
    wait_for_app(page)
    expect(page.get_by_text("Region x 0-64, y 0-64")).to_be_visible()

    stroke(page, [(6, 32), (30, 32), (58, 32)])  # a horizontal band, brush 20 px
    expect(painted_caption(page)).to_contain_text("1 component(s)")
    expect(painted_caption(page)).to_contain_text("unsaved changes")
    page.get_by_text("Erase", exact=True).click()
    wait_for_app(page)
    # the mode change redraws the canvas; a stroke begun while it is being replaced loses its end (seen once on a
    # loaded 2-core CI machine: 168 px erased instead of the cut), so wait for the redrawn canvas to settle
    page.locator("canvas.upper-canvas").wait_for()
    page.wait_for_timeout(1500)
    stroke(page, [(32, 60), (32, 30), (32, 4)])  # cut the band in two (from below: the toolbar floats above)
    expect(painted_caption(page)).to_contain_text("2 component(s)")
    page.get_by_role("button", name="Save", exact=True).click()
    wait_for_app(page)
    expect(page.get_by_text("Saved x 0-64, y 0-64")).to_be_visible()

    found, mask = saved_mask(server)
    assert found is not None and found.components == 2
    assert mask[32, 12] and mask[32, 52] and not mask[32, 32] and not mask[5, 5]
    screenshot(page, "annotate-painted")

    # the address names the region on screen (side 64, not the 512 of a click sent before the page redrew:
    # tests/app/test_annotate.py), so a reload, a new session, reopens it
    assert "side=64" in page.url and "cell=0%2C0" in page.url.replace(",", "%2C"), page.url
    page.reload()
    wait_for_app(page)
    expect(page.get_by_text("Region x 0-64, y 0-64")).to_be_visible(timeout=20_000)
    expect(painted_caption(page)).to_contain_text(f"{int(mask.sum())} px painted, 2 component(s) · in progress · saved")
    again, mask_after = saved_mask(server)
    assert again.revision == found.revision and (mask_after == mask).all()

    # agreement with bob, who painted the band before it was cut
    table = page.locator("[data-testid='stTable']").first
    expect(table).to_contain_text("bob")
    from renal_ldm.annotations.agreement import dice

    expect(table).to_contain_text(f"{round(dice(mask, bob_mask()), 4)}")

    page.get_by_role("button", name="Save as done").click()
    wait_for_app(page)
    page.get_by_role("button", name="Prepare the export").click()
    wait_for_app(page)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download the export (zip)").click()
    data = zipfile.ZipFile(io.BytesIO(open(download.value.path(), "rb").read()))
    names = set(data.namelist())
    assert {"captions.jsonl", "annotations.geojson"} <= names and any(n.startswith("masks/") for n in names)
    doc = json.loads(data.read("annotations.geojson"))
    mine = [f for f in doc["features"] if f["properties"]["metadata"]["annotator"] == "ann"]
    assert len(mine) == 2 and all(f["properties"]["classification"]["name"] == "Glomeruli" for f in mine)
    records = [json.loads(line) for line in data.read("captions.jsonl").decode().splitlines()]
    assert {r["annotator"] for r in records} == {"ann", "bob"}
    screenshot(page, "annotate-exported")
