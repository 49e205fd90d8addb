"""`renal-ldm annotations agreement|export|import`: JSON agreement, an export that `train-segmenter` trains on,
GeoJSON imported back, bad input one line on stderr with exit 2 and nothing changed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from slide_samples import stitched_slide

from app import annotate as an
from app import slides as sl
from db import repository as repo
from renal_ldm.classes import GLOMERULI_ID
from renal_ldm.cli import main

pytest.importorskip("openslide")
SIDE = 64


@pytest.fixture
def slide(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("RENAL_LDM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DATABASE_URL", db_url)
    return sl.register_slide(stitched_slide(tmp_path / "server"), url=db_url)


def disc(cx, cy, r=10):
    yy, xx = np.mgrid[:SIDE, :SIDE]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def test_agreement_export_train_and_import(slide, db_url, tmp_path, capsys):
    for col, row in ((0, 0), (1, 0), (0, 1), (1, 1)):
        box = an.region(slide, SIDE, col, row)
        an.save_mask(slide, "ann", GLOMERULI_ID, box, disc(20 + 8 * col, 30) | disc(48, 12, 6), done=True, url=db_url)
    box = an.region(slide, SIDE, 0, 0)
    an.save_mask(slide, "bob", GLOMERULI_ID, box, disc(22, 30) | disc(48, 12, 6), done=True, url=db_url)

    assert main(["annotations", "agreement", "--slide", str(slide.id), "--json", "--db", db_url]) == 0
    report = json.loads(capsys.readouterr().out)
    (pair,) = report["pairs"]
    assert (pair["first"], pair["second"]) == ("ann", "bob") and 0.8 < pair["dice"] < 1
    assert main(["annotations", "agreement", "--slide", str(slide.id), "--db", db_url]) == 0
    assert "ann / bob" in capsys.readouterr().out

    out = tmp_path / "set"
    args = ["annotations", "export", "--slide", str(slide.id), "--out", str(out), "--annotator", "ann"]
    assert main([*args, "--patch", str(SIDE), "--db", db_url]) == 0
    assert "exported 4 patch-mask pair(s) from 4 region(s) of ann and 8 GeoJSON feature(s)" in capsys.readouterr().err
    assert len(list((out / "masks").glob("*.png"))) == 4 and (out / "annotations.geojson").is_file()

    run = tmp_path / "seg"
    train = ["train-segmenter", "--data", str(out), "--classes", "glomeruli", "--config", "tiny", "--out", str(run)]
    assert main([*train, "--epochs", "1", "--crop", "24", "--batch-size", "2", "--threads", "1", "--no-progress"]) == 0
    assert (run / "metrics.jsonl").is_file()

    imp = ["annotations", "import", "--slide", str(slide.id), "--geojson", str(out / "annotations.geojson")]
    assert main([*imp, "--annotator", "copy", "--region-side", str(SIDE), "--db", db_url]) == 0
    assert "imported 8 area(s) into 4 region mask(s) of 'copy'" in capsys.readouterr().out
    copied = an.load_mask(an.find(slide.id, "copy", GLOMERULI_ID, box, url=db_url), box)
    assert (copied == (disc(20, 30) | disc(48, 12, 6))).all()


def test_bad_input_is_one_line_and_changes_nothing(slide, db_url, tmp_path, capsys):
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "Feature", "geometry": None}))
    base = ["annotations", "import", "--slide", str(slide.id), "--annotator", "ann", "--db", db_url]
    for given, message in (
        (bad, "is not a GeoJSON FeatureCollection"),
        (tmp_path / "gone.geojson", "does not exist"),
    ):
        assert main([*base, "--geojson", str(given)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("renal-ldm annotations: error: ") and message in err and err.count("\n") == 1
    assert repo.list_annotations(slide.id, url=db_url) == []
    export = ["annotations", "export", "--slide", str(slide.id), "--out", str(tmp_path / "o"), "--db", db_url]
    assert main(export) == 2
    assert "no region marked done" in capsys.readouterr().err
