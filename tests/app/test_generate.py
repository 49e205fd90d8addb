"""Generate page: the no-model message, registering a checkpoint, a whole run through the UI, progress, cancel."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
import zipfile

from app_helpers import page_path, shown
from PIL import Image

from app.downloads import zip_samples
from app.library import regenerate_params
from db import repository as repo
from renal_ldm.captions import GENERATING_CAPTION

GENERATE = page_path("generate.py")


def open_generate(app):
    app.switch_page(GENERATE).run()
    assert not app.exception, [e.message for e in app.exception]
    return app


def run_until(app, done, timeout=90.0, pause=0.2):
    """Rerun the page (as the polling fragment would) until done(app) is true."""
    deadline = time.monotonic() + timeout
    while not done(app):
        assert time.monotonic() < deadline, "the page never reached the expected state"
        assert not app.exception, [e.message for e in app.exception]
        time.sleep(pause)
        app.run()
    return app


def test_no_model_says_what_is_missing_and_how_to_get_one(app):
    open_generate(app)
    assert any("No model is available" in w.value for w in app.warning)
    help_text = " ".join(m.value for m in app.markdown)
    assert "renal-ldm train-vae" in help_text and "renal-ldm train " in help_text and "models/demo" in help_text
    assert not [b for b in app.button if b.label == "Generate"]
    assert app.text_input  # the register form is offered


def test_register_form_checks_the_directory(app, tmp_path, tiny_model_dir):
    open_generate(app)
    app.text_input[0].set_value("mine")
    app.text_input[1].set_value(str(tmp_path))  # an existing folder that is not a checkpoint
    app.button[0].click().run()
    assert any("renal_ldm.json is missing" in shown(e.value) for e in app.error)
    app.text_input[1].set_value(str(tmp_path / "nope"))
    app.button[0].click().run()
    assert any("not found" in shown(e.value) for e in app.error)
    assert repo.list_models() == []

    app.text_input[1].set_value(str(tiny_model_dir))
    app.button[0].click().run()
    assert not app.exception, [e.message for e in app.exception]
    assert [e.name for e in repo.list_models()] == ["mine"]
    assert any("Registered 'mine'" in shown(s.value) for s in app.success)
    assert app.selectbox(key="gen.model").value == "mine"


def test_a_registered_model_whose_folder_is_gone_is_reported(app, tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    repo.register_model("moved", copy)
    shutil.rmtree(copy)
    open_generate(app)
    assert any("'moved' is registered but cannot be used" in shown(w.value) for w in app.warning)
    assert any("No model is available" in w.value for w in app.warning)


def test_generate_stores_samples_and_shows_them(app, tiny_model, app_home):
    open_generate(app)
    assert app.selectbox(key="gen.model").value == "tiny"
    assert app.code[0].value == GENERATING_CAPTION  # nothing composed: the study's caption
    app.number_input(key="gen.n").set_value(2)
    app.number_input(key="gen.steps").set_value(4)
    app.number_input(key="gen.guidance").set_value(2.0)
    app.radio(key="gen.seed_mode").set_value("Fixed").run()
    app.number_input(key="gen.seed").set_value(11)
    app.button(key="gen.submit").click().run()
    run_until(app, lambda a: a.main.success or a.main.error or a.main.warning)  # not the sidebar's open-mode note
    assert not app.error, [e.value for e in app.error]
    assert app.success[0].value.startswith("Done: 2 image(s)")

    samples = sorted(repo.list_samples(), key=lambda s: s.seed)
    assert [s.seed for s in samples] == [11, 12]
    for sample in samples:
        assert (sample.caption, sample.model_name, sample.steps, sample.guidance) == (
            GENERATING_CAPTION,
            "tiny",
            4,
            2.0,
        )
        assert (sample.scheduler, sample.size) == ("ddim", 32)
        assert (app_home / sample.image_path).is_file()
        assert (app_home / sample.image_path).with_suffix(".json").is_file()
        assert sample.image_path.startswith(f"samples/{sample.run_id}/")
    assert [i.captions for i in app.image] == [["seed 11"], ["seed 12"]]
    labels = [d.label for d in app.download_button]
    assert labels.count("PNG") == 2 and "Download all 2 as ZIP (PNG + JSON)" in labels
    assert not app.get("progress")  # finished: no bar, no polling

    with zipfile.ZipFile(io.BytesIO(zip_samples(samples))) as archive:
        names = archive.namelist()
        run = samples[0].run_id
        assert f"{run}/{(app_home / samples[0].image_path).name}" in names
        sidecar = json.loads(archive.read(f"{run}/{(app_home / samples[1].image_path).with_suffix('.json').name}"))
        assert sidecar["seed"] == 12 and sidecar["caption"] == GENERATING_CAPTION
        assert "samples.csv" in names and len(names) == 5


def test_no_frame_draws_a_late_margin_that_is_cropped_and_kept_for_generate_again(app, tiny_model, app_home):
    open_generate(app)
    app.number_input(key="gen.n").set_value(1)
    app.number_input(key="gen.steps").set_value(2)
    assert app.checkbox(key="gen.no_frame").value is True  # on by default
    app.button(key="gen.submit").click().run()
    run_until(app, lambda a: a.main.success or a.main.error or a.main.warning)
    assert app.success[0].value.startswith("Done: 1 image(s)")
    (sample,) = repo.list_samples()
    assert Image.open(app_home / sample.image_path).size == (sample.size, sample.size) == (32, 32)
    assert (sample.extra["margin"], sample.extra["margin_late"]) == (4, True)  # the tiny model's multiple 8, halved
    assert (regenerate_params(sample)["margin"], regenerate_params(sample)["margin_late"]) == (4, True)


def test_the_page_samples_in_bf16_where_native_and_records_it_for_generate_again(app, tiny_model, app_home):
    """The app's default precision, auto: bf16 on a CPU with native bf16, fp32 elsewhere; the sample records it."""
    import torch

    from renal_ldm.sample import bf16_supported

    open_generate(app)
    app.number_input(key="gen.n").set_value(1)
    app.number_input(key="gen.steps").set_value(2)
    app.button(key="gen.submit").click().run()
    run_until(app, lambda a: a.main.success or a.main.error or a.main.warning)
    assert app.success[0].value.startswith("Done: 1 image(s)")
    (sample,) = repo.list_samples()
    expected = "bf16" if bf16_supported(torch.device("cpu")) else "fp32"
    assert sample.extra["precision"] == regenerate_params(sample)["precision"] == expected


