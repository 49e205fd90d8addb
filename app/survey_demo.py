"""The demo survey as rows in the database, for `renal-ldm survey-demo` and the Manage surveys page: no widgets.

renal_ldm.survey_demo builds the demo's images (phantoms, and model samples or more phantoms); this module
stores them as an open survey with is_demo=True (app.survey_store), directly for the CLI or in a background
thread the page polls (`start_demo_job`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from app import background
from app.background import BackgroundJob
from app.survey_admin import participant_link
from app.survey_store import create_image_survey
from renal_ldm import survey as vocabulary
from renal_ldm.survey_demo import Progress, build_demo_images
from renal_ldm.survey_images import DEFAULT_COUNT, DEFAULT_SIZE


@dataclass(frozen=True)
class DemoSurvey:
    token: str
    title: str
    mode: str
    model_dir: Path | None
    n: int

    @property
    def link(self) -> str:
        """The participant link, relative to the app's address."""
        return participant_link(self.token)


def create_demo_survey(
    n: int = DEFAULT_COUNT,
    *,
    model: str | Path | None = None,
    phantom_only: bool = False,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    steps: int | None = None,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    url: str | None = None,
) -> DemoSurvey:
    """Build the demo images and store them as an open survey with is_demo=True; returns its token and title."""
    images = build_demo_images(
        n,
        model=model,
        phantom_only=phantom_only,
        size=size,
        seed=seed,
        steps=steps,
        device=device,
        progress=progress,
        cancel=cancel,
    )
    if progress:
        progress("saving", 0, 1)
    token = create_image_survey(
        images.title,
        images.real,
        images.synthetic,
        is_demo=True,
        status=vocabulary.OPEN,
        url=url,
        real_provenance=images.real_provenance,
        synthetic_provenance=images.synthetic_provenance,
    )
    if progress:
        progress("saving", 1, 1)
    return DemoSurvey(token, images.title, images.mode, images.model_dir, n)


# ------------------------------------------------------------------------------------------- demo job


def start_demo_job(n: int = DEFAULT_COUNT, **kwargs) -> BackgroundJob:
    """Start building the demo survey in a thread; returns the job (found again by get_job(id))."""
    return background.start("survey-demo", lambda progress, _cancel: create_demo_survey(n, progress=progress, **kwargs))


def get_job(job_id: str | None) -> BackgroundJob | None:
    return background.get(job_id)
