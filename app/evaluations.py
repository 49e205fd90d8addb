"""The Evaluate page's use cases, without Streamlit: start an evaluation as a background job, store its row and
report, list past runs and read their reports back.

Each run gets a product-named folder under the data directory (`evaluations/<random>/`) holding the report the
library writes (JSON, markdown, PNG charts) and, for caption accuracy, the samples it judged; the database row
(db.repository evaluations) keeps its kind, parameters, state and summary numbers, so the page lists runs with
their parameters after a restart. The heavy work is the library's (renal_ldm.evaluate, renal_ldm.realism,
renal_ldm.mix_experiment); this module only wires it to the app.
"""

from __future__ import annotations

import io
import secrets
import threading
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import background
from app.background import BackgroundJob, Progress
from db import repository as repo
from renal_ldm.captions import caption_to_levels
from renal_ldm.evaluate import PHANTOM_SPECK_SIZES, SpeckSizes, speck_sizes  # noqa: F401  (the page's choice)
from renal_ldm.paths import data_subdir, resolve_in_home, shipped_segmenters

EVALUATIONS_DIR = "evaluations"
CAPTIONS, REALISM, MIX = "captions", "realism", "mix"
KIND_LABELS = {CAPTIONS: "Caption accuracy", REALISM: "Realism test", MIX: "Training-mix experiment"}
REPORT_SUFFIXES = (".md", ".json", ".png", ".csv")
FEATURE_CHOICES = {"The shipped phantom segmenter's encoder": "segmenter", "None (classifier test only)": "none"}
"""Frechet-distance feature extractors the page offers (renal_ldm.realism's --features values)."""


@dataclass(frozen=True)
class Started:
    """A started evaluation: its database row id and the background job the page polls."""

    evaluation_id: int
    job: BackgroundJob


def segmenter_choices() -> dict[str, str]:
    """{label: folder} of the shipped segmenters that are installed (the page adds a free path)."""
    return {f"{path.name} (shipped)": str(path) for path in shipped_segmenters()}


def check_folder(value: str | None, what: str) -> str:
    """A folder on the server that exists; a ValueError naming it (and what was expected) otherwise."""
    text = (value or "").strip()
    if not text:
        raise ValueError(f"give the {what} (a folder on the server)")
    if not Path(text).expanduser().is_dir():
        raise ValueError(f"{what} {text!r} is not a folder on the server")
    return str(Path(text).expanduser())


def _new_report_dir() -> tuple[Path, str]:
    name = secrets.token_hex(8)
    path = data_subdir(EVALUATIONS_DIR) / name
    path.mkdir()
    return path, f"{EVALUATIONS_DIR}/{name}"


def _start(
    kind: str, params: dict[str, Any], work: Callable[[Path, Progress, threading.Event], dict], created_by: str | None
) -> Started:
    """Create the row and the folder, then run work(folder, progress, cancel) -> summary in the background."""
    folder, relative = _new_report_dir()
    evaluation = repo.add_evaluation(kind, params, relative, created_by=created_by)

    def run(progress: Progress, cancel: threading.Event) -> dict:
        try:
            summary = work(folder, progress, cancel)
        except BaseException as exc:
            repo.finish_evaluation(evaluation.id, error=f"{type(exc).__name__}: {exc}")
            raise
        repo.finish_evaluation(evaluation.id, summary=summary)
        return summary

    return Started(evaluation.id, background.start(f"evaluation-{kind}", run))


