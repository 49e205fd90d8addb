"""The generation queue is bounded per browser session and for the whole server, with a message that says why."""

from __future__ import annotations

import threading

import pytest

from app.generation import CANCELLED, QUEUED, GenerationService, QueueFull, QueueLimits
from app.model_choices import ModelChoice
from renal_ldm.sample import Sampler, SampleRequest

LIMITS = QueueLimits(session_images=6, session_image_steps=40, total_images=10, total_image_steps=1000)


class HeldSampler:
    """The tiny model's sampler, held before its first batch until released: submitted jobs stay active."""

    def __init__(self, sampler, release) -> None:
        self._sampler, self.release, self.model = sampler, release, sampler.model

    def sample(self, *args, **kwargs):
        assert self.release.wait(60), "the test never released the sampler"
        return self._sampler.sample(*args, **kwargs)


@pytest.fixture
def held_service(app_home):
    release = threading.Event()
    service = GenerationService(sampler_factory=lambda d: HeldSampler(Sampler.from_dir(d), release), limits=LIMITS)
    yield service
    release.set()
    service.shutdown()


@pytest.fixture
def model(tiny_model_dir) -> ModelChoice:
    return ModelChoice("tiny", str(tiny_model_dir), "user")


def _request(n: int, steps: int) -> SampleRequest:
    return SampleRequest(caption="", n=n, steps=steps, batch_size=1)


def test_a_session_cannot_queue_more_than_its_share(held_service, model):
    held_service.submit(model, _request(4, 5), owner="a")  # 4 images, 20 image-steps
    with pytest.raises(QueueFull) as refused:
        held_service.submit(model, _request(3, 5), owner="a")  # 7 images > 6
    message = str(refused.value)
    assert message.startswith("This browser session already has 4 image(s) (20 image-steps) queued or running")
    assert "the limit is 6 images and 40 image-steps" in message
    with pytest.raises(QueueFull, match="This browser session"):
        held_service.submit(model, _request(1, 25), owner="a")  # 45 image-steps > 40
    job = held_service.submit(model, _request(2, 5), owner="a")  # 6 images, 30 image-steps: fits exactly
    assert held_service.snapshot(job).state == QUEUED


def test_other_sessions_are_not_blocked_by_one_until_the_server_is_full(held_service, model):
    held_service.submit(model, _request(6, 1), owner="a")
    held_service.submit(model, _request(4, 1), owner="b")  # the server now holds 10 images
    with pytest.raises(QueueFull, match=r"^The server already has 10 image\(s\)"):
        held_service.submit(model, _request(1, 1), owner="c")


def test_finished_and_cancelled_jobs_free_their_share(held_service, model):
    first = held_service.submit(model, _request(6, 1), owner="a")
    with pytest.raises(QueueFull):
        held_service.submit(model, _request(1, 1), owner="a")
    held_service.cancel(first)
    assert held_service.wait(first, timeout=60).state == CANCELLED
    held_service.submit(model, _request(6, 1), owner="a")
