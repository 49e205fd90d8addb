"""Process-wide resources, opened once per server process with st.cache_resource."""

from __future__ import annotations

import streamlit as st

from app.generation import GenerationService


@st.cache_resource(show_spinner=False)
def _migrated(url: str) -> str | None:
    from db.migrate import init_db

    return init_db(url)


def database() -> str | None:
    """Apply migrations once per process and database URL; returns the revision the database is at."""
    from db.session import database_url

    return _migrated(database_url())


@st.cache_resource(show_spinner=False)
def generation_service() -> GenerationService:
    """The one background sampling worker of this process (models are loaded once, inside it)."""
    return GenerationService(prewarm=True)
