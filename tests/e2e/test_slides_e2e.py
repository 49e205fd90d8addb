"""Slides in a real Chromium against a real server: open the Slides page, stitch a 2x2 grid of Library samples,
see the overview, open a region of another level and another cell.

The Library run is four 64 px samples in the layout `renal-ldm sample` writes, under the server's data directory,
with their database rows, as the Generate page would have left them. Waits are for states, never fixed sleeps.
"""

from __future__ import annotations

import re

import pytest
from helpers import choose_option, screenshot, start_app_server, stop_app_server, wait_for_app
from playwright.sync_api import expect
from slide_samples import write_sample_folder

pytestmark = pytest.mark.e2e

RUN = "20260101-000000-0e2e0e2e"
STITCH_TIMEOUT_MS = 120_000
IMAGES_LOADED_JS = """(n) => {
  const imgs = [...document.querySelectorAll("[data-testid='stImage'] img")];
  return imgs.length >= n && imgs.every(img => img.complete && img.naturalWidth > 0);
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from db import repository as repo
    from db.migrate import init_db
    from db.session import dispose_engines

    no_demo = str(tmp_path_factory.mktemp("no_demo") / "absent")
    server = start_app_server(tmp_path_factory.mktemp("slides_home"), extra_env={"RENAL_LDM_DEMO_MODEL": no_demo})
    init_db(server.database_url)
    folder = write_sample_folder(server.home / "samples" / RUN, n=4)
    repo.add_samples(
        [
            repo.NewSample(
                image_path=f"samples/{RUN}/{png.name}",
                caption=f"caption {i}",
                model_name="tiny",
                seed=100 + i,
                steps=2,
                guidance=1.5,
                size=64,
                run_id=RUN,
            )
            for i, png in enumerate(sorted(folder.glob("*.png")))
        ],
        url=server.database_url,
    )
    yield server
    stop_app_server(server)
    dispose_engines()


def choose(page, label: str, option: str) -> None:
    choose_option(page, label, option)
    expect(page.get_by_role("combobox", name=label, exact=True)).to_have_value(option)


def set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_for_app(page)
    expect(field).to_have_value(str(value))


def test_stitch_library_samples_see_the_overview_and_open_a_region(server, page):
    from db import repository as repo

    page.goto(server.url + "/slides")
    page.get_by_role("heading", name="Slides", exact=True).wait_for()
    wait_for_app(page)
    expect(page.get_by_text("No slide yet.", exact=False)).to_be_visible()
    screenshot(page, "slides-1-empty")

    expect(page.get_by_role("combobox", name="Samples", exact=True)).to_have_value(f"samples/{RUN} (4 images)")
    grid = page.get_by_label("Grid (columns x rows)", exact=True)
    grid.fill("2x2")
    choose(page, "Tile side (px)", "64")
    choose(page, "Compression", "deflate")
    page.get_by_role("button", name=re.compile(r"Stitch$")).click()
    done = page.get_by_text(re.compile(r"^Stitched slide #\d+ "))
    done.wait_for(timeout=STITCH_TIMEOUT_MS)
    wait_for_app(page)
    (slide,) = repo.list_slides(url=server.database_url)
    assert (slide.kind, slide.width, slide.height, slide.levels) == ("stitched", 128, 128, 2)
    assert slide.path.startswith(str(server.home / "slides"))

    main = page.locator("[data-testid='stMain']")
    expect(main).to_contain_text(f"#{slide.id} {RUN} 2x2")
    expect(main).to_contain_text("2 x 2 patches of 64x64 px")
    expect(main).to_contain_text("100-103 (4 seeds)")
    expect(main.get_by_text("Overview: the red box is the region shown below")).to_be_visible()
    expect(main.get_by_text(re.compile(r"^Level 0, x 0-128, y 0-128"))).to_be_visible()
    page.wait_for_function(IMAGES_LOADED_JS, arg=2)
    screenshot(page, "slides-2-stitched")

    choose(page, "Level", "1: 64x64 px (2x smaller)")
    expect(
        main.get_by_text(re.compile(r"^Level 1, x 0-64, y 0-64 \(64x64 px; full resolution x 0-128"))
    ).to_be_visible()
    page.wait_for_function(IMAGES_LOADED_JS, arg=2)
    choose(page, "Level", "0: 128x128 px (1x smaller)")
    choose(page, "Region side (px)", "64")
    expect(main).to_contain_text("The level is cut into 2 x 2 regions")
    set_number(page, "Column", 1)
    set_number(page, "Row", 1)
    expect(main.get_by_text(re.compile(r"^Level 0, x 64-128, y 64-128 \(64x64 px"))).to_be_visible()
    page.wait_for_function(IMAGES_LOADED_JS, arg=2)
    screenshot(page, "slides-3-region")
    expect(main.get_by_role("button", name=re.compile(r"Download the TIFF"))).to_be_visible()
