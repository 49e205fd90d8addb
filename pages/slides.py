"""Slides: the whole slides in the database, an overview and any region at full resolution, stitching Library
samples or generating a seamless slide in the background, registering a slide file from the server, the TIFF as a
download."""

import streamlit as st

from app import background, resources
from app import slides as sl
from app.access import current_identity
from app.model_choices import NO_MODEL_HELP, available_models
from app.plain import literal
from renal_ldm.captions import GENERATING_CAPTION
from renal_ldm.models.configs import MAX_SAMPLING_STEPS, SAMPLING
from renal_ldm.slides.info import SlideFileError, describe_slide, overview
from renal_ldm.slides.pyramid import COMPRESSIONS

JOB = "slides.job"  # background job id of the stitch or generation this session started last
JOB_WHAT = "slides.job_what"  # "stitch" or "generation"
UNITS = {"stitch": "tiles", "generation": "UNet calls, then TIFF tiles"}
DONE = {"stitch": "Stitched", "generation": "Generated"}
PICK = "slides.pick"  # the chosen slide's id (the selectbox)
WANT = "slides.want"  # a slide to choose on the next run (set when a stitch or a registration finished)
NOTICE = "slides.notice"  # (kind, text) shown once at the top
CONFIRM = "slides.confirm_remove"
OTHER = "Another folder in the data directory"
POLL_SECONDS = 0.5


@st.cache_data(max_entries=64, show_spinner=False)
def _describe(path: str, stamp: tuple[int, int]):
    return describe_slide(path)


@st.cache_data(max_entries=32, show_spinner=False)
def _overview(path: str, stamp: tuple[int, int], side: int):
    return overview(path, side)


def _ask_remove(slide_id: int) -> None:
    st.session_state[CONFIRM] = slide_id


def _keep() -> None:
    st.session_state.pop(CONFIRM, None)


def _remove(slide_id: int) -> None:
    try:
        st.session_state[NOTICE] = ("success", sl.remove_slide(slide_id))
    except ValueError as exc:
        st.session_state[NOTICE] = ("warning", str(exc))
    st.session_state.pop(CONFIRM, None)


def job_panel(job_id: str) -> None:
    job = background.get(job_id)
    what = st.session_state.get(JOB_WHAT, "stitch")
    if job is None:
        st.session_state.pop(JOB, None)
        return
    if not job.finished:
        st.progress(job.fraction, text=f"{job.stage}: {job.done} of {job.total} {UNITS[what]}")
        st.button(f"Cancel the {what}", key="slides.cancel", on_click=job.cancel.set, icon=":material/cancel:")
        return
    st.session_state.pop(JOB, None)
    if job.error and job.cancel.is_set():
        st.session_state[NOTICE] = ("info", f"The {what} was cancelled; no slide was written.")
    elif job.error:
        st.session_state[NOTICE] = ("error", f"The {what} failed: {job.error}")
    else:
        st.session_state[NOTICE] = ("success", f"{DONE[what]} slide #{job.result.id} {job.result.name}.")
        st.session_state[WANT] = job.result.id
    st.rerun()


def job_running() -> bool:
    job = background.get(st.session_state.get(JOB))
    if job is not None and not job.finished:
        st.warning(f"A {st.session_state.get(JOB_WHAT, 'stitch')} of yours is still running; wait for it or cancel it.")
        return True
    return False


identity = current_identity()
who = identity.name if identity else None
may_change = sl.can_change(identity.role if identity else None)

st.title("Slides")
st.caption(
    "Synthetic whole slides: stitched from Library samples, generated, or registered from a file on the server. "
    "Pick a slide to see where it came from, its overview, and any region at full resolution."
)
if notice := st.session_state.pop(NOTICE, None):
    getattr(st, notice[0])(literal(notice[1]))

if running := st.session_state.get(JOB):
    job = background.get(running)
    st.fragment(job_panel, run_every=POLL_SECONDS if job and not job.finished else None)(running)

listed = sl.list_slides()
if not listed:
    st.info("No slide yet." + (" Stitch Library samples or register a slide file below." if may_change else ""))
