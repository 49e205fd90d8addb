"""The survey pages under AppTest: the researcher gate, creating a survey, a participant's whole walk, blindness,
results equal to sklearn, and an all-or-nothing CSV import."""

from __future__ import annotations

import io
import random
import re
from pathlib import Path

import numpy as np
import pytest
from app_helpers import shown
from PIL import Image
from sklearn.metrics import cohen_kappa_score
from streamlit.testing.v1 import AppTest

from app import survey_participant as flow
from app.accounts import ADMIN_NAME
from app.survey_auth import ADMIN_PASSWORD_ENV, OPEN_MODE_LINK_REFUSAL
from db import repository as repo
from db.migrate import init_db
from db.session import dispose_engines
from renal_ldm.survey import STRATEGY_MAX_CHARS, TITLE_MAX_CHARS

REPO_ROOT = Path(__file__).resolve().parents[2]
MAIN = str(REPO_ROOT / "app" / "main.py")
MANAGE, RESULTS = "../pages/survey_manage.py", "../pages/survey_results.py"
PASSWORD = "correct horse battery staple"
TRUTH_WORDS = re.compile(r"\b(real|synthetic)\b", re.IGNORECASE)


@pytest.fixture
def db_url(tmp_path, monkeypatch) -> str:
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'renal_ldm.sqlite3'}"
    monkeypatch.setenv("RENAL_LDM_HOME", str(home))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("RENAL_LDM_SURVEY_ONLY", raising=False)
    monkeypatch.delenv(ADMIN_PASSWORD_ENV, raising=False)
    home.mkdir()
    init_db(url)
    yield url
    dispose_engines()


@pytest.fixture(autouse=True)
def quick_clicks(monkeypatch):
    """AppTest clicks within milliseconds of a redraw; the double-click guard is tested on its own."""
    monkeypatch.setattr(flow, "MIN_VIEW_S", 0.0)


@pytest.fixture
def admin(db_url, monkeypatch) -> str:
    monkeypatch.setenv(ADMIN_PASSWORD_ENV, PASSWORD)
    return db_url


def app() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.run()
    return at


def signed_in(page: str) -> AppTest:
    """The page, after signing in as the researcher account of RENAL_LDM_ADMIN_PASSWORD."""
    at = app()
    at.text_input(key="sign_in_name").input(ADMIN_NAME)
    at.text_input(key="sign_in_password").input(PASSWORD)
    at.button[0].click().run()  # the form's Sign in
    assert not at.exception, at.exception
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> list[str]:
    """Every text the page rendered (titles, markdown, alerts, captions, labels, options)."""
    out = []
    for kind in (
        "title",
        "header",
        "subheader",
        "markdown",
        "caption",
        "text",
        "info",
        "success",
        "warning",
        "error",
        "code",
    ):
        out += [str(e.value) for e in getattr(at, kind)]
    for widget in list(at.button) + list(at.radio) + list(at.text_area) + list(at.text_input):
        out.append(str(widget.label))
    for radio in at.radio:
        out += [str(o) for o in radio.options]
    return out


