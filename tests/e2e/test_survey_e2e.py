"""The survey in a real Chromium against a real server: a researcher creates a survey through the form, a
participant takes it with a reload in the middle, the results page shows sklearn's kappa; nothing served to the
participant reveals the truth; three participants answering at once lose no answer."""

from __future__ import annotations

import io
import re
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import screenshot, start_app_server, stop_app_server, wait_for_app
from PIL import Image
from sklearn.metrics import cohen_kappa_score

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-survey-password"
TITLE = "E2E pilot"
MIN_VIEW_S = 0.45  # wait this long before answering a freshly drawn image (the double-click guard is 0.4 s)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_app_server(tmp_path_factory.mktemp("survey_home"), extra_env={"RENAL_LDM_ADMIN_PASSWORD": PASSWORD})
    yield server
    stop_app_server(server)


@pytest.fixture
def server_env(server, monkeypatch):
    """Repository calls in this process see the server's database and data directory."""
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    yield server
    from db.session import dispose_engines

    dispose_engines()


def sign_in(page, url: str) -> None:
    """Open a researcher page, signing in as the RENAL_LDM_ADMIN_PASSWORD account first where the app asks;
    the second visit of the URL is signed in by the sign-in cookie alone."""
    page.goto(url)
    wait_for_app(page)
    sign_out = page.get_by_role("button", name="Sign out")
    page.get_by_role("button", name=re.compile(r"^Sign (in|out)$")).first.wait_for()
    if not sign_out.is_visible():
        page.get_by_label("Name", exact=True).fill("admin")
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        sign_out.wait_for()
        page.goto(url)
        wait_for_app(page)
    sign_out.wait_for()


