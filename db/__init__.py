"""The product's database: SQLAlchemy models, engine and sessions, Alembic migrations, repository functions.

Pages and the CLI use `db.repository` only (no SQL elsewhere); `init_db()` migrates to head at app start.
"""

from db.session import database_url, get_engine, init_db, masked_url, session_scope

__all__ = ["database_url", "get_engine", "init_db", "masked_url", "session_scope"]
