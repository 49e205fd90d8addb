"""Alembic environment: the target metadata is db.models; the connection comes from db.migrate.

db.migrate passes an open connection (inside its transaction) through config.attributes, so migrations use
the product's engine settings (SQLite pragmas). Without one, an engine is made from sqlalchemy.url.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from db.models import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def _render_item(type_: str, obj, autogen_context) -> str | bool:
    """Render the product's UTC timestamp type as plain SQL in generated migrations (no db.models import)."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    from db.session import get_engine

    with get_engine(config.get_main_option("sqlalchemy.url")).begin() as connection:
        _configure(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
