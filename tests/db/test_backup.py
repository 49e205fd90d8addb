"""`db backup` / `db restore`: the same rows and file bytes come back; a database in use, a damaged or foreign
archive and a member aiming outside the data directory are refused and change nothing."""

from __future__ import annotations

import io
import json
import random
import tarfile
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from db import models
from db import repository as repo
from db.backup import MANIFEST_NAME, BackupError, backup, restore
from db.models import Base
from db.session import dispose_engines, get_engine, session_scope
from renal_ldm.cli import main


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("RENAL_LDM_HOME", str(path))
    return path


def populate(url: str, home: Path) -> None:
    """A preset, two samples, a survey of four images, a participant who finished it, a slide with an annotation;
    each file under the data directory."""
    rng = random.Random(7)

    def write(relative: str) -> str:
        path = home / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(3000))
        return relative

    repo.save_preset("Glomeruli high", "This image showcases...", {"Glomeruli": "high"}, url=url)
    for i in range(2):
        repo.add_sample(
            image_path=write(f"samples/run-1/{i:04d}.png"),
            caption=f"caption {i}",
            model_name="demo",
            seed=i,
            steps=50,
            guidance=1.5,
            size=256,
            run_id="run-1",
            url=url,
        )
    items = [(write(f"survey/{n}.png"), truth) for n, truth in enumerate(["real", "synthetic"] * 2)]
    token = repo.create_survey("Study", items, url=url)
    resume = repo.start_participant(token, 4, rng=random.Random(1), url=url)
    while (item := repo.next_unanswered_item(resume, url=url)) is not None:
        repo.record_answer(resume, item.public_id, "real", url=url)
    repo.set_strategy(resume, "the blurry ones", url=url)
    repo.finish_participant(resume, url=url)
    with session_scope(url) as session:  # slides have no repository functions yet
        slide = models.Slide(name="slide 1", path=write("slides/1.tif"), width=512, height=512, patch_size=256)
        session.add(slide)
        session.flush()
        session.add(models.SlideAnnotation(slide_id=slide.id, mask_path=write("slides/1-mask.png"), author="ann"))


def table_contents(url: str) -> dict[str, list[tuple]]:
    """Every row of every product table and the schema revision, in primary-key order."""
    with get_engine(url).connect() as connection:
        contents = {
            table.name: [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key))]
            for table in Base.metadata.sorted_tables
        }
        contents["alembic_version"] = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return contents


def file_bytes(home: Path) -> dict[str, bytes]:
    return {p.relative_to(home).as_posix(): p.read_bytes() for p in sorted(home.rglob("*")) if p.is_file()}


def test_backup_then_restore_gives_the_same_rows_and_files(db_url, home, tmp_path):
    populate(db_url, home)
    rows, files = table_contents(db_url), file_bytes(home)
    assert len(rows["answers"]) == 4 and len(files) == 8
    summary = backup(tmp_path / "b.tar", url=db_url)
    assert (summary.file_count, summary.revision) == (8, rows["alembic_version"][0][0])

    sample = repo.list_samples(url=db_url)[0]
    repo.delete_sample(sample.id, url=db_url)
    (home / sample.image_path).unlink()
    (home / "survey/0.png").write_bytes(b"changed")
    repo.save_preset("Another", "caption", url=db_url)
    assert table_contents(db_url) != rows
    dispose_engines()  # the app is stopped: only its rows make the database "in use" now

    with pytest.raises(BackupError, match=r"in use \(it holds \d+ rows\).*--force"):
        restore(tmp_path / "b.tar", url=db_url)
    result = restore(tmp_path / "b.tar", url=db_url, force=True)
    assert result.file_count == 8
    assert table_contents(db_url) == rows
    assert file_bytes(home) == files
    new = repo.save_preset("after the restore", "caption", url=db_url)  # ids go on after the restored ones
    assert new.id > max(row[0] for row in rows["caption_presets"])
    assert not [p for p in home.parent.rglob(".renal-ldm-staging-*")]  # no temporary folder left


def test_restore_into_a_new_sqlite_file_needs_no_force(sqlite_url, home, tmp_path):
    populate(sqlite_url, home)
    rows, files = table_contents(sqlite_url), file_bytes(home)
    backup(tmp_path / "b.tar", url=sqlite_url)
    for path in home.rglob("*.png"):
        path.unlink()
    fresh = f"sqlite:///{tmp_path / 'elsewhere' / 'new.sqlite3'}"
    (tmp_path / "elsewhere").mkdir()
    restore(tmp_path / "b.tar", url=fresh)
    assert table_contents(fresh) == rows and file_bytes(home) == files


def test_a_database_held_open_by_a_connection_is_in_use(db_url, home, tmp_path):
    backup(tmp_path / "b.tar", url=db_url)  # an empty database at head: no rows
    with get_engine(db_url).connect() as connection:  # a running app holds a connection
        connection.execute(text("SELECT 1"))
        with pytest.raises(BackupError, match="in use .*(another connection has it open|other session).*--force"):
            restore(tmp_path / "b.tar", url=db_url)
    dispose_engines()
    restore(tmp_path / "b.tar", url=db_url)  # nobody connected, nothing to lose


