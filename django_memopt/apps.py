from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class MemoptConfig(AppConfig):
    name = "django_memopt"
    verbose_name = "django-memopt"

    def ready(self) -> None:
        from . import gate, gc_tuning, stats
        from .checks import check_settings

        checks.register(check_settings)
        gate.plug_in()
        stats.connect()
        # Last: the freeze should take in everything the app has loaded by now.
        gc_tuning.apply()
