"""Load the SQL kept in ``include/sql/services_sync``.

Values always travel as bind parameters (``%(name)s``). The only things composed into SQL
text are identifiers we validated (the state schema), through :mod:`psycopg.sql`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from services_sync.core.config import load_settings


@cache
def sql_dir() -> Path:
    """``include/sql``: the Jinja search path of SQL operators and the root of every file here."""
    return load_settings().sql_dir


def load_sql(name: str) -> str:
    """Text of ``include/sql/services_sync/<name>``."""
    path = sql_dir() / "services_sync" / name
    try:
        return path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"SQL file {path} is missing; set SERVICES_SYNC_SQL_DIR to the folder holding "
            "services_sync/*.sql (include/sql in this repository)"
        ) from None
