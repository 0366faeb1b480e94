-- RBAC: permissions, roles (built-in and per tenant), grants at global / tenant / ticket scope,
-- a revision counter that orders every change, the change log caches follow, and the links
-- from each changing transaction to the audit event written for it before it ran.

CREATE TABLE rbac.rbac_permissions (
  name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$'),
  description text NOT NULL
);

INSERT INTO rbac.rbac_permissions (name, description) VALUES
  ('ticket.read',      'read tickets'),
  ('ticket.write',     'create and change tickets'),
  ('audit.read',       'read the audit log, verify and export it'),
  ('rbac.read',        'see roles and grants'),
  ('rbac.grant',       'grant and revoke roles (never beyond one''s own permissions)'),
  ('rbac.roles',       'define custom roles'),
  ('security.manage',  'security settings and incident response');

CREATE TABLE rbac.rbac_roles (
  id             uuid PRIMARY KEY,
  name           text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_.-]{0,63}$'),
  -- NULL: a built-in role, the same in every tenant.
  tenant_id      text,
  builtin        boolean NOT NULL DEFAULT false,
  description    text NOT NULL DEFAULT '',
  created_by     text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  CHECK (builtin = (tenant_id IS NULL))
);
CREATE UNIQUE INDEX rbac_roles_name ON rbac.rbac_roles (coalesce(tenant_id, ''), name);

CREATE TABLE rbac.rbac_role_permissions (
  role_id    uuid NOT NULL REFERENCES rbac.rbac_roles (id),
  permission text NOT NULL REFERENCES rbac.rbac_permissions (name),
  PRIMARY KEY (role_id, permission)
);

INSERT INTO rbac.rbac_roles (id, name, builtin, description, created_by) VALUES
  ('00000000-0000-4000-8000-000000000001', 'viewer',         true, 'reads tickets',                          'migration'),
  ('00000000-0000-4000-8000-000000000002', 'agent',          true, 'works tickets',                          'migration'),
  ('00000000-0000-4000-8000-000000000003', 'customer_admin', true, 'runs a tenant: tickets, roles, grants',  'migration'),
  ('00000000-0000-4000-8000-000000000004', 'auditor',        true, 'reads the audit log',                    'migration'),
  ('00000000-0000-4000-8000-000000000005', 'security_admin', true, 'everything, including security',        'migration');
INSERT INTO rbac.rbac_role_permissions (role_id, permission) VALUES
  ('00000000-0000-4000-8000-000000000001', 'ticket.read'),
  ('00000000-0000-4000-8000-000000000002', 'ticket.read'),
  ('00000000-0000-4000-8000-000000000002', 'ticket.write'),
  ('00000000-0000-4000-8000-000000000003', 'ticket.read'),
  ('00000000-0000-4000-8000-000000000003', 'ticket.write'),
  ('00000000-0000-4000-8000-000000000003', 'rbac.read'),
  ('00000000-0000-4000-8000-000000000003', 'rbac.grant'),
  ('00000000-0000-4000-8000-000000000003', 'rbac.roles'),
  ('00000000-0000-4000-8000-000000000004', 'audit.read'),
  ('00000000-0000-4000-8000-000000000004', 'rbac.read'),
  ('00000000-0000-4000-8000-000000000005', 'ticket.read'),
  ('00000000-0000-4000-8000-000000000005', 'ticket.write'),
  ('00000000-0000-4000-8000-000000000005', 'audit.read'),
  ('00000000-0000-4000-8000-000000000005', 'rbac.read'),
  ('00000000-0000-4000-8000-000000000005', 'rbac.grant'),
  ('00000000-0000-4000-8000-000000000005', 'rbac.roles'),
  ('00000000-0000-4000-8000-000000000005', 'security.manage');

