"""Access control in the app: open mode, the sign-in gate, roles, sign-in surviving a new browser session."""

from __future__ import annotations

import pytest
from app_helpers import MAIN, RUN_TIMEOUT, page_path

from app import access, accounts

PASSWORD = "a long enough password"


@pytest.fixture(autouse=True)
def _no_admin(monkeypatch):
    monkeypatch.delenv(accounts.ADMIN_PASSWORD_ENV, raising=False)


def _fresh_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(MAIN, default_timeout=RUN_TIMEOUT)


def _sign_in(at, name: str, password: str):
    at.text_input(key="sign_in_name").input(name)
    at.text_input(key="sign_in_password").input(password)
    return at.button[0].click().run()


def _shown_text(at) -> str:
    return " ".join(
        str(e.value) for kind in ("title", "markdown", "info", "warning", "error", "caption") for e in getattr(at, kind)
    )


def test_open_mode_shows_every_page_and_says_so(app):
    assert [t.value for t in app.title] == ["Compose a caption"]
    assert any("Open mode" in w.value for w in app.sidebar.warning)


@pytest.mark.parametrize("filename", ["compose.py", "generate.py", "library.py", "survey_manage.py"])
def test_with_an_account_a_fresh_session_sees_only_the_sign_in(app_home, filename):
    accounts.add_account("ada", "researcher", PASSWORD)
    at = _fresh_app()
    at.run()
    assert [t.value for t in at.title] == ["Sign in"]
    assert access.SIGN_IN_NOTICE in _shown_text(at)
    # No page file is registered for this session: its address runs the sign-in form (checked in a real
    # browser by tests/e2e/test_access_e2e.py; AppTest cannot open a page by its address).
    with pytest.raises(ValueError, match="Could not find a navigation page") as caught:
        at.switch_page(page_path(filename))
    assert "pages/" not in str(caught.value).split("Known pages:")[1]


def test_a_researcher_signs_in_and_sees_the_product(app_home):
    accounts.add_account("ada", "researcher", PASSWORD)
    at = _fresh_app()
    at.run()
    _sign_in(at, "ada", PASSWORD)
    assert not at.exception, [e.message for e in at.exception]
    assert [t.value for t in at.title] == ["Compose a caption"]
    assert any("Signed in as ada (researcher)" in c.value for c in at.sidebar.caption)
    at.switch_page(page_path("generate.py")).run()
    assert at.title[0].value == "Generate tissue"


def test_a_wrong_password_is_refused_with_one_message(app_home):
    accounts.add_account("ada", "researcher", PASSWORD)
    at = _fresh_app()
    at.run()
    _sign_in(at, "ada", "not the password")
    assert [e.value for e in at.error] == ["Wrong name or password."]
    assert [t.value for t in at.title] == ["Sign in"]


def test_seven_wrong_passwords_in_a_row_are_slowed(app_home):
    accounts.add_account("ada", "researcher", PASSWORD)
    at = _fresh_app()
    at.run()
    for _ in range(7):
        _sign_in(at, "ada", "not the password")
    assert at.error[0].value.startswith("Too many failed sign-ins. Try again in ")
    _sign_in(at, "ada", PASSWORD)  # the right password, too soon
    assert at.error[0].value.startswith("Too many failed sign-ins")
    assert [t.value for t in at.title] == ["Sign in"]


def test_an_annotator_does_not_see_generate(app_home):
    accounts.add_account("ann", "annotator", PASSWORD)
    at = _fresh_app()
    at.run()
    _sign_in(at, "ann", PASSWORD)
    assert [t.value for t in at.title] == ["Slides"]
    with pytest.raises(ValueError, match=r"Known pages: \['/.*/pages/slides\.py', '/.*/pages/annotate\.py'\]"):
        at.switch_page(page_path("generate.py"))


def test_a_sign_in_token_resumes_in_a_new_session_and_sign_out_ends_it(app_home):
    accounts.add_account("ada", "researcher", PASSWORD)
    at = _fresh_app()
    at.run()
    _sign_in(at, "ada", PASSWORD)
    token = at.session_state[access.TOKEN]
    assert accounts.resume_session(token).name == "ada"
    at.sidebar.button(key="sign_out").click().run()
    assert [t.value for t in at.title] == ["Sign in"]
    assert accounts.resume_session(token) is None


def test_removing_the_account_signs_the_browser_out(app_home):
    from db import repository as repo

    accounts.add_account("ada", "researcher", PASSWORD)
    at = _fresh_app()
    at.run()
    _sign_in(at, "ada", PASSWORD)
    accounts.add_account("bob", "researcher", PASSWORD)  # so accounts still exist after removing ada
    repo.remove_account("ada")
    at.run()
    assert [t.value for t in at.title] == ["Sign in"]
