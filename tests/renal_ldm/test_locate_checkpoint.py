"""A training run directory works wherever a model is asked for: its finished model, else its latest checkpoint."""

from __future__ import annotations

import shutil

import pytest

from renal_ldm.cli import main as cli_main
from renal_ldm.models.manifest import locate_checkpoint
from renal_ldm.sample import resolve_model_dir


def test_a_checkpoint_directory_is_taken_as_it_is(tiny_model_dir):
    assert locate_checkpoint(tiny_model_dir) == (tiny_model_dir, None)


def test_a_finished_run_gives_its_model_and_says_so(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    notes: list[str] = []
    assert resolve_model_dir(run, note=notes.append) == run / "model"
    assert notes == [f"{run} is a training run: using its finished model {run / 'model'}"]


def test_a_run_still_training_gives_its_latest_checkpoint(tiny_model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "checkpoint" / "model")
    path, note = locate_checkpoint(run)
    assert path == run / "checkpoint" / "model" and "has not finished" in note and "raw weights" in note


def test_a_folder_that_is_neither_gets_the_manifest_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a renal-ldm checkpoint"):
        locate_checkpoint(tmp_path)
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        locate_checkpoint(tmp_path / "absent")


def test_sample_accepts_a_run_directory(tiny_model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    out = tmp_path / "out"
    code = cli_main(["sample", "--model", str(run), "--n", "1", "--steps", "2", "--out", str(out), "--no-progress"])
    assert code == 0 and len(list(out.glob("*.png"))) == 1
    assert "is a training run: using its finished model" in capsys.readouterr().err
