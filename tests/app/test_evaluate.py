"""Evaluate: each measurement runs as a background job, leaves a database row and a report, and the page lists it."""

from __future__ import annotations

import json
import shutil

import pytest
from app_helpers import page_path

from app import background
from app import evaluations as ev
from db import repository as repo
from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.phantom import generate_dataset

EVALUATE = page_path("evaluate.py")
JOB_TIMEOUT_S = 300


@pytest.fixture
def phantom_folders(tmp_path):
    """Two small phantom data sets of different seeds (images/ + masks/)."""
    a, b = tmp_path / "a", tmp_path / "b"
    generate_dataset(a, n=12, size=64, seed=0)
    generate_dataset(b, n=12, size=64, seed=500)
    return a, b


def _finished(started: ev.Started) -> repo.Evaluation:
    assert started.job.wait(JOB_TIMEOUT_S), "the evaluation never finished"
    assert started.job.error is None, started.job.error
    return repo.get_evaluation(started.evaluation_id)


def test_a_realism_test_runs_and_is_listed_with_its_report(app, app_home, phantom_folders):
    real, synthetic = phantom_folders
    started = ev.start_realism(str(real / "images"), str(synthetic / "images"), features="none", epochs=1)
    evaluation = _finished(started)
    assert evaluation.state == "done" and 0.0 <= evaluation.summary["accuracy"] <= 1.0
    assert (app_home / evaluation.report_dir).is_dir()  # under the data directory, named by the product
    assert any(p.suffix == ".md" for p in ev.report_files(evaluation))
    assert ev.report_zip(evaluation)[:2] == b"PK"
    app.switch_page(EVALUATE).run()
    assert not app.exception, [e.message for e in app.exception]
    labels = [e.label for e in app.expander]
    assert any(f"#{evaluation.id} Realism test" in label for label in labels), labels


def test_caption_accuracy_samples_a_model_and_judges_it(app_home, tiny_model_dir, tiny_segmenter_dir):
    started = ev.start_caption_accuracy(
        str(tiny_model_dir),
        "tiny",
        GENERATING_CAPTION,
        5,
        str(tiny_segmenter_dir),
        steps=2,
        min_component_px=ev.PHANTOM_SPECK_SIZES,
    )
    evaluation = _finished(started)
    assert evaluation.summary["n_samples"] == 5
    assert set(evaluation.summary["table_5_1_percent"]) >= {"Glomeruli"}
    assert len(list((app_home / evaluation.report_dir / "samples").glob("*.png"))) == 5
    report = json.loads((app_home / evaluation.report_dir / "report" / "caption_accuracy.json").read_text())
    assert report["min_component_px"] == ev.PHANTOM_SPECK_SIZES  # the per-class sizes judged it


def test_the_mix_experiment_runs_every_mix(app_home, phantom_folders, tmp_path):
    real, synthetic = phantom_folders
    val = tmp_path / "val"
    shutil.copytree(real, val)
    started = ev.start_mix_experiment(str(real), str(synthetic), str(val), patches=4, seeds=1, epochs=1, config="tiny")
    evaluation = _finished(started)
    assert evaluation.summary["runs_trained"] == 6


def test_bad_inputs_are_refused_before_anything_runs(app_home, tmp_path):
    with pytest.raises(ValueError, match="real images '/nowhere' is not a folder on the server"):
        ev.start_realism("/nowhere", str(tmp_path))
    with pytest.raises(ValueError, match="give the segmenter"):
        ev.start_caption_accuracy("/m", "m", GENERATING_CAPTION, 5, "")
    with pytest.raises(ValueError, match="cannot parse caption sentence 'pink tissue'"):
        ev.start_caption_accuracy("/m", "m", "pink tissue", 5, str(tmp_path))
    with pytest.raises(ValueError, match="unknown classes \\['Glomerulus'\\]"):
        ev.start_caption_accuracy("/m", "m", GENERATING_CAPTION, 5, str(tmp_path), min_component_px={"Glomerulus": 9})
    assert repo.list_evaluations() == []


def test_a_failed_run_keeps_its_error_and_the_page_shows_it(app, app_home, tmp_path):
    (tmp_path / "empty_a").mkdir()
    (tmp_path / "empty_b").mkdir()
    started = ev.start_realism(str(tmp_path / "empty_a"), str(tmp_path / "empty_b"), features="none")
    assert started.job.wait(JOB_TIMEOUT_S)
    evaluation = repo.get_evaluation(started.evaluation_id)
    assert evaluation.state == "failed" and "empty_a" in evaluation.error
    app.switch_page(EVALUATE).run()
    assert not app.exception
    assert any("empty" in e.value for e in app.error)


def test_the_page_judges_with_the_phantom_segmenters_sizes_per_class_when_asked(app, tiny_model, tiny_segmenter_dir):
    app.switch_page(EVALUATE).run()
    next(r for r in app.radio if r.label == "Measurement").set_value(ev.CAPTIONS).run()
    next(n for n in app.number_input if n.label == "Samples").set_value(5)
    next(n for n in app.number_input if n.label == "DPM-Solver++ steps").set_value(5)
    next(s for s in app.selectbox if s.label.startswith("Segmenter")).set_value("Another folder on the server")
    next(t for t in app.text_input if t.label == "Segmenter folder").input(str(tiny_segmenter_dir))
    next(c for c in app.checkbox if c.label.startswith("Use the shipped phantom segmenter's sizes")).check()
    next(b for b in app.button if b.label == "Run").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    job_id, evaluation_id = app.session_state["evaluate.job"]
    evaluation = _finished(ev.Started(evaluation_id, background.get(job_id)))
    assert evaluation.params["min_component_px"] == ev.PHANTOM_SPECK_SIZES
    assert evaluation.state == "done" and evaluation.summary["n_samples"] == 5
