"""The tickets the tickets page lists. Tickets are the Console's data, not Raptor's identity schema,
so the stand-in has a fixed list per tenant; what matters here is who may see them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ticket:
    id: str
    title: str


TICKETS: tuple[Ticket, ...] = (
    Ticket("T-1001", "The export button does nothing"),
    Ticket("T-1002", "Invoices show the wrong VAT rate"),
    Ticket("T-1003", "Cannot invite a colleague"),
)
