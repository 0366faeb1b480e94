-- Group commit across tenants: a writer transaction extends the chains of several tenants at
-- once. Besides the one tenant of `queue.tenant_id` (readers, verifiers, checkpoints), a row is
-- visible and writable when its tenant is in `queue.writer_tenants`, a comma-separated list the
-- writer sets for its transaction (tenant ids cannot contain a comma: the writer's validation
-- allows letters, digits and . _ : - only). With neither set, still nothing is visible.
DROP POLICY tenant_scope ON audit.customer_audit_events;
DROP POLICY tenant_scope ON audit.chain_heads;

CREATE POLICY tenant_scope ON audit.customer_audit_events
  USING (tenant_id = current_setting('queue.tenant_id', true)
         OR tenant_id = ANY (string_to_array(current_setting('queue.writer_tenants', true), ',')))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true)
         OR tenant_id = ANY (string_to_array(current_setting('queue.writer_tenants', true), ',')));
CREATE POLICY tenant_scope ON audit.chain_heads
  USING (tenant_id = current_setting('queue.tenant_id', true)
         OR tenant_id = ANY (string_to_array(current_setting('queue.writer_tenants', true), ',')))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true)
         OR tenant_id = ANY (string_to_array(current_setting('queue.writer_tenants', true), ',')));
