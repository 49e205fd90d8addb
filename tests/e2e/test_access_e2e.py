"""Access control in a real browser: with accounts, nothing but the sign-in (or the survey) is reachable.

The app server runs with two accounts (a researcher, an annotator). What a person could try is modelled
literally: typing another address into the same tab, opening a new tab, reloading after signing in.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from helpers import screenshot, start_app_server, stop_app_server, wait_for_app

pytestmark = pytest.mark.e2e

PASSWORD = "an e2e account password"
PRODUCT_TITLES = ("Compose a caption", "Generate tissue", "Library", "Manage surveys", "Results")
PRODUCT_PATHS = ("/", "/library", "/generate", "/survey_manage")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_app_server(tmp_path_factory.mktemp("access_home"), extra_env={"RENAL_LDM_ADMIN_PASSWORD": ""})
    yield server
    stop_app_server(server)


@pytest.fixture
def accounts_env(server, monkeypatch):
    """This process talks to the server's database; two accounts exist (created once)."""
    from app import accounts
    from db import repository as repo
    from db.migrate import init_db

    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    init_db()
    monkeypatch.delenv(accounts.ADMIN_PASSWORD_ENV, raising=False)
    existing = {a.name for a in repo.list_accounts()}
    for name, role in (("ada", "researcher"), ("ann", "annotator")):
        if name not in existing:
            accounts.add_account(name, role, PASSWORD)
    repo.clear_sign_in_failures(["account:ada", "account:ann", "client:local"])
    yield server
    from db.session import dispose_engines

    dispose_engines()


def expect_title(page, title: str) -> None:
    """Wait for the page heading to read `title` (a state; fails after the timeout when it never does)."""
    page.locator("h1").filter(has_text=re.compile(rf"^{re.escape(title)}$")).first.wait_for()
    wait_for_app(page)


def assert_only_sign_in(page) -> None:
    expect_title(page, "Sign in")
    body = page.locator("[data-testid='stApp']").inner_text()
    for title in PRODUCT_TITLES:
        assert title not in body, f"{title!r} is visible to a visitor without a sign-in"
    assert page.locator("[data-testid='stSidebarNav']").count() == 0


def sign_in(page, name: str, password: str) -> None:
    """Submit the sign-in form and wait until the app has answered: another page, or one more failure counted
    in the database (a state to wait for; the error text alone looks the same after every attempt)."""
    from db import repository as repo

    failures = repo.sign_in_failures(f"account:{name}")[0]
    wait_for_app(page)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if repo.sign_in_failures(f"account:{name}")[0] != failures:
            break
        if page.locator("h1").filter(has_not_text="Sign in").count():
            break
        if page.get_by_text("Too many failed sign-ins").count():
            break
        page.wait_for_timeout(100)  # polling interval of the state check
    wait_for_app(page)


def test_a_fresh_browser_sees_only_the_sign_in_at_every_address(browser, accounts_env):
    context = browser.new_context()
    page = context.new_page()
    for path in PRODUCT_PATHS:
        page.goto(accounts_env.url + path)
        assert_only_sign_in(page)
    context.close()


def library_samples(home, n: int, size: int) -> list[int]:
    """n Library samples and their rows: PNGs at the survey size written as the sampler writes them (Pillow's
    defaults), so without the survey's own encoding a survey image would be these very bytes."""
    from PIL import Image

    from db import repository as repo

    rng = np.random.default_rng(11)
    ids = []
    for i in range(n):
        rel = f"samples/access/{i}.png"
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(home / rel)
        ids.append(
            repo.add_sample(image_path=rel, caption="c", model_name="demo", seed=i, steps=2, guidance=1.5, size=size).id
        )
    return ids


def served_image(page, base_url: str, attempts: int = 3) -> bytes:
    """The bytes of the image on screen, fetched as the browser would. Read once the script run is over: a run
    still going can redraw the image under a new media address, and Streamlit drops the old one (404)."""
    for _ in range(attempts):
        wait_for_app(page)
        src = page.locator("[data-testid='stImage'] img").first.get_attribute("src")
        response = page.request.get(src if src.startswith("http") else base_url + src)
        if response.ok:
            return response.body()
    raise AssertionError(f"the image on screen ({src}) answered {response.status} {attempts} times")


