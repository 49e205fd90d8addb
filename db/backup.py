"""Backup and restore of the whole product state: the database and the data directory's files, as one archive.

The archive is a plain tar file holding
- `database.sqlite3` (SQLite, copied with sqlite3's online backup API, so the copy is one consistent snapshot
  while the app keeps writing) or `database.sql` (PostgreSQL, a plain `pg_dump`);
- `files/<path>`: every regular file of the data directory (RENAL_LDM_HOME) except the live SQLite database and
  its -wal/-shm/-journal companions, so the sample, survey and slide rows still find their files;
- `manifest.json` (last): format and version, engine, schema revision, creation time, and each member's size
  and sha256.

Guarantees (tests/db/test_backup.py):
- `backup` writes to a temporary name beside `out` and renames it at the end: `out` is complete or absent; an
  existing `out` is replaced only with force=True.
- `restore` checks the whole archive (manifest, member names, sizes, sha256) before it changes anything, and
  refuses a target in use unless force=True: a database in use holds rows in a product table, or has other
  connections (SQLite: its -wal or -shm file exists, which SQLite keeps only while a connection is open or after
  a crash; PostgreSQL: other sessions on that database in pg_stat_activity).
- The database is replaced in one step: SQLite is restored into a temporary file, checked (integrity,
  revision), then copied into the target with the backup API in one write transaction (safe for connections
  that have the file open) or renamed into place when there is no target yet; PostgreSQL runs the dump in one
  transaction (`psql --single-transaction`) after dropping the old tables in the same transaction. A failure
  leaves the old database as it was.
- Files are written only inside the data directory: members with absolute paths, `..`, or anything but regular
  files are refused. Files of the archive replace files of the same name; other files are left in place.

Timing caveat: the database is copied first, then the files; a file deleted while the backup runs may be absent
from it even though its row is present.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from db.session import BUSY_TIMEOUT_S, SQLITE_FILENAME, database_url, masked_url

FORMAT = "renal-ldm-backup"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DATABASE_MEMBERS = {"sqlite": "database.sqlite3", "postgresql": "database.sql"}
FILES_PREFIX = "files/"
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
# Temporary folders of backup and restore; never walked into by a backup of the data directory.
STAGING_PREFIX = ".renal-ldm-staging-"
PG_CLIENT_HINT = "install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client)"
PG_LOCK_TIMEOUT = "10s"  # a restore waits this long for other sessions' table locks, then fails untouched
_CHUNK = 1 << 20


class BackupError(ValueError):
    """A backup or restore a user asked for cannot be done as asked; the message says why and what to do."""


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    engine: str
    revision: str | None
    file_count: int
    size: int


@dataclass(frozen=True)
class RestoreSummary:
    database: str  # masked URL
    engine: str
    revision: str | None
    file_count: int
    created_at: str


# ---------------------------------------------------------------------------------------------------- backup


def backup(out: str | Path, *, url: str | None = None, force: bool = False) -> BackupSummary:
    """Write the database and the data directory's files to the archive `out`."""
    from db.migrate import current_revision
    from renal_ldm import __version__
    from renal_ldm.paths import data_home

    out = Path(out).expanduser().absolute()
    if out.is_dir():
        raise BackupError(f"--out {out} is a directory; expected a file name such as {out / 'renal_ldm.tar'}")
    if out.exists() and not force:
        raise BackupError(f"{out} already exists: choose another --out, or pass --force to replace it")
    if not out.parent.is_dir():
        raise BackupError(f"directory {out.parent} does not exist: create it first, or choose another --out")
    engine, parsed = _engine(url)
    if engine == "postgresql":
        _pg_tool("pg_dump")
    home = data_home()
    revision = current_revision(url)
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=out.parent) as staging:
        staged_db = Path(staging) / DATABASE_MEMBERS[engine]
        if engine == "sqlite":
            live = _sqlite_path(parsed)
            _sqlite_snapshot(live, staged_db)
            skip = {live, *(live.with_name(live.name + s) for s in SQLITE_COMPANIONS)}
        else:
            _pg_dump(parsed, staged_db)
            skip = set()
        default_db = home / SQLITE_FILENAME
        skip |= {default_db, *(default_db.with_name(default_db.name + s) for s in SQLITE_COMPANIONS), out}
        tmp_out = Path(staging) / "archive.tar"
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as tar:
            members = [_add_file(tar, DATABASE_MEMBERS[engine], staged_db)]
            for relative, path in _data_files(home, skip):
                try:
                    members.append(_add_file(tar, FILES_PREFIX + relative, path))
                except FileNotFoundError:  # deleted since the walk listed it (a sample removed meanwhile)
                    continue
            manifest = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "engine": engine,
                "revision": revision,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "renal_ldm_version": __version__,
                "database": DATABASE_MEMBERS[engine],
                "members": members,
            }
            _add_bytes(tar, MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
        with open(tmp_out, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_out, out)
    return BackupSummary(out, engine, revision, len(members) - 1, out.stat().st_size)


def _data_files(home: Path, skip: set[Path]) -> Iterator[tuple[str, Path]]:
    """(posix path relative to home, path) of each regular file under home, in a stable order; no symlinks."""
    for dirpath, dirnames, filenames in os.walk(home):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(STAGING_PREFIX))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path in skip or path.is_symlink() or not path.is_file():
                continue
            yield path.relative_to(home).as_posix(), path


