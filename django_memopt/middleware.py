"""``django_memopt.middleware.SessionMiddleware``: Django's, with the session-ID gate.

Put it in ``MIDDLEWARE`` in place of ``django.contrib.sessions.middleware
.SessionMiddleware``. A cookie whose session ID the gate turns away (see
:mod:`django_memopt.gate`) gets a fresh, empty session without the store being asked;
the response then deletes the stale cookie exactly as Django's middleware does for an
empty session. The response is handled as Django's middleware handles it (the same
cookie, ``Vary`` and ``SessionInterrupted``), in one copy of its decisions for both paths.

Under ASGI the middleware runs on the event loop, with no thread: the gate is local (a
signature, a shared memory map), and the save is ``await session.asave()``, which a
django-memopt Redis engine sends on the loop (see ``docs/redis.md``, "asyncio"). Django's
``MiddlewareMixin`` would run both halves in a thread.

With ``MEMOPT_USER_SESSIONS`` on, it also hands the session the client's IP address
(``REMOTE_ADDR``) and user agent, which the index of the user's sessions records at login
and at each refresh (``MEMOPT_USER_SESSIONS_METADATA`` says which).
"""

from __future__ import annotations

import time
from typing import Any, cast

from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import patch_vary_headers
from django.utils.http import http_date

from .backends.base import SessionBase
from .conf import conf
from .gate import admits

__all__ = ["SessionMiddleware"]


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's ``SessionMiddleware``, asking the gate before the store."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        # Only this app's engines mint IDs the gate can check (check E011 says so).
        self.gated = issubclass(self.SessionStore, SessionBase)

    def process_request(self, request: HttpRequest) -> None:
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if session_key is not None and self.gated and not admits(session_key):
            session_key = None
        request.session = self.SessionStore(session_key)
        if self.gated and conf.MEMOPT_USER_SESSIONS:
            meta = request.META
            session = cast(SessionBase, request.session)
            session.client = (meta.get("REMOTE_ADDR") or None, meta.get("HTTP_USER_AGENT"))

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        # MiddlewareMixin's, without its thread: neither half waits on I/O but the save.
        self.process_request(request)
        # In async mode get_response is a coroutine function.
        response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
        session = getattr(request, "session", None)
        if settings.SESSION_SAVE_EVERY_REQUEST and session is not None:
            # Loaded here, on the loop: deciding the cookie reads the expiry, which would
            # load the session, blocking, as Django's sync path does (after it read
            # ``accessed``: so is it kept here).
            accessed = session.accessed
            await session._aget_session()
            session.accessed = accessed
        cookie = self._settle(request, response)
        if cookie is not None:
            try:
                await request.session.asave()
            except UpdateError:
                raise SessionInterrupted(INTERRUPTED) from None
            self._set_cookie(request, response, *cookie)
        return response

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        cookie = self._settle(request, response)
        if cookie is not None:
            try:
                request.session.save()
            except UpdateError:
                raise SessionInterrupted(INTERRUPTED) from None
            self._set_cookie(request, response, *cookie)
        return response

    def _settle(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> tuple[int | None, str | None] | None:
        """Django's ``process_response`` up to the save: the cookie deleted for an emptied
        session, ``Vary: Cookie`` when it varies on it. Returns the cookie's ``max_age``
        and ``expires`` if the session is to be saved and its cookie set, else ``None``."""
        try:
            session = request.session
            accessed = session.accessed
            modified = session.modified
            empty = session.is_empty()
        except AttributeError:
            return None
        cookie = None
        # As Django: the cookie goes only with an entirely empty session.
        if settings.SESSION_COOKIE_NAME in request.COOKIES and empty:
            response.delete_cookie(
                settings.SESSION_COOKIE_NAME,
                path=settings.SESSION_COOKIE_PATH,
                domain=settings.SESSION_COOKIE_DOMAIN,
                samesite=settings.SESSION_COOKIE_SAMESITE,
            )
            need_vary_cookie = True
        else:
            # Accessed: varied on, whether saved or not.
            need_vary_cookie = accessed
            if (modified or settings.SESSION_SAVE_EVERY_REQUEST) and not empty:
                if session.get_expire_at_browser_close():
                    max_age = expires = None
                else:
                    max_age = session.get_expiry_age()
                    expires = http_date(time.time() + max_age)
                # No save for a 5xx response; with a cookie set, varied on. (Django sets
                # Vary after the save: a save that raises discards the response anyway.)
                if response.status_code < 500:
                    cookie = (max_age, expires)
                    need_vary_cookie = True
        if need_vary_cookie:
            patch_vary_headers(response, ("Cookie",))
        return cookie

    @staticmethod
    def _set_cookie(
        request: HttpRequest, response: HttpResponseBase, max_age: int | None, expires: str | None
    ) -> None:
        response.set_cookie(
            settings.SESSION_COOKIE_NAME,
            request.session.session_key,  # type: ignore[arg-type]  # saved: it has one
            max_age=max_age,
            expires=expires,
            domain=settings.SESSION_COOKIE_DOMAIN,
            path=settings.SESSION_COOKIE_PATH,
            # Django's arguments as they are: None, not False, when off.
            secure=settings.SESSION_COOKIE_SECURE or None,  # type: ignore[arg-type]
            httponly=settings.SESSION_COOKIE_HTTPONLY or None,  # type: ignore[arg-type]
            samesite=settings.SESSION_COOKIE_SAMESITE,
        )


#: Django's message when a session was deleted before the request that holds it saved.
INTERRUPTED = (
    "The request's session was deleted before the request completed. The user may have "
    "logged out in a concurrent request, for example."
)
