"""The generation service without Streamlit: batches, seeds S+i, storage, progress, cancel, failures, caching."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from app.generation import CANCELLED, DONE, FAILED, QUEUED, RUNNING, GenerationService
from app.model_choices import ModelChoice
from db import repository as repo
from renal_ldm.sample import Sampler, SampleRequest

GATE_TIMEOUT_S = 120.0  # first model load included, on a loaded 2-core machine


@pytest.fixture
def loads():
    return []


@pytest.fixture
def service(loads):
    def factory(model_dir: str) -> Sampler:
        loads.append(model_dir)
        return Sampler.from_dir(model_dir, exact_batches=True)  # as the app's: Generate again gives the same bytes

    service = GenerationService(sampler_factory=factory)
    yield service
    service.shutdown()


@pytest.fixture
def tiny(app_home, tiny_model_dir) -> ModelChoice:
    return ModelChoice("tiny", str(tiny_model_dir), "user")


class Gate:
    """Holds the worker: from sample() call number `hold_at` (1-based) on, the sampler sets `waiting` and blocks
    until `opened` is set, so a test acts while the worker is provably before a given batch instead of racing it."""

    def __init__(self) -> None:
        self.hold_at = 1
        self.calls = 0
        self.loads = 0
        self.waiting, self.opened = threading.Event(), threading.Event()

    def wait_until_held(self) -> None:
        assert self.waiting.wait(GATE_TIMEOUT_S), f"the worker never reached sample() call {self.hold_at}"

    def pass_through(self) -> None:
        self.calls += 1
        if self.calls >= self.hold_at:
            self.waiting.set()
            assert self.opened.wait(GATE_TIMEOUT_S), "the test never opened the gate"


class GatedSampler:
    """A real Sampler behind a Gate (the service reads .model and calls .sample)."""

    def __init__(self, sampler: Sampler, gate: Gate) -> None:
        self._sampler, self._gate = sampler, gate
        self.model = sampler.model

    def sample(self, *args, **kwargs):
        self._gate.pass_through()
        return self._sampler.sample(*args, **kwargs)


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def gated_service(gate):
    """A service whose samplers wait at `gate` (set gate.hold_at before the first submit)."""

    def factory(model_dir: str) -> GatedSampler:
        gate.loads += 1
        return GatedSampler(Sampler.from_dir(model_dir), gate)

    service = GenerationService(sampler_factory=factory)
    yield service
    gate.opened.set()
    service.shutdown()


def test_batches_are_stored_with_seeds_s_plus_i(service, tiny, app_home, loads):
    request = SampleRequest(
        caption="There is a lot of Glomeruli visible in the image.", n=3, seed=40, steps=3, guidance=2.0, batch_size=2
    )
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
    again = service.wait(
        service.submit(tiny, SampleRequest(caption=request.caption, n=1, seed=41, steps=3, guidance=2.0))
    )
    assert loads == [str(Path(tiny.path).resolve())]
    redrawn = repo.get_sample(again.sample_ids[0])
    assert (app_home / redrawn.image_path).read_bytes() == (app_home / samples[1].image_path).read_bytes()


def test_cancel_keeps_the_finished_batches(gated_service, gate, tiny, app_home):
    service = gated_service
    gate.hold_at = 2  # the first batch is drawn and stored; the worker then waits before the second
    job_id = service.submit(tiny, SampleRequest(caption="", n=3, seed=1, steps=3, guidance=1.0, batch_size=1))
    gate.wait_until_held()
    snap = service.snapshot(job_id)
    assert (snap.state, len(snap.sample_ids), snap.step, snap.total) == (RUNNING, 1, 3, 9)
    assert service.cancel(job_id)
    gate.opened.set()  # the second batch starts with cancel set: it stops before its first step
    snap = service.wait(job_id)
    assert snap.state == CANCELLED and snap.error is None
    assert len(snap.sample_ids) == 1  # the batch running when cancel came is dropped
    assert repo.count_samples(run_id=snap.run_id) == 1
    assert not service.cancel(job_id)  # already over


def test_a_queued_job_shows_its_place_and_can_be_cancelled_before_it_starts(gated_service, gate, tiny):
    service = gated_service
    request = SampleRequest(caption="", n=1, steps=2, guidance=1.0)
    running = service.submit(tiny, request)
    gate.wait_until_held()  # the first job is running, held before its first batch
    first, second = service.submit(tiny, request), service.submit(tiny, request)
    assert [_place(service, job) for job in (running, first, second)] == [(RUNNING, 0), (QUEUED, 1), (QUEUED, 2)]

    assert service.cancel(first)
    assert [_place(service, job) for job in (first, second)] == [(CANCELLED, 0), (QUEUED, 1)]
    gate.opened.set()
    assert service.wait(running).state == DONE
    assert service.wait(second).state == DONE
    cancelled = service.snapshot(first)
    assert (cancelled.state, cancelled.started_at, cancelled.sample_ids) == (CANCELLED, None, ())
    assert (gate.loads, gate.calls) == (1, 2)  # the cancelled job never reached the sampler


def _place(service: GenerationService, job_id: str) -> tuple[str, int]:
    snap = service.snapshot(job_id)
    return snap.state, snap.queue_position


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


def test_a_bf16_sample_drawn_again_where_bf16_is_not_native_fails_saying_so(service, tiny, monkeypatch):
    """A Library sample made in bf16 on another machine: the job says why, and nothing is stored."""
    import renal_ldm.sample as sample_module

    monkeypatch.setattr(sample_module, "bf16_supported", lambda device: False)
    request = SampleRequest(caption="", n=1, steps=1, guidance=1.0, precision="bf16")
    snap = service.wait(service.submit(tiny, request))
    assert snap.state == FAILED
    assert "precision bf16 needs native bf16 on cpu" in snap.error and "use fp32" in snap.error
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
