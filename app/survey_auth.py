"""The researcher gate of the survey pages, on top of the app's sign-in (app/access.py).

- A participant session (arrived by a survey link) is refused here whatever it does.
- With accounts (or RENAL_LDM_ADMIN_PASSWORD, the researcher account "admin") the app's entry point has already
  asked for a sign-in; these pages also insist on the researcher role, so an annotator never reaches them.
- In open mode (no account, no admin password) the pages work for local use; Manage surveys then refuses to
  show a participant link for an open survey (survey_link_refusal), because in open mode a participant who
  deletes the link's query from the address bar reaches the whole app, the Library included.
"""

from __future__ import annotations

import streamlit as st

from app import access
from app.accounts import ADMIN_PASSWORD_ENV, RESEARCHER
from app.survey_participant import is_participant_session

__all__ = ["ADMIN_PASSWORD_ENV", "require_researcher", "survey_link_refusal"]

OPEN_MODE_LINK_REFUSAL = (
    "The participant link is not shown in open mode: anyone who removes the survey part of the address "
    "would reach the whole app, the Library included, whose images are the answer key. Add an account with "
    "`renal-ldm users add NAME --role researcher` (the app then asks everyone but participants to sign in), or "
    "host the survey on its own instance with `RENAL_LDM_SURVEY_ONLY=1`."
)


def require_researcher() -> None:
    """Stop the page unless this session may use the researcher pages."""
    if is_participant_session():
        st.error("This page is not part of the survey. Please continue the survey from your link.")
        st.stop()
    if access.open_mode():
        return
    identity = access.current_identity()
    if identity is None or identity.role != RESEARCHER:
        st.error("The survey pages are for researchers. Sign in with a researcher account.")
        st.stop()


def survey_link_refusal(survey_only: bool) -> str | None:
    """Why a participant link may not be shown now, or None when it may."""
    if survey_only or not access.open_mode():
        return None
    return OPEN_MODE_LINK_REFUSAL
