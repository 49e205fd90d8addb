"""The generation service without Streamlit: batches, seeds S+i, storage, progress, cancel, failures, caching."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from app.generation import CANCELLED, DONE, FAILED, GenerationService
from app.model_choices import ModelChoice
from db import repository as repo
from renal_ldm.sample import Sampler, SampleRequest


@pytest.fixture
def loads():
    return []


@pytest.fixture
def service(loads):
    def factory(model_dir: str) -> Sampler:
        loads.append(model_dir)
        return Sampler.from_dir(model_dir)

    service = GenerationService(sampler_factory=factory)
    yield service
    service.shutdown()


@pytest.fixture
def tiny(app_home, tiny_model_dir) -> ModelChoice:
    return ModelChoice("tiny", str(tiny_model_dir), "user")


def test_batches_are_stored_with_seeds_s_plus_i(service, tiny, app_home, loads):
    request = SampleRequest(caption="There is a lot of Glomeruli visible in the image.", n=3, seed=40, steps=3,
                            guidance=2.0, batch_size=2)
    job_id = service.submit(tiny, request)
    snap = service.wait(job_id)
    assert snap.state == DONE, snap.error
    assert (snap.step, snap.total, snap.fraction) == (6, 6, 1.0)  # 2 batches x 3 steps
    assert snap.started_at >= snap.submitted_at
    assert snap.submitted_at < snap.first_image_at <= snap.finished_at
    samples = sorted(repo.list_samples(run_id=snap.run_id), key=lambda s: s.seed)
    assert [s.id for s in samples] == sorted(snap.sample_ids)
    assert [s.seed for s in samples] == [40, 41, 42]
    for index, sample in enumerate(samples):
        png = app_home / sample.image_path
        assert png.is_file() and png.parent == app_home / "samples" / snap.run_id
        assert (sample.caption, sample.model_name, sample.steps, sample.guidance) == (request.caption, "tiny", 3, 2.0)
        assert (sample.scheduler, sample.eta, sample.size, sample.run_id) == ("ddim", 0.0, 32, snap.run_id)
        assert sample.model_fingerprint and sample.model_fingerprint == sample.extra["model_fingerprint"]
        assert sample.extra == json.loads(png.with_suffix(".json").read_text())
        assert sample.extra["index"] == index and sample.extra["seed"] == sample.seed
    assert (app_home / "samples" / snap.run_id / "manifest.csv").read_text().count("\n") == 4

    # The same model again: not loaded a second time; image S+1 drawn alone has the same pixels.
    again = service.wait(service.submit(tiny, SampleRequest(caption=request.caption, n=1, seed=41, steps=3,
                                                            guidance=2.0)))
    assert loads == [str(Path(tiny.path).resolve())]
    redrawn = repo.get_sample(again.sample_ids[0])
    assert (app_home / redrawn.image_path).read_bytes() == (app_home / samples[1].image_path).read_bytes()


def test_cancel_keeps_the_finished_batches(service, tiny, app_home):
    request = SampleRequest(caption="", n=3, seed=1, steps=30, guidance=1.0, batch_size=1)
    job_id = service.submit(tiny, request)
    deadline = time.monotonic() + 120
    while not (snap := service.snapshot(job_id)).sample_ids:
        assert snap.active, snap.error
        assert time.monotonic() < deadline, "no first image in 120 s"
        time.sleep(0.01)
    assert service.cancel(job_id)
    snap = service.wait(job_id)
    assert snap.state == CANCELLED and snap.error is None
    assert len(snap.sample_ids) in (1, 2)  # the batch running when cancel came is dropped
    assert repo.count_samples(run_id=snap.run_id) == len(snap.sample_ids)
    assert not service.cancel(job_id)  # already over


def test_a_queued_job_can_be_cancelled_before_it_starts(service, tiny):
    running = service.submit(tiny, SampleRequest(caption="", n=1, steps=200, guidance=1.0))
    queued = service.submit(tiny, SampleRequest(caption="", n=1, steps=2))
    assert service.snapshot(queued).queue_position >= 1 or service.snapshot(queued).state != "queued"
    assert service.cancel(queued)
    assert service.snapshot(queued).state == CANCELLED
    service.cancel(running)
    assert service.wait(running).state == CANCELLED
    assert service.snapshot(queued).sample_ids == ()


def test_missing_model_fails_with_a_message(service, app_home, tmp_path):
    gone = ModelChoice("gone", str(tmp_path / "nowhere"), "user")
    snap = service.wait(service.submit(gone, SampleRequest(caption="", n=1, steps=1, guidance=1.0)))
    assert snap.state == FAILED
    assert "model directory not found" in snap.error and "nowhere" in snap.error


def test_bad_request_fails_with_the_bad_value_and_saves_nothing(service, tiny):
    snap = service.wait(service.submit(tiny, SampleRequest(caption="", n=1, steps=1, size=30, guidance=1.0)))
    assert snap.state == FAILED
    assert "image size 30" in snap.error
    assert repo.count_samples() == 0


def test_retrained_checkpoint_is_reloaded(service, tiny, tmp_path, loads):
    copy = ModelChoice("copy", str(shutil.copytree(tiny.path, tmp_path / "copy")), "user")
    assert service.wait(service.submit(copy, SampleRequest(caption="", n=1, steps=1, guidance=1.0))).state == DONE
    manifest = Path(copy.path) / "renal_ldm.json"
    data = json.loads(manifest.read_text())
    data["fingerprint"] = "retrained"
    manifest.write_text(json.dumps(data))
    assert service.wait(service.submit(copy, SampleRequest(caption="", n=1, steps=1, guidance=1.0))).state == DONE
    assert len(loads) == 2
    assert service.loaded_models() == [str(Path(copy.path).resolve())]


def test_unknown_job_is_none(service):
    assert service.snapshot("nope") is None
    assert service.cancel("nope") is False
