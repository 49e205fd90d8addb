"""Compose -> Generate -> Library in a real Chromium against a real server, with a tiny random-weight model.

The progress bar must move while the images are drawn (two or more different values seen), both images
must appear in the gallery, and after a browser reload the Library must list both with their seeds.
The time from the Generate click to the first image in the page is printed (not asserted).
"""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.app.app_helpers import build_tiny_checkpoint
from tests.e2e.conftest import screenshot, start_app_server, stop_app_server, wait_for_app

pytestmark = pytest.mark.e2e

STEPS = 30  # per image; with batch size 1 the bar crosses 60 steps for 2 images (seconds, even idle)
PROGRESS_JS = """() => {
  const bar = document.querySelector("[data-testid='stProgress'] [role='progressbar']");
  return bar ? bar.getAttribute('aria-valuenow') : null;
}"""
IMAGES_JS = "() => document.querySelectorAll(\"[data-testid='stImage'] img\").length"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from db import repository as repo
    from db.migrate import init_db
    from db.session import dispose_engines

    model_dir = build_tiny_checkpoint(tmp_path_factory.mktemp("e2e_tiny") / "model")
    # Only the tiny model: the shipped demo model (when present) is covered by test_demo_model_e2e.py.
    no_demo = str(tmp_path_factory.mktemp("no_demo") / "absent")
    server = start_app_server(tmp_path_factory.mktemp("generate_home"), extra_env={"RENAL_LDM_DEMO_MODEL": no_demo})
    init_db(server.database_url)
    repo.register_model("tiny", model_dir, url=server.database_url)
    yield server
    stop_app_server(server)
    dispose_engines()


def set_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_for_app(page)
    expect(field).to_have_value(str(value))


def test_compose_generate_and_find_in_library(server, page):
    from db import repository as repo

    page.goto(server.url)
    wait_for_app(page)
    page.get_by_role("radiogroup", name="Glomeruli", exact=True).get_by_role("radio", name="high").click()
    wait_for_app(page)
    page.get_by_role("radiogroup", name="Tubuli", exact=True).get_by_role("radio", name="medium").click()
    code = page.locator("[data-testid='stCode']").first
    expect(code).to_contain_text("There is a lot of Glomeruli visible in the image.")
    expect(code).to_contain_text("The prevalence of Tubuli is medium.")
    wait_for_app(page)
    caption = code.inner_text()
    screenshot(page, "generate-1-compose")

    page.get_by_role("button", name="Use this caption in Generate").click()
    page.get_by_role("heading", name="Generate tissue").wait_for()
    wait_for_app(page)
    assert "There is a lot of Glomeruli visible in the image." in page.locator("[data-testid='stCode']").first.inner_text()
    set_number(page, "Images", 2)
    set_number(page, "Steps", STEPS)
    page.get_by_text("Advanced", exact=True).click()
    set_number(page, "Batch size", 1)

    seen: set[str] = set()
    clicked = time.monotonic()
    page.get_by_role("button", name=re.compile(r"Generate$")).click()
    first_image_s = None
    deadline = clicked + 120
    while time.monotonic() < deadline:
        value = page.evaluate(PROGRESS_JS)
        if value is not None:
            seen.add(value)
        images = page.evaluate(IMAGES_JS)
        if images >= 1 and first_image_s is None:
            first_image_s = time.monotonic() - clicked
            screenshot(page, "generate-2-first-image")
        if images >= 2 and page.get_by_text(re.compile(r"^Done: 2 image")).count():
            break
        time.sleep(0.2)  # the page polls the server every 0.5 s; faster here only takes CPU from the sampler
    else:
        pytest.fail(f"the two images did not arrive in 120 s; progress seen: {sorted(seen)}")
    total_s = time.monotonic() - clicked
    done_text = page.get_by_text(re.compile(r"^Done: 2 image")).inner_text()
    print(f"\n[e2e tiny model] click -> first image in the page: {first_image_s:.2f} s; "
          f"click -> both done: {total_s:.2f} s; server says: {done_text}; progress values seen: {sorted(seen, key=float)}")
    assert len(seen) >= 2 and any(0 < float(v) < 100 for v in seen), f"the progress bar did not move: {seen}"
    assert page.get_by_text(re.compile(r"^seed \d+$")).count() == 2
    screenshot(page, "generate-3-done")

    samples = sorted(repo.list_samples(url=server.database_url), key=lambda s: s.seed)
    assert len(samples) == 2 and samples[1].seed == samples[0].seed + 1
    assert all(s.caption == caption.strip() for s in samples)

    page.reload()
    wait_for_app(page)
    page.goto(server.url + "/library")
    page.get_by_role("heading", name="Library").wait_for()
    wait_for_app(page)
    page.locator("[data-testid='stImage'] img").nth(1).wait_for()
    assert page.locator("[data-testid='stImage'] img").count() == 2
    text = page.locator("[data-testid='stMain']").inner_text()
    for sample in samples:
        assert f"#{sample.id}" in text and str(sample.seed) in text
    screenshot(page, "generate-4-library")
