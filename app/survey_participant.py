"""The participant's side of the survey: which screen to show, and the actions behind its buttons.

Blindness rules, enforced here:
- the participant side only ever calls the truth-free repository functions (start_participant,
  get_participant, next_unanswered_item, record_answer, set_strategy, finish_participant, get_survey_by_token);
- what reaches the page (`Screen`) and the session holds no truth and no file path: the image travels as
  PNG bytes, the item as its public id (kept server-side in st.session_state, never put in a widget key);
- answers are stored on click; the resume token sits in the URL (`?resume=`), so a reload or a lost connection
  continues at the next unanswered image; a stale or double click can never answer the next image, and the
  repository keeps the first answer of an item anyway.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from app.survey_store import read_image_bytes
from db import repository as repo
from renal_ldm import survey as vocabulary

# st.session_state keys (server-side; the browser never receives session state).
PARTICIPANT = "renal_ldm.participant"  # this browser session arrived by a survey link: survey page only
SURVEY = "renal_ldm.survey_token"  # the survey link's token
RESUME = "renal_ldm.survey_resume"  # the participant's resume token
CURRENT = "renal_ldm.survey_current_item"  # public id of the image on screen (guards stale clicks)
SHOWN_AT = "renal_ldm.survey_shown_at"  # time.monotonic() when that image was drawn
ERROR = "renal_ldm.survey_error"  # a message from the last action, shown once

SURVEY_PARAM, RESUME_PARAM = "survey", "resume"
MIN_VIEW_S = 0.4
"""Clicks on an image within this many seconds of drawing it are ignored: the second click of a double click
that lands on the next image's button (the server can redraw faster than a person double-clicks)."""

REAL_LABEL = vocabulary.ANSWER_TEXTS[vocabulary.REAL]
SYNTHETIC_LABEL = vocabulary.ANSWER_TEXTS[vocabulary.SYNTHETIC]
ANSWERS = ((REAL_LABEL, vocabulary.REAL), (SYNTHETIC_LABEL, vocabulary.SYNTHETIC))
"""(button text, stored answer) of the two answer buttons, in the order they are shown."""
EXPERIENCE_LABELS = {level: vocabulary.experience_label(level) for level in vocabulary.EXPERIENCE_LEVELS}
EXPERIENCE_QUESTION = "How much experience do you have with renal histopathology?"
INSTRUCTIONS = """
You will see images of kidney tissue, one at a time. Some are real tissue patches and some were generated
by a computer model. For each image, decide whether it is **Real** or **Synthetic**.

- There is no time limit; take as long as you like.
- You will not be told whether an answer was right.
- Your answer is saved the moment you click. If the page reloads or your connection drops, open the same
  address again and you continue where you left off.
"""
STRATEGY_QUESTION = "Optional: did you notice any patterns, or use a strategy to decide?"
THANK_YOU = "Thank you for taking part! Your answers have been saved. You can close this page now."
NO_LINK = "This page is for survey participants. Please open the survey through the link you were given."

STATIC_TEXTS = (REAL_LABEL, SYNTHETIC_LABEL, EXPERIENCE_QUESTION, INSTRUCTIONS, STRATEGY_QUESTION, THANK_YOU,
                NO_LINK, *EXPERIENCE_LABELS.values())
"""Every fixed text of the participant page (tests subtract these when looking for leaked truth)."""


@dataclass(frozen=True)
class Screen:
    """What the participant page shows now. kind: no_link, not_found, closed, start, question, strategy, done.

    Only a "question" carries an image (PNG bytes), its number in the participant's order and the total.
    """

    kind: str
    title: str = ""
    message: str = ""
    number: int = 0
    total: int = 0
    image: bytes | None = None
    item_public_id: str | None = None


# ------------------------------------------------------------------------------------------- routing


def enter_participant_mode(survey_only: bool) -> bool:
    """True when this session must see the survey page alone (called by app/main.py before navigation).

    A session that once arrived with ?survey= or ?resume= stays a participant session even if the query
    parameters are removed; survey-only mode makes every session one.
    """
    params = st.query_params
    if survey_only or params.get(SURVEY_PARAM) or params.get(RESUME_PARAM) or st.session_state.get(PARTICIPANT):
        st.session_state[PARTICIPANT] = True
        return True
    return False


