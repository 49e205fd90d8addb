"""Account rules: password policy and hashing, the sign-in throttle, sessions that survive a reload."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app import accounts
from db import repository as repo

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
GOOD = "correct horse battery"


@pytest.fixture
def no_admin(monkeypatch):
    monkeypatch.delenv(accounts.ADMIN_PASSWORD_ENV, raising=False)


def test_passwords_are_stored_as_salted_scrypt_hashes(app_home, no_admin):
    accounts.add_account("ada", "researcher", GOOD)
    _, stored = repo.get_credentials("ada")
    assert stored.startswith("scrypt$32768$8$1$") and GOOD not in stored
    assert accounts.hash_password(GOOD) != accounts.hash_password(GOOD)  # salted
    assert accounts.verify_password(GOOD, stored) and not accounts.verify_password(GOOD + "!", stored)
    assert not accounts.verify_password(GOOD, "md5$abc")


def test_a_short_password_is_refused_and_nothing_is_stored(app_home, no_admin):
    with pytest.raises(ValueError, match=r"at least 12 characters \(got 5\)"):
        accounts.add_account("ada", "researcher", "short")
    assert repo.count_accounts() == 0
    assert not accounts.accounts_configured()


def test_sign_in_gives_a_token_that_resumes_until_it_expires(app_home, no_admin):
    accounts.add_account("ann", "annotator", GOOD)
    identity, token = accounts.sign_in("ann", GOOD, now=NOW)
    assert identity == accounts.Identity("ann", "annotator")
    assert accounts.resume_session(token, now=NOW + timedelta(hours=7)) == identity
    assert accounts.resume_session(token, now=NOW + timedelta(hours=8, seconds=1)) is None
    assert accounts.resume_session("made-up-token", now=NOW) is None


def test_sign_out_and_a_password_change_end_the_session(app_home, no_admin):
    accounts.add_account("ada", "researcher", GOOD)
    _, token = accounts.sign_in("ada", GOOD, now=NOW)
    accounts.sign_out(token)
    assert accounts.resume_session(token, now=NOW) is None
    _, token = accounts.sign_in("ada", GOOD, now=NOW)
    accounts.change_password("ada", "another long password")
    assert accounts.resume_session(token, now=NOW) is None
    with pytest.raises(accounts.SignInError, match="Wrong name or password"):
        accounts.sign_in("ada", GOOD, now=NOW)
    assert accounts.sign_in("ada", "another long password", now=NOW)[0].name == "ada"


def test_a_wrong_name_and_a_wrong_password_get_the_same_message(app_home, no_admin):
    accounts.add_account("ada", "researcher", GOOD)
    messages = set()
    for name, password in (("ada", "wrong password!"), ("nobody", GOOD)):
        with pytest.raises(accounts.SignInError) as caught:
            accounts.sign_in(name, password, now=NOW)
        messages.add(str(caught.value))
    assert messages == {"Wrong name or password."}


def test_seven_wrong_passwords_in_a_row_are_slowed(app_home, no_admin):
    accounts.add_account("ada", "researcher", GOOD)
    for _ in range(accounts.FREE_FAILURES):
        with pytest.raises(accounts.SignInError, match="Wrong name or password"):
            accounts.sign_in("ada", "wrong password!", client="10.0.0.7", now=NOW)
    waits = []
    for attempt in range(7 - accounts.FREE_FAILURES):
        at = NOW + timedelta(seconds=1000 * (attempt + 1))  # after any wait, so each is a real try
        with pytest.raises(accounts.SignInError) as caught:
            accounts.sign_in("ada", "wrong password!", client="10.0.0.7", now=at)
        waits.append(caught.value.retry_after_s)
    assert waits == [2, 4, 8, 16]
    after_seventh = NOW + timedelta(seconds=4000)
    # Even the right password is refused while the wait holds, from this address and from another one.
    with pytest.raises(accounts.SignInError, match=r"Too many failed sign-ins\. Try again in 16 s\."):
        accounts.sign_in("ada", GOOD, client="10.0.0.7", now=after_seventh)
    with pytest.raises(accounts.SignInError, match="Too many failed sign-ins"):
        accounts.sign_in("ada", GOOD, client="10.9.9.9", now=after_seventh)
    # Once it has passed, the right password works and the count starts again.
    assert accounts.sign_in("ada", GOOD, client="10.0.0.7", now=after_seventh + timedelta(seconds=16))[0].name
    assert repo.sign_in_failures("account:ada") == (0, None)


def test_one_address_guessing_many_names_is_slowed_too(app_home, no_admin):
    accounts.add_account("ada", "researcher", GOOD)
    for i in range(accounts.FREE_FAILURES + 1):
        with pytest.raises(accounts.SignInError):
            accounts.sign_in(f"user{i}", "guess guess guess", client="10.0.0.8", now=NOW)
    with pytest.raises(accounts.SignInError, match="Too many failed sign-ins"):
        accounts.sign_in("ada", GOOD, client="10.0.0.8", now=NOW + timedelta(seconds=1))
    assert accounts.sign_in("ada", GOOD, client="10.0.0.9", now=NOW + timedelta(seconds=1))[0].name == "ada"


def test_the_admin_password_is_a_researcher_account(app_home, monkeypatch):
    monkeypatch.setenv(accounts.ADMIN_PASSWORD_ENV, "the old shared password")
    assert accounts.accounts_configured()
    identity, token = accounts.sign_in("admin", "the old shared password", now=NOW)
    assert identity == accounts.Identity("admin", "researcher")
    assert accounts.resume_session(token, now=NOW) == identity
    monkeypatch.setenv(accounts.ADMIN_PASSWORD_ENV, "a new shared password")
    assert accounts.resume_session(token, now=NOW) is None  # changing the variable signs everyone out
    with pytest.raises(ValueError, match="'admin' is the account of RENAL_LDM_ADMIN_PASSWORD"):
        accounts.add_account("admin", "researcher", GOOD)


def test_a_malformed_sign_in_lifetime_names_the_variable(app_home, no_admin, monkeypatch):
    accounts.add_account("ada", "researcher", GOOD)
    monkeypatch.setenv(accounts.SIGN_IN_HOURS_ENV, "forever")
    with pytest.raises(ValueError, match="RENAL_LDM_SIGN_IN_HOURS='forever' must be a number of hours"):
        accounts.sign_in("ada", GOOD, now=NOW)