def test_sqlite_backup_is_consistent_while_the_app_writes(sqlite_url, home, tmp_path):
    stop, written = threading.Event(), []

    def writer() -> None:
        while not stop.is_set() and len(written) < 2000:
            written.append(repo.save_preset(f"p{len(written)}", "caption", url=sqlite_url))

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 20:
            stop.wait(0.01)
        backup(tmp_path / "b.tar", url=sqlite_url)
    finally:
        stop.set()
        thread.join()
    copy = f"sqlite:///{tmp_path / 'copy.sqlite3'}"
    restore(tmp_path / "b.tar", url=copy)  # checks integrity and the revision
    names = [p.name for p in repo.list_presets(url=copy)]
    assert 20 <= len(names) <= len(written)
    assert sorted(names, key=lambda n: int(n[1:])) == [f"p{i}" for i in range(len(names))]  # a prefix, no gaps


def _rewrite(src: Path, dest: Path, change) -> None:
    """Copy a tar member by member, letting `change(name, data, manifest)` return a new (name, data) or None."""
    with tarfile.open(src) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST_NAME).read())
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    with tarfile.open(dest, "w") as out:
        for name, data in members:
            changed = change(name, data, manifest)
            if changed is None:
                continue
            name, data = changed
            if name == MANIFEST_NAME:
                data = json.dumps(manifest).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def _flip_one_image(name, data, manifest):
    return (name, data[:100] + bytes([data[100] ^ 1]) + data[101:]) if name.endswith("1.png") else (name, data)


def _escape(name, data, manifest):
    if name.endswith("survey/0.png"):
        evil = "files/../../outside.png"
        next(m for m in manifest["members"] if m["path"] == name)["path"] = evil
        return evil, data
    return name, data


def _foreign_manifest(name, data, manifest):
    manifest["format"] = "something-else"
    return name, data


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda src, dest: dest.write_bytes(src.read_bytes()[: src.stat().st_size // 2]), "damaged|not a renal-ldm"),
        (lambda src, dest: dest.write_bytes(b"PK\x03\x04 not a tar at all" * 40), "not a renal-ldm backup"),
        (lambda src, dest: _rewrite(src, dest, _flip_one_image), r"damaged: member 'files/.*1\.png' .*sha256"),
        (
            lambda src, dest: _rewrite(src, dest, lambda n, d, m: None if n == MANIFEST_NAME else (n, d)),
            f"no readable {MANIFEST_NAME}",
        ),
        (lambda src, dest: _rewrite(src, dest, _escape), r"'files/\.\./\.\./outside\.png'.*outside the data directory"),
        (lambda src, dest: _rewrite(src, dest, _foreign_manifest), "not a renal-ldm backup"),
    ],
    ids=["truncated", "foreign-file", "changed-byte", "no-manifest", "path-escape", "foreign-manifest"],
)
def test_a_bad_archive_is_refused_and_changes_nothing(sqlite_url, home, tmp_path, damage, message):
    populate(sqlite_url, home)
    backup(tmp_path / "good.tar", url=sqlite_url)
    repo.save_preset("after the backup", "caption", url=sqlite_url)
    rows, files = table_contents(sqlite_url), file_bytes(home)
    bad = tmp_path / "bad.tar"
    damage(tmp_path / "good.tar", bad)
    with pytest.raises(BackupError, match=message) as error:
        restore(bad, url=sqlite_url, force=True)
    assert str(bad) in str(error.value)
    assert table_contents(sqlite_url) == rows and file_bytes(home) == files
    assert not (tmp_path / "outside.png").exists()


def test_cli_backup_and_restore(home, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    url = f"sqlite:///{home / 'renal_ldm.sqlite3'}"  # the default database, inside the data directory
    try:
        assert main(["db", "upgrade"]) == 0
        populate(url, home)
        rows = table_contents(url)
        out = tmp_path / "b.tar"
        capsys.readouterr()
        assert main(["db", "backup", "--out", str(out)]) == 0
        assert "files: 8" in capsys.readouterr().out
        with tarfile.open(out) as tar:  # the live database travels as database.sqlite3, not as a data file
            assert sorted(n for n in tar.getnames() if not n.startswith("files/")) == [
                "database.sqlite3",
                MANIFEST_NAME,
            ]
            assert not [n for n in tar.getnames() if "renal_ldm.sqlite3" in n]

        assert main(["db", "backup", "--out", str(out)]) == 2
        assert "already exists" in capsys.readouterr().err
        assert main(["db", "restore", "--from", str(tmp_path / "nope.tar")]) == 2
        assert f"no backup file at {tmp_path / 'nope.tar'}" in capsys.readouterr().err
        (tmp_path / "notes.txt").write_text("hello")
        assert main(["db", "restore", "--from", str(tmp_path / "notes.txt")]) == 2
        assert f"{tmp_path / 'notes.txt'} is not a renal-ldm backup" in capsys.readouterr().err
        dispose_engines()
        assert main(["db", "restore", "--from", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("renal-ldm db: error: database ") and "in use" in err and "--force" in err
        assert main(["db", "restore", "--from", str(out), "--force"]) == 0
        assert "files: 8" in capsys.readouterr().out
        assert table_contents(url) == rows
    finally:
        dispose_engines()


def test_missing_pg_dump_is_one_line_naming_it(home, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump, no psql
    url = "postgresql://u:secret@127.0.0.1:1/x"
    assert main(["db", "backup", "--out", str(tmp_path / "b.tar"), "--url", url]) == 2
    err = capsys.readouterr().err
    assert "pg_dump not found on PATH" in err and "postgresql-client" in err and "secret" not in err
    assert not (tmp_path / "b.tar").exists()
    (tmp_path / "b.tar").write_bytes(b"x")
    assert main(["db", "restore", "--from", str(tmp_path / "b.tar"), "--url", url]) == 2
    assert "psql not found on PATH" in capsys.readouterr().err