def test_a_participant_who_leaves_the_survey_reaches_nothing_else(browser, accounts_env):
    from app.survey_admin import create_survey_from_files
    from app.survey_files import library_files
    from db import repository as repo

    size = 64
    ids = library_samples(accounts_env.home, 4, size)
    files, problems = library_files(ids)
    assert not problems
    result = create_survey_from_files(
        "Access", files[:2], files[2:], n_real=2, n_synthetic=2, size=size, max_upload_mb=20
    )
    assert not result.errors, result.errors
    library_bytes = {(accounts_env.home / s.image_path).read_bytes() for s in map(repo.get_sample, ids)}

    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{accounts_env.url}/?survey={result.token}")
    wait_for_app(page)
    page.locator("[data-testid='stRadio'] label").filter(has_text=re.compile(r"^3\b")).first.click()
    page.get_by_role("button", name="Start the survey").click()
    for number in (1, 2):
        page.get_by_text(f"{number} / 4", exact=True).wait_for()
        # The image the participant's browser received: its bytes are not any Library image's bytes.
        served = served_image(page, accounts_env.url)
        assert served[:8] == b"\x89PNG\r\n\x1a\n" and served not in library_bytes
        time.sleep(0.5)  # the double-click guard ignores clicks within 0.4 s of an image being drawn
        page.get_by_role("button", name="Real", exact=True).click()
    page.get_by_text("3 / 4", exact=True).wait_for()

    for path in PRODUCT_PATHS:  # the same tab, another address typed in
        page.goto(accounts_env.url + path)
        assert_only_sign_in(page)
    tab = context.new_page()  # a new tab of the same browser
    for path in PRODUCT_PATHS:
        tab.goto(accounts_env.url + path)
        assert_only_sign_in(tab)
    screenshot(tab, "access-participant-new-tab")
    context.close()


def test_a_researcher_sign_in_survives_a_reload_and_a_new_tab(browser, accounts_env):
    context = browser.new_context()
    page = context.new_page()
    page.goto(accounts_env.url + "/library")
    assert_only_sign_in(page)
    sign_in(page, "ada", PASSWORD)
    expect_title(page, "Library")  # lands where it asked to go
    page.reload()
    expect_title(page, "Library")
    tab = context.new_page()
    tab.goto(accounts_env.url + "/generate")
    expect_title(tab, "Generate tissue")
    tab.get_by_role("button", name="Sign out").click()
    assert_only_sign_in(tab)
    page.reload()
    assert_only_sign_in(page)  # signing out ends the sign-in everywhere
    context.close()


def test_an_annotator_does_not_see_generate(browser, accounts_env):
    context = browser.new_context()
    page = context.new_page()
    page.goto(accounts_env.url)
    sign_in(page, "ann", PASSWORD)
    expect_title(page, "Slides")
    nav = page.locator("[data-testid='stSidebarNav']")
    assert "Generate" not in (nav.inner_text() if nav.count() else "")
    page.goto(accounts_env.url + "/generate")
    wait_for_app(page)
    assert "Generate tissue" not in page.locator("[data-testid='stApp']").inner_text()
    context.close()


def test_seven_wrong_passwords_in_a_row_are_slowed(browser, accounts_env):
    context = browser.new_context()
    page = context.new_page()
    page.goto(accounts_env.url)
    for _ in range(7):
        sign_in(page, "ada", "not the password at all")
    alert = page.locator("[data-testid='stAlertContentError']").first
    assert alert.inner_text().startswith("Too many failed sign-ins. Try again in")
    sign_in(page, "ada", PASSWORD)  # the right password, while the wait holds
    assert page.locator("[data-testid='stAlertContentError']").first.inner_text().startswith("Too many")
    assert_only_sign_in(page)
    context.close()
