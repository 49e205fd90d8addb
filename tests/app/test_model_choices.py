"""Registering models in the app: a training run directory registers its finished model."""

from __future__ import annotations


def test_registering_a_training_run_registers_its_model(app_home, tiny_model_dir, tmp_path):
    import shutil

    from app.model_choices import register_checkpoint

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "model")
    choice = register_checkpoint("from-run", str(run))
    assert choice.path == str((run / "model").resolve()) and choice.problem is None
