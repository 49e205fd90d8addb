"""Annotate: paint masks (glomeruli by default) on the regions of a slide at full resolution, region by region,
per annotator; see how far you are, how annotators agree, and move annotations out (data set, QuPath GeoJSON)
and in (GeoJSON). Rules and storage are in app/annotate.py; this page draws widgets and calls it."""

import streamlit as st

from app import annotate as an
from app import slides as sl
from app.access import current_identity
from app.plain import literal
from renal_ldm.annotations.masks import DEFAULT_REGION_SIDE
from renal_ldm.annotations.strokes import ERASE, PAINT
from renal_ldm.classes import by_id
from renal_ldm.slides.info import SlideFileError, overview

EDITOR = "annotate.editor"  # the open region (app.annotate.Editor)
NOTICE = "annotate.notice"  # (kind, text): shown until the next action, not only on the next run
EXPORT = "annotate.export_zip"  # (slide id, zip bytes, summary) ready to download
MODES = {"Paint": PAINT, "Erase": ERASE}
CLASS_KEY, SIDE_KEY = "annotate.class", "annotate.side"


@st.cache_data(max_entries=32, show_spinner=False)
def _overview(path: str, stamp: tuple[int, int], side: int):
    return overview(path, side)


def _say(kind: str, text: str) -> None:
    st.session_state[NOTICE] = (kind, text)


def _quiet() -> None:
    """Forget the last notice: the canvas sends its value on its own, so a notice outlives reruns, not actions."""
    st.session_state.pop(NOTICE, None)


def _save(slide, done: bool | None = None) -> bool:
    editor = st.session_state.get(EDITOR)
    if editor is None:
        return True
    try:
        saved = an.save_editor(editor, slide, done=done)
    except ValueError as exc:
        _say("error", f"Not saved: {exc}")
        return False
    state = "done" if saved.done else "in progress"
    _say("success", f"Saved {editor.box.label()} ({saved.pixels} px, {saved.components} component(s), {state}).")
    return True


def _open(slide, annotator: str, class_id: int, side: int, cell) -> None:
    editor = st.session_state.get(EDITOR)
    if editor is not None and editor.dirty and not _save(slide):
        return
    if cell is None:
        st.session_state.pop(EDITOR, None)
        _say("success", "Every region of this grid is done.")
        return
    try:
        st.session_state[EDITOR] = an.open_editor(slide, annotator, class_id, an.region(slide, side, *cell))
    except (ValueError, OSError) as exc:
        _say("error", str(exc))
        return
    if st.session_state.get(NOTICE, ("success",))[0] != "success":  # a problem of the region left behind
        _quiet()  # the run that follows writes the region into the address (_keep_address)


def _keep_address(slide_id: int, side: int, cell) -> None:
    """Make the address name what is on screen (the region open, if any), so a reload, a new session, comes back
    to it."""
    wanted = {"slide": str(slide_id), "side": str(side)}
    if cell is not None:
        wanted["cell"] = f"{cell[0]},{cell[1]}"
    if any(st.query_params.get(k) != v for k, v in wanted.items()):
        st.query_params.update(wanted)
    if cell is None and "cell" in st.query_params:
        del st.query_params["cell"]


def _address_cell(slide_id: int, side: int):
    """The region the address names, where it names this slide and side (a cell of another side is elsewhere)."""
    if st.query_params.get("slide") != str(slide_id) or st.query_params.get("side") != str(side):
        return None
    return an.cell_from_text(st.query_params.get("cell"))


def _chosen(class_id: int, side: int) -> tuple[int, int]:
    """The class and region side on screen now. A click sent together with a new choice, before the page redrew,
    runs the callback bound in the run before, with that run's arguments; session state already has the choice."""
    return int(st.session_state.get(CLASS_KEY, class_id)), int(st.session_state.get(SIDE_KEY, side))


