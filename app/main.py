"""Streamlit entry point: page config, shared resources opened once, and explicit page registration.

Pages are grouped by who uses them. A participant who arrives with `?survey=<token>` (or any visitor when the
app runs in survey-only mode) gets the survey page alone, with no navigation to the rest of the product. When
accounts exist (or RENAL_LDM_ADMIN_PASSWORD is set) every other visitor gets the sign-in page alone until they
sign in, and then the pages of their role; with neither, the app runs in open mode (app/access.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run app/main.py` puts app/ (not the repo root) on sys.path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app import access, resources  # noqa: E402
from app.pages_registry import participant_pages, role_pages, sign_in_pages  # noqa: E402
from app.settings import load_settings  # noqa: E402
from app.survey_participant import enter_participant_mode  # noqa: E402

st.set_page_config(page_title="renal-ldm", page_icon="🧫", layout="wide")

resources.database()  # migrations applied once per process (and database URL)

settings = load_settings()
is_participant = enter_participant_mode(settings.survey_only)  # ?survey= / ?resume=, sticky per session
access.write_pending_cookie()
if is_participant:
    navigation = st.navigation(participant_pages(), position="hidden")
elif access.open_mode():
    access.sidebar(None)
    resources.generation_service()  # the background sampling worker starts (and imports torch) right away
    navigation = st.navigation(role_pages())
elif (identity := access.current_identity()) is None:
    navigation = st.navigation(sign_in_pages(), position="hidden")
else:
    access.sidebar(identity)
    resources.generation_service()
    navigation = st.navigation(role_pages(identity.role))
navigation.run()
