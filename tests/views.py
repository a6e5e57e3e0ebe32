"""Views the middleware-flow tests drive through Django's test client."""

from __future__ import annotations

from importlib import import_module

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


def read(request: HttpRequest, name: str) -> HttpResponse:
    return JsonResponse({"value": request.session.get(name)})


def store(request: HttpRequest, name: str, value: str) -> HttpResponse:
    request.session[name] = value
    return HttpResponse("ok")


def append(request: HttpRequest, name: str, value: str) -> HttpResponse:
    request.session.setdefault(name, [])
    request.session[name].append(value)
    request.session.modified = True
    return HttpResponse("ok")


def flush(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponse("flushed")


def untouched(request: HttpRequest) -> HttpResponse:
    return HttpResponse("untouched")


def fail(request: HttpRequest, name: str, value: str) -> HttpResponse:
    request.session[name] = value
    return HttpResponse("failed", status=500)


def logged_out_meanwhile(request: HttpRequest, name: str, value: str) -> HttpResponse:
    """Change the session while a concurrent request deletes it (a logout elsewhere)."""
    request.session[name] = value
    engine = import_module(settings.SESSION_ENGINE)
    engine.SessionStore(request.session.session_key).delete()
    return HttpResponse("too late")


def log_in(request: HttpRequest, username: str) -> HttpResponse:
    """Django's ``login()`` of the user ``username`` (tests only: no password asked)."""
    from django.contrib.auth import get_user_model, login

    user = get_user_model().objects.get(username=username)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse("logged in")
