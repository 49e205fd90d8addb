"""Generate: pick a model and a caption, set the sampling parameters, watch the images arrive, download them."""

import streamlit as st

from app import generate_form as form
from app import resources, state
from app.compose import caption_warning
from app.downloads import png_bytes, png_name, shown_file, zip_name, zip_samples
from app.library import run_samples
from app.model_choices import NO_MODEL_HELP, available_models, register_checkpoint, unusable_models
from app.pages_registry import page_file
from app.plain import literal
from db import repository as repo
from renal_ldm.models.schedulers import scheduler_label
from renal_ldm.paths import data_home

POLL_SECONDS = 0.5
GALLERY_COLUMNS = 3

service = resources.generation_service()
st.title("Generate tissue")

form.apply_defaults(st.session_state)
form.follow_composed_caption(st.session_state)  # a caption sent from Compose selects its source once

# "Generate again with this seed" from the Library: every parameter of that sample, one image.
if regenerate := st.session_state.pop(state.REGENERATE, None):
    prefill, message = form.regenerate_prefill(regenerate)
    st.session_state.update(prefill)
    st.info(message)

choices = available_models()

with st.expander("Register a checkpoint directory", expanded=not choices, icon=":material/add_circle:"):
    with st.form("register_model"):
        reg_name = st.text_input("Name", max_chars=100, placeholder="my-model")
        reg_path = st.text_input("Checkpoint directory on the server", placeholder="/path/to/runs/ldm/model")
        if st.form_submit_button("Register"):
            try:
                registered = register_checkpoint(reg_name, reg_path)
            except ValueError as exc:
                st.error(literal(exc))
            else:
                st.session_state["gen.registered"] = registered.name
                st.rerun()
    if name := st.session_state.pop("gen.registered", None):
        st.success(f"Registered {literal(repr(name))}: it is now in the model list.")
        st.session_state[form.MODEL_KEY] = name

for broken in unusable_models():
    st.warning(f"Model {literal(repr(broken.name))} is registered but cannot be used: {literal(broken.problem)}")

if not choices:
    st.warning("No model is available, so nothing can be generated yet.", icon=":material/warning:")
    st.markdown(NO_MODEL_HELP)
    st.stop()

settings, results = st.columns([1, 1], gap="large")