else:
    st.dataframe(sl.table_rows(listed), hide_index=True, width="stretch")
    by_id = {item.slide.id: item for item in listed}
    if (want := st.session_state.pop(WANT, None)) in by_id:
        st.session_state[PICK] = want
    if st.session_state.get(PICK) not in by_id:
        st.session_state[PICK] = listed[0].slide.id
    chosen = by_id[st.selectbox("Slide", list(by_id), format_func=lambda i: sl.slide_label(by_id[i].slide), key=PICK)]
    slide = chosen.slide

    with st.container(border=True, key="slides.chosen"):
        st.subheader(literal(f"#{slide.id} {slide.name}"))
        st.caption(
            f"{slide.kind} · {slide.width} x {slide.height} px · {slide.levels} level(s) · "
            + (f"{slide.mpp:g} µm/px" if slide.mpp else "no mpp recorded")
            + f" · added {slide.created_at:%Y-%m-%d %H:%M} UTC"
            + (f" by {literal(slide.created_by)}" if slide.created_by else "")
        )
        st.code(slide.path, language=None)
        summary = sl.provenance_summary(slide.provenance)
        if summary:
            with st.expander("Provenance", expanded=True):
                for label, value in summary:
                    st.markdown(f"**{label}**: {literal(value)}")
                st.json(slide.provenance, expanded=False)
        described = None
        if chosen.missing:
            st.warning(literal(f"This slide is missing: {chosen.problem}"))
        else:
            try:
                described = _describe(slide.path, sl.file_stamp(slide.path))
            except SlideFileError as exc:
                st.warning(literal(f"This slide cannot be shown: {exc}"))

        if described is not None:
            view, controls = st.columns([3, 2])
            with controls:
                level = st.selectbox(
                    "Level",
                    range(described.level_count),
                    format_func=lambda i: sl.level_label(described, i),
                    key=f"slides.level_{slide.id}",
                    help="0 is full resolution; each further level is half the size of the one above",
                )
                side = st.selectbox(
                    "Region side (px)",
                    sl.REGION_SIDES,
                    index=sl.REGION_SIDES.index(sl.DEFAULT_REGION_SIDE),
                    key=f"slides.side_{slide.id}",
                )
                cols, rows = sl.region_grid(described, level, side)
                st.caption(f"The level is cut into {cols} x {rows} regions; the grid lines on the overview show them.")
                c1, c2 = st.columns(2)
                col = c1.number_input(
                    "Column", min_value=0, max_value=cols - 1, value=0, key=f"slides.col_{slide.id}_{level}_{side}"
                )
                row = c2.number_input(
                    "Row", min_value=0, max_value=rows - 1, value=0, key=f"slides.row_{slide.id}_{level}_{side}"
                )
            region = sl.region_at(described, level, side, int(col), int(row))
            with view:
                try:
                    small = _overview(slide.path, sl.file_stamp(slide.path), sl.OVERVIEW_SIDE)
                except SlideFileError as exc:
                    st.info(literal(f"No overview: {exc}"))
                else:
                    st.image(
                        sl.marked_overview(small, described, region, side),
                        caption="Overview: the red box is the region shown below",
                        output_format="PNG",
                    )
            try:
                st.image(
                    sl.read_region(slide, region), caption=sl.region_caption(described, region), output_format="PNG"
                )
            except ValueError as exc:
                st.warning(literal(f"This region cannot be read: {exc}"))

        offer = sl.download(slide)
        b1, b2 = st.columns(2)
        if offer.allowed:
            b1.download_button(
                f"Download the TIFF ({offer.size / 2**20:.1f} MiB)",
                data=lambda s=slide: sl.tiff_bytes(s),
                file_name=sl.download_name(slide),
                mime="image/tiff",
                key=f"slides.download_{slide.id}",
                on_click="ignore",
                icon=":material/download:",
            )
        else:
            b1.info(literal(f"No download: {offer.reason}"))
        if may_change:
            b2.button(
                "Remove from the list",
                key=f"slides.remove_{slide.id}",
                icon=":material/delete:",
                on_click=_ask_remove,
                args=(slide.id,),
            )
            if st.session_state.get(CONFIRM) == slide.id:
                what = (
                    "and delete its file (written by this app)"
                    if sl.product_file(slide)
                    else "(its file stays where it is)"
                )
                st.warning(f"Remove slide #{slide.id} from the list {what}?")
                y, n = st.columns(2)
                y.button("Yes, remove", key="slides.confirm", type="primary", on_click=_remove, args=(slide.id,))
                n.button("Keep it", key="slides.keep", on_click=_keep)

