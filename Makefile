# Queue — the two commands that matter: `make run` and `make test`. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PG_PORT := 54329

.PHONY: help run test test-deps fmt fmt-check clippy lint-python test-python test-rust test-e2e check-deploy schema schema-check build db db-stop db-psql clean-var bench-audit bench-proxy bench-auth bench-rbac bench-import bench bench-deps

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

run: ## the whole stack on a project-local PostgreSQL; Ctrl-C stops it
	scripts/run-stack.sh

test: test-deps fmt-check clippy lint-python check-deploy schema-check test-rust test-python ## everything CI checks

test-deps: ## pgaudit, moto (KMS), the API tools (var/venv-api), chromium + playwright-core (browser test) for the tests; idempotent
	scripts/install-test-deps.sh

fmt-check:
	cargo fmt --all -- --check

fmt: ## format the code
	cargo fmt --all

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

PY := var/venv-api/bin
PY_FILES := scripts tools tests/api
lint-python: ## ruff check, ruff format --check and mypy --strict on the repo's Python (each package with its own venv)
	$(PY)/ruff check $(PY_FILES)
	$(PY)/ruff format --check $(PY_FILES)
	MYPYPATH=tests/api $(PY)/mypy --strict scripts tools tests/api/hooks.py tests/api/tokens.py
	var/venv-client/bin/ruff check clients/python
	var/venv-client/bin/ruff format --check clients/python
	cd clients/python && ../../var/venv-client/bin/mypy src tests examples
	var/venv-raptor/bin/ruff check legacy/raptor
	var/venv-raptor/bin/ruff format --check legacy/raptor
	var/venv-raptor/bin/mypy --config-file legacy/raptor/pyproject.toml legacy/raptor/raptor legacy/raptor/tests

# The Python packages' suites, against the real services (target/debug, built by test-rust).
# Two runs: each package has its own `tests` package and pyproject.toml.
test-python: ## the Python suites: the client (clients/python) against the real services, Raptor (legacy/raptor)
	cargo build --bins -p queue-audit -p queue-rbac -p queue-auth -p queuectl
	env -u DATABASE_URL var/venv-client/bin/pytest clients/python/tests -q
	var/venv-raptor/bin/pytest legacy/raptor/tests -q

# Each test binary starts its own throwaway PostgreSQL unless DATABASE_URL names a cluster.
test-rust:
	env -u DATABASE_URL cargo test --workspace --no-fail-fast

# `make test` runs these within `cargo test --workspace`, which builds the binaries first.
test-e2e: ## only the end-to-end tests (crates/queue-e2e): builds the service binaries, then runs them as processes
	cargo build --bins -p queue-audit -p queue-rbac -p queue-auth -p queue-proxy
	env -u DATABASE_URL cargo test -p queue-e2e

check-deploy: ## validate docker-compose.yml and the Kubernetes manifests
	scripts/check-deploy.sh

schema: ## regenerate each service's src/db/schema.rs from migrations/<service> (diesel print-schema)
	scripts/schema.sh write

schema-check: ## fail when a src/db/schema.rs differs from its migrations (part of `make test`)
	scripts/schema.sh check

build: ## build every binary (debug)
	cargo build --workspace --bins

db: ## start the project-local PostgreSQL on 127.0.0.1:54329 (data in var/pg)
	scripts/pg-cluster.sh start var/pg $(PG_PORT) queue
	@echo "DATABASE_URL=postgres://queue@127.0.0.1:$(PG_PORT)/queue"

db-stop: ## stop it
	scripts/pg-cluster.sh stop var/pg

db-psql: ## a psql shell on it
	psql postgres://queue@127.0.0.1:$(PG_PORT)/queue

clean-var: db-stop ## remove the local cluster, keys and logs
	rm -rf var

bench-deps: ## wrk and nginx for the benchmarks (installed when missing, as root)
	scripts/bench-deps.sh

bench: bench-audit bench-rbac bench-auth bench-proxy bench-import ## every benchmark, one after another; each rewrites its section of docs/benchmarks.md

bench-audit: bench-deps ## audit writer/verifier figures beside pgbench INSERTs; writes docs/benchmarks.md
	cargo bench -p queue-audit --bench bench-audit

bench-rbac: bench-deps ## rbac checks/batch checks/grants over 1,000,000 grants; writes docs/benchmarks.md
	cargo bench -p queue-rbac --bench bench-rbac

bench-auth: bench-deps ## session validations/s and passkey logins/s beside pgbench select-only; writes docs/benchmarks.md
	cargo bench -p queue-auth --bench bench-auth

bench-import: ## queuectl legacy import of a generated Raptor (1.85 M rows) into auth, rbac, audit, then again; writes docs/benchmarks.md
	cargo bench -p queuectl --bench bench-import

bench-proxy: bench-deps ## queue-proxy beside nginx in front of one upstream (wrk, 1 KiB); writes docs/benchmarks.md
	scripts/bench-proxy.sh
