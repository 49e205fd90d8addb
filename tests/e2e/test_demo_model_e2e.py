"""A newcomer's first minute: start the app with nothing registered, open Generate, press Generate with the
default settings, and a tissue-like image from the shipped demo model appears.
"""

from __future__ import annotations

import io
import re
import time
import urllib.request

import numpy as np
import pytest
from helpers import screenshot, wait_for_app
from PIL import Image

pytestmark = pytest.mark.e2e

FIRST_IMAGE_JS = """() => {
  const img = document.querySelector("[data-testid='stImage'] img");
  return img ? img.src : null;
}"""


@pytest.fixture(scope="module")
def server(demo_model_server):
    return demo_model_server


def tissue_like(rgb: np.ndarray) -> tuple[bool, str]:
    """H&E-like: not blank or flat, and the stained pixels are pink-purple (red and blue above green)."""
    pixels = rgb.reshape(-1, 3).astype(np.float64)
    stained = pixels[pixels.mean(axis=1) < 220]  # glass background is near-white
    detail = float(pixels.std(axis=0).mean())
    if stained.shape[0] < 0.2 * pixels.shape[0]:
        return False, f"only {stained.shape[0] / pixels.shape[0]:.0%} of pixels are stained"
    r, g, b = stained.mean(axis=0)
    ok = detail > 8 and r > g + 10 and b > g
    return ok, f"mean stained RGB ({r:.0f}, {g:.0f}, {b:.0f}), pixel std {detail:.1f}"


def test_generate_with_defaults_shows_tissue_from_the_demo_model(server, page):
    page.goto(server.url + "/generate")
    page.get_by_role("heading", name="Generate tissue").wait_for()
    wait_for_app(page)
    picker_html = page.locator("[data-testid='stSelectbox']").first.inner_html()
    assert "shipped demo" in picker_html, "the model picker's default is not the shipped demo model"
    clicked = time.monotonic()
    page.get_by_role("button", name=re.compile(r"Generate$")).click()
    page.locator("[data-testid='stImage'] img").first.wait_for(timeout=180_000)
    first_image_s = time.monotonic() - clicked
    screenshot(page, "demo-first-image")
    src = page.evaluate(FIRST_IMAGE_JS)
    if src.startswith("/"):
        src = server.url + src
    with urllib.request.urlopen(src, timeout=30) as response:
        image = np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB"))
    ok, why = tissue_like(image)
    print(f"\n[e2e demo model] click -> first image: {first_image_s:.1f} s; {image.shape[1]} px; {why}")
    assert ok, f"the first generated image does not look like H&E tissue: {why}"