class _HashingReader:
    """Reads at most `size` bytes of a file and hashes what it hands out."""

    def __init__(self, f: BinaryIO):
        self._f, self.sha256 = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.sha256.update(data)
        return data


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), 0o644
        reader = _HashingReader(f)
        try:
            tar.addfile(info, reader)
        except OSError as exc:  # tarfile's "unexpected end of data": the file shrank while being read
            raise BackupError(f"{path} changed while it was being backed up ({exc}); run the backup again") from None
    return {"path": name, "size": info.size, "sha256": reader.sha256.hexdigest()}


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(datetime.now(UTC).timestamp()), 0o644
    tar.addfile(info, io.BytesIO(data))


def _sqlite_snapshot(live: Path, dest: Path) -> None:
    """A consistent copy of a SQLite database that may be in use (WAL readers and writers go on meanwhile)."""
    if not live.is_file():
        raise BackupError(f"no SQLite database at {live}: nothing to back up (check --url or RENAL_LDM_HOME)")
    source = sqlite3.connect(live, timeout=BUSY_TIMEOUT_S)
    try:
        copy = sqlite3.connect(dest)
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file in the archive
        finally:
            copy.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot read SQLite database {live}: {exc}") from None
    finally:
        source.close()


# --------------------------------------------------------------------------------------------------- restore


