"""Logged-in shoppers for the whole-site benchmark: their sessions, and a view that reads one.

``ROOT_URLCONF = "benchmarks.harness.signed_in_urls"`` serves the example project's URLs
and :func:`whoami` at ``/bench/whoami/``. ``python -m benchmarks.harness.signed_in COUNT``,
run with a setup's settings, makes ``COUNT`` users and one logged-in session each through
the configured engine, and prints their cookies, one a line.
"""

from __future__ import annotations

import sys

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden

WHOAMI = "/bench/whoami/"
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


def make_sessions(count: int) -> list[str]:
    """``count`` users, each with the session the shop's login and a few visits leave:
    the login's three keys, three cart lines, three preferences and a visit count. The
    session cookies, in the order of the users."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from shop import cart
    from shop.catalog import PRODUCTS

    password = make_password(PASSWORD)  # hashed once: every user has the same password
    User.objects.bulk_create(
        User(username=f"shopper{number}", password=password) for number in range(count)
    )
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    products = list(PRODUCTS.values())[:CART]
    cookies = []
    for user in User.objects.filter(username__startswith="shopper").order_by("pk"):
        session = store_class()
        # What django.contrib.auth.login() puts in the session.
        session[SESSION_KEY] = user._meta.pk.value_to_string(user)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
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
    for cookie in make_sessions(int(argv[0])):
        print(cookie)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
