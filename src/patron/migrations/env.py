from alembic import context
from sqlalchemy import Connection

import patron.tables  # noqa: F401  (fills the metadata)
from patron.db import get_engine, metadata

config = context.config


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with get_engine(config.get_main_option("sqlalchemy.url")).connect() as conn:
        run(conn)
