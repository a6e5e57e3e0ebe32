"""``manage.py memopt_stats``: what the store holds and what every worker process has done."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_memopt import stats
from django_memopt.backends.base import SessionStoreError, session_store
from django_memopt.conf import conf
from django_memopt.gate import open_filter

SECTIONS = ("store", "filter", "engine", "gc", "flushes")
# The GC figures that are not running totals.
GC_GAUGES = frozenset(
    {"worst_pause_ns", "worst_pause_generation", "out_of_band_every", "frozen_objects"}
    | {f"threshold{generation}" for generation in range(3)}
)

# Prometheus's descriptions of the figures the names alone do not explain.
HELP = {
    "memopt_flushes_interval_seconds": "Each process flushes its counters at most this often: "
    "up to this many seconds of a live process's activity are missing from the totals.",
    "memopt_flushes_newest_age_seconds": "Seconds since the most recent flush of any process.",
    "memopt_flushes_oldest_age_seconds": "Seconds since the last flush of the process that "
    "flushed least recently (stopped, or idle).",
}


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def flushes(records: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """When each process last flushed, newest first, and how often processes flush: what a
    live process counted since its last flush, up to that interval, is not in the sums."""
    processes = sorted(
        (
            {
                "host": record.get("host"),
                "pid": record.get("pid"),
                "flushed": record.get("flushed", 0),
                "age_seconds": round(now - record.get("flushed", 0), 3),
            }
            for record in records
        ),
        key=lambda process: process["age_seconds"],
    )
    return {
        "interval_seconds": conf.MEMOPT_STATS_INTERVAL,
        "newest_age_seconds": processes[0]["age_seconds"] if processes else None,
        "oldest_age_seconds": processes[-1]["age_seconds"] if processes else None,
        "processes": processes,
    }


def collect(sample: int) -> dict[str, Any]:
    """The report's sections; raises ``SessionStoreError`` if the store is unreachable."""
    store = session_store()
    store_section = {"engine": settings.SESSION_ENGINE, **store.store_figures(sample)}
    records = stats.read_records(store.read_values("stats"))
    total = stats.summed(records)
    counts = total["counts"]
    engine = {name: counts.get(name, 0) for name in stats.ENGINE_COUNTERS}
    engine["decoded_share"] = _share(engine["fields_decoded"], engine["fields_loaded"])
    engine["written_share"] = _share(engine["bytes_written"], engine["bytes_rewrite"])
    engine["processes"] = total["processes"]
    engine["hosts"] = total["hosts"]
    gate = {name: counts.get(name, 0) for name in stats.GATE_COUNTERS}
    filter_section: dict[str, Any] = {"enabled": conf.MEMOPT_FILTER, **gate}
    if conf.MEMOPT_FILTER:
        with open_filter() as found:
            figures = found.stats()
        filter_section.update(
            path=figures.path,
            complete=figures.complete,
            capacity=figures.capacity,
            target_fp_rate=figures.fp_rate,
            estimated_fp_rate=figures.estimated_fp_rate,
            file_size=figures.file_size,
            live_generations=len(figures.live),
            fill_ratios=[generation.fill_ratio for generation in figures.live],
        )
    return {
        "store": store_section,
        "filter": filter_section,
        "engine": engine,
        "gc": total["gc"],
        "flushes": flushes(records, time.time()),
    }


# -- output formats ----------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if not math.isnan(value) else "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return ", ".join(_value(item) for item in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_value(item)}" for key, item in value.items()) or "none"
    return str(value)


def _missing_note(interval: Any) -> str:
    if interval is None:
        return "MEMOPT_STATS_INTERVAL is None: processes with these settings never flush"
    return (
        f"each live process's last {_value(interval)} s of activity, MEMOPT_STATS_INTERVAL, "
        "may be missing from the sums"
    )


def as_text(report: dict[str, Any], sample: int) -> str:
    lines = []
    notes = {
        "store": f"sampled: up to {sample:,} sessions for per-session figures",
        "engine": "summed over every process's last flush",
        "gc": "summed over processes; worst pause: the largest",
        "flushes": _missing_note(report["flushes"]["interval_seconds"]),
    }
    for section in SECTIONS:
        note = notes.get(section)
        lines.append(f"{section}" + (f" ({note})" if note else ""))
        width = max((len(name) for name in report[section]), default=0)
        for name, value in report[section].items():
            if section == "flushes" and name == "processes":
                lines.append(f"  {name.ljust(width)}  {len(value):,}, newest flush first:")
                lines.extend(
                    f"    {process['host']} pid {process['pid']}: last flushed "
                    f"{_value(process['age_seconds'])} s ago"
                    for process in value
                )
            else:
                lines.append(f"  {name.ljust(width)}  {_value(value)}")
        lines.append("")
    return "\n".join(lines)


def as_prometheus(report: dict[str, Any]) -> str:
    """The Prometheus text exposition format: counters end in ``_total``, the rest gauges.

    The flushes are summed up (newest and oldest age), not given per process: every
    restart brings new process IDs, and a series for each would pile up.
    """
    counters = {("engine", name) for name in stats.ENGINE_COUNTERS} | {
        ("filter", name) for name in stats.GATE_COUNTERS
    }
    lines = []

    def emit(section: str, name: str, value: Any, labels: str = "") -> None:
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int | float):
            return
        metric = f"memopt_{section}_{name}"
        kind = "gauge"
        if (section, name) in counters or (section == "gc" and name not in GC_GAUGES):
            metric, kind = metric + "_total", "counter"
        if not labels:
            if metric in HELP:
                lines.append(f"# HELP {metric} {HELP[metric]}")
            lines.append(f"# TYPE {metric} {kind}")
        lines.append(f"{metric}{labels} {value!r}")

    for section in SECTIONS:
        for name, value in report[section].items():
            if section == "flushes" and name == "processes":
                continue
            if isinstance(value, dict):
                metric = f"memopt_{section}_{name}"
                lines.append(f"# TYPE {metric} gauge")
                for key, item in value.items():
                    lines.append(f'{metric}{{key="{key}"}} {item!r}')
            elif isinstance(value, list):
                metric = f"memopt_{section}_{name}"
                lines.append(f"# TYPE {metric} gauge")
                for index, item in enumerate(value):
                    lines.append(f'{metric}{{index="{index}"}} {item!r}')
            else:
                emit(section, name, value)
    return "\n".join(lines) + "\n"


class Command(BaseCommand):
    help = (
        "Show what the session store holds and what every worker process has counted "
        "(sessions loaded and saved, fields decoded, bytes written, the session-ID gate, "
        "the garbage collector)."
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
            default=1000,
            help="sessions read for the per-session figures (default 1000)",
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
            self.stdout.write(as_text(report, options["sample"]))