def is_participant_session() -> bool:
    return bool(st.session_state.get(PARTICIPANT))


def current_tokens() -> tuple[str | None, str | None]:
    """(survey token, resume token) from the URL, else from this session; the URL is kept in sync."""
    tokens = []
    for param, key in ((SURVEY_PARAM, SURVEY), (RESUME_PARAM, RESUME)):
        token = st.query_params.get(param) or st.session_state.get(key) or None
        if token:
            st.session_state[key] = token
            if st.query_params.get(param) != token:
                st.query_params[param] = token  # put it back: a reload must come back here
        tokens.append(token)
    return tokens[0], tokens[1]


# ------------------------------------------------------------------------------------------- screens


def _closed_message(status: str) -> str:
    if status == vocabulary.DRAFT:
        return "This survey is not open yet. Please try again later."
    return "This survey is closed and accepts no more answers. Thank you for your interest."


def resolve_screen(survey_token: str | None, resume_token: str | None) -> Screen:
    """The screen for these tokens (database reads only; nothing is written)."""
    if resume_token:
        try:
            participant = repo.get_participant(resume_token)
        except repo.NotFoundError:
            if not survey_token:
                return Screen("not_found", message="This resume link is not valid. Please open the survey "
                                                   "through the link you were given.")
            st.session_state.pop(RESUME, None)
            resume_token = None
        else:
            survey = repo.get_survey(participant.survey_id)
            if participant.finished:
                return Screen("done", title=survey.title, message=THANK_YOU)
            if survey.status != vocabulary.OPEN:
                return Screen("closed", title=survey.title, message=_closed_message(survey.status))
            item = repo.next_unanswered_item(resume_token)
            if item is None:
                return Screen("strategy", title=survey.title, number=participant.total, total=participant.total)
            return Screen("question", title=survey.title, number=item.number, total=item.total,
                          image=read_image_bytes(item.image_path), item_public_id=item.public_id)
    if not survey_token:
        return Screen("no_link", message=NO_LINK)
    try:
        survey = repo.get_survey_by_token(survey_token)
    except repo.NotFoundError:
        return Screen("not_found", message="This survey link is not valid. Please check the address you were given.")
    if survey.status != vocabulary.OPEN:
        return Screen("closed", title=survey.title, message=_closed_message(survey.status))
    return Screen("start", title=survey.title, total=survey.item_count)


# ------------------------------------------------------------------------------------------- actions


def start(survey_token: str, experience: int | None) -> str | None:
    """Register the participant (their random order is drawn and stored now); None with a message on error."""
    if experience not in EXPERIENCE_LABELS:
        st.session_state[ERROR] = "Please choose your experience level first."
        return None
    try:
        resume = repo.start_participant(survey_token, experience)
    except ValueError as exc:
        st.session_state[ERROR] = str(exc)
        return None
    st.session_state[RESUME] = resume
    st.query_params[RESUME_PARAM] = resume
    return resume


def shown(item_public_id: str) -> None:
    """The page drew this image now (call while rendering a question)."""
    if st.session_state.get(CURRENT) != item_public_id:
        st.session_state[CURRENT] = item_public_id
        st.session_state[SHOWN_AT] = time.monotonic()


def on_answer(resume_token: str, item_public_id: str, label: str) -> None:
    """Button callback: store the answer for the image that was on screen when the button was drawn.

    Ignored: a click that arrives after that image was answered (a double click, a click queued during a
    rerun), so it can never become the answer to the next image, and a click within MIN_VIEW_S of the image
    being drawn (the second half of a double click that landed on the next image). record_answer is
    idempotent besides.
    """
    if st.session_state.get(CURRENT) != item_public_id:
        return
    if time.monotonic() - st.session_state.get(SHOWN_AT, 0.0) < MIN_VIEW_S:
        return
    st.session_state[CURRENT] = None
    try:
        repo.record_answer(resume_token, item_public_id, label)
    except ValueError as exc:
        st.session_state[ERROR] = str(exc)


def finish(resume_token: str, strategy: str | None) -> None:
    try:
        repo.set_strategy(resume_token, strategy)
        repo.finish_participant(resume_token)
    except ValueError as exc:
        st.session_state[ERROR] = str(exc)


def pop_error() -> str | None:
    return st.session_state.pop(ERROR, None)
