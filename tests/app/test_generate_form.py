"""Generate-page state rules without a browser: defaults, the Compose hand-over, the regenerate prefill, sizes,
the request built from the form, and the run texts."""

from __future__ import annotations

import pytest

from app import generate_form as form
from app import state as shared
from app.generation import CANCELLED, DONE, FAILED, QUEUED, RUNNING, JobSnapshot
from app.model_choices import ModelChoice
from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.models.configs import SAMPLING
from renal_ldm.sample import SampleRequest

MODEL = ModelChoice("demo", "/models/demo", "shipped", image_size=128, size_multiple=32)
REGENERATE = {
    "sample_id": 7,
    "caption": "pink tissue",
    "model_name": "demo",
    "seed": 5,
    "steps": 20,
    "guidance": 2.5,
    "scheduler": "dpmpp",
    "eta": 0.0,
    "size": 96,
}


def filled_form(**values) -> dict:
    state: dict = {}
    form.apply_defaults(state)
    state[form.SIZE_KEY] = 128
    state.update(values)
    return state


def test_defaults_are_the_reference_sampling_settings_and_keep_what_the_user_set():
    state = {form.STEPS_KEY: 7}
    form.apply_defaults(state)
    assert state[form.STEPS_KEY] == 7
    assert (state[form.SCHEDULER_KEY], state[form.GUIDANCE_KEY], state[form.ETA_KEY]) == ("ddim", 1.5, 0.0)
    assert state[form.BATCH_KEY] == SampleRequest.batch_size == SAMPLING.batch_size
    assert (state[form.N_KEY], state[form.SEED_KEY], state[form.SEED_MODE_KEY]) == (4, 0, form.RANDOM)
    assert (state[form.SOURCE_KEY], state[form.FREE_TEXT_KEY]) == (form.COMPOSED, GENERATING_CAPTION)
    assert state[form.SCHEDULER_KEY] in form.SCHEDULER_CHOICES


def test_a_composed_caption_selects_its_source_once():
    state = {shared.CAPTION: "The image shows a high amount of Glomeruli.", shared.CAPTION_SOURCE: "composer"}
    form.follow_composed_caption(state)
    assert state[form.SOURCE_KEY] == form.COMPOSED
    state[form.SOURCE_KEY] = form.PRESET  # the user picks another source afterwards
    form.follow_composed_caption(state)
    assert state[form.SOURCE_KEY] == form.PRESET  # the same hand-over does not undo it

    state.update({shared.CAPTION: "my own words", shared.CAPTION_SOURCE: "free text"})
    form.follow_composed_caption(state)
    assert (state[form.SOURCE_KEY], state[form.FREE_TEXT_KEY]) == (form.FREE_TEXT, "my own words")


def test_nothing_composed_changes_nothing_and_shows_the_studys_caption():
    state: dict = {form.SOURCE_KEY: form.PRESET}
    form.follow_composed_caption(state)
    assert state == {form.SOURCE_KEY: form.PRESET}
    caption, note = form.composed_caption(state)
    assert caption == GENERATING_CAPTION and "Nothing composed yet" in note
    assert form.composed_caption({shared.CAPTION: "x"}) == ("x", None)


def test_generate_needs_a_preset_only_for_the_preset_source():
    assert not form.can_generate(form.PRESET, "")
    assert form.can_generate(form.PRESET, "a caption")
    assert form.can_generate(form.FREE_TEXT, "")  # empty free text samples unconditionally


def test_regenerate_prefill_sets_every_parameter_and_says_so():
    values, message = form.regenerate_prefill(REGENERATE)
    assert values == {
        form.SOURCE_KEY: form.FREE_TEXT,
        form.FREE_TEXT_KEY: "pink tissue",
        form.N_KEY: 1,
        form.SEED_MODE_KEY: form.FIXED,
        form.SEED_KEY: 5,
        form.STEPS_KEY: 20,
        form.GUIDANCE_KEY: 2.5,
        form.SCHEDULER_KEY: "dpmpp",
        form.ETA_KEY: 0.0,
        form.SIZE_KEY: 96,
        form.NO_FRAME_KEY: False,
        form.MARGIN_LATE_KEY: False,
        form.PRECISION_KEY: "fp32",
        form.MODEL_KEY: "demo",
        form.GUIDANCE_MODEL_KEY: "demo",
    }
    assert form.regenerate_prefill({**REGENERATE, "margin": 16})[0][form.NO_FRAME_KEY] is True
    assert message.startswith("Prefilled from Library sample #7: same caption, model, seed 5,")