CREATE TABLE rbac.rbac_grants (
  id                 uuid PRIMARY KEY,
  principal_id       text NOT NULL,
  role_id            uuid NOT NULL REFERENCES rbac.rbac_roles (id),
  scope_type         text NOT NULL CHECK (scope_type IN ('global', 'tenant', 'ticket')),
  tenant_id          text,
  ticket_id          text,
  expires_at         timestamptz,
  granted_by         text NOT NULL,
  reason             text NOT NULL,
  granted_at         timestamptz NOT NULL,
  audit_event_id     uuid NOT NULL,
  revoked_at         timestamptz,
  revoked_by         text,
  revoke_reason      text,
  revoke_event_id    uuid,
  expiry_recorded_at timestamptz,
  CHECK ((scope_type = 'global' AND tenant_id IS NULL AND ticket_id IS NULL)
      OR (scope_type = 'tenant' AND tenant_id IS NOT NULL AND ticket_id IS NULL)
      OR (scope_type = 'ticket' AND tenant_id IS NOT NULL AND ticket_id IS NOT NULL)),
  CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX rbac_grants_principal ON rbac.rbac_grants (principal_id);
CREATE INDEX rbac_grants_scope ON rbac.rbac_grants (tenant_id, ticket_id);
CREATE INDEX rbac_grants_unrecorded_expiry ON rbac.rbac_grants (expires_at)
  WHERE expires_at IS NOT NULL AND expiry_recorded_at IS NULL;

-- One counter orders every change. Its row lock is held to commit, so revisions commit in
-- order: whoever sees revision n sees every change up to n.
CREATE TABLE rbac.rbac_revision (
  id       integer PRIMARY KEY CHECK (id = 1),
  revision bigint NOT NULL
);
INSERT INTO rbac.rbac_revision VALUES (1, 0);

-- What changed at each revision: a principal's grants, or (NULL) possibly anyone's.
CREATE TABLE rbac.rbac_changes (
  revision     bigint PRIMARY KEY,
  principal_id text,
  changed_at   timestamptz NOT NULL DEFAULT now()
);

-- Written by the service in every transaction that changes roles or grants: the audit event
-- recorded for it. Reconcile matches shadow rows to these by transaction id.
CREATE TABLE rbac.rbac_audit_links (
  txid           bigint NOT NULL DEFAULT txid_current(),
  audit_event_id uuid NOT NULL,
  tenant_id      text NOT NULL,
  action         text NOT NULL,
  linked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rbac_audit_links_txid ON rbac.rbac_audit_links (txid);

-- Every change to grants or role permissions, by the service or by hand, takes a revision,
-- logs it and notifies the replicas' caches (channel rbac_changes, payload "revision:principal"
-- or "revision:*").
CREATE FUNCTION rbac.note_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
  rev bigint;
  who text;
BEGIN
  UPDATE rbac.rbac_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision INTO rev;
  IF TG_TABLE_NAME = 'rbac_grants' THEN
    IF TG_OP = 'INSERT' THEN
      who := NEW.principal_id;
    ELSIF TG_OP = 'DELETE' THEN
      who := OLD.principal_id;
    ELSIF TG_OP = 'UPDATE' THEN
      IF NEW.principal_id = OLD.principal_id THEN
        who := NEW.principal_id;
      END IF;
    END IF;
  END IF;
  INSERT INTO rbac.rbac_changes (revision, principal_id) VALUES (rev, who);
  PERFORM pg_notify('rbac_changes', rev::text || ':' || coalesce(who, '*'));
  RETURN NULL;
END;
$fn$;

CREATE TRIGGER rbac_grants_changed AFTER INSERT OR UPDATE OR DELETE ON rbac.rbac_grants
  FOR EACH ROW EXECUTE FUNCTION rbac.note_change();
CREATE TRIGGER rbac_role_permissions_changed AFTER INSERT OR UPDATE OR DELETE ON rbac.rbac_role_permissions
  FOR EACH ROW EXECUTE FUNCTION rbac.note_change();
CREATE TRIGGER rbac_grants_truncated AFTER TRUNCATE ON rbac.rbac_grants
  FOR EACH STATEMENT EXECUTE FUNCTION rbac.note_change();

-- Shadow tables (docs/shadow-tables.md): every change, by whomever, recorded by the database.
SELECT queue_shadow.attach('rbac.rbac_roles');
SELECT queue_shadow.attach('rbac.rbac_role_permissions');
SELECT queue_shadow.attach('rbac.rbac_grants');
