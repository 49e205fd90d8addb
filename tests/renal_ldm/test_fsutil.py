"""Atomic replacement (renal_ldm.fsutil), shared by model checkpoints, training checkpoints and data sets."""

from __future__ import annotations

import os

import pytest

from renal_ldm import fsutil
from renal_ldm.fsutil import recover_dir, replace_dir_atomically, set_aside_path, write_file_atomically


def make_dir(path, **files) -> None:
    path.mkdir()
    for name, text in files.items():
        (path / name).write_text(text)


def contents(path) -> dict[str, str]:
    return {p.name: p.read_text() for p in path.iterdir()}


def test_replacing_a_directory_swaps_it_whole_and_leaves_nothing_beside(tmp_path):
    make_dir(tmp_path / "ckpt", weights="old", only_old="x")
    make_dir(tmp_path / "new", weights="new")
    replace_dir_atomically(tmp_path / "new", tmp_path / "ckpt")
    assert contents(tmp_path / "ckpt") == {"weights": "new"}  # no file of the old version survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    make_dir(tmp_path / "first", weights="1")
    replace_dir_atomically(tmp_path / "first", tmp_path / "fresh")  # no previous dst
    assert contents(tmp_path / "fresh") == {"weights": "1"}


def test_a_failed_move_puts_the_old_directory_back(tmp_path, monkeypatch):
    make_dir(tmp_path / "ckpt", weights="old")
    make_dir(tmp_path / "new", weights="new")
    real_replace = os.replace

    def fail_on_the_new_one(src, dst):
        if str(src).endswith("new"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", fail_on_the_new_one)
    with pytest.raises(OSError, match="disk full"):
        replace_dir_atomically(tmp_path / "new", tmp_path / "ckpt")
    assert contents(tmp_path / "ckpt") == {"weights": "old"}
    assert not set_aside_path(tmp_path / "ckpt").exists()


def test_recover_dir_restores_the_copy_a_crash_left_set_aside(tmp_path):
    make_dir(set_aside_path(tmp_path / "ckpt"), weights="old")  # crashed between the two renames
    recover_dir(tmp_path / "ckpt")
    assert contents(tmp_path / "ckpt") == {"weights": "old"}
    make_dir(set_aside_path(tmp_path / "ckpt"), weights="older")
    recover_dir(tmp_path / "ckpt")  # dst is there: the set-aside copy is stale and stays put
    assert contents(tmp_path / "ckpt") == {"weights": "old"}


def test_a_failed_file_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "run.json"
    write_file_atomically(target, "one")
    write_file_atomically(target, "two")
    assert target.read_text() == "two"
    with pytest.raises(UnicodeEncodeError):
        write_file_atomically(target, "caf\u00e9", encoding="ascii")
    assert target.read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
