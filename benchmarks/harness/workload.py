"""The workload every engine benchmark shares: session sizes, payloads and requests.

A timed request is exactly the session calls one request makes through Django's
``SessionMiddleware``: ``SessionStore(cookie)``, the view's reads and writes, then
:func:`respond`. Payloads are deterministic (seeded), so every run and every engine
stores the same sessions.
"""

from __future__ import annotations

import functools
import json
import random
import string
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks.harness.servers import EXAMPLE

SIZES = ("small", "medium", "large")
# keys, target size of the session as Django's JSON serializer writes it (bytes)
SIZE_SPECS = {"small": (5, 512), "medium": (20, 5 * 1024), "large": (50, 100 * 1024)}
OPERATIONS = ("read-only", "typical", "create", "miss")
OPERATION_TEXT = {
    "read-only": "load an existing session, read 2 keys, no save",
    "typical": "load an existing session, read 2 keys, change 1 small key, save",
    "create": "new session (no cookie), set every key of the payload, save",
    "miss": "cookie with an unknown well-formed session ID, read 1 key (gets nothing)",
}
COLD = "typical, cold"  # the typical request, each one right after another engine's
READ_KEYS = ("_auth_user_id", "_auth_user_hash")
WRITE_KEY = "visits"
PAYLOAD_VARIANTS = 16
SEED = 20240601

Payloads = dict[str, list[dict[str, Any]]]

# -- payloads --------------------------------------------------------------------------------

_WORD_TEXT = (
    "account address basket billing blue cart catalog checkout coffee colour country "
    "coupon credit delivery discount dress express filter garden gift green invoice jacket "
    "kitchen lamp large leather medium order package payment phone price product profile "
    "promo quantity receipt refund return review search shipping shoes size small sofa "
    "standard street summer table total tracking voucher wallet warehouse winter wishlist"
)
_WORDS = tuple(_WORD_TEXT.split())
# (name, kind) of the keys after the login trio and the counter, in order.
_EXTRA_KEYS = (
    ("prefs", "dict"),
    ("cart", "records"),
    ("recently_viewed", "ints"),
    ("last_search", "text"),
    ("checkout_step", "int"),
    ("csrf_hint", "token"),
    ("messages", "texts"),
    ("newsletter_seen", "flag"),
    ("wizard_data", "dict"),
    ("form_draft", "text"),
    ("compare", "ints"),
    ("coupon", "token"),
    ("shipping", "dict"),
    ("wishlist", "records"),
    ("banner_dismissed", "flag"),
    ("ab_bucket", "int"),
    ("notes", "text"),
)
_SCALED_KINDS = {"dict": 1.0, "records": 2.0, "ints": 0.5, "text": 1.5, "texts": 1.0}


def _text(rng: random.Random, length: int) -> str:
    words: list[str] = []
    total = 0
    while total < length:
        word = rng.choice(_WORDS)
        words.append(word)
        total += len(word) + 1
    return " ".join(words)[: max(length, 1)]


def _record(rng: random.Random) -> dict[str, Any]:
    return {
        "id": rng.randrange(1, 10**6),
        "title": _text(rng, 40),
        "qty": rng.randrange(1, 5),
        "price": f"{rng.randrange(100, 99_999) / 100:.2f}",
        "tags": [rng.choice(_WORDS) for _ in range(2)],
    }


