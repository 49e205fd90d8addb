"""The Generate page's state rules, without Streamlit: widget defaults, following Compose's caption, the Library's
regenerate prefill, the model and sizes offered, the SampleRequest built from the form, and the run texts.

`state` is any mutable mapping (st.session_state on the page, a dict in tests); the page keeps widgets only.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from app import state as shared
from app.generation import CANCELLED, DONE, FAILED, QUEUED, QueueFull, import_sampling_stack, random_seed
from app.model_choices import size_options
from app.plain import literal
from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.models.configs import MAX_SAMPLING_STEPS, SAMPLING, smallest_margin
from renal_ldm.models.schedulers import SCHEDULERS, get_scheduler, scheduler_label, scheduler_names

if TYPE_CHECKING:
    from app.model_choices import ModelChoice
    from renal_ldm.sample import SampleRequest

MAX_STEPS = MAX_SAMPLING_STEPS  # the steps field's bound, with the other bounds here

COMPOSED, PRESET, FREE_TEXT = "Composed caption", "Preset", "Free text"
CAPTION_SOURCES = [COMPOSED, PRESET, FREE_TEXT]
COMPOSE_FREE_TEXT = shared.FROM_FREE_TEXT  # the app.state.CAPTION_SOURCE value Compose sets for a free-text caption
RANDOM, FIXED = "Random", "Fixed"
SEED_MODES = [RANDOM, FIXED]
SCHEDULER_CHOICES = list(scheduler_names())
SEED_LABEL = "Seed (image i gets seed + i)"
BATCH_HELP = "Images denoised together; each batch is saved and shown as soon as it is done."
ETA_LABEL = "/".join(e.label for e in SCHEDULERS.values() if e.takes_eta) + " eta (0 = deterministic)"
MAX_IMAGES = 64
MAX_BATCH = 16
MAX_GUIDANCE = 30.0
MAX_SEED_INPUT = 2**53 - 1  # the largest integer a browser number field holds exactly
JOBS_KEPT = 20  # job ids a browser session remembers (app.state.JOBS)

# Widget keys of the Generate page.
MODEL_KEY, SOURCE_KEY, FREE_TEXT_KEY, PRESET_KEY = "gen.model", "gen.source", "gen.free_text", "gen.preset"
N_KEY, STEPS_KEY, GUIDANCE_KEY, SCHEDULER_KEY = "gen.n", "gen.steps", "gen.guidance", "gen.scheduler"
SEED_MODE_KEY, SEED_KEY, BATCH_KEY, ETA_KEY, SIZE_KEY = "gen.seed_mode", "gen.seed", "gen.batch", "gen.eta", "gen.size"
NO_FRAME_KEY = "gen.no_frame"
NO_FRAME_LABEL = "No frame along the border"
NO_FRAME_HELP = (
    "For the last denoising steps, where the model would leave a faint frame along the border, denoise a margin "
    "around each image (mirrored from it) and crop it off: the same picture without its frame, for 4-8% more "
    "time (demo model, 128 and 256 px)"
)
MARGIN_LATE_KEY = "gen.margin_late"  # not a widget: False only to draw again a sample made with a whole margin
PRECISION_KEY = "gen.precision"  # not a widget: None (the app's setting) or the precision of a sample drawn again
CAPTION_MARKER_KEY = "gen.caption_marker"  # the Compose hand-over already followed
GUIDANCE_MODEL_KEY = "gen.guidance_model"  # the model whose recommended guidance the form was last given


def widget_defaults() -> dict[str, object]:
    """First values of the form: the reference sampling settings (configs.SAMPLING, SampleRequest's defaults)."""
    return {
        SOURCE_KEY: COMPOSED,
        FREE_TEXT_KEY: GENERATING_CAPTION,
        N_KEY: SAMPLING.images,
        STEPS_KEY: SAMPLING.steps,
        GUIDANCE_KEY: SAMPLING.guidance,
        SCHEDULER_KEY: SAMPLING.scheduler,
        SEED_MODE_KEY: RANDOM,
        SEED_KEY: SAMPLING.seed,
        BATCH_KEY: SAMPLING.batch_size,
        ETA_KEY: SAMPLING.eta,
        NO_FRAME_KEY: True,
        MARGIN_LATE_KEY: True,
        PRECISION_KEY: None,
    }


def apply_defaults(state: MutableMapping[str, Any]) -> None:
    """Fill in the form's defaults where the session has no value yet (what the user set stays)."""
    for key, value in widget_defaults().items():
        state.setdefault(key, value)


def follow_composed_caption(state: MutableMapping[str, Any]) -> None:
    """Select the caption source once per caption sent from Compose (app.state.CAPTION and CAPTION_SOURCE): free
    text goes into the text box, a composed caption or a preset selects "Composed caption". The same hand-over
    seen again changes nothing, so the user's own later choice of source stays."""
    composed, composed_source = state.get(shared.CAPTION), state.get(shared.CAPTION_SOURCE)
    marker = (composed, composed_source)
    if composed is None or state.get(CAPTION_MARKER_KEY) == marker:
        return
    state[CAPTION_MARKER_KEY] = marker
    if composed_source == COMPOSE_FREE_TEXT:
        state[SOURCE_KEY], state[FREE_TEXT_KEY] = FREE_TEXT, composed
    else:
        state[SOURCE_KEY] = COMPOSED


def regenerate_prefill(params: Mapping[str, Any]) -> tuple[dict[str, object], str]:
    """(form values, info message) that draw a Library sample again: its every parameter, one image, its seed."""
    values: dict[str, object] = {
        SOURCE_KEY: FREE_TEXT,
        FREE_TEXT_KEY: params["caption"],
        N_KEY: 1,
        SEED_MODE_KEY: FIXED,
        SEED_KEY: int(params["seed"]),
        STEPS_KEY: int(params["steps"]),
        GUIDANCE_KEY: float(params["guidance"]),
        SCHEDULER_KEY: params["scheduler"],
        ETA_KEY: float(params["eta"]),
        SIZE_KEY: int(params["size"]),
        NO_FRAME_KEY: bool(params.get("margin")),
        MARGIN_LATE_KEY: bool(params.get("margin_late", False)),  # samples before late margins had whole ones
        PRECISION_KEY: params.get("precision") or "fp32",  # samples before precision was recorded: the fp32 default
        MODEL_KEY: params["model_name"],
        GUIDANCE_MODEL_KEY: params["model_name"],  # the sample's own guidance, not the model's recommendation
    }
    message = (
        f"Prefilled from Library sample #{params['sample_id']}: same caption, model, seed "
        f"{params['seed']}, steps, guidance, scheduler, size and precision. Press Generate to draw it again."
    )
    return values, message


def settle_model(state: MutableMapping[str, Any], names: list[str], regenerate: Mapping[str, Any] | None) -> str | None:
    """Keep the selected model when it is offered, else select the first; a warning when a regenerated sample's
    model is not available."""
    if state.get(MODEL_KEY) in names:
        return None
    state[MODEL_KEY] = names[0]
    if regenerate and regenerate["model_name"] not in names:
        return f"The sample's model {regenerate['model_name']!r} is not available; pick another."
    return None


def settle_guidance(state: MutableMapping[str, Any], model: ModelChoice) -> None:
    """Give the guidance field the selected model's recommended guidance (its manifest; else the reference's
    1.5) when a model is first selected or another one is picked; a value the user typed for this model stays."""
    if state.get(GUIDANCE_MODEL_KEY) == model.name:
        return
    state[GUIDANCE_MODEL_KEY] = model.name
    state[GUIDANCE_KEY] = float(model.guidance if model.guidance is not None else SAMPLING.guidance)


def composed_caption(state: Mapping[str, Any]) -> tuple[str, str | None]:
    """(caption, note) for the "Composed caption" source: Compose's caption, or the study's while nothing is
    composed."""
    if composed := state.get(shared.CAPTION):
        return composed, None
    return GENERATING_CAPTION, "Nothing composed yet, so this is the reference study's caption."


def can_generate(source: str, caption: str) -> bool:
    """False only when the preset source has no preset to take the caption from (an empty free text is allowed:
    it samples unconditionally)."""
    return not (source == PRESET and not caption)


def offered_sizes(model: ModelChoice, regenerate: Mapping[str, Any] | None = None) -> list[int]:
    """size_options for the model, plus a regenerated sample's size when this model can sample it."""
    sizes = size_options(model)
    if regenerate and model.size_multiple:
        size = int(regenerate["size"])
        if size not in sizes and size % model.size_multiple == 0:
            sizes = sorted({*sizes, size})
    return sizes


def settle_size(
    state: MutableMapping[str, Any], model: ModelChoice, regenerate: Mapping[str, Any] | None = None
) -> list[int]:
    """The sizes to offer (offered_sizes); the selected size stays when offered, else the trained size (or the
    first offered) is selected."""
    sizes = offered_sizes(model, regenerate)
    if state.get(SIZE_KEY) not in sizes:
        state[SIZE_KEY] = model.image_size if model.image_size in sizes else sizes[0]
    return sizes


def eta_applies(scheduler: str) -> bool:
    """Whether the eta field means anything for this scheduler (it is disabled otherwise)."""
    return get_scheduler(scheduler).takes_eta


def build_request(
    values: Mapping[str, Any], caption: str, seed_source: Callable[[], int] = random_seed, size_multiple: int = 1
) -> SampleRequest:
    """The SampleRequest of the form's values: a fresh seed in Random mode, eta only where the scheduler takes it,
    and with "No frame" the smallest margin the model (of this size multiple) allows, late unless drawing again a
    sample made with a whole margin."""
    import_sampling_stack()  # waits for the worker's warm-up import instead of racing it (see there)
    from renal_ldm.sample import SampleRequest

    scheduler = values[SCHEDULER_KEY]
    margin = smallest_margin(size_multiple) if values.get(NO_FRAME_KEY) else 0
    return SampleRequest(
        caption=caption,
        n=int(values[N_KEY]),
        seed=seed_source() if values[SEED_MODE_KEY] == RANDOM else int(values[SEED_KEY]),
        steps=int(values[STEPS_KEY]),
        guidance=float(values[GUIDANCE_KEY]),
        scheduler=scheduler,
        eta=float(values[ETA_KEY]) if eta_applies(scheduler) else 0.0,
        size=int(values[SIZE_KEY]),
        batch_size=int(values[BATCH_KEY]),
        margin=margin,
        margin_late=margin > 0 and bool(values.get(MARGIN_LATE_KEY, True)),
        precision=values.get(PRECISION_KEY) or None,
    )


OWNER_KEY = "gen.owner"


def session_owner(state: MutableMapping[str, Any]) -> str:
    """A random id of this browser session, the owner of its generation jobs (for the per-session queue limit)."""
    if not isinstance(state.get(OWNER_KEY), str):
        state[OWNER_KEY] = secrets.token_hex(8)
    return state[OWNER_KEY]


def submit_run(service: Any, model: Any, state: MutableMapping[str, Any], caption: str) -> str | None:
    """Queue the form's request for this session and remember the job; the refusal when the queue is full."""
    try:
        request = build_request(state, caption, size_multiple=model.size_multiple or 1)
        job_id = service.submit(model, request, owner=session_owner(state))
    except QueueFull as exc:
        return str(exc)
    state[shared.JOBS] = remember_job(state.get(shared.JOBS, []), job_id)
    return None


def remember_job(jobs: list[str], job_id: str) -> list[str]:
    """The session's job ids with the new one first; only the latest JOBS_KEPT are kept."""
    return [job_id, *jobs][:JOBS_KEPT]


def run_summary(snap: Any) -> str:
    """One line on what a run draws: images, size, seeds, steps of which sampler, guidance, model."""
    r = snap.request
    guidance = "the model's" if r.guidance is None else r.guidance
    return (
        f"Run `{snap.run_id}`: {r.n} image(s), {r.size} px, seeds {r.seed}..{r.seed + r.n - 1}, "
        f"{r.steps} {scheduler_label(r.scheduler)} steps, guidance {guidance}, model {literal(snap.model_name)}"
    )


def run_progress(snap: Any) -> tuple[float, str] | None:
    """(fraction, text) of the progress bar of a queued or running run; None once it has ended."""
    if snap.state == QUEUED:
        return 0.0, f"Queued: {snap.queue_position} run(s) ahead"
    if snap.active:
        return snap.fraction, f"Denoising: step {snap.step} of {snap.total}"
    return None


def run_outcome(snap: Any) -> tuple[str, str] | None:
    """(kind, text) of a finished run's message, kind being "success", "warning" or "error"; None while active."""
    count = len(snap.sample_ids)
    first = f"first image after {snap.seconds_to_first_image:.1f} s" if snap.first_image_at else "no image"
    if snap.state == DONE:
        return "success", f"Done: {count} image(s) in {snap.seconds_total:.1f} s ({first})."
    if snap.state == CANCELLED:
        return "warning", f"Cancelled. The {count} image(s) drawn before that are kept (also in the Library)."
    if snap.state == FAILED:
        kept = f" ({count} image(s) drawn before are kept)" if count else ""
        return "error", f"Generation failed: {snap.error}{kept}"
    return None
