"""Generate: pick a model and a caption, set the sampling parameters, watch the images arrive, download them."""

import streamlit as st

from app import resources, state
from app.compose import caption_warning
from app.downloads import png_bytes, png_name, sample_file, zip_name, zip_samples
from app.generation import CANCELLED, DONE, FAILED, QUEUED, random_seed
from app.library import run_samples
from app.model_choices import NO_MODEL_HELP, available_models, register_checkpoint, size_options, unusable_models
from app.pages_registry import page_file
from db import repository as repo
from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.models.configs import SCHEDULERS
from renal_ldm.paths import data_home
from renal_ldm.sample import DEFAULT_BATCH_SIZE, DEFAULT_GUIDANCE, DEFAULT_STEPS, MAX_STEPS, SampleRequest

COMPOSED, PRESET, FREE_TEXT = "Composed caption", "Preset", "Free text"
SCHEDULER_NAMES = {"ddim": "DDIM", "dpmpp": "DPM-Solver++"}
RANDOM, FIXED = "Random", "Fixed"
MAX_IMAGES = 64
MAX_SEED_INPUT = 2**53 - 1  # the largest integer a browser number field holds exactly
POLL_SECONDS = 0.5
GALLERY_COLUMNS = 3

DEFAULTS = {
    "gen.source": COMPOSED,
    "gen.free_text": GENERATING_CAPTION,
    "gen.n": 4,
    "gen.steps": DEFAULT_STEPS,
    "gen.guidance": DEFAULT_GUIDANCE,
    "gen.scheduler": "ddim",
    "gen.seed_mode": RANDOM,
    "gen.seed": 0,
    "gen.batch": DEFAULT_BATCH_SIZE,
    "gen.eta": 0.0,
}

service = resources.generation_service()
st.title("Generate tissue")

for key, value in DEFAULTS.items():
    st.session_state.setdefault(key, value)

# A caption sent from Compose (or a preset loaded there) selects the matching source once.
composed = st.session_state.get(state.CAPTION)
marker = (composed, st.session_state.get(state.CAPTION_SOURCE))
if composed is not None and st.session_state.get("gen.caption_marker") != marker:
    st.session_state["gen.caption_marker"] = marker
    if marker[1] == "free text":
        st.session_state["gen.source"], st.session_state["gen.free_text"] = FREE_TEXT, composed
    else:
        st.session_state["gen.source"] = COMPOSED

# "Generate again with this seed" from the Library: every parameter of that sample, one image.
regenerate = st.session_state.pop(state.REGENERATE, None)
if regenerate:
    st.session_state.update(
        {
            "gen.source": FREE_TEXT,
            "gen.free_text": regenerate["caption"],
            "gen.n": 1,
            "gen.seed_mode": FIXED,
            "gen.seed": int(regenerate["seed"]),
            "gen.steps": int(regenerate["steps"]),
            "gen.guidance": float(regenerate["guidance"]),
            "gen.scheduler": regenerate["scheduler"],
            "gen.eta": float(regenerate["eta"]),
            "gen.size": int(regenerate["size"]),
            "gen.model": regenerate["model_name"],
        }
    )
    st.info(
        f"Prefilled from Library sample #{regenerate['sample_id']}: same caption, model, seed "
        f"{regenerate['seed']}, steps, guidance, scheduler and size. Press Generate to draw it again."
    )

choices = available_models()

with st.expander("Register a checkpoint directory", expanded=not choices, icon=":material/add_circle:"):
    with st.form("register_model"):
        reg_name = st.text_input("Name", max_chars=100, placeholder="my-model")
        reg_path = st.text_input("Checkpoint directory on the server", placeholder="/path/to/runs/ldm/model")
        if st.form_submit_button("Register"):
            try:
                registered = register_checkpoint(reg_name, reg_path)
            except ValueError as exc:
                st.error(str(exc))
            else:
                st.session_state["gen.registered"] = registered.name
                st.rerun()
    if name := st.session_state.pop("gen.registered", None):
        st.success(f"Registered {name!r}: it is now in the model list.")
        st.session_state["gen.model"] = name

for broken in unusable_models():
    st.warning(f"Model {broken.name!r} is registered but cannot be used: {broken.problem}")

if not choices:
    st.warning("No model is available, so nothing can be generated yet.", icon=":material/warning:")
    st.markdown(NO_MODEL_HELP)
    st.stop()

settings, results = st.columns([1, 1], gap="large")

