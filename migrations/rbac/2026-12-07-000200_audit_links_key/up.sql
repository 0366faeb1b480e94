-- A primary key for the audit links, so the table can be described by the schema.rs that diesel
-- generates from these migrations (diesel describes only tables with one). Each link names a
-- distinct audit event (a change's pre-written event, or an expiry's event derived from its
-- grant), so the event id is the natural key; nothing the service writes changes.
ALTER TABLE rbac.rbac_audit_links ADD PRIMARY KEY (audit_event_id);
