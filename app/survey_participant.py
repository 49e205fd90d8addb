"""The participant's side of the survey: which screen to show, and the actions behind its buttons.

Blindness rules, enforced here:
- the participant side only ever calls the truth-free repository functions (start_participant,
  get_participant, next_unanswered_item, record_answer, set_strategy, finish_participant, get_survey_by_token);
- what reaches the page (`Screen`) and the session holds no truth and no file path: the image travels as
  PNG bytes, the item as its public id (kept server-side in st.session_state, never put in a widget key);
- answers are stored on click; the resume token sits in the URL, so a reload or a lost connection continues at
  the next unanswered image; a stale or double click can never answer the next image, and the repository keeps
  the first answer of an item anyway.

One person, one record:
- a participant arrives by the shared link (`?survey=`) or a one-use invitation (`?invite=`); an invitation
  starts one participant and, once used, only ever resumes that participant;
- once a participant has started, the address is theirs alone: `?resume=<token>` and nothing else (the shared
  survey token and the invitation leave the URL), and the page says it is personal;
- a survey that is full (its participant cap), closed, or by invitation only says so instead of starting;
- an unexpected error shows FAILURE, never a traceback, and is logged server-side (`friendly_errors`).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from app.survey_store import read_image_bytes
from db import repository as repo
from renal_ldm import survey as vocabulary

# st.session_state keys (server-side; the browser never receives session state).
PARTICIPANT = "renal_ldm.participant"  # this browser session arrived by a survey link: survey page only
SURVEY = "renal_ldm.survey_token"  # the survey link's token
INVITE = "renal_ldm.survey_invitation"  # the one-use invitation's token
RESUME = "renal_ldm.survey_resume"  # the participant's resume token
CURRENT = "renal_ldm.survey_current_item"  # public id of the image on screen (guards stale clicks)
SHOWN_AT = "renal_ldm.survey_shown_at"  # time.monotonic() when that image was drawn
ERROR = "renal_ldm.survey_error"  # a message from the last action, shown once

SURVEY_PARAM, RESUME_PARAM, INVITE_PARAM = "survey", "resume", "invite"
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
PERSONAL_ADDRESS = (
    "This address is personal: bookmark this address to continue later; do not share it "
    "(anyone who opens it answers as you)."
)
FULL = "This survey has all the participants it needs. Thank you for your interest."
INVITATION_ONLY = "This survey is by personal invitation only. Please open the invitation link you were given."
BAD_INVITATION = "This invitation link is not valid. Please check the address you were given."
BAD_SURVEY_LINK = "This survey link is not valid. Please check the address you were given."
BAD_RESUME_LINK = "This resume link is not valid. Please open the survey through the link you were given."
FAILURE = "Something went wrong on our side; your answers so far are saved. Please reload the page."

STATIC_TEXTS = (
    REAL_LABEL,
    SYNTHETIC_LABEL,
    EXPERIENCE_QUESTION,
    INSTRUCTIONS,
    STRATEGY_QUESTION,
    THANK_YOU,
    NO_LINK,
    PERSONAL_ADDRESS,
    FULL,
    INVITATION_ONLY,
    BAD_INVITATION,
    BAD_SURVEY_LINK,
    BAD_RESUME_LINK,
    FAILURE,
    *EXPERIENCE_LABELS.values(),
)
"""Every fixed text of the participant page (tests subtract these when looking for leaked truth)."""


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tokens:
    """The tokens this session came with: the shared link's, the invitation's, the participant's own."""

    survey: str | None = None
    invitation: str | None = None
    resume: str | None = None


DISPLAY_WIDTH = 512
"""CSS width of a survey image on screen (the browser scales; the bytes served stay the stored ones)."""


def display_width(png: bytes) -> int:
    """Width to hand st.image: never below the image's own width, because Streamlit resizes and re-encodes a
    larger image server-side, which would drop the survey's own encoding (and could share a media URL)."""
    native = struct.unpack(">I", png[16:20])[0] if png[:8] == b"\x89PNG\r\n\x1a\n" else 0
    return max(DISPLAY_WIDTH, native)