class PausingSampler:
    """The real sampler, paused inside its progress callback after `pause_at` steps until the job is cancelled:
    the test sees the run provably mid-way, whatever the machine's speed (no race with a fast worker)."""

    def __init__(self, sampler, pause_at: int, paused: threading.Event) -> None:
        self._sampler, self.model, self._pause_at, self._paused = sampler, sampler.model, pause_at, paused

    def sample(self, request, progress=None, cancel=None):
        def pausing(done: int, total: int) -> None:
            if progress is not None:
                progress(done, total)
            if done >= self._pause_at:
                self._paused.set()
                assert cancel is not None and cancel.wait(120), "the test never cancelled the paused run"

        return self._sampler.sample(request, progress=pausing, cancel=cancel)


def test_progress_moves_and_cancel_stops_the_run(app, tiny_model, monkeypatch):
    from app import resources
    from renal_ldm.sample import Sampler

    service = resources.generation_service()
    paused = threading.Event()
    monkeypatch.setattr(service, "_sampler_factory", lambda d: PausingSampler(Sampler.from_dir(d), 2, paused))
    monkeypatch.setattr(service, "_samplers", {})  # no sampler cached by an earlier test
    open_generate(app)
    app.number_input(key="gen.n").set_value(3)
    app.number_input(key="gen.steps").set_value(60)
    app.number_input(key="gen.guidance").set_value(1.0)
    app.number_input(key="gen.batch").set_value(1)
    app.button(key="gen.submit").click().run()
    assert paused.wait(120), "the run never reached its second step"
    run_until(app, lambda a: any(p.value > 0 for p in a.get("progress")))
    assert [p.text for p in app.get("progress")] == ["Denoising: step 2 of 180"]
    assert app.get("progress")[0].value == 1  # percent: 2 of 180 steps
    next(b for b in app.button if b.label == "Cancel").click().run()
    run_until(app, lambda a: a.main.warning)
    assert app.main.warning[0].value.startswith("Cancelled.")
    assert not [b for b in app.button if b.label == "Cancel"]


def test_the_guidance_field_starts_at_the_selected_models_recommendation(app, tmp_path, tiny_model_dir):
    recommending = shutil.copytree(tiny_model_dir, tmp_path / "recommending")
    manifest = json.loads((recommending / "renal_ldm.json").read_text())
    manifest["sampling"] = {"guidance": 3.5}
    (recommending / "renal_ldm.json").write_text(json.dumps(manifest))
    repo.register_model("plain", tiny_model_dir)
    repo.register_model("recommending", recommending)
    open_generate(app)
    assert app.selectbox(key="gen.model").value == "plain"
    assert app.number_input(key="gen.guidance").value == 1.5  # no recommendation: the reference's scale
    app.selectbox(key="gen.model").set_value("recommending").run()
    assert not app.exception, [e.message for e in app.exception]
    assert app.number_input(key="gen.guidance").value == 3.5
    app.number_input(key="gen.guidance").set_value(5.0).run()
    app.run()
    assert app.number_input(key="gen.guidance").value == 5.0  # the user's own value stays
