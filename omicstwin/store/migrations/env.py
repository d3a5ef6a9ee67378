"""Alembic environment of the omicstwin results database.

Run programmatically by :func:`omicstwin.store.db.upgrade_db`, which passes an open connection in
``config.attributes["connection"]`` so that the migration runs inside the caller's transaction.
"""

from __future__ import annotations

from alembic import context

from omicstwin.store.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()
