"""Compose: pick a level per tissue class (or type free text), see the exact caption, save it as a preset."""

import streamlit as st

from app import state
from app.compose import (
    FREE_TEXT_KEY,
    FREE_TEXT_MODE,
    LEVEL_CHOICES,
    MODE_KEY,
    MODES,
    caption_from_choices,
    caption_warning,
    choices_from_caption,
    level_key,
    widget_state_for_caption,
)
from app.pages_registry import page_file
from app.plain import literal
from db import repository as repo
from renal_ldm.classes import CAPTIONED_CLASSES


def load_caption(caption: str, source: str) -> None:
    """Button callback (runs before the script, so it may set the widgets' values)."""
    st.session_state.update(widget_state_for_caption(caption))
    st.session_state[state.CAPTION] = caption
    st.session_state[state.CAPTION_SOURCE] = source


st.title("Compose a caption")
st.caption("Captions follow the reference study: the model was trained on exactly these sentences.")

# Start from the caption last sent to Generate (or loaded from a preset) the first time the widgets appear.
for key, value in widget_state_for_caption(st.session_state.get(state.CAPTION, "")).items():
    st.session_state.setdefault(key, value)

mode = st.radio("Mode", MODES, horizontal=True, key=MODE_KEY, persist_state="session")

if mode != FREE_TEXT_MODE:
    choices = {}
    columns = st.columns(2)
    for index, tissue in enumerate(CAPTIONED_CLASSES):
        with columns[index % 2]:
            choices[tissue.name] = (
                st.segmented_control(tissue.name, LEVEL_CHOICES, key=level_key(tissue.id), persist_state="session")
                or "none"
            )
    caption = caption_from_choices(choices)
else:
    caption = st.text_area("Caption", height=180, key=FREE_TEXT_KEY, persist_state="session")
    warning = caption_warning(caption)
    if warning:
        st.warning(warning)

st.subheader("Caption")
st.code(caption, language=None)

left, right = st.columns(2)
with left:
    if st.button("Use this caption in Generate", type="primary", key="use_caption"):
        st.session_state[state.CAPTION] = caption
        st.session_state[state.CAPTION_SOURCE] = state.FROM_FREE_TEXT if mode == FREE_TEXT_MODE else state.FROM_COMPOSER
        st.switch_page(page_file("generate.py"))
with right:
    with st.form("save_preset", clear_on_submit=True):
        name = st.text_input("Preset name", max_chars=80)
        if st.form_submit_button("Save as preset"):
            try:
                repo.save_preset(name, caption, choices_from_caption(caption) or None)
                st.success(f"Saved preset {literal(repr(name.strip()))}.")
            except ValueError as exc:
                st.error(literal(exc))

saved = repo.list_presets()
if saved:
    st.subheader("Presets")
    for preset in saved:
        with st.expander(literal(preset.name)):
            st.code(preset.caption, language=None)
            a, b = st.columns(2)
            a.button(
                "Load", key=f"load_preset_{preset.id}", on_click=load_caption, args=(preset.caption, state.FROM_PRESET)
            )
            if b.button("Delete", key=f"delete_preset_{preset.id}"):
                repo.delete_preset(preset.name)
                st.rerun()