with settings:
    by_name = {c.name: c for c in choices}
    if warning := form.settle_model(st.session_state, list(by_name), regenerate):
        st.warning(warning)
    model = by_name[st.selectbox("Model", list(by_name), format_func=lambda n: by_name[n].label, key=form.MODEL_KEY)]
    form.settle_guidance(st.session_state, model)

    st.subheader("Caption")
    source = st.radio("Caption from", form.CAPTION_SOURCES, horizontal=True, key=form.SOURCE_KEY)
    if source == form.COMPOSED:
        caption, note = form.composed_caption(st.session_state)
        if note:
            st.caption(note)
        st.code(caption, language=None, wrap_lines=True)
        st.page_link(page_file("compose.py"), label="Compose another caption", icon=":material/edit_note:")
    elif source == form.PRESET:
        presets = {p.name: p.caption for p in repo.list_presets()}
        caption = presets[st.selectbox("Preset", list(presets), key=form.PRESET_KEY)] if presets else ""
        if presets:
            st.code(caption, language=None, wrap_lines=True)
        else:
            st.info("No presets yet: save one on the Compose page.")
    else:
        caption = st.text_area("Caption", height=150, key=form.FREE_TEXT_KEY)
        if warning := caption_warning(caption):
            st.warning(warning)

    st.subheader("Sampling")
    sizes = form.settle_size(st.session_state, model, regenerate)
    c1, c2, c3 = st.columns(3)
    c1.number_input("Images", min_value=1, max_value=form.MAX_IMAGES, step=1, key=form.N_KEY)
    c2.number_input("Steps", min_value=1, max_value=form.MAX_STEPS, step=1, key=form.STEPS_KEY)
    c3.number_input(
        "Guidance scale",
        min_value=0.0,
        max_value=form.MAX_GUIDANCE,
        step=0.1,
        key=form.GUIDANCE_KEY,
        help="the model's recommended scale" if model.guidance is not None else "the reference study's scale",
    )
    c4, c5, _ = st.columns(3)
    scheduler = c4.selectbox("Scheduler", form.SCHEDULER_CHOICES, format_func=scheduler_label, key=form.SCHEDULER_KEY)
    c5.selectbox("Size (px)", sizes, key=form.SIZE_KEY, help=f"trained at {model.image_size} px")
    s1, s2 = st.columns(2)
    seed_mode = s1.radio("Seed", form.SEED_MODES, horizontal=True, key=form.SEED_MODE_KEY)
    random = seed_mode == form.RANDOM
    s2.number_input(
        form.SEED_LABEL, min_value=0, max_value=form.MAX_SEED_INPUT, step=1, key=form.SEED_KEY, disabled=random
    )
    with st.expander("Advanced"):
        a1, a2 = st.columns(2)
        a1.number_input("Batch size", min_value=1, max_value=form.MAX_BATCH, key=form.BATCH_KEY, help=form.BATCH_HELP)
        no_eta = not form.eta_applies(scheduler)
        a2.number_input(form.ETA_LABEL, min_value=0.0, max_value=1.0, step=0.1, key=form.ETA_KEY, disabled=no_eta)
        a1.checkbox(form.NO_FRAME_LABEL, key=form.NO_FRAME_KEY, help=form.NO_FRAME_HELP)

    ready = form.can_generate(source, caption)
    if st.button("Generate", type="primary", icon=":material/auto_awesome:", key="gen.submit", disabled=not ready):
        if refusal := form.submit_run(service, model, st.session_state, caption):
            st.error(refusal)


def show_gallery(samples: list, home) -> None:
    columns = st.columns(GALLERY_COLUMNS)
    for index, sample in enumerate(samples):
        with columns[index % GALLERY_COLUMNS]:
            path, problem = shown_file(sample, home)
            if problem:
                st.warning(literal(problem))
                continue
            st.image(str(path), caption=f"seed {sample.seed}", width="stretch")
            png = dict(data=png_bytes(sample, home), file_name=png_name(sample), mime="image/png")
            st.download_button("PNG", **png, key=f"gen.png_{sample.id}", on_click="ignore", icon=":material/download:")


def job_panel(job_id: str, polling: bool) -> None:
    snap = service.snapshot(job_id)
    if snap is None:
        st.info("This run is no longer tracked by the server; its images are in the Library.")
        return
    st.markdown(form.run_summary(snap))
    if progress := form.run_progress(snap):
        st.progress(progress[0], text=progress[1])
    if snap.active:
        st.button("Cancel", key=f"gen.cancel_{job_id}", on_click=service.cancel, args=(job_id,))
    if outcome := form.run_outcome(snap):
        getattr(st, outcome[0])(outcome[1])  # st.success, st.warning or st.error
    home = data_home()
    samples = run_samples(snap.run_id) if snap.sample_ids else []
    if samples and not snap.active:
        label = f"Download all {len(samples)} as ZIP (PNG + JSON)"
        zipped = dict(data=lambda: zip_samples(samples, home), file_name=zip_name(samples), mime="application/zip")
        st.download_button(label, **zipped, key=f"gen.zip_{job_id}", on_click="ignore", icon=":material/folder_zip:")
    show_gallery(samples, home)
    if polling and not snap.active:
        st.rerun()  # the whole page once more, now without polling


with results:
    st.subheader("Latest run")
    jobs = st.session_state.get(state.JOBS, [])
    if not jobs:
        st.caption("Images appear here batch by batch while they are drawn; every run is kept in the Library.")
    else:
        current = service.snapshot(jobs[0])
        polling = current is not None and current.active
        st.fragment(job_panel, run_every=POLL_SECONDS if polling else None)(jobs[0], polling)
    st.page_link(page_file("library.py"), label="All samples are in the Library", icon=":material/photo_library:")