def start_caption_accuracy(
    model_dir: str,
    model_name: str,
    caption: str,
    n: int,
    segmenter_dir: str,
    *,
    steps: int = 20,
    scheduler: str = "dpmpp",
    seed: int = 0,
    size: int | None = None,
    min_component_px: SpeckSizes = 0,
    created_by: str | None = None,
) -> Started:
    """Sample n images of a caption from a model, judge them with a segmenter (the reference's Table 5.1);
    predicted specks under min_component_px (one size, or a size per class) are dropped first
    (renal_ldm.evaluate.remove_specks)."""
    from renal_ldm.evaluate import sample_for_evaluation

    segmenter_dir = check_folder(segmenter_dir, "segmenter")
    if not caption.strip():
        raise ValueError("give the generating caption the samples are drawn for")
    caption_to_levels(caption)  # a caption that is not in the trained form cannot be judged: say so now
    speck_sizes(min_component_px)  # a bad size is named before any sampling
    specks = dict(min_component_px) if isinstance(min_component_px, Mapping) else int(min_component_px)
    params = {
        "model": model_name,
        "model_dir": model_dir,
        "caption": caption,
        "n": int(n),
        "steps": int(steps),
        "scheduler": scheduler,
        "seed": int(seed),
        "size": size,
        "segmenter": segmenter_dir,
        "min_component_px": specks,
    }

    def work(folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        from app.generation import import_sampling_stack
        from renal_ldm.evaluate import evaluate_captions, write_caption_report

        import_sampling_stack()  # after the worker's warm-up import, never racing it
        from renal_ldm.sample import SampleRequest

        request = SampleRequest(
            caption=caption,
            n=int(n),
            seed=int(seed),
            steps=int(steps),
            scheduler=scheduler,
            **({"size": int(size)} if size else {}),
        )
        sample_for_evaluation(
            model_dir,
            request,
            folder / "samples",
            progress=lambda done, total: progress("sampling", done, total),
            cancel=cancel,
        )
        result = evaluate_captions(
            folder / "samples",
            segmenter_dir,
            min_component_px=specks,
            masks_dir=folder / "masks",
            progress=lambda done, total: progress("judging", done, total),
            cancel=cancel,
        )
        write_caption_report(result, folder / "report")
        return result.summary()  # the headline numbers kept in the row; the report holds everything

    return _start(CAPTIONS, params, work, created_by)


def start_realism(
    real_dir: str,
    synthetic_dir: str,
    *,
    features: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    created_by: str | None = None,
) -> Started:
    """The classifier two-sample test and the Frechet distance of two image folders on the server."""
    real_dir, synthetic_dir = check_folder(real_dir, "real images"), check_folder(synthetic_dir, "synthetic images")
    params = {"real": real_dir, "synthetic": synthetic_dir, "features": features, "epochs": epochs, "seed": seed}

    def work(folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        from dataclasses import replace

        from renal_ldm.realism import DEFAULT_FEATURES, RealismSettings, run_realism, write_report

        settings = RealismSettings(seed=int(seed))
        if epochs:
            settings = replace(settings, epochs=int(epochs))
        report = run_realism(
            real_dir, synthetic_dir, settings, features=features or DEFAULT_FEATURES, progress=progress, cancel=cancel
        )
        write_report(report, folder / "report")
        c2st = report.c2st
        summary = {
            "accuracy": c2st.accuracy,
            "ci": [c2st.ci_low, c2st.ci_high],
            "kappa": c2st.kappa,
            "test_images": c2st.test_total,
        }
        if report.frechet is not None:
            summary["frechet_distance"] = report.frechet.distance
        return summary

    return _start(REALISM, params, work, created_by)


def start_mix_experiment(
    real_dir: str,
    synthetic_dir: str,
    val_dir: str,
    *,
    patches: int,
    seeds: int,
    epochs: int | None = None,
    config: str = "small",
    created_by: str | None = None,
) -> Started:
    """The reference's real/synthetic training-mix experiment (Table 5.2) on three patch data sets."""
    real_dir, synthetic_dir = check_folder(real_dir, "real patches"), check_folder(synthetic_dir, "synthetic patches")
    val_dir = check_folder(val_dir, "validation patches")
    params = {
        "real": real_dir,
        "synthetic": synthetic_dir,
        "val": val_dir,
        "patches": int(patches),
        "seeds": int(seeds),
        "epochs": epochs,
        "config": config,
    }

    def work(folder: Path, progress: Progress, cancel: threading.Event) -> dict:
        from renal_ldm.mix_experiment import MixExperimentSettings, run_mix_experiment

        settings = MixExperimentSettings(
            patches=int(patches), seeds=int(seeds), config=config, epochs=int(epochs) if epochs else None
        )

        def check_cancel() -> None:
            if cancel.is_set():
                raise RuntimeError("cancelled; the finished runs are kept in the report folder")

        def on_run(event) -> None:
            check_cancel()
            progress(f"{event.mix} seed {event.seed}", event.index - (0 if event.done else 1), event.total)

        report = run_mix_experiment(
            real_dir,
            synthetic_dir,
            val_dir,
            folder / "report",
            settings,
            on_run=on_run,
            log=lambda _line: check_cancel(),
        )
        return {"runs_trained": report.runs_trained, "table": report.table}

    return _start(MIX, params, work, created_by)


# ------------------------------------------------------------------------------------------- reading back


def report_folder(evaluation: repo.Evaluation) -> Path:
    """The run's folder, resolved inside the data directory (a row pointing elsewhere is refused)."""
    return resolve_in_home(evaluation.report_dir)


def report_files(evaluation: repo.Evaluation) -> list[Path]:
    """The report's files (markdown, JSON, charts), not the samples or masks it judged."""
    folder = report_folder(evaluation) / "report"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in REPORT_SUFFIXES)


def report_zip(evaluation: repo.Evaluation) -> bytes:
    """Every report file in one ZIP (for the download button)."""
    buffer = io.BytesIO()
    root = report_folder(evaluation) / "report"
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in report_files(evaluation):
            archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


def describe(evaluation: repo.Evaluation) -> str:
    """One line on a run: what, with which inputs, in which state."""
    p = evaluation.params
    if evaluation.kind == CAPTIONS:
        what = f"{p.get('n')} samples of model {p.get('model')} judged by {Path(str(p.get('segmenter'))).name}"
    elif evaluation.kind == REALISM:
        what = f"{Path(str(p.get('real'))).name} vs {Path(str(p.get('synthetic'))).name}"
    else:
        what = f"{p.get('patches')} patches x {p.get('seeds')} seeds"
    return f"#{evaluation.id} {KIND_LABELS[evaluation.kind]}: {what} ({evaluation.state})"
