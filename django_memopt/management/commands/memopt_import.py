"""``manage.py memopt_import``: copy every live session of the previous engine into ours.

Each session goes as the read-through fallback moves it (``SessionBase.adopt``): copied
under a new signed ID with its deadline, claimed under its old key, then deleted from the
previous engine. So the command can run while the site serves (a request and the command
moving one session at once end on one copy), again (what was copied is claimed, and
skipped), and after an interruption: it goes on after the last batch it finished, whose
key it keeps in the store until it has listed everything.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_memopt.backends.base import SessionStoreError, note_previous_engine, session_store
from django_memopt.conf import conf
from django_memopt.previous import UNLISTABLE, engine_for

#: The store-wide value (space ``meta``) where a run keeps where it got to, per engine.
CHECKPOINT = "import-checkpoint:{engine}"
PROGRESS_WIDTH = 30


class Command(BaseCommand):
    help = (
        "Copy every live session of the previous session engine (MEMOPT_PREVIOUS_ENGINE) "
        "into django-memopt's store, under new signed IDs, keeping deadlines: run it while "
        "the site serves with the fallback on. Resumable and idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--from",
            dest="engine",
            metavar="ENGINE",
            help="the previous SESSION_ENGINE (default: MEMOPT_PREVIOUS_ENGINE, which it must be)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="sessions listed at a time (default 500)",
        )
        parser.add_argument(
            "--pause",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="wait this long between batches, to spare a busy database (default 0)",
        )
        parser.add_argument(
            "--restart",
            action="store_true",
            help="start from the first session, not where an interrupted run stopped",
        )

    verbosity = 1

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = options["verbosity"]
        configured = conf.MEMOPT_PREVIOUS_ENGINE
        engine_path: str | None = options["engine"] or configured
        if not engine_path:
            raise CommandError("Name the previous engine: --from ENGINE.")
        if engine_path != configured:
            raise CommandError(
                f"Set MEMOPT_PREVIOUS_ENGINE = {engine_path!r} first, in these settings and "
                "on every process serving the site: the command moves sessions out of that "
                "engine, and the fallback is what finds each one meanwhile."
            )
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            store = session_store()
            previous = engine_for(engine_path)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        if not previous.listable:
            raise CommandError(UNLISTABLE.format(engine=engine_path))
        checkpoint_name = CHECKPOINT.format(engine=engine_path)
        try:
            note_previous_engine(store)
            stored = None if options["restart"] else store.read_value("meta", checkpoint_name)
        except SessionStoreError as exc:
            raise CommandError(str(exc)) from exc
        after = stored.decode("ascii", "replace") if stored else None
        if after is not None and options["verbosity"] >= 1:
            self.stdout.write(
                f"Going on after {after[:6]}..., where an interrupted run stopped "
                "(--restart starts from the first session)."
            )
        progress = Progress(self, previous.count())
        outcomes: Counter[str] = Counter()
        for keys, checkpoint in previous.pages(after, options["batch_size"]):
            outcomes.update(store.adopt_many(keys))
            store.put_value("meta", checkpoint_name, checkpoint.encode("ascii"))
            progress.show(sum(outcomes.values()))
            if options["pause"]:
                time.sleep(options["pause"])
        store.remove_values("meta", [checkpoint_name])  # listed to the end: none to resume
        progress.done()
        self.stdout.write(
            f"{engine_path}: {outcomes['copied']} sessions copied, {outcomes['claimed']} "
            f"copied before, {outcomes['absent']} gone or unreadable (expired meanwhile, "
            f"empty, corrupt or not JSON: left where they are), {outcomes['refused']} "
            "refused (values django-memopt cannot store: left where they are, see the log)."
        )


class Progress:
    """A progress bar on a terminal; elsewhere a line per tenth of the way (verbosity 1)."""

    def __init__(self, command: Command, total: int | None) -> None:
        self.out = command.stdout
        self.verbosity = command.verbosity
        self.total = total
        self.started = time.monotonic()
        self.tty = self.out.isatty()
        self.reported = 0

    def _line(self, done: int) -> str:
        rate = done / max(time.monotonic() - self.started, 1e-6)
        if not self.total:
            return f"{done:,} sessions ({rate:,.0f}/s)"
        # A resumed run counts what is left, and sessions come and go meanwhile: about.
        share = min(done / self.total, 1.0)
        filled = round(share * PROGRESS_WIDTH)
        left = max(self.total - done, 0) / rate if rate else 0
        return (
            f"[{'#' * filled}{'.' * (PROGRESS_WIDTH - filled)}] {done:,} of about "
            f"{self.total:,} ({share:.0%}, {rate:,.0f}/s, about {left:,.0f} s left)"
        )

    def show(self, done: int) -> None:
        if self.verbosity < 1:
            return
        if self.tty:
            self.out.write("\r" + self._line(done), ending="")
            self.out.flush()
        elif self.total and done * 10 // self.total > self.reported:
            self.reported = done * 10 // self.total
            self.out.write(self._line(done))

    def done(self) -> None:
        if self.verbosity >= 1 and self.tty:
            self.out.write("")  # ends the bar's line