def restore(archive: str | Path, *, url: str | None = None, force: bool = False) -> RestoreSummary:
    """Replace the database and the archive's files in the data directory with the contents of `archive`."""
    from renal_ldm.paths import data_home

    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise BackupError(f"no backup file at {archive}: expected an archive written by `renal-ldm db backup`")
    engine, parsed = _engine(url)
    if engine == "postgresql":
        _pg_tool("psql")
    with _open_archive(archive) as (tar, manifest):
        if manifest["engine"] != engine:
            raise BackupError(
                f"{archive} holds a {manifest['engine']} database but {masked_url(url)} is {engine}: "
                f"restore it into a {manifest['engine']} database (--url)"
            )
        _check_revision_known(archive, manifest["revision"])
        reasons = in_use_reasons(url)
        if reasons and not force:
            raise BackupError(
                f"database {masked_url(url)} is in use ({'; '.join(reasons)}): stop the app and any other "
                "renal-ldm process, make a backup of it if you need its contents, then rerun with --force"
            )
        home = data_home()
        target = _sqlite_path(parsed) if engine == "sqlite" else None
        db_staging_dir = target.parent if target is not None else home
        with (
            tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=home) as files_dir,
            tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=db_staging_dir) as db_dir,
        ):
            staged = _extract_verified(archive, tar, manifest, Path(files_dir), Path(db_dir))
            staged_db = staged.pop(manifest["database"])
            if target is not None:
                _check_sqlite_file(archive, staged_db, manifest["revision"])
            for name, path in staged.items():  # files first: a restored row never points at a missing file
                dest = home / name[len(FILES_PREFIX) :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
            if target is not None:
                _replace_sqlite(staged_db, target)
            else:
                _pg_restore(parsed, staged_db, Path(db_dir))
    return RestoreSummary(masked_url(url), engine, manifest["revision"], len(staged), manifest["created_at"])


def in_use_reasons(url: str | None = None) -> list[str]:
    """Why restoring over this database would destroy something or someone's work; empty if it is safe."""
    engine, parsed = _engine(url)
    reasons = []
    if engine == "sqlite":
        path = _sqlite_path(parsed)
        if not path.exists():
            return []
        open_marks = [path.name + s for s in ("-wal", "-shm") if path.with_name(path.name + s).exists()]
        if open_marks:  # checked before our own connection below creates them
            reasons.append(f"{' and '.join(open_marks)} beside it: another connection has it open")
    rows = _product_row_count(parsed)
    if rows:
        reasons.append(f"it holds {rows} rows")
    if engine == "postgresql":
        others = _pg_other_sessions(parsed)
        if others:
            reasons.append(f"{others} other session(s) connected to it")
    return reasons


@contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[tarfile.TarFile, dict[str, Any]]]:
    """The open tar and its checked manifest (format, version, member names); BackupError for anything else."""
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as exc:
        raise BackupError(f"{archive} is not a renal-ldm backup (not a tar archive: {exc})") from None
    with tar:
        try:
            info = tar.getmember(MANIFEST_NAME)
            manifest = json.loads(tar.extractfile(info).read())  # type: ignore[union-attr]
        except (KeyError, AttributeError, ValueError, tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{archive} is not a renal-ldm backup (no readable {MANIFEST_NAME}: {exc})") from None
        _check_manifest(archive, manifest)
        yield tar, manifest


def _check_manifest(archive: Path, manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive} is not a renal-ldm backup ({MANIFEST_NAME} has no format {FORMAT!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupError(
            f"{archive} has backup format version {version!r}; this renal-ldm reads up to {FORMAT_VERSION}: "
            "restore it with the renal-ldm version that wrote it"
        )
    engine = manifest.get("engine")
    members = manifest.get("members")
    if engine not in DATABASE_MEMBERS or manifest.get("database") != DATABASE_MEMBERS[engine]:
        raise BackupError(f"{archive}: manifest names engine {engine!r}; expected one of {sorted(DATABASE_MEMBERS)}")
    if not isinstance(members, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("path"), str)
        and isinstance(m.get("size"), int)
        and isinstance(m.get("sha256"), str)
        for m in members
    ):
        raise BackupError(f"{archive}: manifest members are not a list of path, size and sha256")
    names = [m["path"] for m in members]
    if len(set(names)) != len(names) or manifest["database"] not in names:
        raise BackupError(f"{archive}: manifest lists a member twice or lacks {manifest['database']}")
    for name in names:
        if name != manifest["database"] and not _safe_file_member(name):
            raise BackupError(
                f"{archive} has member {name!r}: expected a relative path under {FILES_PREFIX} without '..'; "
                "refusing to write outside the data directory"
            )


def _safe_file_member(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return (
        name.startswith(FILES_PREFIX)
        and "\\" not in name
        and not name.startswith("/")
        and len(parts) > 1
        and all(p not in ("", ".", "..") for p in parts)
    )


def _extract_verified(
    archive: Path, tar: tarfile.TarFile, manifest: dict[str, Any], files_dir: Path, db_dir: Path
) -> dict[str, Path]:
    """Every manifest member, extracted to staging and checked against its size and sha256."""
    expected = {m["path"]: m for m in manifest["members"]}
    staged: dict[str, Path] = {}
    try:
        for info in tar:
            if info.name == MANIFEST_NAME:
                continue
            if info.name not in expected or info.name in staged:
                raise BackupError(f"{archive} has member {info.name!r} that its manifest does not list")
            if not info.isreg():
                raise BackupError(f"{archive} has member {info.name!r} that is not a regular file; refusing it")
            dest = db_dir / "database" if info.name == manifest["database"] else files_dir / str(len(staged))
            digest, size = hashlib.sha256(), 0
            with tar.extractfile(info) as src, open(dest, "wb") as out:  # type: ignore[union-attr]
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
            want = expected[info.name]
            if size != want["size"] or digest.hexdigest() != want["sha256"]:
                raise BackupError(
                    f"{archive} is damaged: member {info.name!r} has {size} bytes, "
                    f"sha256 {digest.hexdigest()[:12]}..., "
                    f"its manifest says {want['size']} bytes, sha256 {want['sha256'][:12]}..."
                )
            staged[info.name] = dest
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"{archive} is damaged (cannot read it to the end: {exc})") from None
    missing = sorted(set(expected) - set(staged))
    if missing:
        raise BackupError(f"{archive} is damaged: {len(missing)} member(s) of its manifest are missing: {missing[:3]}")
    return staged


def _check_revision_known(archive: Path, revision: str | None) -> None:
    from alembic.script import ScriptDirectory

    from db.migrate import alembic_config

    known = {r.revision for r in ScriptDirectory.from_config(alembic_config("sqlite://")).walk_revisions()}
    if revision is not None and revision not in known:
        raise BackupError(
            f"{archive} is at schema revision {revision!r}, which this renal-ldm does not know "
            f"(it knows {sorted(known)}): restore it with a renal-ldm at least as new as the one that wrote it"
        )


def _check_sqlite_file(archive: Path, path: Path, revision: str | None) -> None:
    try:
        with _closing_sqlite(path) as connection:
            status = connection.execute("PRAGMA integrity_check").fetchone()[0]
            has_version = connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'"
            ).fetchone()[0]
            found = connection.execute("SELECT version_num FROM alembic_version").fetchone() if has_version else None
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{archive}: its database is not a usable SQLite file ({exc})") from None
    if status != "ok":
        raise BackupError(f"{archive}: its database fails SQLite's integrity check ({status})")
    if (found[0] if found else None) != revision:
        raise BackupError(f"{archive}: its database is at revision {found}, its manifest says {revision!r}")


@contextmanager
def _closing_sqlite(path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    try:
        yield connection
    finally:
        connection.close()


def _replace_sqlite(staged: Path, target: Path) -> None:
    """Put the checked copy in place of `target` in one step, safely for connections that have it open."""
    companions = [target.with_name(target.name + s) for s in SQLITE_COMPANIONS]
    if not target.exists() and not any(c.exists() for c in companions):
        os.replace(staged, target)
        return
    # The backup API writes every page in one write transaction of the target's own journal (WAL): readers
    # see the old database or the new one, and a failure rolls back. Renaming over a file that a connection
    # or a -wal file still refers to could corrupt it instead.
    try:
        with _closing_sqlite(staged) as source, _closing_sqlite(target) as dest:
            source.backup(dest)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"cannot write SQLite database {target}: {exc}; it is unchanged") from None


# ---------------------------------------------------------------------------------------- engines, PostgreSQL


def _engine(url: str | None) -> tuple[str, URL]:
    full = database_url(url)
    try:
        parsed = make_url(full)
    except ArgumentError as exc:
        raise BackupError(f"invalid database URL {full!r}: {exc}") from None
    engine = parsed.get_backend_name()
    if engine not in DATABASE_MEMBERS:
        raise BackupError(f"cannot back up or restore a {engine!r} database; expected sqlite or postgresql")
    return engine, parsed


def _sqlite_path(parsed: URL) -> Path:
    if not parsed.database or parsed.database == ":memory:" or parsed.database.startswith("file:"):
        raise BackupError(f"expected a SQLite database file in the URL, got {parsed.render_as_string()!r}")
    return Path(parsed.database).expanduser().absolute()


def _product_row_count(parsed: URL) -> int:
    """Rows in every table of the database except Alembic's bookkeeping."""
    engine = create_engine(parsed, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if parsed.get_backend_name() == "sqlite":
                names = connection.scalars(
                    text("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
                ).all()
            else:
                names = connection.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).all()
            quote = connection.dialect.identifier_preparer.quote
            return sum(
                connection.scalar(text(f"SELECT count(*) FROM {quote(n)}")) or 0
                for n in names
                if n != "alembic_version"
            )
    finally:
        engine.dispose()


def _pg_other_sessions(parsed: URL) -> int:
    engine = create_engine(parsed, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return (
                connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                or 0
            )
    finally:
        engine.dispose()


def _pg_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} not found on PATH: PostgreSQL backups need it; {PG_CLIENT_HINT}")
    return path


def _pg_connection(parsed: URL) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password, and an environment carrying it (never on a command line)."""
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    uri = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return uri, env


def _run_pg(args: list[str], env: dict[str, str], what: str, parsed: URL) -> None:
    done = subprocess.run(args, check=False, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln or "FATAL" in ln or "error" in ln] or lines
        reason = errors[0].strip() if errors else f"exit status {done.returncode}"
        raise BackupError(f"{what} of {parsed.render_as_string(hide_password=True)} failed: {reason}")


def _pg_dump(parsed: URL, dest: Path) -> None:
    uri, env = _pg_connection(parsed)
    args = [_pg_tool("pg_dump"), "--format=plain", "--no-owner", "--no-privileges", f"--file={dest}", "--dbname", uri]
    _run_pg(args, env, "pg_dump", parsed)


# Drops what a previous schema left, inside the restore's own transaction, so a failed restore keeps it.
_PG_DROP_OLD = f"""
SET lock_timeout = '{PG_LOCK_TIMEOUT}';
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT viewname FROM pg_views WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP VIEW IF EXISTS public.%I CASCADE', r.viewname);
  END LOOP;
  FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', r.tablename);
  END LOOP;
  FOR r IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP SEQUENCE IF EXISTS public.%I CASCADE', r.sequencename);
  END LOOP;
END $$;
"""


def _pg_restore(parsed: URL, dump: Path, work_dir: Path) -> None:
    uri, env = _pg_connection(parsed)
    drop = work_dir / "drop_old.sql"
    drop.write_text(_PG_DROP_OLD, encoding="utf-8")
    args = [
        _pg_tool("psql"),
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "-f",
        str(drop),
        "-f",
        str(dump),
        "--dbname",
        uri,
    ]
    _run_pg(args, env, "restore (psql)", parsed)
