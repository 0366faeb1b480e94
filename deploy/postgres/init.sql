-- First-start set-up of the development database (docker-compose.yml).
-- Runs once, as the superuser, by the postgres image's entrypoint, when the data volume is
-- empty; to run it again, remove the volume: docker compose down -v.
-- The server is already started with shared_preload_libraries=pgaudit at this point.

-- The services' login role: not a superuser. It owns the database, so the services' migrations
-- can create their schemas (auth, rbac, audit) in it. The password is for development only.
CREATE ROLE queue LOGIN PASSWORD 'queue';
CREATE DATABASE queue OWNER queue;

\connect queue

-- Installs pgaudit's event triggers in the Queue database, which DDL audit logging relies on
-- (the library itself is loaded by shared_preload_libraries). Needs superuser, hence here.
CREATE EXTENSION IF NOT EXISTS pgaudit;
