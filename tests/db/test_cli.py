"""`renal-ldm db upgrade` / `db current`: migrate, report the revision, never print a password."""

from __future__ import annotations

from db.migrate import head_revision
from renal_ldm.cli import main


def test_upgrade_then_current(empty_db_url, capsys):
    assert main(["db", "current", "--url", empty_db_url]) == 1
    assert "none (empty database)" in capsys.readouterr().out
    assert main(["db", "upgrade", "--url", empty_db_url]) == 0
    out = capsys.readouterr().out
    assert f"revision: {head_revision()} (head)" in out
    assert main(["db", "current", "--url", empty_db_url]) == 0
    out = capsys.readouterr().out
    assert f"revision: {head_revision()} (up to date)" in out
    if ":renal@" in empty_db_url:  # PostgreSQL test URL carries a password
        assert ":renal@" not in out and ":***@" in out


def test_default_database_is_a_sqlite_file_in_the_data_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RENAL_LDM_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    try:
        assert main(["db", "upgrade"]) == 0
    finally:
        from db.session import dispose_engines

        dispose_engines()
    assert f"sqlite:///{tmp_path}/renal_ldm.sqlite3" in capsys.readouterr().out
    assert (tmp_path / "renal_ldm.sqlite3").is_file()


def test_bad_or_unreachable_database_is_one_clear_line(capsys):
    assert main(["db", "current", "--url", "nosuchdb://x"]) == 2
    assert "invalid database URL nosuchdb://x" in capsys.readouterr().err
    assert main(["db", "current", "--url", "postgresql://u:secret@127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "cannot use database postgresql+psycopg://u:***@127.0.0.1:1/x" in err and "secret" not in err


def test_database_url_sources(tmp_path, monkeypatch):
    from db.session import database_url, masked_url

    monkeypatch.setenv("DATABASE_URL", "postgres://a:b@h/d")
    assert database_url() == "postgresql+psycopg://a:b@h/d"
    assert masked_url() == "postgresql+psycopg://a:***@h/d"
    assert database_url("sqlite:///x.db") == "sqlite:///x.db"
