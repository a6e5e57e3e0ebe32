"""``django_memopt.middleware.SessionMiddleware``: Django's, with the session-ID gate.

Put it in ``MIDDLEWARE`` in place of ``django.contrib.sessions.middleware
.SessionMiddleware``. A cookie whose session ID the gate turns away (see
:mod:`django_memopt.gate`) gets a fresh, empty session without the store being asked;
the response then deletes the stale cookie exactly as Django's middleware does for an
empty session. Every other request is handled by Django's own code, sync or async.

With ``MEMOPT_USER_SESSIONS`` on, it also hands the session the client's IP address
(``REMOTE_ADDR``) and user agent, which the index of the user's sessions records at login
and at each refresh (``MEMOPT_USER_SESSIONS_METADATA`` says which).
"""

from __future__ import annotations

from typing import Any, cast

from django.conf import settings
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest

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
