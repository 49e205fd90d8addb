"""Caption presets (upsert by name) and the model registry (unique names, existing directories)."""

from __future__ import annotations

import pytest

from db import repository as repo


def test_save_preset_upserts_by_name(db_url):
    first = repo.save_preset("  study ", "caption one", {"Glomeruli": "high"}, url=db_url)
    assert first.name == "study"
    second = repo.save_preset("study", "caption two", url=db_url)
    assert second.id == first.id and second.caption == "caption two" and second.levels is None
    repo.save_preset("another", "x", url=db_url)
    assert [p.name for p in repo.list_presets(url=db_url)] == ["another", "study"]
    assert repo.get_preset("study", url=db_url).caption == "caption two"
    assert repo.delete_preset("study", url=db_url) is True
    assert repo.delete_preset("study", url=db_url) is False
    assert repo.get_preset("study", url=db_url) is None


@pytest.mark.parametrize("name", ["", "   ", None])
def test_empty_preset_name_is_refused(db_url, name):
    with pytest.raises(ValueError, match="preset name"):
        repo.save_preset(name, "caption", url=db_url)


def test_register_list_remove_models(db_url, tmp_path):
    (tmp_path / "ckpt").mkdir()
    entry = repo.register_model("mine", tmp_path / "ckpt", url=db_url)
    repo.register_model("demo", tmp_path, kind="demo", url=db_url)
    assert entry.path == str((tmp_path / "ckpt").resolve()) and entry.kind == "user"
    assert [m.name for m in repo.list_models(url=db_url)] == ["demo", "mine"]
    assert repo.get_model("mine", url=db_url) == entry
    with pytest.raises(ValueError, match="'mine' is already registered"):
        repo.register_model("mine", tmp_path, url=db_url)
    assert repo.remove_model("mine", url=db_url) is True
    assert repo.remove_model("mine", url=db_url) is False
    assert [m.name for m in repo.list_models(url=db_url)] == ["demo"]


def test_register_model_names_the_missing_path(db_url, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere") as info:
        repo.register_model("x", missing, url=db_url)
    assert isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="kind"):
        repo.register_model("x", tmp_path, kind="other", url=db_url)
    assert repo.list_models(url=db_url) == []
