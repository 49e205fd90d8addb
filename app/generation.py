"""The generation service: one background worker per process that samples images while pages stay responsive.

    service = GenerationService()
    job_id = service.submit(choice, SampleRequest(caption=..., n=4, seed=7))   # returns at once
    service.snapshot(job_id)   # JobSnapshot: state, step/total, sample ids so far, error, timings
    service.cancel(job_id)     # the sampler stops before its next denoising step

How a job runs:
- Jobs wait in one FIFO queue drained by one daemon thread, so a page script never blocks on sampling and two
  users' requests never fight over the CPU (or GPU) at the same time.
- One Sampler per model directory per process, loaded on first use and kept (reloaded when the checkpoint's
  fingerprint changes, e.g. after retraining into the same folder).
- A request of n images is drawn batch by batch (request.batch_size images at a time). Batch k starts at
  image index k * batch_size and is sampled as its own request with seed S + that index, so image i still
  has seed S + i (renal_ldm.sample's guarantee) and the first images are saved and shown before the rest
  are drawn.
- Each batch is written under <data home>/samples/<run id>/ by renal_ldm.sample.write_samples (PNG, JSON
  sidecar, manifest.csv; names chosen by the product) and stored as rows through db.repository.add_samples
  with every parameter (extra = the sidecar). A failed or cancelled job keeps what it already saved.
- The data directory and database URL are read when a job is submitted, and the job writes there.

No Streamlit import here: the pages reach this through app.resources (st.cache_resource), and tests drive it
directly.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # renal_ldm.sample imports torch: keep it off this module's import path
    from renal_ldm.sample import Sampler, SampleRequest

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
JOB_STATES = (QUEUED, RUNNING, DONE, CANCELLED, FAILED)
ACTIVE_STATES = frozenset({QUEUED, RUNNING})
SAMPLES_DIR = "samples"
MAX_SEED = 2**31 - 1  # random seeds stay in int32 so they are easy to read, type and compare


class ModelLike(Protocol):
    """What submit() needs to know about a model choice (app.model_choices.ModelChoice fits)."""

    name: str
    path: str


def random_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


def new_run_id() -> str:
    """A product-chosen folder name for one request: UTC time (sorts by age) plus random hex (unique)."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(4)


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state, safe to read from any thread. Times are time.time() seconds."""

    id: str
    state: str
    model_name: str
    model_path: str
    request: Any  # the SampleRequest as submitted
    run_id: str
    step: int
    total: int
    sample_ids: tuple[int, ...]
    error: str | None
    submitted_at: float
    started_at: float | None
    first_image_at: float | None
    finished_at: float | None
    queue_position: int  # jobs ahead of this one (0 when running or finished)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def fraction(self) -> float:
        """Denoising progress in [0, 1] (1 once done)."""
        if self.state == DONE:
            return 1.0
        return min(1.0, self.step / self.total) if self.total > 0 else 0.0

    @property
    def seconds_to_first_image(self) -> float | None:
        return None if self.first_image_at is None else self.first_image_at - self.submitted_at

    @property
    def seconds_total(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.submitted_at


@dataclass
class _Job:
    id: str
    model_name: str
    model_path: str
    request: Any
    run_id: str
    home: Path
    database_url: str
    total: int
    submitted_at: float
    owner: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = QUEUED
    step: int = 0
    sample_ids: list[int] = field(default_factory=list)
    error: str | None = None
    started_at: float | None = None
    first_image_at: float | None = None
    finished_at: float | None = None


class QueueFull(ValueError):
    """A request refused because the queue already holds enough work (for this browser session or in all)."""


@dataclass(frozen=True)
class QueueLimits:
    """How much denoising work may wait or run at once: per browser session, and for the whole server.

    Work is counted in images and in image-steps (images x denoising steps: what a run costs). One full request
    of the Generate page (64 images x 50 steps) fits a session; a session cannot queue an afternoon of work
    ahead of everyone else, and the server's queue stays bounded whatever the number of sessions.
    """

    session_images: int = 64
    session_image_steps: int = 20_000
    total_images: int = 256
    total_image_steps: int = 100_000


def _work_of(request: Any) -> tuple[int, int]:
    """(images, image-steps) of a request."""
    try:
        return int(request.n), int(request.n) * int(request.steps)
    except (TypeError, ValueError):
        return 0, 0


def _planned_total(request: Any) -> int:
    """Denoising steps the whole request will take (for the progress bar before the job starts)."""
    try:
        return int(request.steps) * math.ceil(int(request.n) / max(1, int(request.batch_size)))
    except (TypeError, ValueError):
        return 0


def _default_sampler_factory(model_dir: str) -> Sampler:
    """Exact batches: "Generate again" from the Library must give the very same bytes, and the page's usual
    runs of 4 images fill the padding anyway. The precision is the app setting RENAL_LDM_PRECISION (auto: bf16 where
    the machine runs it natively); a request drawing a Library sample again names its own."""
    import_sampling_stack()
    from app.settings import load_settings
    from renal_ldm.sample import Sampler

    return Sampler.from_dir(model_dir, exact_batches=True, precision=load_settings().precision)


_STACK_LOCK = threading.Lock()


def import_sampling_stack() -> None:
    """Import torch, diffusers and every diffusers class the sampler builds, completely, one thread at a time.

    diffusers' lazy modules are not safe to import from two threads at once: a thread that asks for a class while
    another thread is halfway through importing diffusers gets "cannot import name 'DDPMScheduler' from
    'diffusers'" (seen when the worker warmed up while a page thread imported the sampler). Every app path to the
    stack goes through here: the worker warms up in the background (pages stay quick to draw), and a page that
    needs the stack first waits for that import to finish instead of racing it. Idempotent and cheap once done.
    """
    with _STACK_LOCK:
        _import_stack()


def _import_stack() -> None:
    from diffusers import (  # noqa: F401  what the sampler and the scheduler registry build
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        UNet2DConditionModel,
        VQModel,
    )

    import renal_ldm.models.checkpoint  # noqa: F401
    import renal_ldm.sample  # noqa: F401


class GenerationService:
    """One worker thread and its queue; thread-safe. Create one per process (app.resources does)."""

    def __init__(
        self,
        *,
        sampler_factory: Callable[[str], Sampler] | None = None,
        prewarm: bool = False,
        max_jobs_kept: int = 500,
        limits: QueueLimits | None = None,
    ) -> None:
        self._limits = limits or QueueLimits()
        self._sampler_factory = sampler_factory or _default_sampler_factory
        self._prewarm = prewarm
        self._max_jobs_kept = max_jobs_kept
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._samplers: dict[str, tuple[str | None, Sampler]] = {}
        self._thread = threading.Thread(target=self._work, name="renal-ldm-generation", daemon=True)
        self._thread.start()

    # ---- the page-facing API -------------------------------------------------------------------------------

    def submit(
        self,
        model: ModelLike,
        request: SampleRequest,
        *,
        home: str | Path | None = None,
        database_url: str | None = None,
        owner: str | None = None,
    ) -> str:
        """Queue a request for a model choice; returns the job id at once (errors show in the job).

        `owner` names the browser session asking; QueueFull (a ValueError saying what is queued and the limit)
        when the request would take that session or the server past its QueueLimits."""
        from db.session import database_url as resolve_url
        from renal_ldm.paths import data_home

        job = _Job(
            id=secrets.token_hex(8),
            model_name=model.name,
            model_path=str(model.path),
            request=request,
            run_id=new_run_id(),
            home=Path(home) if home is not None else data_home(),
            database_url=resolve_url(database_url),
            total=_planned_total(request),
            submitted_at=time.time(),
            owner=owner,
        )
        with self._lock:
            self._check_room(request, owner)
            self._jobs[job.id] = job
            self._forget_old_jobs()
        self._queue.put(job.id)
        return job.id

    def _check_room(self, request: Any, owner: str | None) -> None:
        """Raise QueueFull when the request does not fit the limits (called holding the lock)."""
        images, image_steps = _work_of(request)
        active = [j for j in self._jobs.values() if j.state in ACTIVE_STATES]
        limits = self._limits
        checks = [(active, limits.total_images, limits.total_image_steps, "The server")]
        if owner is not None:
            mine = [j for j in active if j.owner == owner]
            checks.insert(0, (mine, limits.session_images, limits.session_image_steps, "This browser session"))
        for jobs, max_images, max_steps, whose in checks:
            queued_images = sum(_work_of(j.request)[0] for j in jobs)
            queued_steps = sum(_work_of(j.request)[1] for j in jobs)
            if queued_images + images > max_images or queued_steps + image_steps > max_steps:
                raise QueueFull(
                    f"{whose} already has {queued_images} image(s) ({queued_steps:,} image-steps) queued or running; "
                    f"this request adds {images} ({image_steps:,}) and the limit is {max_images} images and "
                    f"{max_steps:,} image-steps at once. Wait for a run to finish or cancel one, or ask for fewer "
                    "images or steps."
                )

    def snapshot(self, job_id: str) -> JobSnapshot | None:
        """The job's current state, or None for an unknown (or long forgotten) id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return None
            ahead = 0
            if job.state == QUEUED:
                for other in self._jobs.values():
                    if other.id == job.id:
                        break
                    if other.state in ACTIVE_STATES:
                        ahead += 1
            return JobSnapshot(
                id=job.id,
                state=job.state,
                model_name=job.model_name,
                model_path=job.model_path,
                request=job.request,
                run_id=job.run_id,
                step=job.step,
                total=job.total,
                sample_ids=tuple(job.sample_ids),
                error=job.error,
                submitted_at=job.submitted_at,
                started_at=job.started_at,
                first_image_at=job.first_image_at,
                finished_at=job.finished_at,
                queue_position=ahead,
            )

    def cancel(self, job_id: str) -> bool:
        """Ask a queued or running job to stop; True if it was still active. Saved images are kept."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state not in ACTIVE_STATES:
                return False
            job.cancel.set()
            if job.state == QUEUED:  # never started: it ends now; the worker skips it
                job.state, job.finished_at = CANCELLED, time.time()
            return True

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.05) -> JobSnapshot:
        """Block until the job has ended (for tests and scripts; pages poll snapshot() instead)."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot(job_id)
            if snap is None:
                raise KeyError(f"unknown job {job_id!r}")
            if not snap.active:
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {snap.state} after {timeout} s ({snap.step}/{snap.total})")
            time.sleep(poll)

    def loaded_models(self) -> list[str]:
        """Model directories with a Sampler held in memory."""
        with self._lock:
            return list(self._samplers)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Cancel what is left and stop the worker (tests; a server process just exits)."""
        with self._lock:
            for job in self._jobs.values():
                if job.state in ACTIVE_STATES:
                    job.cancel.set()
        self._queue.put(None)
        self._thread.join(timeout)

    # ---- the worker ----------------------------------------------------------------------------------------

    def _work(self) -> None:
        if self._prewarm:
            try:  # torch + diffusers take seconds to import: do it before the first request needs them
                import_sampling_stack()
            except Exception:  # pragma: no cover - the first job reports the same error properly
                log.exception("could not import the sampling stack")
            # The imported modules live as long as the process: keep them out of every later full garbage
            # collection, which otherwise walks millions of objects while holding the GIL the sampler needs.
            gc.freeze()
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.state != QUEUED:
                    continue
                job.state, job.started_at = RUNNING, time.time()
            try:
                self._run(job)
            except Exception as exc:  # pragma: no cover - _run reports its own errors; this keeps the worker alive
                log.exception("generation job %s crashed", job_id)
                self._finish(job, FAILED, f"{type(exc).__name__}: {exc}")

    def _run(self, job: _Job) -> None:
        from renal_ldm.sample import SamplingCancelled

        try:
            sampler = self._sampler(job.model_path)
            request = job.request.validated(sampler.model)
            batch = request.batch_size
            with self._lock:
                job.total = request.steps * math.ceil(request.n / batch)
            out_dir = job.home / SAMPLES_DIR / job.run_id
            for number, start in enumerate(range(0, request.n, batch)):
                if job.cancel.is_set():
                    raise SamplingCancelled(f"cancelled after {start} of {request.n} images")
                count = min(batch, request.n - start)
                part = replace(request, n=count, seed=request.seed + start, batch_size=count)
                done_before = number * request.steps

                def progress(done: int, _total: int, _before: int = done_before) -> None:
                    with self._lock:
                        job.step = _before + done

                results = sampler.sample(part, progress=progress, cancel=job.cancel)
                for result in results:  # index within the whole request, not within this batch
                    result.index += start
                ids = self._store(job, sampler, request, results, out_dir)
                with self._lock:
                    job.sample_ids.extend(ids)
                    if job.first_image_at is None:
                        job.first_image_at = time.time()
        except SamplingCancelled:
            self._finish(job, CANCELLED, None)
        except Exception as exc:
            log.warning("generation job %s failed: %s", job.id, exc, exc_info=not isinstance(exc, ValueError | OSError))
            self._finish(job, FAILED, _message(exc))
        else:
            self._finish(job, DONE, None)

    def _store(self, job: _Job, sampler: Sampler, request: Any, results: list, out_dir: Path) -> list[int]:
        """Files first (PNG + sidecar + manifest), then one transaction of rows pointing at them."""
        from db import repository as repo
        from renal_ldm.sample import write_samples

        pngs = write_samples(results, out_dir)
        rows = []
        for result, png in zip(results, pngs, strict=True):
            sidecar_path = png.with_suffix(".json")
            sidecar: dict[str, Any] = json.loads(sidecar_path.read_text()) if sidecar_path.is_file() else {}
            rows.append(
                repo.NewSample(
                    image_path=png.relative_to(job.home).as_posix(),
                    caption=result.caption,
                    model_name=job.model_name,
                    model_fingerprint=sampler.model.fingerprint,
                    seed=int(result.seed),
                    steps=request.steps,
                    guidance=float(request.guidance),
                    scheduler=request.scheduler,
                    eta=float(request.eta),
                    size=int(request.size),
                    run_id=job.run_id,
                    extra=sidecar,
                )
            )
        return [sample.id for sample in repo.add_samples(rows, url=job.database_url)]

    def sampler(self, model_dir: str) -> Sampler:
        """The loaded Sampler of a checkpoint directory, shared with other jobs of this process (the Slides
        page's slide generation): one model in memory, its requests serialised by the Sampler's lock."""
        return self._sampler(model_dir)

    def _sampler(self, model_dir: str) -> Sampler:
        """The Sampler for a checkpoint directory: loaded once, reloaded if its fingerprint changed."""
        from renal_ldm.models.checkpoint import read_manifest

        key = str(Path(model_dir).expanduser().resolve())
        fingerprint = read_manifest(key).get("fingerprint")  # also the clear error for a missing model
        with self._lock:
            cached = self._samplers.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        with self._lock:  # drop an outdated model before loading its replacement
            self._samplers.pop(key, None)
        sampler = self._sampler_factory(key)
        with self._lock:
            self._samplers[key] = (fingerprint, sampler)
        return sampler

    def _finish(self, job: _Job, state: str, error: str | None) -> None:
        with self._lock:
            job.state, job.error, job.finished_at = state, error, time.time()
            if state == DONE:
                job.step = job.total

    def _forget_old_jobs(self) -> None:
        """Keep memory bounded: drop the oldest finished jobs beyond max_jobs_kept (call under the lock)."""
        excess = len(self._jobs) - self._max_jobs_kept
        if excess <= 0:
            return
        for job_id in [j.id for j in self._jobs.values() if j.state not in ACTIVE_STATES][:excess]:
            del self._jobs[job_id]


def _message(exc: BaseException) -> str:
    """A user-facing line: the error's own text (our errors name the bad value), with its kind if it has none."""
    text = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return text or type(exc).__name__
