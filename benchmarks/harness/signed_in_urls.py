"""The example project's URLs, and the whole-site benchmark's session-reading view."""

from __future__ import annotations

from django.urls import include, path

from benchmarks.harness.signed_in import WHOAMI, whoami

urlpatterns = [
    path(WHOAMI.lstrip("/"), whoami),
    path("", include("example_project.urls")),
]