def test_the_guidance_field_takes_the_selected_models_recommendation_once():
    recommending = ModelChoice("v2", "/models/v2", "user", image_size=128, size_multiple=32, guidance=3.0)
    state: dict = {form.GUIDANCE_KEY: 1.5}
    form.settle_guidance(state, recommending)
    assert state[form.GUIDANCE_KEY] == 3.0
    state[form.GUIDANCE_KEY] = 4.5  # the user's own value for this model stays across reruns
    form.settle_guidance(state, recommending)
    assert state[form.GUIDANCE_KEY] == 4.5
    form.settle_guidance(state, MODEL)  # another model, without a recommendation: the reference's 1.5
    assert state[form.GUIDANCE_KEY] == 1.5


def test_a_regenerated_sample_keeps_its_own_guidance():
    values, _ = form.regenerate_prefill(REGENERATE)
    state = dict(values)
    form.settle_guidance(state, ModelChoice("demo", "/m", "shipped", 128, 32, guidance=3.0))
    assert state[form.GUIDANCE_KEY] == 2.5


def test_an_unavailable_model_falls_back_to_the_first_with_a_warning_for_a_regenerated_sample():
    state = {form.MODEL_KEY: "gone"}
    assert form.settle_model(state, ["demo", "mine"], None) is None and state[form.MODEL_KEY] == "demo"
    state = {form.MODEL_KEY: "mine"}
    assert form.settle_model(state, ["demo", "mine"], None) is None and state[form.MODEL_KEY] == "mine"
    state = {form.MODEL_KEY: "gone"}
    warning = form.settle_model(state, ["demo"], {**REGENERATE, "model_name": "gone"})
    assert warning == "The sample's model 'gone' is not available; pick another." and state[form.MODEL_KEY] == "demo"


def test_sizes_offered_include_a_regenerated_size_the_model_can_sample():
    assert form.offered_sizes(MODEL) == [64, 128, 256]
    assert form.offered_sizes(MODEL, REGENERATE) == [64, 96, 128, 256]
    assert form.offered_sizes(MODEL, {**REGENERATE, "size": 100}) == [64, 128, 256]  # not a multiple of 32


def test_the_selected_size_stays_when_offered_else_the_trained_size():
    state = {form.SIZE_KEY: 256}
    assert form.settle_size(state, MODEL) == [64, 128, 256] and state[form.SIZE_KEY] == 256
    state = {form.SIZE_KEY: 96}
    form.settle_size(state, MODEL)
    assert state[form.SIZE_KEY] == 128
    state = {form.SIZE_KEY: 96}
    form.settle_size(state, MODEL, REGENERATE)
    assert state[form.SIZE_KEY] == 96


def test_the_request_takes_the_form_values_and_a_fresh_seed_in_random_mode():
    state = filled_form(**{form.N_KEY: 3, form.STEPS_KEY: 12, form.GUIDANCE_KEY: 2, form.ETA_KEY: 0.4})
    request = form.build_request(state, "a caption", seed_source=lambda: 1234)
    assert request == SampleRequest(
        caption="a caption",
        n=3,
        seed=1234,
        steps=12,
        guidance=2.0,
        scheduler="ddim",
        eta=0.4,
        size=128,
        batch_size=SAMPLING.batch_size,
    )
    state[form.SEED_MODE_KEY], state[form.SEED_KEY] = form.FIXED, 42
    assert form.build_request(state, "a caption", seed_source=lambda: 1234).seed == 42


def test_no_frame_is_on_by_default_and_asks_for_the_smallest_margin_late():
    request = form.build_request(filled_form(), "x", seed_source=lambda: 0, size_multiple=32)
    assert (request.margin, request.margin_late) == (16, True)
    state = filled_form(**{form.NO_FRAME_KEY: False})
    request = form.build_request(state, "x", seed_source=lambda: 0, size_multiple=32)
    assert (request.margin, request.margin_late) == (0, False)


def test_drawing_again_keeps_a_samples_kind_of_margin():
    """A sample drawn with a margin over every step (before late margins) is drawn again so, a new one late."""
    for sidecar, late in (({"margin": 16}, False), ({"margin": 16, "margin_late": True}, True)):
        values, _ = form.regenerate_prefill({**REGENERATE, **sidecar})
        request = form.build_request({**filled_form(), **values}, "x", seed_source=lambda: 0, size_multiple=32)
        assert (request.margin, request.margin_late) == (16, late)


