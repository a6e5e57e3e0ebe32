"""The cart, kept in the session as one key per line: ``cart:<sku>``.

One key per line is what lets two tabs add different products at the same time: each
request's save carries only the lines it changed, so neither overwrites the other's.
Listing the lines reads only the keys; a line's value is decoded only when it is used.
Lines hold only JSON types (prices in cents), so the shop also runs on Django's engines.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from .catalog import Product

PREFIX = "cart:"


def skus(session: SessionBase) -> list[str]:
    """The products in the cart, without decoding any line."""
    names = session.keys()  # noqa: SIM118 - a session object has no __iter__
    return [name.removeprefix(PREFIX) for name in names if name.startswith(PREFIX)]


def add(session: SessionBase, product: Product, quantity: int = 1) -> None:
    """Put ``quantity`` more of ``product`` in the cart (reads only that line)."""
    key = PREFIX + product.sku
    line = session.get(key)
    if line is None:
        session[key] = {
            "sku": product.sku,
            "name": product.name,
            "unit_cents": int(product.price * 100),
            "quantity": quantity,
            "added": datetime.now(UTC).isoformat(),
            "description": product.description,
        }
    else:
        session[key] = {**line, "quantity": line["quantity"] + quantity}


def remove(session: SessionBase, sku: str) -> None:
    session.pop(PREFIX + sku, None)


def lines(session: SessionBase) -> list[dict[str, Any]]:
    """Every line, oldest first, each with its ``total``: decodes the whole cart."""
    found = [session[PREFIX + sku] for sku in skus(session)]
    found.sort(key=lambda line: line["added"])
    priced = []
    for line in found:
        unit_price = Decimal(line["unit_cents"]) / 100
        priced.append({**line, "unit_price": unit_price, "total": unit_price * line["quantity"]})
    return priced


def total(found: list[dict[str, Any]]) -> Decimal:
    return sum((line["total"] for line in found), Decimal(0))
