"""Engines and transactions: one engine per database URL, short transactions (migrations: db.migrate).

`DATABASE_URL` picks the database (PostgreSQL to scale out); the default is a SQLite file in the data
directory. SQLite connections get WAL (readers never block the writer), foreign keys, a busy timeout, and an
explicit BEGIN IMMEDIATE for write transactions, so concurrent writers queue on the busy timeout instead of
failing with "database is locked" when a read lock cannot be upgraded.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

DATABASE_URL_ENV = "DATABASE_URL"
SQLITE_FILENAME = "renal_ldm.sqlite3"
BUSY_TIMEOUT_S = 30
# Execution option read by the SQLite "begin" hook: "IMMEDIATE" (writes, the default) or "DEFERRED" (reads).
SQLITE_BEGIN_OPTION = "renal_ldm_sqlite_begin"

_engines: dict[str, Engine] = {}
_factories: dict[str, sessionmaker[Session]] = {}
_lock = threading.Lock()


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else DATABASE_URL, else the SQLite file in the data directory."""
    url = url or os.environ.get(DATABASE_URL_ENV)
    if not url:
        from renal_ldm.paths import data_home

        return f"sqlite:///{data_home() / SQLITE_FILENAME}"
    # Hosting platforms hand out postgres:// URLs; psycopg 3 is the driver this product installs.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def masked_url(url: str | None = None) -> str:
    """The URL with any password replaced by ***, safe to print or log."""
    return make_url(database_url(url)).render_as_string(hide_password=True)


def get_engine(url: str | None = None) -> Engine:
    """The engine for a URL, created once per process and shared by all threads."""
    url = database_url(url)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            _engines[url] = engine
            _factories[url] = sessionmaker(bind=engine, expire_on_commit=False)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, or before forking worker processes)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


@contextmanager
def session_scope(url: str | None = None, *, readonly: bool = False) -> Iterator[Session]:
    """One short transaction: commit when the block ends, roll back if it raises."""
    get_engine(url)
    session = _factories[database_url(url)]()
    try:
        if readonly:
            session.connection(execution_options={SQLITE_BEGIN_OPTION: "DEFERRED"})
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def _create_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":
            return create_engine(parsed, pool_pre_ping=True)
    except ArgumentError as exc:
        shown = parsed.render_as_string(hide_password=True) if "parsed" in locals() else "(unparsable)"
        raise ValueError(f"invalid database URL {shown}: {exc}") from None
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S})
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection, _record) -> None:
    # Take transaction control from the sqlite3 module: it would otherwise BEGIN lazily (and DEFERRED) itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    cursor.close()


def _sqlite_on_begin(connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")
