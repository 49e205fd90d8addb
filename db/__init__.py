"""The product's database: SQLAlchemy models, engine and sessions, Alembic migrations, repository functions.

Pages and the CLI use `db.repository` only (no SQL elsewhere); `db.migrate.init_db()` migrates to head at app
start. db.session (engines, transactions) knows nothing of migrations; db.migrate builds on it.
"""

from db.session import database_url, get_engine, masked_url, session_scope

__all__ = ["database_url", "get_engine", "masked_url", "session_scope"]