with settings:
    by_name = {c.name: c for c in choices}
    if st.session_state.get("gen.model") not in by_name:
        if regenerate and regenerate["model_name"] not in by_name:
            st.warning(f"The sample's model {regenerate['model_name']!r} is not available; pick another.")
        st.session_state["gen.model"] = choices[0].name
    model_name = st.selectbox("Model", list(by_name), format_func=lambda n: by_name[n].label, key="gen.model")
    model = by_name[model_name]

    st.subheader("Caption")
    source = st.radio("Caption from", [COMPOSED, PRESET, FREE_TEXT], horizontal=True, key="gen.source")
    if source == COMPOSED:
        caption = composed or GENERATING_CAPTION
        if not composed:
            st.caption("Nothing composed yet, so this is the reference study's caption.")
        st.code(caption, language=None, wrap_lines=True)
        st.page_link(page_file("compose.py"), label="Compose another caption", icon=":material/edit_note:")
    elif source == PRESET:
        presets = {p.name: p for p in repo.list_presets()}
        if presets:
            preset = st.selectbox("Preset", list(presets), key="gen.preset")
            caption = presets[preset].caption
            st.code(caption, language=None, wrap_lines=True)
        else:
            caption = ""
            st.info("No presets yet: save one on the Compose page.")
    else:
        caption = st.text_area("Caption", height=150, key="gen.free_text")
        if warning := caption_warning(caption):
            st.warning(warning)

    st.subheader("Sampling")
    sizes = size_options(model)
    if regenerate and int(regenerate["size"]) not in sizes and model.size_multiple:
        if int(regenerate["size"]) % model.size_multiple == 0:
            sizes = sorted({*sizes, int(regenerate["size"])})
    if st.session_state.get("gen.size") not in sizes:
        st.session_state["gen.size"] = model.image_size if model.image_size in sizes else sizes[0]

    c1, c2, c3 = st.columns(3)
    n = c1.number_input("Images", min_value=1, max_value=MAX_IMAGES, step=1, key="gen.n")
    steps = c2.number_input("Steps", min_value=1, max_value=MAX_STEPS, step=1, key="gen.steps")
    guidance = c3.number_input("Guidance scale", min_value=0.0, max_value=30.0, step=0.1, key="gen.guidance")
    c4, c5, _ = st.columns(3)
    scheduler = c4.selectbox("Scheduler", SCHEDULERS, format_func=SCHEDULER_NAMES.get, key="gen.scheduler")
    size = c5.selectbox("Size (px)", sizes, key="gen.size", help=f"trained at {model.image_size} px")

    s1, s2 = st.columns(2)
    seed_mode = s1.radio("Seed", [RANDOM, FIXED], horizontal=True, key="gen.seed_mode")
    seed_input = s2.number_input(
        "Seed (image i gets seed + i)",
        min_value=0,
        max_value=MAX_SEED_INPUT,
        step=1,
        key="gen.seed",
        disabled=seed_mode == RANDOM,
    )
    with st.expander("Advanced"):
        a1, a2 = st.columns(2)
        batch = a1.number_input(
            "Batch size", min_value=1, max_value=16, step=1, key="gen.batch",
            help="Images denoised together; each batch is saved and shown as soon as it is done.",
        )
        eta = a2.number_input(
            "DDIM eta (0 = deterministic)", min_value=0.0, max_value=1.0, step=0.1, key="gen.eta",
            disabled=scheduler != "ddim",
        )

    no_preset = source == PRESET and not caption
    if st.button("Generate", type="primary", icon=":material/auto_awesome:", key="gen.submit", disabled=no_preset):
        seed = random_seed() if seed_mode == RANDOM else int(seed_input)
        request = SampleRequest(
            caption=caption,
            n=int(n),
            seed=seed,
            steps=int(steps),
            guidance=float(guidance),
            scheduler=scheduler,
            eta=float(eta) if scheduler == "ddim" else 0.0,
            size=int(size),
            batch_size=int(batch),
        )
        job_id = service.submit(model, request)
        st.session_state[state.JOBS] = [job_id, *st.session_state.get(state.JOBS, [])][:20]


def show_gallery(samples: list, home) -> None:
    columns = st.columns(GALLERY_COLUMNS)
    for index, sample in enumerate(samples):
        with columns[index % GALLERY_COLUMNS]:
            path = sample_file(sample, home)
            if not path.is_file():
                st.warning(f"seed {sample.seed}: image file missing")
                continue
            st.image(str(path), caption=f"seed {sample.seed}", width="stretch")
            st.download_button(
                "PNG",
                data=png_bytes(sample, home),
                file_name=png_name(sample),
                mime="image/png",
                key=f"gen.png_{sample.id}",
                on_click="ignore",
                icon=":material/download:",
            )


def describe(snap) -> str:
    r = snap.request
    return (
        f"Run `{snap.run_id}`: {r.n} image(s), {r.size} px, seeds {r.seed}..{r.seed + r.n - 1}, "
        f"{r.steps} {SCHEDULER_NAMES.get(r.scheduler, r.scheduler)} steps, guidance {r.guidance}, "
        f"model {snap.model_name}"
    )


def job_panel(job_id: str, polling: bool) -> None:
    snap = service.snapshot(job_id)
    if snap is None:
        st.info("This run is no longer tracked by the server; its images are in the Library.")
        return
    st.markdown(describe(snap))
    if snap.state == QUEUED:
        st.progress(0.0, text=f"Queued: {snap.queue_position} run(s) ahead")
    elif snap.active:
        st.progress(snap.fraction, text=f"Denoising: step {snap.step} of {snap.total}")
    if snap.active:
        st.button("Cancel", key=f"gen.cancel_{job_id}", on_click=service.cancel, args=(job_id,),
                  icon=":material/cancel:")
    count = len(snap.sample_ids)
    first = f"first image after {snap.seconds_to_first_image:.1f} s" if snap.first_image_at else "no image"
    if snap.state == DONE:
        st.success(f"Done: {count} image(s) in {snap.seconds_total:.1f} s ({first}).")
    elif snap.state == CANCELLED:
        st.warning(f"Cancelled. The {count} image(s) drawn before that are kept (also in the Library).")
    elif snap.state == FAILED:
        st.error(f"Generation failed: {snap.error}" + (f" ({count} image(s) drawn before are kept)" if count else ""))
    home = data_home()
    samples = run_samples(snap.run_id) if snap.sample_ids else []
    if samples and not snap.active:
        st.download_button(
            f"Download all {len(samples)} as ZIP (PNG + JSON)",
            data=lambda: zip_samples(samples, home),
            file_name=zip_name(samples),
            mime="application/zip",
            key=f"gen.zip_{job_id}",
            on_click="ignore",
            icon=":material/folder_zip:",
        )
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
