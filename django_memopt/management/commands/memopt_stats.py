"""``manage.py memopt_stats``: what the store holds and what every worker process has done.

The report itself (what is collected, the catalogue of figures, the three formats) is
:mod:`django_memopt.report`, which the metrics view shares; this is the command line.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_memopt import stats
from django_memopt.backends.base import SessionStoreError, session_store
from django_memopt.report import DEFAULT_SAMPLE, as_prometheus, as_text, collect


class Command(BaseCommand):
    help = (
        "Show what the session store holds and what every worker process has counted "
        "(sessions loaded and saved, fields decoded, bytes written, the session-ID gate, "
        "the garbage collector); with -v 2, what each figure means."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--format",
            choices=["text", "json", "prometheus"],
            default="text",
            help="text (default), json, or the Prometheus text format",
        )
        parser.add_argument("--json", action="store_true", help="the same as --format json")
        parser.add_argument(
            "--prune",
            type=float,
            metavar="SECONDS",
            help="first forget the records of processes that have not flushed for SECONDS "
            "(workers gone since a restart); the totals lose what they counted",
        )
        parser.add_argument(
            "--sample",
            type=int,
            default=DEFAULT_SAMPLE,
            help=f"sessions read for the per-session figures (default {DEFAULT_SAMPLE})",
        )

    def _prune(self, older_than: float) -> None:
        store = session_store()
        records = stats.read_records(store.read_values("stats"))
        stale = stats.stale_tokens(records, older_than, time.time())
        store.remove_values("stats", stale)
        self.stderr.write(
            f"Forgot the records of {len(stale)} of {len(records)} processes "
            f"(none flushed in the last {older_than:g} s)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        output_format = "json" if options["json"] else options["format"]
        try:
            session_store()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        if options["prune"] is not None and options["prune"] < 0:
            raise CommandError("--prune takes a number of seconds, 0 or more.")
        try:
            if options["prune"] is not None:
                self._prune(options["prune"])
            report = collect(options["sample"])
        except SessionStoreError as exc:
            raise CommandError(f"The session store is unreachable: {exc}") from exc
        if output_format == "json":
            self.stdout.write(json.dumps(report, indent=2, sort_keys=True))
        elif output_format == "prometheus":
            self.stdout.write(as_prometheus(report), ending="")
        else:
            # -v 2: what each figure means, under it.
            self.stdout.write(
                as_text(report, options["sample"], meanings=options["verbosity"] > 1)
            )