def test_a_new_request_samples_in_the_apps_precision_and_drawing_again_in_the_samples_own():
    """A new image leaves the precision to the app's setting (auto: bf16 where native); a Library sample is drawn
    again in the precision its sidecar records, fp32 where it records none (the default before it was recorded)."""
    assert form.build_request(filled_form(), "x", seed_source=lambda: 0).precision is None
    for sidecar, precision in (({}, "fp32"), ({"precision": "bf16"}, "bf16"), ({"precision": "fp32"}, "fp32")):
        values, message = form.regenerate_prefill({**REGENERATE, **sidecar})
        assert form.build_request({**filled_form(), **values}, "x", seed_source=lambda: 0).precision == precision
    assert "size and precision" in message


def test_eta_is_sent_only_to_a_scheduler_that_takes_it():
    assert form.eta_applies("ddim") and not form.eta_applies("dpmpp")
    assert form.ETA_LABEL == "DDIM eta (0 = deterministic)"
    state = filled_form(**{form.SCHEDULER_KEY: "dpmpp", form.ETA_KEY: 0.7})
    assert form.build_request(state, "x", seed_source=lambda: 0).eta == 0.0


def test_the_session_remembers_the_latest_jobs_first():
    jobs = [str(i) for i in range(form.JOBS_KEPT)]
    assert form.remember_job(jobs, "new") == ["new", *jobs[:-1]]


def snapshot(state: str, **changes) -> JobSnapshot:
    values = dict(
        id="j",
        state=state,
        model_name="demo",
        model_path="/m",
        run_id="r1",
        step=3,
        total=12,
        sample_ids=(1, 2),
        error=None,
        submitted_at=100.0,
        started_at=100.5,
        first_image_at=101.5,
        finished_at=104.0,
        queue_position=0,
        request=SampleRequest(caption="c", n=2, seed=9, steps=12, guidance=1.5, scheduler="dpmpp", size=64),
    )
    return JobSnapshot(**{**values, **changes})


def test_run_summary_names_the_scheduler_by_its_label():
    assert form.run_summary(snapshot(DONE)) == (
        "Run `r1`: 2 image(s), 64 px, seeds 9..10, 12 DPM-Solver++ steps, guidance 1.5, model demo"
    )


@pytest.mark.parametrize(
    "state,changes,expected",
    [
        (QUEUED, {"queue_position": 2}, (0.0, "Queued: 2 run(s) ahead")),
        (RUNNING, {}, (0.25, "Denoising: step 3 of 12")),
        (DONE, {}, None),
    ],
)
def test_progress_only_while_a_run_is_queued_or_running(state, changes, expected):
    assert form.run_progress(snapshot(state, **changes)) == expected


@pytest.mark.parametrize(
    "state,changes,expected",
    [
        (RUNNING, {}, None),
        (DONE, {}, ("success", "Done: 2 image(s) in 4.0 s (first image after 1.5 s).")),
        (DONE, {"first_image_at": None, "sample_ids": ()}, ("success", "Done: 0 image(s) in 4.0 s (no image).")),
        (CANCELLED, {}, ("warning", "Cancelled. The 2 image(s) drawn before that are kept (also in the Library).")),
        (FAILED, {"error": "boom"}, ("error", "Generation failed: boom (2 image(s) drawn before are kept)")),
        (FAILED, {"error": "boom", "sample_ids": ()}, ("error", "Generation failed: boom")),
    ],
)
def test_a_finished_run_says_how_it_ended(state, changes, expected):
    assert form.run_outcome(snapshot(state, **changes)) == expected


def test_a_full_queue_is_reported_and_no_job_is_remembered():
    from app.generation import QueueFull

    class FullService:
        def submit(self, model, request, *, owner):
            assert owner == form.session_owner(state)  # the same id on every submit of this session
            raise QueueFull("This browser session already has 64 image(s) queued or running")

    state: dict = {}
    form.apply_defaults(state)
    state[form.SIZE_KEY] = 32  # the size box is settled per model before Generate can be pressed
    refusal = form.submit_run(FullService(), MODEL, state, "a caption")
    assert refusal == "This browser session already has 64 image(s) queued or running"
    assert state.get(shared.JOBS, []) == []
