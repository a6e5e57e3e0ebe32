"""The shop's products: a fixed, generated catalogue (no database needed).

Each product has a long description, and a cart line keeps a copy of it (as real carts
keep the price and text the customer saw), so a full cart is a session of about 100 KB.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

_KINDS = (
    "tea", "coffee", "notebook", "pen", "mug", "lamp", "blanket", "chair",
    "kettle", "backpack", "scarf", "teapot",
)  # fmt: skip
_STYLES = ("Alpine", "Harbour", "Meadow", "Copper", "Midnight")
_WORDS = (
    "crafted", "small", "batch", "durable", "gentle", "warm", "bright", "quiet", "honest",
    "simple", "sturdy", "light", "balanced", "smooth", "rich", "clean", "everyday",
    "classic", "careful", "natural", "recycled", "local", "slow",
)  # fmt: skip
_DESCRIPTION_WORDS = 260


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: Decimal
    description: str


def _catalogue() -> dict[str, Product]:
    rng = random.Random(20261124)  # the same catalogue on every start
    products = {}
    for style in _STYLES:
        for kind in _KINDS:
            sku = f"{style.lower()}-{kind}"
            words = " ".join(rng.choice(_WORDS) for _ in range(_DESCRIPTION_WORDS))
            price = Decimal(rng.randrange(300, 9000)) / 100
            products[sku] = Product(sku, f"{style} {kind}", price, words.capitalize() + ".")
    return products


PRODUCTS: dict[str, Product] = _catalogue()
