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


@register.filter
def stat(value: object, name: str) -> str:
    """A ``memopt_stats`` figure as a person reads it: 12,345; 33.8%; 1.5 ms."""
    if isinstance(value, bool) or value is None:
        return "–" if value is None else ("yes" if value else "no")
    if isinstance(value, int | float) and name.endswith(("_share", "_rate", "_ratios")):
        return f"{value:.2%}"
    if isinstance(value, int | float) and ("_ns_" in name or name.endswith("_ns")):
        return f"{value / 1e6:,.1f} ms"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{key}: {count}" for key, count in value.items())
    if isinstance(value, list):
        return ", ".join(stat(item, name) for item in value)
    return str(value)
