"""The ASGI benchmark's async view, its URLs, and the thread-hop path it is measured against.

``ROOT_URLCONF = "benchmarks.harness.async_view"`` serves :func:`whoami` at
``ASYNC_WHOAMI`` (and ``/``, to tell the server is up).
``SESSION_ENGINE = "benchmarks.harness.async_view"`` is django-memopt's Redis engine with
its async API as the previous release had it (the sync primitives in a thread), and
:class:`ThreadHopMiddleware` is django-memopt's middleware as it was then (Django's
``MiddlewareMixin``, both halves in a thread): the benchmark's "before".
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.urls import path
from django.utils.deprecation import MiddlewareMixin

from django_memopt.backends import redis
from django_memopt.middleware import SessionMiddleware as MemoptSessionMiddleware

ASYNC_WHOAMI = "/bench/async-whoami/"


async def whoami(request: HttpRequest) -> HttpResponse:
    """The logged-in user's ID and cart size from the session, and a visit counted in it
    (saved by the middleware: one small change, as a typical view makes).

    403 when the session has no logged-in user: a cookie the engine did not find counts
    as an error of the load generator, never as a fast answer.
    """
    from django.contrib.auth import SESSION_KEY

    session = request.session
    user_id = await session.aget(SESSION_KEY)
    if user_id is None:
        return HttpResponseForbidden("not logged in\n")
    lines = sum(1 for key in await session.akeys() if key.startswith("cart:"))
    theme = await session.aget("pref:theme", "light")
    await session.aset("visits", await session.aget("visits", 0) + 1)
    return HttpResponse(f"user {user_id}, {lines} cart lines, theme {theme}\n")


async def ready(request: HttpRequest) -> HttpResponse:
    """``/``: what the harness asks to know the server is up."""
    return HttpResponse("ready\n")


urlpatterns = [path(ASYNC_WHOAMI.lstrip("/"), whoami), path("", ready)]


class SessionStore(redis.SessionStore):
    """The Redis engine whose async API runs the sync one in a thread (``sync_to_async``)."""

    @classmethod
    def async_native(cls) -> bool:
        return False


class ThreadHopMiddleware(MemoptSessionMiddleware):
    """django-memopt's middleware with Django's ``MiddlewareMixin.__acall__``: the request
    and response halves each in a thread."""

    __acall__ = MiddlewareMixin.__acall__  # type: ignore[assignment]
