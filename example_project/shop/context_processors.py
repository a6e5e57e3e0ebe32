"""What every page shows: the theme and currency chosen, the cart's size, the store."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from . import cart

STORES = {
    "lmdb": "django-memopt on LMDB",
    "redis": "django-memopt on Redis",
    "django-db": "Django's own db engine",
    "django-cache": "Django's own cache engine on Redis",
    "django-cached-db": "Django's own cached_db engine on Redis",
    "django-file": "Django's own file engine",
    "django-signed-cookies": "Django's own signed_cookies engine",
}


def shop(request: HttpRequest) -> dict[str, Any]:
    session = request.session
    return {
        # Each preference read decodes one field, whatever else the session holds.
        "theme": session.get("pref:theme", "light"),
        "currency": session.get("pref:currency", "EUR"),
        "cart_count": len(cart.skus(session)),
        "store_name": STORES[settings.EXAMPLE_SESSION_STORE],
        # django-memopt's engines only: "Your sessions" reads their index of users' sessions.
        "user_sessions_enabled": getattr(settings, "MEMOPT_USER_SESSIONS", False),
    }