if may_change:
    st.subheader("Add a slide")
    stitch_tab, generate_tab, register_tab = st.tabs(
        ["Stitch samples", "Generate a seamless slide", "Register a slide file"]
    )
    with stitch_tab:
        folders = {f.relative: f for f in sl.sample_folders()}
        with st.form("slides.stitch"):
            choice = st.selectbox(
                "Samples",
                [*folders, OTHER],
                format_func=lambda k: folders[k].label if k in folders else k,
                help="A Library run (newest first), or any folder of same-size images in the data directory",
            )
            other = st.text_input("Folder in the data directory", placeholder=f"only for {OTHER!r}, e.g. samples/run")
            c1, c2, c3 = st.columns(3)
            grid = c1.text_input("Grid (columns x rows)", placeholder="blank: the largest square the samples fill")
            order = c2.text_input("Order", value="manifest", help="manifest (the folder's own order) or shuffle:SEED")
            name = c3.text_input("Name", placeholder="blank: the folder's name and the grid", max_chars=200)
            c4, c5, c6 = st.columns(3)
            mpp = c4.number_input("µm per pixel", min_value=0.01, max_value=100.0, value=0.5, step=0.05)
            compression = c5.selectbox("Compression", COMPRESSIONS, help="jpeg (quality 90) or deflate (lossless)")
            tile = c6.selectbox("Tile side (px)", sl.TILE_CHOICES, index=sl.TILE_CHOICES.index(sl.DEFAULT_STITCH_TILE))
            stitch = st.form_submit_button("Stitch", type="primary", icon=":material/grid_on:")
        if stitch:
            if not job_running():
                try:
                    started = sl.start_stitch(
                        other if choice == OTHER else folders[choice].path,
                        grid,
                        name=name,
                        mpp=float(mpp),
                        compression=compression,
                        tile=int(tile),
                        order=order.strip(),
                        created_by=who,
                    )
                except (ValueError, OSError) as exc:
                    st.error(literal(exc))
                else:
                    st.session_state[JOB], st.session_state[JOB_WHAT] = started.job.id, "stitch"
                    st.rerun()
    with generate_tab:
        models = {m.name: m for m in available_models() if not m.problem}
        if not models:
            st.info("No model to generate with yet.")
            st.markdown(NO_MODEL_HELP)
        else:
            with st.form("slides.generate"):
                model = st.selectbox("Model", list(models), format_func=lambda k: models[k].label)
                caption = st.text_area(
                    "Caption for the whole slide",
                    value=GENERATING_CAPTION,
                    help="Compose builds captions in the trained form; a layout below overrides this",
                )
                layout = st.file_uploader(
                    "Per-region captions (optional layout JSON)",
                    type=["json"],
                    help='e.g. {"default": {"levels": "Tubuli=high"}, "regions": [{"levels": "Glomeruli=high", '
                    '"box": [0, 0, 0.5, 1]}]}: boxes or polygons in fractions of the slide (see the README)',
                )
                c1, c2, c3 = st.columns(3)
                sides = sl.GENERATE_SIDES
                width = c1.selectbox("Width (px)", sides, index=sides.index(sl.DEFAULT_GENERATE_SIDE))
                height = c2.selectbox("Height (px)", sides, index=sides.index(sl.DEFAULT_GENERATE_SIDE))
                seed = c3.number_input("Seed", min_value=0, value=0, step=1)
                c4, c5, c6 = st.columns(3)
                steps = c4.number_input("Steps", min_value=1, max_value=MAX_SAMPLING_STEPS, value=SAMPLING.steps)
                guidance = c5.number_input(
                    "Guidance scale", min_value=0.0, max_value=30.0, value=None, placeholder="the model's own"
                )
                name = c6.text_input("Name", placeholder="blank: size and seed", max_chars=200, key="slides.gen_name")
                c7, c8 = st.columns(2)
                mpp_g = c7.number_input(
                    "µm per pixel", min_value=0.01, max_value=100.0, value=0.5, key="slides.gen_mpp"
                )
                compression_g = c8.selectbox("Compression", COMPRESSIONS, key="slides.gen_compression")
                generate = st.form_submit_button("Generate", type="primary", icon=":material/auto_awesome:")
            if generate and not job_running():
                try:
                    started = sl.start_generation(
                        models[model],
                        resources.generation_service().sampler,
                        width=int(width),
                        height=int(height),
                        caption=caption,
                        layout=layout.getvalue() if layout is not None else None,
                        steps=int(steps),
                        guidance=None if guidance is None else float(guidance),
                        seed=int(seed),
                        mpp=float(mpp_g),
                        compression=compression_g,
                        name=name,
                        created_by=who,
                    )
                except (ValueError, OSError) as exc:
                    st.error(literal(exc))
                else:
                    st.session_state[JOB], st.session_state[JOB_WHAT] = started.job.id, "generation"
                    st.rerun()
    with register_tab:
        with st.form("slides.register"):
            path = st.text_input("Slide file on the server", placeholder="/data/slides/kidney.tif")
            label = st.text_input("Name", placeholder="blank: the file's name", max_chars=200, key="slides.reg_name")
            register = st.form_submit_button("Register", icon=":material/add:")
        if register:
            try:
                added = sl.register_slide(path, name=label, created_by=who)
            except (ValueError, OSError) as exc:
                st.error(literal(exc))
            else:
                st.session_state[NOTICE] = ("success", f"Registered slide #{added.id} {added.name}.")
                st.session_state[WANT] = added.id
                st.rerun()
