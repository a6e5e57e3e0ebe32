"""Views a site can mount: :func:`metrics`, ``memopt_stats`` for a Prometheus scraper.

In the site's ``urls.py``::

    path("metrics/memopt", django_memopt.views.metrics),

Metrics are operational data (how many sessions, how many forged cookies, how the
filter is sized), so the view is not public: it answers a request that carries
``Authorization: Bearer <MEMOPT_METRICS_TOKEN>``, or one from an active staff user.
"""

from __future__ import annotations

from typing import Final

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .backends.base import SessionStoreError
from .conf import conf
from .report import as_prometheus, collect

__all__ = ["CONTENT_TYPE", "metrics"]

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