@dataclass(frozen=True)
class Screen:
    """What the participant page shows now. kind: no_link, not_found, closed, start, question, strategy, done.

    Only a "question" carries an image (PNG bytes), its number in the participant's order and the total.
    resume_token: the participant behind this screen (None before they start); start_with: ("invite", token)
    or ("survey", token) on a start screen, what the Start button registers the participant through.
    """

    kind: str
    title: str = ""
    message: str = ""
    number: int = 0
    total: int = 0
    image: bytes | None = None
    item_public_id: str | None = None
    resume_token: str | None = None
    start_with: tuple[str, str] | None = None


# ------------------------------------------------------------------------------------------- routing


def enter_participant_mode(survey_only: bool) -> bool:
    """True when this session must see the survey page alone (called by app/main.py before navigation).

    A session that once arrived with ?survey=, ?invite= or ?resume= stays a participant session even if the
    query parameters are removed; survey-only mode makes every session one.
    """
    params = st.query_params
    if (
        survey_only
        or any(params.get(p) for p in (SURVEY_PARAM, RESUME_PARAM, INVITE_PARAM))
        or st.session_state.get(PARTICIPANT)
    ):
        st.session_state[PARTICIPANT] = True
        return True
    return False


def is_participant_session() -> bool:
    return bool(st.session_state.get(PARTICIPANT))


def current_tokens() -> Tokens:
    """The tokens from the URL, else from this session (which remembers them for the next rerun)."""
    found = {}
    for param, key in ((SURVEY_PARAM, SURVEY), (INVITE_PARAM, INVITE), (RESUME_PARAM, RESUME)):
        token = st.query_params.get(param) or st.session_state.get(key) or None
        if token:
            st.session_state[key] = token
        found[param] = token
    return Tokens(found[SURVEY_PARAM], found[INVITE_PARAM], found[RESUME_PARAM])


def keep_address(tokens: Tokens, screen: Screen) -> None:
    """Make the URL the one a reload must come back to: ?resume=<token> alone once the participant exists
    (personal; the shared survey token is gone), else the invitation or survey link they came by."""
    if screen.resume_token:
        st.session_state[RESUME] = screen.resume_token
        wanted = {RESUME_PARAM: screen.resume_token}
    else:
        st.session_state.pop(RESUME, None)  # unknown or stale: never offered again
        wanted = (
            {INVITE_PARAM: tokens.invitation}
            if tokens.invitation
            else {SURVEY_PARAM: tokens.survey}
            if tokens.survey
            else {}
        )
    if {k: st.query_params.get(k) for k in st.query_params} != wanted:
        st.query_params.from_dict(wanted)


