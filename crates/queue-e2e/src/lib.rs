//! Tests only: `tests/e2e` starts the real service binaries (audit, rbac, auth, proxy and the
//! legacy stand-in) as processes on one throwaway PostgreSQL and drives them over HTTP, as users
//! and operators meet them: the cutover, traces across services, replicas. See docs/testing.md.
