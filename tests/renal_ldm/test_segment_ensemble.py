"""Segmenter ensembles (renal_ldm.segmentation.ensemble): averaged probabilities over members and magnifications,
the `ensemble-segmenters` command, and ensembles wherever a segmenter folder is taken (`segment`, `caption`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_errors import one_line_error
from PIL import Image

from renal_ldm.cli import main
from renal_ldm.data.patches import read_rgb
from renal_ldm.phantom import generate_dataset
from renal_ldm.segment import SegmenterEnsemble, is_segmenter, labels_from_scores, load_segmenter
from renal_ldm.segmentation.ensemble import ENSEMBLE_MANIFEST, load_ensemble

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ens-phantoms") / "data"
    generate_dataset(root, n=4, size=48, seed=20, composition={"Glomeruli": 0.35, "Tubuli": 0.2})
    return root


@pytest.fixture(scope="module")
def members(phantoms, tmp_path_factory) -> list[Path]:
    """Two tiny glomerulus segmenters trained by the product's command, with different seeds."""
    root = tmp_path_factory.mktemp("ens-members")
    out = []
    for seed in (0, 1):
        run = root / f"seed{seed}"
        args = ["train-segmenter", "--data", str(phantoms), "--classes", "glomeruli", "--config", "tiny"]
        args += ["--out", str(run), "--epochs", "2", "--crop", "24", "--batch-size", "2", "--seed", str(seed)]
        assert main([*args, "--threads", "1", "--no-progress"]) == 0
        out.append(run)
    return out


def _image(phantoms: Path) -> np.ndarray:
    return read_rgb(sorted((phantoms / "images").glob("*.png"))[0])


def test_one_member_at_its_own_scale_segments_as_the_member_does(members, phantoms):
    member = load_segmenter(members[0])
    ensemble = SegmenterEnsemble([member], [1.0])
    image = _image(phantoms)
    assert np.array_equal(ensemble.predict(image), member.predict(image))
    assert ensemble.config.classes == "glomeruli" and ensemble.feature_dim == member.feature_dim


def test_scores_average_the_members_and_labels_follow_the_mean(members, phantoms):
    a, b = (load_segmenter(m) for m in members)
    image = _image(phantoms)
    mean = (a.predict_scores(image) + b.predict_scores(image)) / 2
    ensemble = SegmenterEnsemble([a, b], [1.0])
    np.testing.assert_allclose(ensemble.predict_scores(image), mean, atol=1e-6)
    assert np.array_equal(ensemble.predict(image), labels_from_scores(mean, "glomeruli"))

    magnified = SegmenterEnsemble([a, b], [0.8, 1.0, 1.25]).predict_scores(image)
    assert magnified.shape == (1, 48, 48) and 0.0 <= magnified.min() and magnified.max() <= 1.0
    assert set(np.unique(labels_from_scores(magnified, "glomeruli"))) <= {4, 6}


def test_the_command_builds_an_ensemble_that_segment_and_caption_read(members, phantoms, tmp_path, capsys):
    out = tmp_path / "ensemble"
    args = ["ensemble-segmenters", "--members", *map(str, members), "--scales", "0.8,1,1.25", "--out", str(out)]
    assert main([*args, "--val-data", str(phantoms), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "member seed0: pooled Dice" in printed and "ensemble: pooled Dice" in printed

    manifest = json.loads((out / ENSEMBLE_MANIFEST).read_text())
    assert manifest["members"] == ["seed0", "seed1"] and manifest["scales"] == [0.8, 1.0, 1.25]
    assert 0.0 <= manifest["metrics"]["val_dice"] <= 1.0 and len(manifest["metrics"]["val_dice_per_patch"]) == 4
    assert set(manifest["member_val"]) == {"seed0", "seed1"}
    assert is_segmenter(out) and isinstance(load_segmenter(out), SegmenterEnsemble)

    mask = tmp_path / "mask.png"
    image = sorted((phantoms / "images").glob("*.png"))[0]
    assert main(["segment", "--segmenter", str(out), "--input", str(image), "--out", str(mask)]) == 0
    assert set(np.unique(np.asarray(Image.open(mask)))) <= {4, 6}
    capsys.readouterr()
    assert main(["caption", "--mask", str(mask)]) == 0
    assert capsys.readouterr().out.startswith("This image showcases")


def test_bad_ensembles_are_refused_with_one_line_and_nothing_written(members, tiny_segmenter_dir, tmp_path, capsys):
    out = tmp_path / "ens"
    build = ["ensemble-segmenters", "--out", str(out), "--members"]
    err = one_line_error(capsys, [*build, str(members[0]), str(tiny_segmenter_dir)])
    assert "different classes" in err and "all" in err and "glomeruli" in err
    assert not out.exists()
    assert "outside 0.25..4" in one_line_error(capsys, [*build, str(members[0]), "--scales", "0,1"])
    assert "comma-separated numbers" in one_line_error(capsys, [*build, str(members[0]), "--scales", "big"])
    (tmp_path / "empty").mkdir()
    assert "segmenter.json is missing" in one_line_error(capsys, [*build, str(members[0]), str(tmp_path / "empty")])
    assert not out.exists()

    assert main([*build, str(members[0])]) == 0
    assert "already holds an ensemble" in one_line_error(capsys, [*build, str(members[0])])

    (out / ENSEMBLE_MANIFEST).write_text("{not json")
    with pytest.raises(ValueError, match="segmenter_ensemble.json is not valid JSON"):
        load_ensemble(out)
    (out / ENSEMBLE_MANIFEST).write_text(json.dumps({"kind": "segmenter-ensemble", "members": []}))
    with pytest.raises(ValueError, match="non-empty list"):
        load_segmenter(out)
