"""Accounts, sign-in sessions and failure counters in the database (SQLite and PostgreSQL)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from db import repository as repo

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_accounts_are_listed_by_name_without_their_hash(db_url):
    repo.add_account("zoe", "annotator", "scrypt$x", url=db_url)
    repo.add_account("ada", "researcher", "scrypt$y", url=db_url)
    accounts = repo.list_accounts(url=db_url)
    assert [(a.name, a.role) for a in accounts] == [("ada", "researcher"), ("zoe", "annotator")]
    assert not any("scrypt" in repr(a) for a in accounts)
    assert repo.count_accounts(url=db_url) == 2


def test_a_taken_name_an_unknown_role_and_a_blank_name_are_refused(db_url):
    repo.add_account("ada", "researcher", "h", url=db_url)
    with pytest.raises(ValueError, match="an account named 'ada' exists already"):
        repo.add_account("ada", "annotator", "h", url=db_url)
    with pytest.raises(ValueError, match="role must be one of researcher, annotator; got 'admin'"):
        repo.add_account("bob", "admin", "h", url=db_url)
    with pytest.raises(ValueError, match="account name must be a non-empty text"):
        repo.add_account("  ", "researcher", "h", url=db_url)
    assert [a.name for a in repo.list_accounts(url=db_url)] == ["ada"]


def test_a_new_password_and_a_removal_end_the_accounts_sessions(db_url):
    repo.add_account("ada", "researcher", "h1", url=db_url)
    repo.create_sign_in_session("t1", "ada", "researcher", "d", NOW + timedelta(hours=1), url=db_url)
    repo.set_password_hash("ada", "h2", url=db_url)
    assert repo.get_sign_in_session("t1", NOW, url=db_url) is None
    assert repo.get_credentials("ada", url=db_url)[1] == "h2"
    repo.create_sign_in_session("t2", "ada", "researcher", "d", NOW + timedelta(hours=1), url=db_url)
    repo.remove_account("ada", url=db_url)
    assert repo.get_sign_in_session("t2", NOW, url=db_url) is None
    with pytest.raises(repo.NotFoundError, match="no account named 'ada'"):
        repo.remove_account("ada", url=db_url)


def test_an_expired_session_is_gone(db_url):
    repo.create_sign_in_session("t", "ada", "researcher", "d", NOW + timedelta(minutes=5), url=db_url)
    assert repo.get_sign_in_session("t", NOW, url=db_url).account_name == "ada"
    assert repo.get_sign_in_session("t", NOW + timedelta(minutes=5), url=db_url) is None
    assert repo.get_sign_in_session("t", NOW, url=db_url) is None  # deleted, not only hidden


def test_failures_count_up_per_key_and_clear(db_url):
    assert repo.sign_in_failures("account:ada", url=db_url) == (0, None)
    assert [repo.record_sign_in_failure("account:ada", NOW, url=db_url) for _ in range(3)] == [1, 2, 3]
    repo.record_sign_in_failure("client:1.2.3.4", NOW, url=db_url)
    assert repo.sign_in_failures("account:ada", url=db_url) == (3, NOW)
    repo.clear_sign_in_failures(["account:ada"], url=db_url)
    assert repo.sign_in_failures("account:ada", url=db_url) == (0, None)
    assert repo.sign_in_failures("client:1.2.3.4", url=db_url)[0] == 1


def test_concurrent_failures_are_all_counted(db_url):
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: repo.record_sign_in_failure("client:x", NOW, url=db_url), range(12)))
    assert repo.sign_in_failures("client:x", url=db_url)[0] == 12
