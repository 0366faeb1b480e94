ALTER FUNCTION rbac.note_change() SECURITY INVOKER RESET search_path;
REVOKE ALL ON ALL TABLES IN SCHEMA rbac FROM queue_rbac_app;
REVOKE USAGE ON SCHEMA rbac FROM queue_rbac_app;
