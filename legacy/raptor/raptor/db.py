"""The database: an engine, and the schema created from ``raptor-schema.sql`` on an empty database.

Raptor runs no DDL of its own: on a database with no tables in ``public`` it executes the schema
file as it is; on one that has exactly the file's tables it does nothing; anything else is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import Engine, create_engine, text

TABLE_RE = re.compile(r"^\s*CREATE\s+TABLE\s+(\w+)", re.IGNORECASE | re.MULTILINE)


class SchemaError(RuntimeError):
    """The database holds tables that are not exactly those of the schema file."""


def make_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def schema_tables(schema_file: Path) -> set[str]:
    """The tables ``schema_file`` creates."""
    return set(TABLE_RE.findall(schema_file.read_text(encoding="utf-8")))


def database_tables(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        return {str(r[0]) for r in rows}


def ensure_schema(engine: Engine, schema_file: Path) -> bool:
    """Create the schema when the database is empty; True when it did."""
    wanted = schema_tables(schema_file)
    sql = schema_file.read_text(encoding="utf-8")
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        # One transaction, serialized against another Raptor starting on the same database.
        cur.execute("SELECT pg_advisory_xact_lock(7017)")
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        have = {str(r[0]) for r in cur.fetchall()}
        if have == wanted:
            raw.rollback()
            return False
        if have:
            raw.rollback()
            missing, extra = sorted(wanted - have), sorted(have - wanted)
            raise SchemaError(
                f"the database is neither empty nor Raptor's: missing tables {missing}, unexpected tables {extra}"
            )
        cur.execute(sql)  # the file as it is, in this transaction
        raw.commit()
    finally:
        raw.close()
    return True