def png_bytes(seed: int, size=(40, 48)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")
    return out.getvalue()


def make_survey(n_real=3, n_synthetic=3, title="Kidney study") -> tuple[str, int]:
    from app.survey_store import create_image_survey
    from renal_ldm.survey_images import normalise_upload

    real = [normalise_upload(f"r{i}.png", png_bytes(i, (72, 80)), 64).png for i in range(n_real)]
    synthetic = [normalise_upload(f"s{i}.png", png_bytes(100 + i, (72, 80)), 64).png for i in range(n_synthetic)]
    token = create_image_survey(title, real, synthetic)
    return token, repo.get_survey_by_token(token).id


# ------------------------------------------------------------------------------------------ researcher gate


def test_open_mode_manage_page_hides_every_participant_link(db_url):
    token, _ = make_survey(title="Local study")
    repo.set_survey_status(repo.get_survey_by_token(token).id, "open")
    at = app()
    at.switch_page(MANAGE).run()
    assert not at.exception
    shown = "\n".join(texts(at))
    assert "Local study" in shown
    assert token not in shown and all(token not in str(c.value) for c in at.code)
    assert OPEN_MODE_LINK_REFUSAL in shown


def test_wrong_password_shows_nothing(admin):
    make_survey(title="Secret study title")
    at = app()
    at.text_input(key="sign_in_name").input(ADMIN_NAME)
    at.text_input(key="sign_in_password").input("guess").run()
    at.button[0].click().run()
    assert [e.value for e in at.error] == ["Wrong name or password."]
    assert "Secret study title" not in "\n".join(texts(at))
    assert len(at.dataframe) == 0 and not at.get("file_uploader")
    with pytest.raises(ValueError, match="Known pages"):
        at.switch_page(MANAGE)


def test_right_password_creates_a_survey_from_uploads_and_a_folder(admin, tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(3):
        Image.open(io.BytesIO(png_bytes(i, (300, 260)))).save(folder / f"real_{i}.jpg", quality=90)
    at = signed_in(MANAGE)
    assert at.title[0].value == "Manage surveys"
    assert at.text_input(key="survey_title").max_chars == TITLE_MAX_CHARS  # what the database stores
    at.text_input(key="survey_title").input("Pilot").run()
    at.radio(key="survey_real_source").set_value("Server folder").run()
    at.text_input(key="survey_real_folder").input(str(folder)).run()
    uploader = at.get("file_uploader")[0]
    uploader.set_value(
        [(f"synthetic_{i}.png", png_bytes(50 + i, (256, 256)), "image/png") for i in range(2)]
        + [("notes.txt", b"not an image", "text/plain")]
    ).run()
    at.button(key="survey_create").click().run()
    assert not at.exception
    errors = shown("\n".join(e.value for e in at.error))
    assert "notes.txt" in errors and "not an image" in errors and "expected an image file" in errors
    assert repo.list_surveys() == []  # nothing created, nothing half-stored

    at.get("file_uploader")[0].set_value(
        [(f"synthetic_{i}.png", png_bytes(50 + i, (256, 256)), "image/png") for i in range(3)]
    ).run()
    at.button(key="survey_create").click().run()
    assert not at.exception and not at.error
    (survey,) = repo.list_surveys()
    assert (survey.title, survey.status, survey.item_count) == ("Pilot", "open", 6)
    assert any(f"?survey={survey.token}" in s.value for s in at.success)
    items = repo.survey_items_with_truth(survey.id)
    assert sorted(i.truth for i in items) == ["real"] * 3 + ["synthetic"] * 3
    for item in items:  # opaque names, one format and size
        assert re.fullmatch(r"survey/[0-9a-f]{16}/[0-9a-f]{24}\.png", item.image_path)
        with Image.open(Path(db_home()) / item.image_path) as im:
            assert (im.format, im.size, im.mode) == ("PNG", (256, 256), "RGB")

    at.button(key=f"close_{survey.id}").click().run()
    assert repo.get_survey(survey.id).status == "closed"
    at.button(key=f"duplicate_{survey.id}").click().run()
    assert len(repo.list_surveys()) == 2


def test_create_from_library_samples(admin, tmp_path):
    import os

    home = Path(os.environ["RENAL_LDM_HOME"])
    (home / "samples").mkdir()
    for i in range(3):
        Image.open(io.BytesIO(png_bytes(i, (128, 128)))).save(home / "samples" / f"s{i}.png")
        repo.add_sample(
            repo.NewSample(
                image_path=f"samples/s{i}.png",
                caption="Header.\nThere is a lot of Glomeruli visible in the image.",
                model_name="tiny",
                seed=i,
                steps=2,
                guidance=1.5,
                size=128,
            )
        )
    real = tmp_path / "real"
    real.mkdir()
    for i in range(2):
        (real / f"{i}.png").write_bytes(png_bytes(10 + i, (100, 100)))
    at = signed_in(MANAGE)
    at.text_input(key="survey_title").input("From the Library").run()
    at.radio(key="survey_real_source").set_value("Server folder").run()
    at.text_input(key="survey_real_folder").input(str(real)).run()
    at.radio(key="survey_synthetic_source").set_value("Library samples").run()
    assert len(at.multiselect(key="survey_library_samples").value) == 3  # the newest N preselected
    at.number_input(key="survey_size").set_value(96).run()  # no image is smaller: nothing up-scaled
    at.button(key="survey_create").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (survey,) = repo.list_surveys()
    assert survey.item_count == 5
    assert any("Only 2 real images given" in i.value for i in at.info)
    assert any(
        "Native sizes differ: the real half is all 100 x 100 px and the synthetic half all 128 x 128 px" in c.value
        for c in at.code
    )  # the creation warning, shown as plain text


def db_home() -> str:
    import os

    return os.environ["RENAL_LDM_HOME"]


def test_demo_button_creates_a_phantom_only_demo(admin, monkeypatch, tmp_path):
    import time

    import renal_ldm.paths
    from app import survey_demo

    monkeypatch.setenv(renal_ldm.paths.DEMO_MODEL_ENV, str(tmp_path / "no-demo-model"))
    original = survey_demo.start_demo_job
    monkeypatch.setattr(survey_demo, "start_demo_job", lambda: original(n=2))  # 2 + 2 phantoms: quick
    at = signed_in(MANAGE)
    assert "phantom-only" in "\n".join(m.value for m in at.markdown)
    at.button(key="survey_demo").click().run()
    deadline = time.monotonic() + 60
    while not any(s.value.startswith("Created survey") for s in at.success):  # the page polls the job; so do we
        assert time.monotonic() < deadline, "the demo survey never appeared on the page"
        assert not at.exception, at.exception
        time.sleep(0.2)
        at.run()
    (survey,) = repo.list_surveys()
    assert survey.is_demo and survey.item_count == 4 and survey.status == "open"
    assert survey.title.startswith("Demo survey (phantom-only")
    assert any(f"?survey={survey.token}" in s.value for s in at.success)


# -------------------------------------------------------------------------------------------- participant


def take_survey(token: str, experience: int = 3, answers=None, strategy="Looked at the nuclei.") -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["survey"] = token
    at.run()
    assert not at.exception, at.exception
    assert at.markdown and "one at a time" in at.markdown[0].value
    at.radio(key="survey_experience").set_value(experience)
    at.button(key="survey_start").click().run()
    resume = at.query_params.get("resume")
    assert resume, "the resume token is put in the URL"
    seen = []
    rng = random.Random(0)
    while at.get("progress"):
        progress = at.get("progress")[0]
        number = len(seen) + 1
        assert progress.proto.text == f"{number} / 6"
        label = (answers or {}).get(number) or rng.choice(["Real", "Synthetic"])
        seen.append(label)
        next(b for b in at.button if b.label == label).click().run()
        assert not at.exception, at.exception
    return at


def test_participant_walks_experience_answers_strategy_thank_you(db_url):
    token, survey_id = make_survey()
    at = take_survey(token)
    # the box takes exactly what the database keeps (one limit, renal_ldm.survey.STRATEGY_MAX_CHARS)
    assert at.text_area(key="survey_strategy_text").max_chars == STRATEGY_MAX_CHARS
    at.text_area(key="survey_strategy_text").input("Looked at the nuclei.")
    at.button[0].click().run()  # Finish
    assert any(flow.THANK_YOU in s.value for s in at.success)
    answers = repo.survey_answers(survey_id)
    assert len(answers) == 6 and {a.experience for a in answers} == {3}
    resume = at.query_params["resume"]
    p = repo.get_participant(resume)
    assert p.finished and p.strategy == "Looked at the nuclei."


def test_reload_resumes_at_next_unanswered_image(db_url):
    token, survey_id = make_survey()
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["survey"] = token
    at.run()
    at.radio(key="survey_experience").set_value(2)
    at.button(key="survey_start").click().run()
    for _ in range(2):
        next(b for b in at.button if b.label == "Real").click().run()
    resume = at.query_params["resume"]
    assert at.query_params == {"resume": resume}  # personal: the shared survey token has left the address
    assert flow.PERSONAL_ADDRESS in [c.value for c in at.caption]
    fresh = AppTest.from_file(MAIN, default_timeout=60)  # a new browser session: only the URL survives
    fresh.query_params["resume"] = resume
    fresh.run()
    assert fresh.get("progress")[0].proto.text == "3 / 6"
    assert repo.get_participant(resume).answered == 2
    assert fresh.query_params == {"resume": resume}


def test_an_old_address_with_both_tokens_resumes_and_drops_the_survey_token(db_url):
    token, _ = make_survey()
    resume = repo.start_participant(token, 2)
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["survey"] = token
    at.query_params["resume"] = resume
    at.run()
    assert not at.exception, at.exception
    assert "1 / 6" in at.get("progress")[0].proto.text
    assert at.query_params == {"resume": resume}
    stale = AppTest.from_file(MAIN, default_timeout=60)  # a resume token that matches nobody, beside the link
    stale.query_params["survey"] = token
    stale.query_params["resume"] = "no-such-participant"
    stale.run()
    assert stale.radio(key="survey_experience") and stale.query_params == {"survey": token}


def open_address(**params) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=60)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_an_invitation_starts_one_participant_and_then_only_resumes_them(db_url):
    token, survey_id = make_survey()
    first, second = repo.create_invitations(survey_id, 2)
    at = open_address(invite=first.token)
    at.radio(key="survey_experience").set_value(4)
    at.button(key="survey_start").click().run()
    resume = at.query_params.get("resume")
    assert resume and at.query_params == {"resume": resume}  # the invitation left the address too
    next(b for b in at.button if b.label == "Real").click().run()

    again = open_address(invite=first.token)  # the same link, another browser: the same participant
    assert "2 / 6" in again.get("progress")[0].proto.text
    assert again.query_params == {"resume": resume}
    assert not again.get("radio")  # no start screen: the invitation can never start a second participant
    assert repo.get_survey(survey_id).participant_count == 1
    assert [i.used for i in repo.list_invitations(survey_id)] == [True, False]
    assert open_address(invite=second.token).radio(key="survey_experience")  # the other one is still unused
    bogus = open_address(invite="made-up")
    assert [e.value for e in bogus.error] == [flow.BAD_INVITATION] and not bogus.get("radio")


def test_a_full_survey_and_an_invitation_only_survey_say_so(db_url):
    token, survey_id = make_survey()
    repo.set_participant_cap(survey_id, 1)
    repo.start_participant(token, 3)
    at = open_address(survey=token)
    assert [i.value for i in at.info] == [flow.FULL] and not at.get("radio")
    (invitation,) = repo.create_invitations(survey_id, 1)
    assert [i.value for i in open_address(invite=invitation.token).info] == [flow.FULL]

    repo.set_participant_cap(survey_id, None)
    repo.set_shared_link(survey_id, False)
    at = open_address(survey=token)
    assert [i.value for i in at.info] == [flow.INVITATION_ONLY] and not at.get("radio")
    assert open_address(invite=invitation.token).radio(key="survey_experience")  # invitations still start


def test_start_refused_when_the_cap_is_reached_while_reading_the_instructions(db_url):
    token, survey_id = make_survey()
    at = open_address(survey=token)
    repo.set_participant_cap(survey_id, 1)
    repo.start_participant(token, 3)  # someone else took the last place meanwhile
    at.radio(key="survey_experience").set_value(2)
    at.button(key="survey_start").click().run()
    assert not at.exception, at.exception
    assert flow.FULL in [e.value for e in at.error] + [i.value for i in at.info]
    assert "resume" not in at.query_params and repo.get_survey(survey_id).participant_count == 1


def test_an_unexpected_error_shows_a_friendly_message_not_a_traceback(db_url, monkeypatch, caplog):
    token, _ = make_survey()
    resume = repo.start_participant(token, 3)

    def broken(*_args, **_kwargs):
        raise RuntimeError("connection to server at 10.0.0.7 lost (secret detail)")

    monkeypatch.setattr(repo, "next_unanswered_item", broken)
    with caplog.at_level("ERROR", logger=flow.__name__):
        at = open_address(resume=resume)
    assert not at.exception
    assert [e.value for e in at.error] == [flow.FAILURE]
    shown = "\n".join(texts(at))
    assert "secret detail" not in shown and "RuntimeError" not in shown and "Traceback" not in shown
    assert any("secret detail" in (r.exc_text or "") for r in caplog.records)  # logged server-side


def test_an_unexpected_error_when_answering_shows_the_friendly_message(db_url, monkeypatch):
    token, survey_id = make_survey()
    at = open_address(survey=token)
    at.radio(key="survey_experience").set_value(3)
    at.button(key="survey_start").click().run()

    def broken(*_args, **_kwargs):
        raise OSError("disk I/O error at /var/lib/secret")

    monkeypatch.setattr(repo, "record_answer", broken)
    next(b for b in at.button if b.label == "Real").click().run()
    assert not at.exception
    assert flow.FAILURE in [e.value for e in at.error]
    assert "/var/lib/secret" not in "\n".join(texts(at))
    assert "1 / 6" in at.get("progress")[0].proto.text  # the same image again: nothing was skipped


def test_double_or_stale_click_records_one_answer_and_never_the_next_image(db_url, monkeypatch):
    token, _ = make_survey()
    resume = repo.start_participant(token, 3)
    first = repo.next_unanswered_item(resume)
    state = {flow.CURRENT: first.public_id}  # the page drew image 1
    monkeypatch.setattr(flow.st, "session_state", state)
    flow.on_answer(resume, first.public_id, "real")
    flow.on_answer(resume, first.public_id, "synthetic")  # the second click of a double click
    second = repo.next_unanswered_item(resume)
    state[flow.CURRENT] = second.public_id  # the page now shows image 2
    flow.on_answer(resume, first.public_id, "synthetic")  # a click queued on image 1's button
    assert repo.get_participant(resume).answered == 1
    assert [a.answer for a in repo.survey_answers(repo.get_survey_by_token(token).id)] == ["real"]
    assert repo.record_answer(resume, first.public_id, "synthetic") is False  # and the repository agrees


def test_click_right_after_an_image_is_drawn_is_ignored(db_url, monkeypatch):
    import time

    token, _ = make_survey()
    resume = repo.start_participant(token, 3)
    item = repo.next_unanswered_item(resume)
    monkeypatch.setattr(flow, "MIN_VIEW_S", 0.4)
    state = {}
    monkeypatch.setattr(flow.st, "session_state", state)
    flow.shown(item.public_id)
    flow.on_answer(resume, item.public_id, "real")  # the tail of a double click on the previous image
    assert repo.get_participant(resume).answered == 0
    state[flow.SHOWN_AT] = time.monotonic() - 1.0
    flow.on_answer(resume, item.public_id, "real")
    assert repo.get_participant(resume).answered == 1


def test_truth_never_reaches_participant_session_or_elements(db_url):
    token, survey_id = make_survey()
    truths = {i.public_id: i.truth for i in repo.survey_items_with_truth(survey_id)}
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["survey"] = token
    at.run()
    at.radio(key="survey_experience").set_value(1)
    at.button(key="survey_start").click().run()

    def check(at: AppTest) -> None:
        state = at.session_state.to_dict()
        dumped = repr(state)
        assert not TRUTH_WORDS.search(dumped), dumped  # neither truth string, anywhere in the session
        assert "survey/" not in dumped  # no file path either
        shown = "\n".join(texts(at))
        for fixed in sorted(flow.STATIC_TEXTS, key=len, reverse=True):
            shown = shown.replace(fixed, "")
        shown = shown.replace("Is this image real or synthetic?", "")
        assert not TRUTH_WORDS.search(shown), shown
        for image in at.get("imgs"):
            for url in image.value:
                assert url.startswith("/media/") and not any(p in url for p in truths)

    check(at)
    labels = ["Synthetic", "Real", "Real", "Synthetic", "Real", "Synthetic"]
    for label in labels:
        next(b for b in at.button if b.label == label).click().run()
        check(at)
    at.button[0].click().run()
    check(at)


def test_participant_session_sticks_to_the_survey_page(db_url, admin):
    token, _ = make_survey()
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["survey"] = token
    at.run()
    at.query_params.clear()  # the participant edits the URL: still the survey page, nothing else reachable
    at.run()
    assert at.session_state[flow.PARTICIPANT] is True
    assert at.radio(key="survey_experience")  # still the survey's start screen
    try:
        at.switch_page(MANAGE).run()
    except ValueError:
        pass  # the page is not even registered for this session
    else:
        assert not at.text_input and not at.get("file_uploader") and "Manage surveys" not in texts(at)


def test_survey_only_mode_hosts_only_the_survey(db_url, monkeypatch):
    monkeypatch.setenv("RENAL_LDM_SURVEY_ONLY", "1")
    at = app()
    assert flow.NO_LINK in "\n".join(texts(at))


# ------------------------------------------------------------------------------------------------ results


def answer_directly(token: str, n_people: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    for person in range(n_people):
        resume = repo.start_participant(token, experience=1 + person % 5, rng=rng)
        while (item := repo.next_unanswered_item(resume)) is not None:
            repo.record_answer(resume, item.public_id, rng.choice(["real", "synthetic"]))
        repo.finish_participant(resume)


def test_results_show_kappa_equal_to_sklearn(admin):
    token, survey_id = make_survey()
    answer_directly(token, 4)
    at = signed_in(RESULTS)
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    by_person: dict[int, tuple[list[str], list[str]]] = {}
    for a in repo.survey_answers(survey_id):
        truth, given = by_person.setdefault(a.participant_id, ([], []))
        truth.append(a.truth)
        given.append(a.answer)
    expected = {}
    for pid, (truth, given) in by_person.items():
        k = cohen_kappa_score(truth, given, labels=["real", "synthetic"])
        expected[str(pid)] = None if np.isnan(k) else k
    shown = dict(zip(table["participant"].astype(str), table["kappa"], strict=True))
    assert set(shown) == set(expected)
    for pid, k in expected.items():
        if k is None:
            assert shown[pid] is None or np.isnan(shown[pid])
        else:
            assert shown[pid] == pytest.approx(k, abs=1e-4)
    defined = [k for k in expected.values() if k is not None]
    mean = next(m for m in at.metric if m.label == "Mean kappa")
    assert mean.value == f"{np.mean(defined):+.3f}"


@pytest.mark.parametrize("case", ["one participant", "all same answer", "unanswered"])
def test_results_degenerate_cases_render(admin, case):
    token, survey_id = make_survey()
    if case == "one participant":
        answer_directly(token, 1)
    else:
        for _ in range(2):
            resume = repo.start_participant(token, experience=3)
            for i, item in enumerate(iter(lambda r=resume: repo.next_unanswered_item(r), None)):
                if case == "unanswered" and i >= 2:
                    break
                repo.record_answer(resume, item.public_id, "real")
    at = signed_in(RESULTS)
    assert not at.exception, at.exception
    assert at.metric and at.dataframe


def test_results_with_no_answers_render(admin):
    make_survey()
    at = signed_in(RESULTS)
    assert not at.exception and any("Nobody has answered" in i.value for i in at.info)


def test_csv_import_with_a_malformed_row_shows_line_numbers_and_imports_nothing(admin):
    _, survey_id = make_survey()
    truth = {i.position + 1: i.truth for i in repo.survey_items_with_truth(survey_id)}
    rows = ["participant,experience,question,truth,answer"]
    rows += [f"p1,2,{q},{t},real" for q, t in truth.items()]
    rows += [f"p2,4,{q},{t},synthetic" for q, t in truth.items()]
    good = "\n".join(rows) + "\n"
    bad_rows = rows.copy()
    bad_rows[4] = bad_rows[4].replace(",real", ",maybe")  # line 5
    bad_rows[9] = "p2,seven,3,real,real"  # line 10
    at = signed_in(RESULTS)
    at.get("file_uploader")[0].set_value(("answers.csv", "\n".join(bad_rows).encode(), "text/csv")).run()
    at.button(key="survey_import").click().run()
    assert not at.exception, at.exception
    message = shown("\n".join(e.value for e in at.error))
    assert "Nothing was imported" in message and "line 5:" in message and "line 10:" in message
    assert "'maybe'" in message
    assert repo.survey_answers(survey_id) == []

    at.get("file_uploader")[0].set_value(("answers.csv", good.encode(), "text/csv")).run()
    at.button(key="survey_import").click().run()
    assert any("Imported 12 answers of 2 participants" in s.value for s in at.success)
    assert len(repo.survey_answers(survey_id)) == 12


def test_csv_import_lists_the_first_problems_then_how_many_more(db_url):
    from app import survey_admin as admin
    from renal_ldm.survey import MAX_LISTED_PROBLEMS

    _, survey_id = make_survey()
    header = "participant,experience,question,truth,answer\n"
    rows = "".join(f"p{i},1,1,maybe,real\n" for i in range(MAX_LISTED_PROBLEMS + 3))
    outcome = admin.import_csv(survey_id, (header + rows).encode())
    assert outcome.imported is None and len(outcome.problems) == MAX_LISTED_PROBLEMS + 1
    assert outcome.problems[0] == "line 2: truth 'maybe' is not 'real' or 'synthetic'"
    assert outcome.problems[-1] == "... and 3 more problems"

    outcome = admin.import_csv(survey_id, b"participant,question,answer\np1,1,real\n")
    assert len(outcome.problems) == 1 and outcome.problems[0].startswith(
        "survey responses CSV: header lacks column(s) experience, truth"
    )
    assert repo.survey_answers(survey_id) == []


# ------------------------------------------------------------------------------- one person, one record


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def table(at: AppTest, column: str):
    """The first table on the page with this column (AppTest does not expose a dataframe's key)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_an_excluded_participant_is_in_no_statistic_and_no_download(admin):
    token, survey_id = make_survey()
    answer_directly(token, 3, seed=4)
    people = repo.survey_participants(survey_id)
    for person, text in zip(people, ["Looked at the nuclei.", None, "Colour of the stroma."], strict=True):
        repo.set_strategy(repo_resume(person.id), text)
    at = signed_in(RESULTS)
    strategies = table(at, "strategy")
    assert list(strategies["strategy"]) == ["Looked at the nuclei.", "Colour of the stroma."]
    assert list(strategies["participant"]) == [str(people[0].id), str(people[2].id)]
    assert list(strategies["experience"]) == [people[0].experience, people[2].experience]
    everyone = metric(at, "Mean kappa")

    excluded = people[0]
    at.toggle(key=f"survey_exclude_{survey_id}_{excluded.id}").set_value(True).run()
    assert not at.exception, at.exception
    assert [p.excluded for p in repo.survey_participants(survey_id)] == [True, False, False]
    assert any(i.value.startswith("1 participant excluded") for i in at.info)
    shown = table(at, "binomial p")
    assert str(excluded.id) not in set(shown["participant"].astype(str)) and len(shown) == 2
    kept = [a for a in repo.survey_answers(survey_id) if a.participant_id != excluded.id]
    kappas = []
    for pid in {a.participant_id for a in kept}:
        mine = [a for a in kept if a.participant_id == pid]
        kappas.append(
            cohen_kappa_score([a.truth for a in mine], [a.answer for a in mine], labels=["real", "synthetic"])
        )
    assert metric(at, "Mean kappa") == f"{np.mean(kappas):+.3f}"
    assert metric(at, "Answers correct (pooled)").endswith(f"/ {len(kept)}")
    assert list(table(at, "strategy")["strategy"]) == ["Colour of the stroma."]

    from app import survey_admin

    data = survey_admin.survey_data(survey_id)
    raw = survey_admin.answers_csv(data)
    summary = survey_admin.summary_csv(survey_admin.statistics(data), data)
    for text in (raw, summary):
        ids = {line.split(",")[0] for line in text.splitlines()[1:]}
        assert ids == {str(p.id) for p in people[1:]}
    assert raw.splitlines()[0].endswith(",strategy") and "Looked at the nuclei." not in raw + summary

    at.toggle(key=f"survey_exclude_{survey_id}_{excluded.id}").set_value(False).run()
    assert metric(at, "Mean kappa") == everyone and not any("excluded" in i.value for i in at.info)


def repo_resume(participant_id: int) -> str:
    """A participant's resume token (tests only: the product never looks participants up by id)."""
    from db import models
    from db.session import session_scope

    with session_scope() as session:
        return session.get_one(models.Participant, participant_id).resume_token


def test_manage_surveys_creates_invitations_and_sets_the_cap(admin):
    token, survey_id = make_survey(title="Invited")
    at = signed_in(MANAGE)
    at.number_input(key=f"survey_invite_count_{survey_id}").set_value(3).run()
    at.button(key=f"survey_invite_create_{survey_id}").click().run()
    assert not at.exception, at.exception
    invitations = repo.list_invitations(survey_id)
    assert len(invitations) == 3
    listed = table(at, "status")
    assert list(listed["status"]) == ["unused"] * 3
    assert [link.rsplit("?", 1)[1] for link in listed["link"]] == [f"invite={i.token}" for i in invitations]
    repo.start_invited_participant(invitations[1].token, 2)
    at.run()
    assert list(table(at, "status")["status"]) == ["unused", "used", "unused"]

    at.number_input(key=f"survey_cap_{survey_id}").set_value(5).run()
    at.button(key=f"survey_set_cap_{survey_id}").click().run()
    assert repo.get_survey(survey_id).participant_cap == 5
    at.number_input(key=f"survey_cap_{survey_id}").set_value(0).run()
    at.button(key=f"survey_set_cap_{survey_id}").click().run()
    assert repo.get_survey(survey_id).participant_cap is None
    at.toggle(key=f"survey_shared_link_{survey_id}").set_value(False).run()
    assert not repo.get_survey(survey_id).shared_link
    with pytest.raises(repo.SharedLinkOffError):
        repo.start_participant(token)


def test_open_mode_hides_invitation_links(db_url):
    _, survey_id = make_survey()
    invitations = repo.create_invitations(survey_id, 2)
    at = app()
    at.switch_page(MANAGE).run()
    assert not at.exception, at.exception
    shown = "\n".join(texts(at))
    assert "Invitation links hidden in open mode" in shown
    assert not any(i.token in shown for i in invitations)
    assert not [b for b in at.get("download_button") if "invitations" in b.key]
