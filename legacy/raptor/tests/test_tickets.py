"""The tickets page answers by permission (ticket.read at the tenant, or on one ticket)."""

from __future__ import annotations

import re

from raptor.seed import DEMO_TENANT_ID

from .conftest import ADMIN, VIEWER, Client, MakeCustomer


def listed(client: Client) -> list[str]:
    r = client.get("/tickets")
    assert r.status_code == 200, r.text
    return re.findall(r'href="/tickets/(T-\d+)"', r.text)


def test_by_permission(base_url: str, make_customer: MakeCustomer) -> None:
    boss = Client(base_url)
    boss.signin(*ADMIN)
    assert listed(boss) == ["T-1001", "T-1002", "T-1003"]
    assert boss.get("/tickets/T-1001").status_code == 200
    assert boss.get("/tickets/T-9999").status_code == 404

    viewer = Client(base_url)
    viewer.signin(*VIEWER)  # demo: viewer on T-1002 only
    assert listed(viewer) == ["T-1002"]
    assert viewer.get("/tickets/T-1002").status_code == 200
    denied = viewer.get("/tickets/T-1001")
    assert denied.status_code == 403 and "you need ticket.read on T-1001" in denied.text

    c = make_customer("tix")
    nobody = Client(base_url)
    nobody.signin(c.email, c.password)
    page = nobody.get("/tickets")
    assert page.status_code == 403 and "<h1>403</h1>" in page.text and "ticket.read" in page.text
    g = boss.post(
        "/api/rbac/grants",
        json={"customer_id": c.id, "role": "viewer", "scope_type": "tenant", "tenant_id": str(DEMO_TENANT_ID)},
    ).json()["grant"]
    assert listed(nobody) == ["T-1001", "T-1002", "T-1003"]
    boss.post(f"/api/rbac/grants/{g['id']}/revoke", json={"reason": "test over"})
    assert nobody.get("/tickets").status_code == 403
    r = Client(base_url).get("/tickets")
    assert r.status_code == 302 and r.headers["Location"].endswith("/signin")
