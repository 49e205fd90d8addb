"""Process-wide resources, opened once per server process with st.cache_resource."""

from __future__ import annotations

import streamlit as st


@st.cache_resource(show_spinner=False)
def database() -> str:
    """Apply migrations once at start; returns the (password-masked) database URL for display."""
    from db.session import init_db

    return init_db()