def _value(rng: random.Random, kind: str, chars: int) -> Any:
    """A JSON-serializable value of ``kind`` taking about ``chars`` characters as JSON."""
    if kind == "int":
        return rng.randrange(1, 10_000)
    if kind == "flag":
        return rng.random() < 0.5
    if kind == "token":
        return f"{rng.getrandbits(128):032x}"
    if kind == "text":
        return _text(rng, chars)
    if kind == "texts":
        return [_text(rng, 50) for _ in range(max(1, chars // 60))]
    if kind == "ints":
        return [rng.randrange(1, 10**6) for _ in range(max(1, chars // 8))]
    if kind == "dict":
        return {
            "lang": rng.choice(("en", "de", "fr", "nl")),
            "currency": rng.choice(("EUR", "USD", "GBP")),
            "page_size": rng.choice((20, 50, 100)),
            "dark_mode": rng.random() < 0.5,
            "comment": _text(rng, max(1, chars - 90)),
        }
    if kind == "records":
        return [_record(rng) for _ in range(max(1, chars // 110))]
    raise ValueError(kind)


def json_size(payload: dict[str, Any]) -> int:
    """Bytes of ``payload`` as ``django.contrib.sessions.serializers.JSONSerializer`` writes it."""
    return len(json.dumps(payload, separators=(",", ":")).encode())


def _build(size: str, variant: int, scale: float) -> dict[str, Any]:
    keys, _target = SIZE_SPECS[size]
    rng = random.Random(f"{SEED}-{size}-{variant}")
    payload: dict[str, Any] = {
        "_auth_user_id": str(rng.randrange(1, 10**6)),
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": f"{rng.getrandbits(256):064x}",
        WRITE_KEY: rng.randrange(1, 1000),
    }
    for i in range(keys - len(payload)):
        name, kind = _EXTRA_KEYS[i % len(_EXTRA_KEYS)]
        if i >= len(_EXTRA_KEYS):
            name = f"{name}_{i // len(_EXTRA_KEYS) + 1}"
        payload[name] = _value(rng, kind, int(scale * _SCALED_KINDS.get(kind, 0.0)))
    return payload


def _payloads_of(size: str) -> list[dict[str, Any]]:
    """``PAYLOAD_VARIANTS`` payloads of one size, each within a few % of the target."""
    _keys, target = SIZE_SPECS[size]
    scale = 100.0
    for _ in range(8):
        actual = json_size(_build(size, 0, scale))
        fixed = json_size(_build(size, 0, 0.0))
        if abs(actual - target) <= target * 0.02:
            break
        scale = max(1.0, scale * (target - fixed) / max(actual - fixed, 1))
    return [_build(size, variant, scale) for variant in range(PAYLOAD_VARIANTS)]


def make_payloads() -> Payloads:
    """The payload variants of every size."""
    return {size: _payloads_of(size) for size in SIZES}


def session_payload(payloads: Payloads, size: str, j: int) -> dict[str, Any]:
    """Session ``j`` of a size: a shared variant with its own user and hash."""
    payload = dict(payloads[size][j % PAYLOAD_VARIANTS])
    rng = random.Random(f"{SEED}-user-{size}-{j}")
    payload["_auth_user_id"] = str(rng.randrange(1, 10**7))
    payload["_auth_user_hash"] = f"{rng.getrandbits(256):064x}"
    return payload


# -- the sessions of the memory comparison --------------------------------------------------

MEMORY_SEED = 1313
CART_LINES = 46
MEDIUM_JSON = 2800  # bytes of the memory comparison's medium session as JSON
_ENGLISH: list[str] = []


def _logged_in(rng: random.Random) -> dict[str, Any]:
    """What ``django.contrib.auth.login()`` stores, and a counter."""
    return {
        "_auth_user_id": str(rng.randrange(1, 10**6)),
        "_auth_user_backend": "django.contrib.auth.backends.ModelBackend",
        "_auth_user_hash": f"{rng.getrandbits(256):064x}",
        WRITE_KEY: rng.randrange(1, 1000),
    }


def _english() -> str:
    """English prose: the Python documentation's topics that CPython ships (pydoc_data)."""
    if not _ENGLISH:
        from pydoc_data.topics import topics

        _ENGLISH.append(" ".join(" ".join(text.split()) for _, text in sorted(topics.items())))
    return _ENGLISH[0]


@functools.cache
def _medium_scale(variant: int) -> float:
    """The scale at which the workload's medium builder makes ``MEDIUM_JSON`` bytes."""
    low, high = 1.0, 400.0
    for _ in range(40):
        middle = (low + high) / 2
        if json_size(_build("medium", variant, middle)) < MEDIUM_JSON:
            low = middle
        else:
            high = middle
    return low


def _cart(rng: random.Random, english: bool) -> dict[str, Any]:
    """``CART_LINES`` lines of the example shop's cart (``shop/cart.py``: one key per line,
    each with a copy of the product's description), for products of its catalogue."""
    if EXAMPLE not in sys.path:
        sys.path.insert(0, EXAMPLE)
    from shop.catalog import PRODUCTS

    skus = sorted(PRODUCTS)
    rng.shuffle(skus)
    start = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    lines = {}
    for n, sku in enumerate(skus[:CART_LINES]):
        product = PRODUCTS[sku]
        description = product.description
        if english:  # the catalogue's descriptions use 23 words, which flatters compressors
            prose = _english()
            at = rng.randrange(len(prose) - len(description))
            description = prose[at : at + len(description)]
        lines[f"cart:{sku}"] = {
            "sku": product.sku,
            "name": product.name,
            "unit_cents": int(product.price * 100),
            "quantity": rng.randrange(1, 4),
            "added": (start + timedelta(seconds=37 * n)).isoformat(),
            "description": description,
        }
    return lines


def memory_session(kind: str, j: int) -> dict[str, Any]:
    """Session ``j`` of a kind of :data:`MEMORY_SESSIONS`: a shared variant of its content
    (one of ``PAYLOAD_VARIANTS``) with a login of its own."""
    variant = j % PAYLOAD_VARIANTS
    login = _logged_in(random.Random(f"{MEMORY_SEED}-user-{kind}-{j}"))
    if kind == "logged in":
        return login
    if kind == "medium":
        payload = _build("medium", variant, _medium_scale(variant))
    else:
        rng = random.Random(f"{MEMORY_SEED}-{kind}-{variant}")
        payload = {**login, **_cart(rng, english=kind == "large, English")}
    payload.update(login)
    return payload


#: The sessions of the memory comparison -> what they are.
MEMORY_SESSIONS = {
    "logged in": "what `login()` stores (`_auth_user_id`, `_auth_user_backend`, "
    "`_auth_user_hash`: 64 hex characters) and a counter",
    "medium": "20 keys: the login, a counter, preferences, small lists and short texts",
    "large": f"50 keys: the login, a counter and {CART_LINES} lines of the example shop's cart, "
    "each with its product's description",
    "large, English": "the same cart, each description replaced by English prose as long "
    "(the shop's descriptions are drawn from 23 words, which flatters every compressor)",
}


def random_session_key(rng: random.Random) -> str:
    """A well-formed session ID of Django's form (32 lowercase letters and digits)."""
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(32))


# -- one request, as SessionMiddleware drives the session ------------------------------------


def respond(session: Any) -> None:
    """The session calls of ``SessionMiddleware.process_response`` (Django 5.2)."""
    _accessed = session.accessed
    modified = session.modified
    empty = session.is_empty()
    if modified and not empty:
        if not session.get_expire_at_browser_close():
            session.get_expiry_age()
        session.save()
        _cookie = session.session_key


def read_only(store: Any, key: str, _arg: Any) -> Any:
    session = store(key)
    session.get(READ_KEYS[0])
    session.get(READ_KEYS[1])
    respond(session)
    return session


def typical(store: Any, key: str, arg: Any) -> Any:
    session = store(key)
    session.get(READ_KEYS[0])
    session.get(READ_KEYS[1])
    session[WRITE_KEY] = arg
    respond(session)
    return session


def create(store: Any, _key: str, arg: Any) -> Any:
    session = store(None)
    for name, value in arg.items():
        session[name] = value
    respond(session)
    return session


def miss(store: Any, key: str, _arg: Any) -> Any:
    session = store(key)
    session.get(READ_KEYS[0])
    respond(session)
    return session


def read_every_key(store: Any, key: str, _arg: Any) -> Any:
    """The read-only request with every field decoded first, as an eager load does."""
    session = store(key)
    dict(session.items())
    session.get(READ_KEYS[0])
    session.get(READ_KEYS[1])
    respond(session)
    return session


REQUESTS: dict[str, Callable[[Any, str, Any], Any]] = {
    "read-only": read_only,
    "typical": typical,
    "create": create,
    "miss": miss,
}
