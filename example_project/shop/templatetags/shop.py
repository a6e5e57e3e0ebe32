"""Template filters of the example shop."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()

# Illustrative, fixed rates: catalogue prices are in euros.
RATES = {"EUR": ("€", Decimal(1)), "USD": ("$", Decimal("1.08")), "GBP": ("£", Decimal("0.86"))}


@register.filter
def money(amount: Decimal, currency: str) -> str:
    """``amount`` euros shown in ``currency``, e.g. ``$12.40``."""
    symbol, rate = RATES.get(currency, RATES["EUR"])
    return f"{symbol}{(amount * rate).quantize(Decimal('0.01'), ROUND_HALF_UP):,}"


@register.filter
def kilobytes(count: int) -> str:
    return f"{count:,} B" if count < 10_000 else f"{count / 1024:,.1f} KB"
