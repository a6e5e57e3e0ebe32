"""Logged-in shoppers for the whole-site benchmark: their sessions, and a view that reads one.

``ROOT_URLCONF = "benchmarks.harness.signed_in_urls"`` serves the example project's URLs,
:func:`whoami` at ``/bench/whoami/`` and :func:`session_heavy` at
``/bench/session-heavy/``. ``python -m benchmarks.harness.signed_in COUNT [heavy]``, run
with a setup's settings, makes ``COUNT`` users (unless they are there) and one logged-in
session each through the configured engine, the shop's small one or, with ``heavy``, the
benchmarks' medium session (:data:`HEAVY_SIZE`), and prints their cookies, one a line.
"""

from __future__ import annotations

import sys
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

WHOAMI = "/bench/whoami/"
SESSION_HEAVY = "/bench/session-heavy/"
#: The workload size of the session-heavy view's sessions (benchmarks.harness.workload).
HEAVY_SIZE = "medium"
PASSWORD = "benchmark-password"  # noqa: S105 - the temporary users of a benchmark
CART = 3  # lines in each shopper's cart
PREFERENCES = {"pref:theme": "dark", "pref:currency": "EUR", "pref:newsletter": True}


def whoami(request: HttpRequest) -> HttpResponse:
    """The logged-in user's ID and cart size, from the session alone (no database).

    403 when the session has no logged-in user: a cookie the engine did not find counts
    as an error of the load generator, never as a fast answer.
    """
    from django.contrib.auth import SESSION_KEY

    session = request.session
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return HttpResponseForbidden("not logged in\n")
    lines = sum(1 for key in session.keys() if key.startswith("cart:"))  # noqa: SIM118
    theme = session.get("pref:theme", "light")
    return HttpResponse(f"user {user_id}, {lines} cart lines, theme {theme}\n")


def session_heavy(request: HttpRequest) -> HttpResponse:
    """The workload's typical request on a session-heavy site, from the session alone (no
    database): reads the logged-in user's ID and cart, counts the visit (so the session is
    saved). 403 as :func:`whoami`."""
    from django.contrib.auth import SESSION_KEY

    session = request.session
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return HttpResponseForbidden("not logged in\n")
    lines = len(session.get("cart", ()))
    session["visits"] = session.get("visits", 0) + 1
    return HttpResponse(f"user {user_id}, {lines} cart lines\n")


def _users(count: int) -> list[Any]:
    """``count`` users (made once, with one password hashed once), in order."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    users = User.objects.filter(username__startswith="shopper")
    if not users.exists():
        password = make_password(PASSWORD)
        User.objects.bulk_create(
            User(username=f"shopper{number}", password=password) for number in range(count)
        )
    return list(users.order_by("pk")[:count])


def _logged_in(session: Any, user: Any) -> None:
    """What ``django.contrib.auth.login()`` puts in the session."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()


def make_heavy_sessions(count: int) -> list[str]:
    """A logged-in session for each of ``count`` users, each the workload's
    :data:`HEAVY_SIZE` session (a cart of records, recently viewed items, a form's draft,
    ...: about 5 KB as Django's JSON) with the user's login. The cookies, in user order."""
    from importlib import import_module

    from django.conf import settings

    from benchmarks.harness.workload import make_payloads, session_payload

    payloads = make_payloads()
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    cookies = []
    for number, user in enumerate(_users(count)):
        session = store_class()
        session.update(session_payload(payloads, HEAVY_SIZE, number))
        _logged_in(session, user)
        session.save()
        cookies.append(session.session_key)
    return cookies


def make_sessions(count: int) -> list[str]:
    """``count`` users, each with the session the shop's login and a few visits leave:
    the login's three keys, three cart lines, three preferences and a visit count. The
    session cookies, in the order of the users."""
    from importlib import import_module

    from django.conf import settings
    from shop import cart
    from shop.catalog import PRODUCTS

    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    products = list(PRODUCTS.values())[:CART]
    cookies = []
    for user in _users(count):
        session = store_class()
        _logged_in(session, user)
        for product in products:
            cart.add(session, product)
        session.update(PREFERENCES)
        session["visits"] = 3
        session.save()
        cookies.append(session.session_key)
    return cookies


def main(argv: list[str]) -> int:
    import django

    django.setup()
    make = make_heavy_sessions if argv[1:] == ["heavy"] else make_sessions
    for cookie in make(int(argv[0])):
        print(cookie)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
