"""URL configuration of the example project."""

from __future__ import annotations

from django.urls import include, path

import django_memopt.views

urlpatterns = [
    path("", include("shop.urls")),
    # For Prometheus: staff users, or MEMOPT_METRICS_TOKEN as a bearer token.
    path("metrics/memopt", django_memopt.views.metrics),
]