def image_files(folder, prefix: str, fmt: str, n: int, seed: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(seed)
    for i in range(n):
        path = folder / f"{prefix}_{i}.{fmt.lower().replace('jpeg', 'jpg')}"
        Image.fromarray(rng.integers(0, 255, (256 + 10 * i, 280, 3), dtype=np.uint8)).save(path, format=fmt)
        paths.append(str(path))
    return paths


def upload(page, key: str, paths: list[str], log: Path | None = None) -> None:
    """Put files into the file uploader with widget key `key` and wait until it shows them all (retried: an upload
    that lands while the page is being redrawn can be dropped by the browser, more often on a loaded machine).
    The uploader is found by its widget key (Streamlit's st-key-<key> class): counting uploaders by position is
    unreliable once one holds files. The last failure says what the uploader showed and how the server's log ends,
    so a CI failure explains itself."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    names = [Path(p).name for p in paths]
    uploader = page.locator(f".st-key-{key}")
    attempts = 3
    for attempt in range(attempts):
        wait_for_app(page)  # never drop files into a page that is being redrawn
        with page.expect_file_chooser() as chooser:  # as a person does it: the Upload button, then the dialog
            uploader.get_by_test_id("stBaseButton-secondary").click()
        chooser.value.set_files(paths)
        try:
            for name in names:
                uploader.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
            wait_for_app(page)
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                shown = uploader.inner_text(timeout=5_000) if uploader.count() else "(no uploader on the page)"
                tail = log.read_text()[-2000:] if log is not None and log.exists() else "(no log)"
                raise AssertionError(
                    f"uploader {key} never showed {names} after {attempts} tries; it shows {shown!r}; "
                    f"the server's log ends with:\n{tail}"
                ) from None


def start_participant(page, link: str, experience: str = "3") -> None:
    page.goto(link)
    wait_for_app(page)
    page.locator("[data-testid='stRadio'] label").filter(has_text=re.compile(rf"^{experience}\b")).first.click()
    page.get_by_role("button", name="Start the survey").click()
    page.get_by_text("1 / 6", exact=True).wait_for()


def answer(page, label: str, number: int, total: int = 6) -> None:
    """Answer the image on screen (number of total) and wait for the next one (or the strategy question)."""
    time.sleep(MIN_VIEW_S)
    page.get_by_role("button", name=label, exact=True).click()
    if number < total:
        page.get_by_text(f"{number + 1} / {total}", exact=True).wait_for()
    else:
        page.get_by_text("did you notice any patterns", exact=False).wait_for()


def answers_by_participant(survey_id: int) -> dict[int, list]:
    from db import repository as repo

    out: dict[int, list] = {}
    for a in repo.survey_answers(survey_id):
        out.setdefault(a.participant_id, []).append(a)
    return out


@contextmanager
def screenshots_on_failure(name: str, pages: list):
    """Keep a screenshot of every page when the block fails (artifacts/e2e/<name>-failed-<i>.png)."""
    try:
        yield
    except BaseException:
        for i, page in enumerate(pages):
            try:
                screenshot(page, f"{name}-failed-{i}")
            except Exception:  # noqa: BLE001 - a closed page cannot be captured
                pass
        raise


class Recorder:
    """Everything the server sent to one browser context: HTTP bodies and websocket frames."""

    def __init__(self, context) -> None:
        self.frames: list[bytes] = []
        self.responses: list[tuple[str, bytes]] = []
        context.on("response", self._response)

    def attach(self, page) -> None:
        page.on("websocket", self._websocket)

    def _websocket(self, ws) -> None:
        ws.on(
            "framereceived",
            lambda payload: self.frames.append(payload if isinstance(payload, bytes) else payload.encode("utf-8")),
        )

    def _response(self, response) -> None:
        try:
            self.responses.append((response.url, response.body()))
        except Exception:  # noqa: BLE001 - redirects and aborted requests have no body
            pass


def test_create_take_with_reload_and_results_match_sklearn(browser, server_env, tmp_path):
    shots = []
    with screenshots_on_failure("survey-flow", shots):
        from db import repository as repo
        from renal_ldm.survey import LABELS

        server = server_env
        researcher = browser.new_context(viewport={"width": 1400, "height": 1000})
        researcher.set_default_timeout(30_000)
        page = researcher.new_page()
        shots.append(page)
        # --- the researcher creates a survey through the form: 3 JPEG real + 3 PNG synthetic uploads
        sign_in(page, f"{server.url}/survey_manage")
        page.get_by_label("Title").fill(TITLE)
        page.get_by_label("Title").press("Enter")  # commit the text before the uploads rerun the page
        wait_for_app(page)
        upload(page, "survey_real_files", image_files(tmp_path / "real", "real", "JPEG", 3, seed=1), server.log)
        upload(
            page,
            "survey_synthetic_files",
            image_files(tmp_path / "synthetic", "synthetic", "PNG", 3, seed=2),
            server.log,
        )
        wait_for_app(page)
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        created = page.locator("[data-testid='stAlertContentSuccess']").filter(has_text="Created survey")
        for _ in range(3):  # a click that lands while the last upload still reruns the page is dropped (a CI run)
            page.get_by_role("button", name="Create survey").click()
            try:
                created.wait_for(timeout=10_000)  # creating six images takes about a second
                break
            except PlaywrightTimeout:
                wait_for_app(page)
                if repo.list_surveys():  # created after all: never click again once a survey exists
                    break
        created.wait_for()
        screenshot(page, "survey-manage-created")
        (survey,) = repo.list_surveys()
        assert (survey.title, survey.item_count, survey.status) == (TITLE, 6, "open")
        link_text = page.locator("[data-testid='stAlertContentSuccess']").inner_text()
        assert f"?survey={survey.token}" in link_text
        items = repo.survey_items_with_truth(survey.id)
        assert sorted(i.truth for i in items) == ["real"] * 3 + ["synthetic"] * 3

        # --- a participant takes it, reloading in the middle; everything served to them is recorded
        participant = browser.new_context(viewport={"width": 1400, "height": 1000})
        participant.set_default_timeout(30_000)
        recorder = Recorder(participant)
        ppage = participant.new_page()
        shots.append(ppage)
        recorder.attach(ppage)
        start_participant(ppage, f"{server.url}/?survey={survey.token}", experience="4")
        assert ppage.locator("[data-testid='stSidebarNav']").count() == 0  # no navigation for participants
        plan = ["Real", "Synthetic", "Synthetic", "Real", "Real", "Synthetic"]
        answer(ppage, plan[0], 1)
        answer(ppage, plan[1], 2)
        assert "resume=" in ppage.url
        screenshot(ppage, "survey-participant-question")
        ppage.reload()
        wait_for_app(ppage)
        ppage.get_by_text("3 / 6", exact=True).wait_for()  # resumed at the next unanswered image
        for number in range(3, 7):
            answer(ppage, plan[number - 1], number)
        ppage.get_by_label("Optional: did you notice any patterns, or use a strategy to decide?").fill(
            "Looked at the nuclei and the white spaces."
        )
        ppage.get_by_role("button", name="Finish").click()
        ppage.get_by_text("Thank you for taking part").wait_for()
        screenshot(ppage, "survey-participant-thanks")

        stored = answers_by_participant(survey.id)
        assert len(stored) == 1
        (records,) = stored.values()
        assert len(records) == 6 and {r.experience for r in records} == {4}
        (resume,) = set(re.findall(r"resume=([\w-]+)", ppage.url))
        p = repo.get_participant(resume)
        order = {item_id: n for n, item_id in enumerate(p.item_order)}
        by_public = {i.public_id: i for i in items}
        given_in_order = [r.answer for r in sorted(records, key=lambda r: order[by_public[r.item_public_id].id])]
        assert given_in_order == [x.lower() for x in plan]  # each click stored once, for the image it was made on
        assert p.finished and p.strategy.startswith("Looked at the nuclei")

        # --- nothing served to the participant carries the truth
        assert recorder.frames, "websocket frames were recorded"
        secrets_ = (
            {i.public_id for i in items} | {i.image_path for i in items} | {i.image_path.split("/")[1] for i in items}
        )
        blobs = recorder.frames + [body for url, body in recorder.responses if "/static/" not in url]
        for blob in blobs:
            for secret in secrets_:
                assert secret.encode() not in blob, f"{secret!r} was sent to the participant"
        from app import survey_participant as flow

        fixed_lines = {line.strip() for text in flow.STATIC_TEXTS for line in text.splitlines() if line.strip()}
        allowed = sorted(
            {t.encode() for t in fixed_lines} | {b"Is this image real or synthetic?"}, key=len, reverse=True
        )
        leaks = []
        for frame in recorder.frames:
            text = frame
            for fixed in allowed:
                text = text.replace(fixed, b"")
            leaks += re.findall(rb"(?i).{0,40}\b(?:real|synthetic)\b.{0,40}", text)
        assert not leaks, leaks
        media = [(url, body) for url, body in recorder.responses if "/media/" in url and "/static/" not in url]
        assert len({body for _, body in media}) == 6  # six images served, as bytes, all alike in form
        for _, body in media:
            with Image.open(io.BytesIO(body)) as im:
                assert (im.format, im.size, im.mode, im.info) == ("PNG", (256, 256), "RGB", {})
        participant.close()

        # --- the researcher's results show the kappa sklearn computes from the stored answers
        expected = cohen_kappa_score([r.truth for r in records], [r.answer for r in records], labels=list(LABELS))
        sign_in(page, f"{server.url}/survey_results")
        page.get_by_text("Mean kappa", exact=True).wait_for()
        metric = page.locator("[data-testid='stMetric']").filter(has_text="Mean kappa").first
        shown = metric.locator("[data-testid='stMetricValue']").inner_text().strip()
        assert shown == f"{expected:+.3f}"
        page.get_by_text("Who got what right").wait_for()
        screenshot(page, "survey-results")
        researcher.close()


def test_three_participants_at_once_lose_no_answer(browser, server_env):
    shots = []
    with screenshots_on_failure("survey-concurrent", shots):
        from app.survey_store import create_image_survey
        from db import repository as repo
        from renal_ldm.survey_images import normalise_image

        rng = np.random.default_rng(5)
        pngs = [normalise_image(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), 64) for _ in range(6)]
        token = create_image_survey("Concurrent", pngs[:3], pngs[3:])
        survey = repo.get_survey_by_token(token)
        contexts, pages = [], []
        for experience in ("1", "3", "5"):
            context = browser.new_context(viewport={"width": 1200, "height": 900})
            context.set_default_timeout(30_000)
            page = context.new_page()
            shots.append(page)
            start_participant(page, f"{server_env.url}/?survey={token}", experience)
            contexts.append(context)
            pages.append(page)
        labels = ["Real", "Synthetic"]
        for number in range(1, 7):
            time.sleep(MIN_VIEW_S)
            for i, page in enumerate(pages):  # all three click before any waits: concurrent reruns and writes
                page.get_by_role("button", name=labels[(number + i) % 2], exact=True).click()
            for page in pages:
                if number < 6:
                    page.get_by_text(f"{number + 1} / 6", exact=True).wait_for()
                else:
                    page.get_by_text("did you notice any patterns", exact=False).wait_for()
        stored = answers_by_participant(survey.id)
        assert sorted(len(v) for v in stored.values()) == [6, 6, 6]
        assert sorted(v[0].experience for v in stored.values()) == [1, 3, 5]
        for context in contexts:
            context.close()
