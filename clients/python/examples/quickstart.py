"""Queue from a Python service, against ``make run`` (docs/raptor.md, "Quickstart").

From the repository root, with ``make run`` going in another terminal::

    python3 -m venv var/venv-quickstart && var/venv-quickstart/bin/pip install -e clients/python
    var/venv-quickstart/bin/python clients/python/examples/quickstart.py

It provisions a user, grants them a role on one ticket, checks, revokes, checks again, and writes
an audit event. Run it as often as you like: each run ends where it started.
"""

from __future__ import annotations

from queue_client import AuditEvent, Party, Queue, Scope, Signer

TENANT = "acme-quickstart"

# Under `make run` Queue's services trust issuer `raptor` through Raptor's JWKS
# (http://127.0.0.1:8090/.well-known/jwks.json), which publishes the key in this file.
signer = Signer.from_pem_file("raptor", "var/keys/raptor.pem")

with Queue(
    signer,
    auth_url="http://127.0.0.1:8081",
    rbac_url="http://127.0.0.1:8082",
    audit_url="http://127.0.0.1:8083",
) as q:
    user = q.users.provision("quickstart@acme.test", tenant_id=TENANT, email_verified=True)
    print(f"user {user.id} ({'created' if user.created else 'already there'})")

    made = q.rbac.grant(user.id, "viewer", Scope.ticket(TENANT, "T-1"), reason="quickstart")
    print("may read T-1:", bool(q.rbac.check(user.id, "ticket.read", tenant_id=TENANT, ticket_id="T-1")))
    print("may read T-2:", bool(q.rbac.check(user.id, "ticket.read", tenant_id=TENANT, ticket_id="T-2")))
    q.rbac.revoke(made.grant.id, reason="quickstart done")
    print(
        "after the revocation, may read T-1:",
        bool(q.rbac.check(user.id, "ticket.read", tenant_id=TENANT, ticket_id="T-1")),
    )

    event = AuditEvent("raptor.quickstart.ran", TENANT, Party("service", "quickstart"), Party("user", user.id))
    print("audit event", q.audit.append(event).seq, "in the chain of", TENANT)
