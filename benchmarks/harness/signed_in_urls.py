"""The example project's URLs, and the whole-site benchmark's own views."""

from __future__ import annotations

from django.urls import include, path

from benchmarks.harness.signed_in import SESSION_HEAVY, WHOAMI, session_heavy, whoami

urlpatterns = [
    path(WHOAMI.lstrip("/"), whoami),
    path(SESSION_HEAVY.lstrip("/"), session_heavy),
    path("", include("example_project.urls")),
]
