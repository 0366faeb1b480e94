"""The schema file is the outside world: byte-identical to the shared copy, and the app's tables
are exactly the ones it creates."""

from __future__ import annotations

from pathlib import Path

import pytest
from raptor import Config
from raptor.db import SchemaError, database_tables, ensure_schema, make_engine, schema_tables
from sqlalchemy import Engine, create_engine, text

from .conftest import RAPTOR_DIR, Postgres

SHARED = Path("/work/shared/legacy/raptor-schema.sql")
TABLES = {
    "tenants",
    "customers",
    "webauthn_credentials",
    "customer_sessions",
    "customer_backup_codes",
    "email_verifications",
    "rbac_permissions",
    "rbac_roles",
    "rbac_role_permissions",
    "rbac_grants",
}


def test_schema_file_is_byte_identical_to_the_shared_one() -> None:
    if not SHARED.exists():
        pytest.skip(f"{SHARED} is absent on this machine")
    assert (RAPTOR_DIR / "raptor-schema.sql").read_bytes() == SHARED.read_bytes()


def test_the_apps_tables_are_exactly_the_files(config: Config, engine: Engine) -> None:
    assert schema_tables(config.schema_file) == TABLES
    assert database_tables(engine) == TABLES
    with engine.connect() as conn:
        other = conn.execute(
            text(
                "SELECT schemaname || '.' || tablename FROM pg_tables"
                " WHERE schemaname NOT IN ('public', 'pg_catalog', 'information_schema')"
            )
        ).scalars()
        # Beside public, only the Queue client's audit outbox, in a schema of its own.
        assert list(other) == ["queue_outbox.queue_audit_outbox"]


def test_the_schema_is_created_once_and_a_foreign_database_is_refused(config: Config, postgres: Postgres) -> None:
    url = postgres.create_database("raptor_schema_test").replace("postgresql://", "postgresql+psycopg://")
    eng = make_engine(url)
    try:
        assert ensure_schema(eng, config.schema_file) is True
        assert ensure_schema(eng, config.schema_file) is False
        assert database_tables(eng) == TABLES
    finally:
        eng.dispose()
    foreign = postgres.create_database("raptor_foreign_test").replace("postgresql://", "postgresql+psycopg://")
    eng2 = create_engine(foreign)
    try:
        with eng2.begin() as conn:
            conn.execute(text("CREATE TABLE something_else (id int)"))
        with pytest.raises(SchemaError, match="something_else"):
            ensure_schema(eng2, config.schema_file)
        assert database_tables(eng2) == {"something_else"}
    finally:
        eng2.dispose()


def test_two_starts_at_once_create_the_schema_once(config: Config, postgres: Postgres) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = postgres.create_database("raptor_race_test").replace("postgresql://", "postgresql+psycopg://")
    engines = [make_engine(url), make_engine(url)]
    try:
        with ThreadPoolExecutor(2) as pool:
            created = sorted(pool.map(lambda e: ensure_schema(e, config.schema_file), engines))
        assert created == [False, True]
        assert database_tables(engines[0]) == TABLES
    finally:
        for e in engines:
            e.dispose()
