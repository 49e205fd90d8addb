"""Compose: pick a level per tissue class (or type free text), see the exact caption, save it as a preset."""

import streamlit as st

from app import state
from app.compose import LEVEL_CHOICES, caption_from_choices, caption_warning, choices_from_caption
from db import repository as presets
from renal_ldm.classes import CAPTIONED_CLASSES

st.title("Compose a caption")
st.caption("Captions follow the reference study: the model was trained on exactly these sentences.")

mode = st.radio("Mode", ["Levels per tissue class", "Free text"], horizontal=True, key="compose_mode")

if mode == "Levels per tissue class":
    start = choices_from_caption(st.session_state.get(state.CAPTION, ""))
    choices = {}
    columns = st.columns(2)
    for index, tissue in enumerate(CAPTIONED_CLASSES):
        with columns[index % 2]:
            choices[tissue.name] = st.segmented_control(
                tissue.name,
                LEVEL_CHOICES,
                default=start.get(tissue.name, "none"),
                key=f"level_{tissue.id}",
            ) or "none"
    caption = caption_from_choices(choices)
else:
    caption = st.text_area("Caption", value=st.session_state.get(state.CAPTION, ""), height=180, key="free_text")
    warning = caption_warning(caption)
    if warning:
        st.warning(warning)

st.subheader("Caption")
st.code(caption, language=None)

left, right = st.columns(2)
with left:
    if st.button("Use this caption in Generate", type="primary", key="use_caption"):
        st.session_state[state.CAPTION] = caption
        st.session_state[state.CAPTION_SOURCE] = "composer" if mode != "Free text" else "free text"
        st.switch_page("pages/generate.py")
with right:
    with st.form("save_preset", clear_on_submit=True):
        name = st.text_input("Preset name", max_chars=80)
        if st.form_submit_button("Save as preset"):
            try:
                presets.save_preset(name, caption)
                st.success(f"Saved preset {name.strip()!r}.")
            except ValueError as exc:
                st.error(str(exc))

saved = presets.list_presets()
if saved:
    st.subheader("Presets")
    for preset in saved:
        with st.expander(preset.name):
            st.code(preset.caption, language=None)
            a, b = st.columns(2)
            if a.button("Load", key=f"load_preset_{preset.name}"):
                st.session_state[state.CAPTION] = preset.caption
                st.session_state[state.CAPTION_SOURCE] = "preset"
                st.rerun()
            if b.button("Delete", key=f"delete_preset_{preset.name}"):
                presets.delete_preset(preset.name)
                st.rerun()
