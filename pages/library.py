"""Library: every sample ever generated, filtered and paged, with its parameters, regenerate and delete."""

import streamlit as st

from app import state
from app.downloads import png_bytes, png_name, sample_file, zip_samples
from app.library import PAGE_SIZE, date_bounds, delete_sample, details, page_count, regenerate_params
from app.pages_registry import page_file
from app.plain import literal
from db import repository as repo
from renal_ldm.paths import data_home

ALL_MODELS = "All models"
COLUMNS = 4
CONFIRM_KEY = "lib.confirm_delete"


def ask_delete(sample_id: int) -> None:
    st.session_state[CONFIRM_KEY] = sample_id


def confirm_delete(sample_id: int) -> None:
    try:
        path = delete_sample(sample_id)
    except ValueError as exc:  # deleted meanwhile (another tab, another user)
        st.session_state["lib.notice"] = ("warning", str(exc))
    else:
        st.session_state["lib.notice"] = ("success", f"Deleted sample #{sample_id} ({path}).")
    st.session_state.pop(CONFIRM_KEY, None)


def keep(_sample_id: int) -> None:
    st.session_state.pop(CONFIRM_KEY, None)


st.title("Library")
st.caption("Every sample generated here, newest first. Files live in the data directory; rows in the database.")

if notice := st.session_state.pop("lib.notice", None):
    getattr(st, notice[0])(notice[1])

f1, f2, f3 = st.columns([2, 1, 1])
text = f1.text_input("Caption contains", key="lib.caption", persist_state="session", placeholder="Glomeruli")
models = [ALL_MODELS, *repo.sample_model_names()]
if st.session_state.get("lib.model") not in models:
    st.session_state["lib.model"] = ALL_MODELS
model = f2.selectbox("Model", models, key="lib.model")
dates = f3.date_input("Created between (UTC)", value=(), key="lib.dates", format="YYYY-MM-DD")
since, until = date_bounds(dates)

filters = {
    "caption_contains": text.strip() or None,
    "model_name": None if model == ALL_MODELS else model,
    "since": since,
    "until": until,
}
total = repo.count_samples(**filters)
pages = page_count(total)
if total == 0:
    st.info("No samples match." if any(filters.values()) else "No samples yet: generate some on the Generate page.")
    st.page_link(page_file("generate.py"), label="Go to Generate", icon=":material/auto_awesome:")
    st.stop()

page = st.pagination(pages, key="lib.page") if pages > 1 else 1
page = min(max(1, int(page)), pages)
samples = repo.list_samples(**filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
first = (page - 1) * PAGE_SIZE + 1
st.caption(f"{total} sample(s); showing {first}–{first + len(samples) - 1}.")
home = data_home()

columns = st.columns(COLUMNS)
for index, sample in enumerate(samples):
    with columns[index % COLUMNS], st.container(border=True, key=f"lib.card_{sample.id}"):
        try:
            path = sample_file(sample, home)
        except ValueError as exc:  # a row pointing outside the data directory: named, never read
            st.warning(f"Sample #{sample.id}: {literal(exc)}")
            continue
        if path.is_file():
            st.image(str(path), width="stretch")
        else:
            st.warning("Image file missing on disk.")
        st.markdown(f"**#{sample.id}** · seed `{sample.seed}` · {literal(sample.model_name)}")
        st.caption(
            f"{sample.created_at:%Y-%m-%d %H:%M} UTC · {sample.steps} {sample.scheduler} steps · "
            f"guidance {sample.guidance:g} · {sample.size} px"
        )
        with st.expander("Details"):
            st.code(sample.caption, language=None)
            st.json(details(sample), expanded=False)
        if st.button(
            "Generate again with this seed",
            key=f"lib.regen_{sample.id}",
            icon=":material/replay:",
            width="stretch",
            help="Opens Generate with this sample's caption, model, seed and settings",
        ):
            st.session_state[state.REGENERATE] = regenerate_params(sample)
            st.switch_page(page_file("generate.py"))
        b1, b2 = st.columns(2)
        if path.is_file():
            b1.download_button(
                "PNG",
                data=png_bytes(sample, home),
                file_name=png_name(sample),
                mime="image/png",
                key=f"lib.png_{sample.id}",
                on_click="ignore",
                icon=":material/download:",
            )
        b2.button(
            "Delete", key=f"lib.delete_{sample.id}", icon=":material/delete:", on_click=ask_delete, args=(sample.id,)
        )
        if st.session_state.get(CONFIRM_KEY) == sample.id:
            st.warning(f"Delete sample #{sample.id} and its image file? This cannot be undone.")
            y, n = st.columns(2)
            y.button(
                "Yes, delete",
                key=f"lib.confirm_{sample.id}",
                type="primary",
                on_click=confirm_delete,
                args=(sample.id,),
            )
            n.button("Keep it", key=f"lib.keep_{sample.id}", on_click=keep, args=(sample.id,))

st.download_button(
    f"Download this page ({len(samples)}) as ZIP",
    data=lambda: zip_samples(samples, home),
    file_name=f"renal-ldm_library_page{page}.zip",
    mime="application/zip",
    key="lib.zip",
    on_click="ignore",
    icon=":material/folder_zip:",
)
