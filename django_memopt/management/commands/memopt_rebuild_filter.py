"""``manage.py memopt_rebuild_filter``: fill the session-ID filter from the session store."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from django_memopt.backends.base import session_store
from django_memopt.conf import conf
from django_memopt.gate import open_filter


class Command(BaseCommand):
    help = (
        "Add every live session of the store to this host's session-ID filter, which then "
        "turns away unknown session IDs. The site can keep running meanwhile."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not conf.MEMOPT_FILTER:
            raise CommandError("The session-ID filter is off (setting MEMOPT_FILTER).")
        try:
            store = session_store()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        with open_filter() as found:
            added = found.rebuild(store.iter_sessions())
            stats = found.stats()
        self.stdout.write(
            f"Added {added} live sessions to {conf.MEMOPT_FILTER_PATH}; estimated "
            f"false-positive rate {stats.estimated_fp_rate:.3%} "
            f"(target {conf.MEMOPT_FILTER_FP_RATE:.3%} at {conf.MEMOPT_FILTER_CAPACITY:,} "
            "sessions)."
        )