def _open_picked(slide, annotator: str, class_id: int, side: int, cell) -> None:
    """The "Open this region" button: the column and row typed, on the grid of the side chosen now."""
    class_id, now = _chosen(class_id, side)
    if now != side:  # the inputs on screen were the old grid's: keep the cell, within the new grid
        cols, rows = an.grid_shape(slide.width, slide.height, now)
        cell = (min(cell[0], cols - 1), min(cell[1], rows - 1))
    _open(slide, annotator, class_id, now, cell)


def _next(slide, annotator: str, class_id: int, side: int) -> None:
    class_id, side = _chosen(class_id, side)
    editor = st.session_state.get(EDITOR)
    after = an.cell_of(editor.box, side) if editor is not None else None
    if editor is not None and not _save(slide, done=None):
        return
    _open(slide, annotator, class_id, side, an.next_unfinished(slide, annotator, class_id, side, after))


def _done_and_next(slide, annotator: str, class_id: int, side: int) -> None:
    if _save(slide, done=True):
        _next(slide, annotator, class_id, side)


def _undo() -> None:
    _quiet()
    if not an.undo(st.session_state[EDITOR]):
        _say("info", "Nothing to undo.")


def _clear() -> None:
    _quiet()
    an.clear(st.session_state[EDITOR])


identity = current_identity()
st.title("Annotate")
st.caption(
    "Paint at full resolution, region by region: brush strokes add to your mask, erase strokes take away. Your masks "
    "are yours: another annotator's masks of the same region are kept apart and compared below."
)
if identity is not None:
    annotator = identity.name
else:
    typed = st.text_input(
        "Your name",
        value=st.query_params.get("who", ""),
        key="annotate.name",
        max_chars=200,
        help="Accounts are off here, so masks are stored under the name you type",
    )
    annotator = an.annotator_name(None, typed)
    if annotator:
        st.query_params["who"] = annotator
if not annotator:
    st.info("Type your name to start annotating (masks are stored per annotator).")
    st.stop()

if notice := st.session_state.get(NOTICE):
    getattr(st, notice[0])(literal(notice[1]))

listed = sl.list_slides()
if not listed:
    st.info("No slide yet: stitch or register one on the Slides page.")
    st.stop()
by_id_slide = {item.slide.id: item for item in listed}
wanted = st.query_params.get("slide")
default = int(wanted) if wanted and wanted.isdigit() and int(wanted) in by_id_slide else listed[0].slide.id
chosen = by_id_slide[
    st.selectbox(
        "Slide",
        list(by_id_slide),
        index=list(by_id_slide).index(default),
        format_func=lambda i: sl.slide_label(by_id_slide[i].slide),
        key="annotate.slide",
    )
]
slide = chosen.slide
c1, c2 = st.columns(2)
class_id = c1.selectbox(
    "Class painted",
    an.CLASS_CHOICES,
    index=an.CLASS_CHOICES.index(an.DEFAULT_CLASS_ID),
    format_func=lambda i: by_id(i).name,
    key=CLASS_KEY,
)
wanted_side = st.query_params.get("side")
side_default = (
    int(wanted_side)
    if wanted_side and wanted_side.isdigit() and int(wanted_side) in an.REGION_SIDES
    else DEFAULT_REGION_SIDE
)
side = c2.selectbox(
    "Region side (px, full resolution)",
    an.REGION_SIDES,
    index=an.REGION_SIDES.index(side_default),
    key=SIDE_KEY,
)

editor = st.session_state.get(EDITOR)
if editor is not None and not an.editor_fits(editor, slide, annotator, class_id, side):
    if editor.dirty and editor.slide_id in by_id_slide:  # moving away saves, so no painting is lost
        _save(by_id_slide[editor.slide_id].slide)
    st.session_state.pop(EDITOR, None)
    editor = None
