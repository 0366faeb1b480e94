-- Shadow tables: a change log of a table kept by the database itself (docs/shadow-tables.md).
--
-- `SELECT queue_shadow.attach('auth.users')` creates `auth.users_shadow` and a trigger that
-- records every INSERT, UPDATE and DELETE on `auth.users`: the operation, the old and new rows as
-- jsonb, the database user, the transaction id and the time. Because the database writes it,
-- a change made straight in SQL, bypassing the service, is recorded like any other; comparing
-- the shadow with the audit log finds changes that have no audit event.
--
-- Installed by the platform's migration runner before any service's migrations (idempotent,
-- under an advisory lock), so every service can call it from its own migrations without
-- depending on another service's schema.

CREATE SCHEMA IF NOT EXISTS queue_shadow;

CREATE OR REPLACE FUNCTION queue_shadow.record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
  EXECUTE format(
    'INSERT INTO %I.%I (operation, old_row, new_row, db_user, txid, changed_at) VALUES ($1, $2, $3, $4, $5, $6)',
    TG_TABLE_SCHEMA, TG_TABLE_NAME || '_shadow')
  USING TG_OP,
        CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
        CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END,
        session_user::text,
        txid_current(),
        clock_timestamp();
  RETURN NULL;
END;
$fn$;

CREATE OR REPLACE FUNCTION queue_shadow.attach(target regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  sch text;
  tbl text;
BEGIN
  SELECT n.nspname, c.relname INTO sch, tbl
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = target;
  EXECUTE format(
    'CREATE TABLE IF NOT EXISTS %I.%I (
       shadow_id  bigserial PRIMARY KEY,
       operation  text        NOT NULL CHECK (operation IN (''INSERT'', ''UPDATE'', ''DELETE'')),
       old_row    jsonb,
       new_row    jsonb,
       db_user    text        NOT NULL,
       txid       bigint      NOT NULL,
       changed_at timestamptz NOT NULL
     )', sch, tbl || '_shadow');
  EXECUTE format('DROP TRIGGER IF EXISTS queue_shadow ON %I.%I', sch, tbl);
  EXECUTE format(
    'CREATE TRIGGER queue_shadow AFTER INSERT OR UPDATE OR DELETE ON %I.%I
       FOR EACH ROW EXECUTE FUNCTION queue_shadow.record()', sch, tbl);
  -- Rows of the shadow are never changed: only the trigger's function (its owner) inserts.
  EXECUTE format('REVOKE ALL ON %I.%I FROM PUBLIC', sch, tbl || '_shadow');
END;
$fn$;
