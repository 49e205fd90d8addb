"""Long jobs the pages start and then poll: one thread each, progress as (stage, done, total), the result or
the error. Streamlit-free, so the pages draw a progress bar from a job and tests wait for one.

The generation worker (app/generation.py) is different on purpose: it queues requests for one shared model.
These jobs (a demo survey, an evaluation) are independent of each other and run as soon as they are started.
Jobs live in this process only; what must outlive it (an evaluation's result) is stored by the job itself.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): what the job is doing and how far it is."""


@dataclass
class BackgroundJob:
    """A job running (or done) in a background thread; the page polls it."""

    id: str
    name: str
    stage: str = "starting"
    done: int = 0
    total: int = 1
    result: Any = None
    error: str | None = None
    finished: bool = False
    started: float = field(default_factory=time.monotonic)
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    def wait(self, timeout: float | None = None) -> bool:
        """True once the job has finished (tests; the pages poll instead)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)  # polling interval of a state check
        return True


_jobs: dict[str, BackgroundJob] = {}
_lock = threading.Lock()


def start(name: str, work: Callable[[Progress, threading.Event], Any]) -> BackgroundJob:
    """Run work(progress, cancel) in a new thread; its return value becomes job.result, an exception job.error."""
    job = BackgroundJob(uuid.uuid4().hex, name)

    def progress(stage: str, done: int, total: int) -> None:
        job.stage, job.done, job.total = stage, done, total

    def run() -> None:
        try:
            job.result = work(progress, job.cancel)
        except Exception as exc:  # noqa: BLE001 - shown on the page that started it
            log.exception("background job %s (%s) failed", job.id, name)
            job.error = f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = True

    with _lock:
        _jobs[job.id] = job
    threading.Thread(target=run, name=f"{name}-{job.id[:8]}", daemon=True).start()
    return job


def get(job_id: str | None) -> BackgroundJob | None:
    """The job with this id (from st.session_state), or None."""
    with _lock:
        return _jobs.get(job_id) if job_id else None