def current_screen() -> Screen:
    """The screen for this session's tokens, with the URL kept in step (what the participant page draws)."""
    tokens = current_tokens()
    screen = resolve_screen(tokens)
    keep_address(tokens, screen)
    return screen


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Around the participant page: an unexpected error is logged and shown as FAILURE, never as a traceback.

    Streamlit's own stop and rerun signals are BaseExceptions and pass through.
    """
    try:
        yield
    except Exception:
        logger.exception("the participant survey page failed")
        st.error(FAILURE)


def _failed(action: str) -> None:
    """A button action failed unexpectedly: log it, tell the participant FAILURE (their answers are stored)."""
    logger.exception("participant action %s failed", action)
    st.session_state[ERROR] = FAILURE


# ------------------------------------------------------------------------------------------- screens


def _closed_message(status: str) -> str:
    if status == vocabulary.DRAFT:
        return "This survey is not open yet. Please try again later."
    return "This survey is closed and accepts no more answers. Thank you for your interest."


def _participant_screen(resume_token: str, participant: repo.Participant) -> Screen:
    survey = repo.get_survey(participant.survey_id)
    mine = {"title": survey.title, "resume_token": resume_token}
    if participant.finished:
        return Screen("done", message=THANK_YOU, **mine)
    if survey.status != vocabulary.OPEN:
        return Screen("closed", message=_closed_message(survey.status), **mine)
    item = repo.next_unanswered_item(resume_token)
    if item is None:
        return Screen("strategy", number=participant.total, total=participant.total, **mine)
    return Screen(
        "question",
        number=item.number,
        total=item.total,
        image=read_image_bytes(item.image_path),
        item_public_id=item.public_id,
        **mine,
    )


def _start_screen(survey: repo.Survey, start_with: tuple[str, str]) -> Screen:
    if survey.status != vocabulary.OPEN:
        return Screen("closed", title=survey.title, message=_closed_message(survey.status))
    if survey.full:
        return Screen("closed", title=survey.title, message=FULL)
    if start_with[0] == SURVEY_PARAM and not survey.shared_link:
        return Screen("closed", title=survey.title, message=INVITATION_ONLY)
    return Screen("start", title=survey.title, total=survey.item_count, start_with=start_with)


def resolve_screen(tokens: Tokens) -> Screen:
    """The screen for these tokens (database reads only; nothing is written).

    The participant's own resume token wins; a used invitation leads to the participant it started; otherwise
    the invitation or the shared link offers the start screen (unless the survey is closed, full, or by
    invitation only).
    """
    if tokens.resume:
        try:
            return _participant_screen(tokens.resume, repo.get_participant(tokens.resume))
        except repo.NotFoundError:
            if not (tokens.survey or tokens.invitation):
                return Screen("not_found", message=BAD_RESUME_LINK)
    if tokens.invitation:
        try:
            invitation = repo.get_invitation(tokens.invitation)
        except repo.NotFoundError:
            return Screen("not_found", message=BAD_INVITATION)
        if invitation.resume_token:
            return _participant_screen(invitation.resume_token, repo.get_participant(invitation.resume_token))
        return _start_screen(repo.get_survey(invitation.survey_id), (INVITE_PARAM, tokens.invitation))
    if not tokens.survey:
        return Screen("no_link", message=NO_LINK)
    try:
        survey = repo.get_survey_by_token(tokens.survey)
    except repo.NotFoundError:
        return Screen("not_found", message=BAD_SURVEY_LINK)
    return _start_screen(survey, (SURVEY_PARAM, tokens.survey))


# ------------------------------------------------------------------------------------------- actions


def start(start_with: tuple[str, str] | None, experience: int | None) -> str | None:
    """Register the participant through the invitation or the shared link of the start screen (their random
    order is drawn and stored now); the address becomes their personal ?resume=. None with a message on error."""
    if experience not in EXPERIENCE_LABELS:
        st.session_state[ERROR] = "Please choose your experience level first."
        return None
    if start_with is None:
        st.session_state[ERROR] = NO_LINK
        return None
    via, token = start_with
    try:
        if via == INVITE_PARAM:
            resume = repo.start_invited_participant(token, experience)
        else:
            resume = repo.start_participant(token, experience)
    except repo.SurveyFullError:
        st.session_state[ERROR] = FULL
        return None
    except repo.SharedLinkOffError:
        st.session_state[ERROR] = INVITATION_ONLY
        return None
    except ValueError as exc:
        st.session_state[ERROR] = str(exc)
        return None
    except Exception:
        _failed("start")
        return None
    st.session_state[RESUME] = resume
    st.query_params.from_dict({RESUME_PARAM: resume})
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
    except Exception:
        _failed("answer")


def finish(resume_token: str, strategy: str | None) -> None:
    try:
        repo.set_strategy(resume_token, strategy)
        repo.finish_participant(resume_token)
    except ValueError as exc:
        st.session_state[ERROR] = str(exc)
    except Exception:
        _failed("finish")


def pop_error() -> str | None:
    return st.session_state.pop(ERROR, None)
