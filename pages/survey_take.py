"""Take the survey: instructions and experience, then one image at a time (Real / Synthetic), then a strategy."""

import streamlit as st

from app import survey_participant as flow
from app.plain import literal
from renal_ldm.survey import STRATEGY_MAX_CHARS


def draw() -> None:
    screen = flow.current_screen()

    if screen.title:
        st.title(literal(screen.title))
    error = flow.pop_error()
    if error:
        st.error(error)

    if screen.kind == "not_found":
        st.error(screen.message)

    elif screen.kind in ("no_link", "closed"):
        st.info(screen.message)

    elif screen.kind == "start":
        st.markdown(flow.INSTRUCTIONS)
        st.markdown(f"The survey has **{screen.total}** images.")
        experience = st.radio(
            flow.EXPERIENCE_QUESTION,
            list(flow.EXPERIENCE_LABELS),
            format_func=flow.EXPERIENCE_LABELS.get,
            index=None,
            key="survey_experience",
        )
        if st.button("Start the survey", type="primary", key="survey_start"):
            if flow.start(screen.start_with, experience):
                st.rerun()
            st.error(flow.pop_error())

    elif screen.kind == "question":
        flow.shown(screen.item_public_id)
        progress = st.empty()  # filled last: "n / N" appears once this image's buttons are in place
        left, right = st.columns([3, 2], vertical_alignment="center")
        with left:
            st.image(screen.image, width=flow.display_width(screen.image), output_format="PNG")  # stored bytes
        with right, st.container(key="survey_answer_buttons"):
            st.html(
                "<style>.st-key-survey_answer_buttons button {min-height: 4.5rem;}"
                ".st-key-survey_answer_buttons button p {font-size: 1.5rem;}</style>"
            )
            st.markdown("#### Is this image real or synthetic?")
            for label, value in flow.ANSWERS:
                st.button(
                    label,
                    key=f"answer_{screen.number}_{value[0]}",  # no item id or truth in keys (they reach the browser)
                    type="primary",
                    width="stretch",
                    on_click=flow.on_answer,
                    args=(screen.resume_token, screen.item_public_id, value),
                )
            st.caption("No time limit. Your answer is saved when you click.")
        st.caption(flow.PERSONAL_ADDRESS)
        progress.progress((screen.number - 1) / screen.total, text=f"{screen.number} / {screen.total}")

    elif screen.kind == "strategy":
        st.success(f"You have answered all {screen.total} images.")
        with st.form("survey_strategy"):
            strategy = st.text_area(flow.STRATEGY_QUESTION, max_chars=STRATEGY_MAX_CHARS, key="survey_strategy_text")
            if st.form_submit_button("Finish", type="primary"):
                flow.finish(screen.resume_token, strategy)
                st.rerun()
        st.caption(flow.PERSONAL_ADDRESS)

    elif screen.kind == "done":
        st.success(screen.message)


with flow.friendly_errors():
    draw()
