"""The session-cost panel: what this request cost in the session layer.

``SessionCostMiddleware`` comes first in ``MIDDLEWARE``, so it sees the response after
the session middleware has saved the session. It takes the difference of this thread's
django-memopt counters over the request and puts it in the page where the base template
left :data:`MARKER`. A form's POST ends in a redirect, which shows no page: its cost
travels in a cookie to the page the redirect leads to, and is shown there too. On the Redis
engine it also says where the session's load came from: the client-side cache
(``MEMOPT_REDIS_CLIENT_CACHE``) or Redis.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from django_memopt import stats

MARKER = b"<!-- session-cost -->"
PREVIOUS_COOKIE = "session_cost_of_redirect"
REDIS_ENGINE = "django_memopt.backends.redis"
# Each load on the Redis engine with the client-side cache on counts one of these.
CACHE_LOAD_COUNTERS = ("cache_hits", "cache_misses", "cache_bypasses")
COUNTED = (*stats.ENGINE_COUNTERS, *stats.GATE_COUNTERS, *CACHE_LOAD_COUNTERS)
REJECTIONS = ("malformed", "forged", "unsigned", "unknown")


def gate_verdict(cost: Counter[str]) -> str:
    if not cost["checked"]:
        return "no session cookie sent"
    for reason in REJECTIONS:
        if cost[f"rejected_{reason}"]:
            return f"rejected the cookie: {reason} session ID"
    return "let the cookie through"


def save_kind(cost: Counter[str]) -> str:
    if cost["creates"]:
        return "created the session"
    if cost["updates"]:
        return "updated the changed fields"
    if cost["touches"]:
        return "refreshed the expiry only"
    return "nothing to save"


def load_source(cost: Counter[str]) -> str:
    """Where the session's load came from, on the Redis engine ("" on the others, or with
    no load). A round trip, if any load of the request made one, is what it cost."""
    if cost["cache_bypasses"]:
        return "loaded from Redis (cache bypassed: channel not confirmed)"
    if cost["cache_misses"]:
        return "loaded from Redis (not held / invalidated)"
    if cost["cache_hits"]:
        return "served locally (no round trip)"
    # With the cache on, each load counts one of the above.
    if cost["loads"] and settings.SESSION_ENGINE == REDIS_ENGINE:
        return "loaded from Redis (client-side cache off)"
    return ""


def described(request_line: str, cost: Counter[str]) -> dict[str, Any]:
    """What the panel shows of one request."""
    rewrite = cost["bytes_rewrite"]
    return {
        "request": request_line,
        "cost": cost,
        "gate": gate_verdict(cost),
        "load": load_source(cost),
        "save": save_kind(cost),
        "share": f"{cost['bytes_written'] / rewrite:.2%}" if rewrite else "",
    }


def previous(request: HttpRequest) -> dict[str, Any] | None:
    """The cost of the request that redirected here, from its cookie (display only)."""
    try:
        line, counts = json.loads(request.COOKIES[PREVIOUS_COOKIE])
        cost = Counter({name: int(counts.get(name, 0)) for name in COUNTED})
        return described(str(line), cost)
    except (KeyError, ValueError, TypeError, AttributeError):
        return None


class SessionCostMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        counts = stats.counter()
        before = counts.copy()
        response = self.get_response(request)
        cost = counts - before
        request_line = f"{request.method} {request.path}"
        if 300 <= response.status_code < 400:
            response.set_cookie(
                PREVIOUS_COOKIE, json.dumps([request_line, cost]), samesite="Lax", httponly=True
            )
            return response
        if response.streaming or MARKER not in response.content:
            return response
        panel = render_to_string(
            "shop/session_cost.html",
            {
                "counted": settings.SESSION_ENGINE.startswith("django_memopt."),
                "session_key": request.session.session_key or "",
                "this": described(request_line, cost),
                "previous": previous(request),
            },
        )
        response.content = response.content.replace(MARKER, panel.encode())
        if response.has_header("Content-Length"):
            response["Content-Length"] = str(len(response.content))
        if PREVIOUS_COOKIE in request.COOKIES:
            response.delete_cookie(PREVIOUS_COOKIE, samesite="Lax")
        return response