if editor is None and (cell := _address_cell(slide.id, side)) is not None and chosen.problem is None:
    try:
        st.session_state[EDITOR] = editor = an.open_editor(slide, annotator, class_id, an.region(slide, side, *cell))
    except (ValueError, OSError) as exc:  # say why the linked region did not open, rather than ignore the link
        st.warning(literal(f"The region in this page's address (cell {cell[0]},{cell[1]}) did not open: {exc}"))
        editor = None
if not chosen.missing:
    _keep_address(slide.id, side, an.cell_of(editor.box, side) if editor is not None else None)

if chosen.missing:
    st.warning(literal(f"This slide cannot be annotated: {chosen.problem}. Saved annotations are kept."))
else:
    progress = an.progress(slide, annotator, class_id, side)
    st.markdown(
        f"**{progress.done} of {progress.regions} regions done**, {progress.in_progress} in progress · "
        f"{progress.glomeruli_done} {literal(by_id(class_id).name)} component(s) in done regions "
        f"({progress.glomeruli} in all saved regions) · annotator {literal(annotator)}"
    )
    view, controls = st.columns([3, 2])
    cols, rows = an.grid_shape(slide.width, slide.height, side)
    with controls:
        current = an.cell_of(editor.box, side) if editor is not None else None
        k1, k2 = st.columns(2)
        col = k1.number_input(
            "Column", 0, cols - 1, value=current[0] if current else 0, key=f"annotate.col.{slide.id}.{side}"
        )
        row = k2.number_input(
            "Row", 0, rows - 1, value=current[1] if current else 0, key=f"annotate.row.{slide.id}.{side}"
        )
        st.button(
            "Open this region",
            key="annotate.open",
            icon=":material/open_in_full:",
            on_click=_open_picked,
            args=(slide, annotator, class_id, side, (int(col), int(row))),
        )
        st.button(
            "Next unfinished region",
            key="annotate.next",
            icon=":material/skip_next:",
            on_click=_next,
            args=(slide, annotator, class_id, side),
        )
        st.caption("Amber: in progress, green: done, red box: the region open below. Moving on saves your painting.")
    with view:
        try:
            small = _overview(slide.path, sl.file_stamp(slide.path), an.OVERVIEW_SIDE)
        except SlideFileError as exc:
            st.info(literal(f"No overview: {exc}"))
        else:
            states = an.region_states(slide, annotator, class_id, side)
            st.image(an.grid_overview(small, slide, side, states, current), output_format="PNG")

    if editor is not None:
        from streamlit_drawable_canvas import st_canvas

        with st.container(border=True, key="annotate.region"):
            status = "done" if editor.done else ("in progress" if editor.revision else "not started")
            st.subheader(f"Region {editor.box.label()}")
            t1, t2, t3 = st.columns(3)
            mode = MODES[t1.radio("Tool", list(MODES), horizontal=True, key="annotate.mode")]
            brush = t2.slider("Brush size (px)", 1, 100, 20, key="annotate.brush")
            opacity = t3.slider("Overlay opacity", 0.0, 1.0, 0.5, 0.05, key="annotate.opacity")
            pixels = an.region_pixels(slide, editor.box)
            result = st_canvas(
                background_image=an.canvas_background(pixels, editor.mask, class_id, opacity),
                drawing_mode="freedraw",
                stroke_width=int(brush),
                stroke_color=an.stroke_colour(class_id, mode),
                width=editor.box.w,
                height=editor.box.h,
                return_image_data=True,
                key=f"annotate.canvas.{editor.canvas}",
            )
            image_data = getattr(result, "image_data", None) if result is not None else None
            if image_data is not None and an.apply_canvas(editor, image_data, mode):
                _quiet()
                st.rerun()
            st.caption(
                f"{int(editor.mask.sum())} px painted, {editor.components} component(s) · {status}"
                + (" · unsaved changes" if editor.dirty else " · saved")
            )
            b1, b2, b3, b4, b5 = st.columns(5)
            b1.button("Undo last stroke", key="annotate.undo", icon=":material/undo:", on_click=_undo)
            b2.button("Clear", key="annotate.clear", icon=":material/delete_sweep:", on_click=_clear)
            b3.button(
                "Save", key="annotate.save", type="primary", icon=":material/save:", on_click=_save, args=(slide,)
            )
            b4.button(
                "Save as done", key="annotate.done", icon=":material/task_alt:", on_click=_save, args=(slide, True)
            )
            b5.button(
                "Done, next",
                key="annotate.done_next",
                icon=":material/skip_next:",
                on_click=_done_and_next,
                args=(slide, annotator, class_id, side),
            )

