"""The researcher gate of the survey pages: one shared password from RENAL_LDM_ADMIN_PASSWORD.

Without the variable the researcher pages explain how to set it and show nothing else (no survey data is
reachable by anyone). The comparison is constant-time (hmac.compare_digest). A signed-in session keeps a
digest of the password it signed in with, so changing the variable and restarting signs everyone out.
Participant sessions (arrived by a survey link) are refused here whatever they type.
"""

from __future__ import annotations

import hashlib
import hmac
import os

import streamlit as st

from app.survey_participant import is_participant_session

ADMIN_PASSWORD_ENV = "RENAL_LDM_ADMIN_PASSWORD"
SIGNED_IN = "renal_ldm.survey_admin_digest"
HOW_TO_SET = f"""
The survey's researcher pages are protected by a password that the server reads from the environment
variable `{ADMIN_PASSWORD_ENV}`. It is not set, so these pages stay closed.

Set it and restart the app, for example:

```bash
export {ADMIN_PASSWORD_ENV}='choose-a-long-password'
make run
```

Participants never need it: they take a survey through its link (`?survey=...`).
"""


def admin_password() -> str | None:
    """The configured password, or None when the variable is unset or blank."""
    value = os.environ.get(ADMIN_PASSWORD_ENV, "")
    return value if value.strip() else None


def password_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; nothing matches when no password is configured."""
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


def is_signed_in() -> bool:
    expected = admin_password()
    stored = st.session_state.get(SIGNED_IN)
    return bool(expected and isinstance(stored, str) and hmac.compare_digest(stored, _digest(expected)))


def sign_out() -> None:
    st.session_state.pop(SIGNED_IN, None)


def require_researcher() -> None:
    """Stop the page unless a researcher has signed in; shows the instructions or the sign-in form."""
    if is_participant_session():
        st.error("This page is not part of the survey. Please continue the survey from your link.")
        st.stop()
    expected = admin_password()
    if expected is None:
        st.title("Researcher pages are closed")
        st.markdown(HOW_TO_SET)
        st.stop()
    if is_signed_in():
        with st.sidebar:
            if st.button("Sign out of the survey pages", key="survey_sign_out"):
                sign_out()
                st.rerun()
        return
    st.title("Researcher sign-in")
    with st.form("survey_sign_in"):
        given = st.text_input("Password", type="password", key="survey_password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if password_matches(given, expected):
            st.session_state[SIGNED_IN] = _digest(expected)
            st.rerun()
        st.error("Wrong password.")
    st.stop()
