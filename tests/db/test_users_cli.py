"""`renal-ldm users`: add, list, passwd, remove; passwords from two lines of standard input."""

from __future__ import annotations

import io

import pytest

from app import accounts
from db import repository as repo
from renal_ldm.cli import main


@pytest.fixture(autouse=True)
def _no_admin(monkeypatch):
    monkeypatch.delenv(accounts.ADMIN_PASSWORD_ENV, raising=False)


def _stdin(monkeypatch, text: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_add_list_passwd_remove(db_url, monkeypatch, capsys):
    _stdin(monkeypatch, "a long enough password\na long enough password\n")
    assert main(["users", "add", "ada", "--role", "researcher", "--url", db_url]) == 0
    assert "added researcher 'ada'" in capsys.readouterr().out
    assert accounts.sign_in("ada", "a long enough password", url=db_url)[0].role == "researcher"

    assert main(["users", "list", "--url", db_url]) == 0
    assert capsys.readouterr().out.startswith("ada\tresearcher\tcreated ")

    _stdin(monkeypatch, "another long password\nanother long password\n")
    assert main(["users", "passwd", "ada", "--url", db_url]) == 0
    assert accounts.sign_in("ada", "another long password", url=db_url)[0].name == "ada"

    assert main(["users", "remove", "ada", "--url", db_url]) == 0
    assert "no accounts left" in capsys.readouterr().out
    assert repo.count_accounts(url=db_url) == 0


@pytest.mark.parametrize(
    ("stdin", "role", "message"),
    [
        ("a long enough password\na different password\n", "researcher", "the two passwords differ"),
        ("only one line here\n", "researcher", "give the password twice"),
        ("short\nshort\n", "researcher", "at least 12 characters (got 5)"),
        ("a long enough password\na long enough password\n", "admin", "role must be one of researcher, annotator"),
    ],
)
def test_bad_input_is_one_line_and_adds_nothing(db_url, monkeypatch, capsys, stdin, role, message):
    _stdin(monkeypatch, stdin)
    assert main(["users", "add", "bob", "--role", role, "--url", db_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("renal-ldm users: error: ") and message in err and "Traceback" not in err
    assert repo.count_accounts(url=db_url) == 0


def test_removing_an_unknown_account_names_it(db_url, capsys):
    assert main(["users", "remove", "nobody", "--url", db_url]) == 2
    assert "no account named 'nobody'" in capsys.readouterr().err
