DROP POLICY tenant_scope ON audit.customer_audit_events;
DROP POLICY tenant_scope ON audit.chain_heads;
CREATE POLICY tenant_scope ON audit.customer_audit_events
  USING (tenant_id = current_setting('queue.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true));
CREATE POLICY tenant_scope ON audit.chain_heads
  USING (tenant_id = current_setting('queue.tenant_id', true))
  WITH CHECK (tenant_id = current_setting('queue.tenant_id', true));