st.subheader("Agreement")
found = an.agreements(slide.id, class_id)
if not found:
    st.info("No region has masks of two or more annotators for this class yet.")
else:
    st.table(an.agreement_rows(found))
    st.table(an.region_rows(found))
    if not chosen.missing:
        pick = st.selectbox(
            "Region to compare", range(len(found)), format_func=lambda i: found[i].box.label(), key="annotate.compare"
        )
        names = sorted({n for p in found[pick].pairs for n in (p.first, p.second)})
        a1, a2 = st.columns(2)
        first = a1.selectbox("First annotator (magenta)", names, index=0, key="annotate.first")
        second = a2.selectbox("Second annotator (cyan)", names, index=1 if len(names) > 1 else 0, key="annotate.second")
        if first != second:
            st.image(
                an.disagreement_view(slide, found[pick], first, second),
                caption="Green: both painted; magenta: only the first; cyan: only the second",
                output_format="PNG",
            )

st.subheader("Export and import")
e1, e2 = st.columns(2)
with e1:
    whose = st.selectbox("Whose masks", ["everyone", annotator], key="annotate.export_who")
    unfinished = st.checkbox("Include regions not marked done", key="annotate.unfinished")
    patch = st.selectbox(
        "Patch side (px)",
        an.REGION_SIDES,
        index=an.REGION_SIDES.index(min(side, DEFAULT_REGION_SIDE)),
        key=f"annotate.patch.{side}",
        help="Each region is cut into whole patches of this side",
    )
    if st.button("Prepare the export", key="annotate.export", icon=":material/inventory_2:"):
        try:
            data, result = an.export_zip(
                slide.id,
                annotator=None if whose == "everyone" else annotator,
                patch=int(patch),
                include_unfinished=unfinished,
            )
        except (ValueError, OSError) as exc:
            st.error(literal(exc))
        else:
            st.session_state[EXPORT] = (
                slide.id,
                data,
                f"{result.pairs} patch-mask pair(s), {result.features} GeoJSON feature(s)",
            )
    ready = st.session_state.get(EXPORT)
    if ready and ready[0] == slide.id:
        st.caption(ready[2])
        st.download_button(
            "Download the export (zip)",
            ready[1],
            file_name=an.export_name(slide.id),
            mime="application/zip",
            key="annotate.download",
            on_click="ignore",
            icon=":material/download:",
        )
with e2:
    upload = st.file_uploader("QuPath GeoJSON (FeatureCollection)", type=["geojson", "json"], key="annotate.upload")
    mapping = st.text_area(
        "Class mapping (one THEIRS=CLASS a line)", placeholder="Glomerulus=Glomeruli", key="annotate.mapping"
    )
    if st.button("Import as my masks", key="annotate.import", icon=":material/upload:") and upload is not None:
        try:
            done = an.import_geojson(
                slide.id,
                upload.getvalue(),
                annotator,
                mapping=[line for line in mapping.splitlines() if line.strip()],
                side=int(side),
                source=upload.name,
            )
        except (ValueError, OSError) as exc:
            st.error(literal(exc))
        else:
            st.session_state.pop(EDITOR, None)
            _say(
                "success",
                f"Imported {done.features} area(s) into {done.regions} region mask(s)."
                + "".join(f" {n}." for n in done.notes),
            )
            st.rerun()
