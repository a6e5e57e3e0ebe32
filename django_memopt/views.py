"""Views a site can mount: :func:`metrics`, ``memopt_stats`` for a Prometheus scraper;
:func:`user_sessions`, a user's own sessions ("log out other devices"); and
:func:`end_sessions_of_users`, an admin action for staff.

In the site's ``urls.py``::

    path("metrics/memopt", django_memopt.views.metrics),
    path("account/sessions/", django_memopt.views.user_sessions, name="user_sessions"),

Metrics are operational data (how many sessions, how many forged cookies, how the
filter is sized), so the view is not public: it answers a request that carries
``Authorization: Bearer <MEMOPT_METRICS_TOKEN>``, or one from an active staff user.
"""

from __future__ import annotations

from typing import Any, Final

from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_safe

from .backends.base import SessionStoreError
from .conf import conf
from .report import as_prometheus, collect
from .user_sessions import end_all_sessions, end_other_sessions, end_session, sessions_of

__all__ = ["CONTENT_TYPE", "end_sessions_of_users", "metrics", "user_sessions"]

#: The Prometheus text exposition format, as its scrapers ask for it.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _has_token(request: HttpRequest) -> bool:
    token = conf.MEMOPT_METRICS_TOKEN
    if token is None:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and constant_time_compare(given.strip(), token)


def _is_staff(request: HttpRequest) -> bool:
    # No user without AuthenticationMiddleware: then only the token opens the view.
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_active and user.is_staff)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """The report in the Prometheus text format (as ``memopt_stats --format prometheus``).

    403 unless the request carries the bearer token ``MEMOPT_METRICS_TOKEN`` or comes from
    an active staff user (401, naming the Bearer scheme, when a token is set); 503 when the
    store cannot be read or ``SESSION_ENGINE`` is not django-memopt's, so that the scrape
    fails visibly.
    """
    if not (_has_token(request) or _is_staff(request)):
        if conf.MEMOPT_METRICS_TOKEN is None:
            return HttpResponse("Staff only.", status=403, content_type="text/plain")
        denied = HttpResponse("A bearer token is needed.", status=401, content_type="text/plain")
        denied["WWW-Authenticate"] = 'Bearer realm="django-memopt metrics"'
        return denied
    try:
        text = as_prometheus(collect())
    except (ImproperlyConfigured, SessionStoreError) as exc:
        return HttpResponse(str(exc), status=503, content_type="text/plain")
    return HttpResponse(text, content_type=CONTENT_TYPE)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def user_sessions(
    request: HttpRequest, template_name: str = "django_memopt/user_sessions.html"
) -> HttpResponse:
    """The logged-in user's sessions (``MEMOPT_USER_SESSIONS``), to end one or all others.

    GET renders ``template_name`` with ``user_sessions`` (the list) and
    ``user_sessions_url``; include ``django_memopt/user_sessions_list.html`` in a page of
    yours and pass its name here. POST ends the session of ``handle`` (ending the current
    one logs out) or, with ``others``, every other session, then redirects back. A handle
    that is not one of the user's sessions ends nothing.
    """
    if request.method == "POST":
        if request.POST.get("others"):
            end_other_sessions(request.user, request.session)
            return HttpResponseRedirect(request.path)
        handle = request.POST.get("handle", "")
        listed = sessions_of(request.user, current=request.session)
        if any(session.current and session.handle == handle for session in listed):
            logout(request)  # Django's own logout: signals, a flushed session
            return HttpResponseRedirect(request.path)
        end_session(request.user, handle)
        return HttpResponseRedirect(request.path)
    context = {
        "user_sessions": sessions_of(request.user, current=request.session),
        "user_sessions_url": request.path,
    }
    return render(request, template_name, context)


def end_sessions_of_users(modeladmin: Any, request: HttpRequest, queryset: Any) -> None:
    """An admin action for the user model's admin: end every session of the users selected.

    ``actions = [django_memopt.views.end_sessions_of_users]`` in your ``UserAdmin``; it asks
    for the ``change`` permission on users.
    """
    ended = sum(end_all_sessions(user) for user in queryset)
    modeladmin.message_user(
        request,
        f"Ended {ended} session(s) of {len(queryset)} user(s).",
        messages.SUCCESS,
    )


end_sessions_of_users.short_description = "End every session of the selected users"  # type: ignore[attr-defined]
end_sessions_of_users.allowed_permissions = ("change",)  # type: ignore[attr-defined]
