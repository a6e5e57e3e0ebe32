"""What ``memopt_stats`` and the metrics view report, and how people and Prometheus read it.

:func:`collect` gathers the report: five sections of figures, keyed as ``--json`` prints
them (``store``, ``filter``, ``engine``, ``gc``, ``flushes``). The catalogue,
:data:`GROUPS`, gives every figure a label, a unit and a one-line meaning, grouped by the
question an operator asks; the text report, the Prometheus ``HELP`` lines and the example
shop's page read it. The JSON keys and the Prometheus names come from the sections alone,
never from the catalogue: scripts and dashboards depend on them.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from . import stats
from .backends.base import SessionStoreError, session_store
from .conf import conf
from .counters import CLIENT_CACHE_COUNTERS
from .gate import REJECT_REASONS, open_filter

__all__ = [
    "DEFAULT_SAMPLE",
    "FIGURES",
    "GROUPS",
    "SECTIONS",
    "UNITS",
    "Figure",
    "Group",
    "PrometheusCollector",
    "Row",
    "Unit",
    "as_prometheus",
    "as_text",
    "collect",
    "flushes",
    "metric_name",
    "rows",
]

#: The report's sections, in the order ``--json`` keys and Prometheus names use.
SECTIONS: Final = ("store", "filter", "engine", "client_cache", "gc", "flushes")
#: Sessions read for the per-session figures unless ``--sample`` says otherwise.
DEFAULT_SAMPLE: Final = 1000
logger: Final = logging.getLogger("django_memopt.report")

# The GC figures that are not running totals.
_GC_GAUGES: Final = frozenset(
    {"worst_pause_ns", "worst_pause_generation", "out_of_band_every", "frozen_objects"}
    | {f"threshold{generation}" for generation in range(3)}
)
# The client-side cache's counters, as its section names them: cache_hits -> hits.
_CACHE_KEYS: Final = {name: name.removeprefix("cache_") for name in CLIENT_CACHE_COUNTERS}
# Prometheus counters: the counters of the engine, the gate and the client-side cache (but
# the bytes it holds, which go up and down).
_COUNTERS: Final = frozenset(
    {("engine", name) for name in stats.ENGINE_COUNTERS}
    | {("filter", name) for name in stats.GATE_COUNTERS}
    | {("client_cache", key) for key in _CACHE_KEYS.values() if key != "bytes"}
)


# -- collecting --------------------------------------------------------------------------


def _share(part: float | None, whole: float | None) -> float | None:
    return part / whole if part is not None and whole else None


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


def collect(sample: int = DEFAULT_SAMPLE) -> dict[str, Any]:
    """The report's sections. Raises ``ImproperlyConfigured`` if ``SESSION_ENGINE`` is not
    one of this app's, ``SessionStoreError`` if the store is unreachable."""
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
    client_cache: dict[str, Any] = {"configured": bool(conf.MEMOPT_REDIS_CLIENT_CACHE)}
    client_cache.update((key, counts.get(name, 0)) for name, key in _CACHE_KEYS.items())
    client_cache["largest_process_bytes"] = max(
        ((record.get("counts") or {}).get("cache_bytes", 0) for record in records), default=0
    )
    return {
        "store": store_section,
        "filter": filter_section,
        "engine": engine,
        "client_cache": client_cache,
        "gc": total["gc"],
        "flushes": flushes(records, time.time()),
    }


# -- units -------------------------------------------------------------------------------


def _plain(value: Any) -> str:
    """Any figure, shown without knowing what it is (one the catalogue does not describe)."""
    if isinstance(value, float):
        return f"{value:,.4g}" if not math.isnan(value) else "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value is None:
        return "n/a"
    if isinstance(value, list):
        return ", ".join(_plain(item) for item in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_plain(item)}" for key, item in value.items()) or "none"
    return str(value)


def _count(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _scaled(value: float, scales: tuple[tuple[str, float], ...], smallest: str) -> str:
    for unit, size in scales:
        if abs(value) >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,.0f} {smallest}"


def _bytes(value: float) -> str:
    return _scaled(value, (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)), "B")


def _nanoseconds(value: float) -> str:
    return _scaled(value, (("s", 1e9), ("ms", 1e6), ("µs", 1e3)), "ns")


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:,.1f} h"
    return f"{value:,.0f} s" if value >= 100 else f"{value:,.1f} s"


def _percent(value: float) -> str:
    percent = value * 100
    if percent == 0 or abs(percent) >= 10:
        return f"{percent:.1f}%" if percent else "0%"
    return f"{percent:.2f}%" if abs(percent) >= 0.01 else "<0.01%"


def _flag(value: Any) -> str:
    return "yes" if value else "no"


def _generation(value: int) -> str:
    return f"generation {value}" if value >= 0 else "none yet"


def _each(show: Callable[[Any], str]) -> Callable[[list[Any]], str]:
    return lambda values: ", ".join(show(value) for value in values) or "none"


def _by_key(show: Callable[[Any], str]) -> Callable[[dict[str, Any]], str]:
    return lambda values: ", ".join(f"{key} {show(n)}" for key, n in values.items()) or "none"


@dataclass(frozen=True)
class Unit:
    """What a figure's number measures (``name``, as ``--json`` and Prometheus give it)
    and how a person reads it (``show``)."""

    name: str
    show: Callable[[Any], str]


COUNT: Final = Unit("count", _count)
COUNTS_BY_KEY: Final = Unit("count, by key", _by_key(_count))
BYTES: Final = Unit("bytes", _bytes)
NANOSECONDS: Final = Unit("ns", _nanoseconds)
SECONDS: Final = Unit("s", _seconds)
RATIO: Final = Unit("ratio", _percent)
RATIOS: Final = Unit("ratio, each", _each(_percent))
FLAG: Final = Unit("yes/no", _flag)
GENERATION: Final = Unit("generation", _generation)
TEXT: Final = Unit("text", str)
PROCESSES: Final = Unit("list", lambda processes: f"{len(processes):,}")
#: Every unit a figure may have.
UNITS: Final = (
    COUNT,
    COUNTS_BY_KEY,
    BYTES,
    NANOSECONDS,
    SECONDS,
    RATIO,
    RATIOS,
    FLAG,
    GENERATION,
    TEXT,
    PROCESSES,
)


# -- the catalogue -----------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One figure of the report: ``report[section][key]``, or, for a figure the report
    does not hold (no JSON key, no Prometheus name), ``derive(report[section])``."""

    section: str
    key: str
    label: str
    unit: Unit
    meaning: str
    #: Computes a figure from its section; raises KeyError where the store has no inputs.
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    #: Shown also as a share of this figure of the same section (its key).
    share_of: str | None = None


@dataclass(frozen=True)
class Group:
    """The figures that answer one question (``slug``: its name in HTML ids)."""

    slug: str
    question: str
    figures: tuple[Figure, ...]


def _engine(key: str, label: str, unit: Unit, meaning: str, **options: Any) -> Figure:
    return Figure("engine", key, label, unit, meaning, **options)


def _store(key: str, label: str, unit: Unit, meaning: str, **options: Any) -> Figure:
    return Figure("store", key, label, unit, meaning, **options)


def _gate(key: str, label: str, unit: Unit, meaning: str, **options: Any) -> Figure:
    return Figure("filter", key, label, unit, meaning, **options)


def _cache(key: str, label: str, unit: Unit, meaning: str, **options: Any) -> Figure:
    return Figure("client_cache", key, label, unit, meaning, **options)


def _gc(key: str, label: str, unit: Unit, meaning: str, **options: Any) -> Figure:
    return Figure("gc", key, label, unit, meaning, **options)


def _turned_away(reason: str, meaning: str) -> Figure:
    return _gate(
        f"rejected_{reason}", f"Turned away: {reason}", COUNT, meaning, share_of="checked"
    )


GROUPS: Final = (
    Group(
        "speed",
        "Are sessions fast?",
        (
            _engine("loads", "Sessions loaded", COUNT, "Requests that read their session."),
            _engine(
                "misses",
                "Sessions not found",
                COUNT,
                "Loads whose ID named no session in the store: expired, deleted, or never saved.",
                share_of="loads",
            ),
            _engine(
                "hit_share",
                "Loads that found their session",
                RATIO,
                "Sessions found, as a share of sessions loaded.",
                derive=lambda engine: _share(engine["loads"] - engine["misses"], engine["loads"]),
            ),
            _engine(
                "fields_loaded",
                "Fields loaded",
                COUNT,
                "Session fields the loads brought from the store, still encoded.",
            ),
            _engine(
                "fields_decoded",
                "Fields decoded",
                COUNT,
                "Fields that requests read, and so decoded.",
            ),
            _engine(
                "decoded_share",
                "Decoded share",
                RATIO,
                "Fields decoded as a share of fields loaded: the lower, the more lazy "
                "decoding saved.",
            ),
            _engine("creates", "Sessions created", COUNT, "Saves that created a session."),
            _engine(
                "updates",
                "Sessions updated",
                COUNT,
                "Saves that wrote the fields a request changed.",
            ),
            _engine(
                "touches",
                "Expiry refreshes",
                COUNT,
                "Saves of an unchanged session that only moved its expiry.",
            ),
            _engine("bytes_written", "Bytes written", BYTES, "What the saves sent to the store."),
            _engine(
                "bytes_rewrite",
                "Bytes a rewrite would write",
                BYTES,
                "What rewriting each saved session whole would have sent for the same saves.",
            ),
            _engine(
                "written_share",
                "Written share",
                RATIO,
                "Bytes written as a share of a whole-session rewrite: the lower, the more "
                "saving only the changes saved.",
            ),
        ),
    ),
    Group(
        "store",
        "Is the store healthy?",
        (
            _store("engine", "Engine", TEXT, "SESSION_ENGINE, as the reporting process has it."),
            _store(
                "sessions",
                "Sessions stored",
                COUNT,
                "Sessions in the store; on LMDB with the expired ones not yet swept.",
            ),
            _store("live_sessions", "Live sessions", COUNT, "Sessions not yet expired."),
            _store(
                "sessions_estimated",
                "Session count estimated",
                FLAG,
                "Redis: whether the sessions were estimated from the keys scanned, the scan "
                "having stopped at the sample.",
            ),
            _store(
                "expired_not_swept",
                "Expired, not swept",
                COUNT,
                "LMDB: expired sessions that clearsessions would delete now.",
            ),
            _store(
                "expired_not_swept_capped",
                "Expired count capped",
                FLAG,
                "LMDB: whether counting the expired sessions stopped at its limit of 100,000.",
            ),
            _store(
                "session_bytes",
                "Session storage",
                BYTES,
                "LMDB: the pages the sessions take; Redis: memory per session times sessions.",
            ),
            _store(
                "memory_per_session",
                "Memory per session",
                BYTES,
                "Redis: MEMORY USAGE of a session's hash, averaged over the sample.",
            ),
            _store(
                "fields_per_session",
                "Fields per session",
                COUNT,
                "Fields of a session, averaged over the sample.",
            ),
            _store(
                "sampled_sessions",
                "Sessions sampled",
                COUNT,
                "Sessions read for the per-session figures (at most --sample).",
            ),
            _store(
                "hash_encodings",
                "Hash encodings",
                COUNTS_BY_KEY,
                "Redis: OBJECT ENCODING of the sampled sessions (a session under 4 KiB is a "
                "string, raw or embstr; a larger one a hash, hashtable or listpack).",
            ),
            _store(
                "map_used",
                "Map used",
                BYTES,
                "LMDB: how much of the memory map the file takes.",
            ),
            _store(
                "map_size",
                "Map size",
                BYTES,
                "LMDB: MEMOPT_LMDB_MAP_SIZE; session writes fail once the map is full.",
            ),
            _store(
                "map_used_share",
                "Map in use",
                RATIO,
                "LMDB: map used as a share of map size.",
                derive=lambda store: _share(store["map_used"], store["map_size"]),
            ),
            _store(
                "readers_used",
                "Reader slots used",
                COUNT,
                "LMDB: the most reader slots in use at once since the store was first opened.",
            ),
            _store(
                "readers_max",
                "Reader slots",
                COUNT,
                "LMDB: the reader table's size, MEMOPT_LMDB_MAX_READERS.",
            ),
            _store(
                "used_memory",
                "Redis memory used",
                BYTES,
                "Redis: used_memory of the whole server, sessions and all else.",
            ),
            _store(
                "maxmemory",
                "Redis memory limit",
                BYTES,
                "Redis: maxmemory (0: no limit).",
            ),
        ),
    ),
    Group(
        "gate",
        "Is the gate working?",
        (
            _gate(
                "enabled",
                "Filter on",
                FLAG,
                "MEMOPT_FILTER: whether the filter of live session IDs is kept and asked.",
            ),
            _gate("checked", "Cookies checked", COUNT, "Session cookies the gate checked."),
            _gate(
                "passed",
                "Let through",
                COUNT,
                "Session IDs the gate let through to the store.",
                share_of="checked",
            ),
            _gate(
                "rejected",
                "Turned away",
                COUNT,
                "Session IDs turned away for any reason below: each got a fresh session "
                "without a store read.",
                derive=lambda gate: sum(gate[f"rejected_{reason}"] for reason in REJECT_REASONS),
                share_of="checked",
            ),
            _turned_away("malformed", "Cookies that held no session ID at all."),
            _turned_away("forged", "IDs whose tag did not verify: guessed or tampered with."),
            _turned_away(
                "unsigned",
                "IDs without a tag, outside the migration window (MEMOPT_UNSIGNED_IDS).",
            ),
            _turned_away(
                "unknown", "Signed IDs the filter knows no live session for: ended or expired."
            ),
            _gate(
                "filter_unavailable",
                "Checked without the filter",
                COUNT,
                "Checks made while the filter file could not be opened: those IDs were let "
                "through.",
                share_of="checked",
            ),
            _gate(
                "complete",
                "Filter complete",
                FLAG,
                "Whether the filter was filled from the store; until then it lets every ID "
                "through.",
            ),
            _gate(
                "capacity",
                "Filter capacity",
                COUNT,
                "Live sessions the filter is sized for, MEMOPT_FILTER_CAPACITY.",
            ),
            _gate(
                "target_fp_rate",
                "Target false-positive rate",
                RATIO,
                "Share of unknown IDs the filter may let through at capacity, "
                "MEMOPT_FILTER_FP_RATE.",
            ),
            _gate(
                "estimated_fp_rate",
                "Estimated false-positive rate",
                RATIO,
                "Share of unknown IDs the filter lets through now, from the fill of its live "
                "generations.",
            ),
            _gate(
                "fill_ratios",
                "Fill of live generations",
                RATIOS,
                "Bits set in each live generation of the filter; false positives rise with them.",
            ),
            _gate(
                "live_generations",
                "Live generations",
                COUNT,
                "Generations of the filter that may still hold unexpired sessions.",
            ),
            _gate("file_size", "Filter file size", BYTES, "The filter file's size."),
            _gate(
                "path", "Filter file", TEXT, "MEMOPT_FILTER_PATH, as the reporting process has it."
            ),
        ),
    ),
    Group(
        "client-cache",
        "Is the client-side cache serving?",
        (
            _cache(
                "configured",
                "Client-side cache on",
                FLAG,
                "MEMOPT_REDIS_CLIENT_CACHE, as the reporting process has it: whether Redis "
                "sessions are kept in each process, kept current by Redis's tracking.",
            ),
            _cache("hits", "Loads served locally", COUNT, "Loads served with no round trip."),
            _cache(
                "misses",
                "Loads not held",
                COUNT,
                "Loads the cache could serve but did not hold: read from Redis, then held.",
            ),
            _cache(
                "local_share",
                "Local share",
                RATIO,
                "Loads served locally, as a share of the loads the cache could serve.",
                derive=lambda cache: _share(cache["hits"], cache["hits"] + cache["misses"]),
            ),
            _cache(
                "bypasses",
                "Loads past the cache",
                COUNT,
                "Loads read from Redis because the cache could not vouch for its copies: "
                "its channel not confirmed, lagging or reconnecting.",
            ),
            _cache(
                "invalidations",
                "Invalidations",
                COUNT,
                "Sessions held that Redis said were written or deleted elsewhere, and so "
                "were dropped.",
            ),
            _cache(
                "flushes",
                "Cache flushes",
                COUNT,
                "Times a process emptied its cache: its channel lost, FLUSHDB, a fork.",
            ),
            _cache(
                "refusals",
                "Refused by the server",
                COUNT,
                "Times a process found Redis refusing CLIENT TRACKING (an ACL, a proxy, a "
                "managed service) or running threaded I/O: it runs without the cache, and its "
                "log says why.",
            ),
            _cache(
                "bytes",
                "Bytes held",
                BYTES,
                "What the caches of all processes hold, as of their last flushes.",
            ),
            _cache(
                "largest_process_bytes",
                "Bytes held by one process, at most",
                BYTES,
                "The most any one process holds (bounded by MEMOPT_REDIS_CLIENT_CACHE).",
            ),
        ),
    ),
    Group(
        "gc",
        "Is GC hurting?",
        (
            _gc(
                "worst_pause_ns",
                "Worst pause",
                NANOSECONDS,
                "The longest single collection in any process.",
            ),
            _gc(
                "worst_pause_generation",
                "Worst pause, generation",
                GENERATION,
                "The generation that longest collection collected.",
            ),
            _gc(
                "in_request_time_ns",
                "Collection time in requests",
                NANOSECONDS,
                "Time in collections that started while a request was in flight: latency "
                "users felt.",
            ),
            _gc(
                "time_per_request_ns",
                "Collection time per request",
                NANOSECONDS,
                "Collection time in requests, divided by the requests finished.",
                derive=lambda gc: _share(gc["in_request_time_ns"], gc["requests_finished"]),
            ),
            _gc(
                "between_requests_time_ns",
                "Collection time between requests",
                NANOSECONDS,
                "Time in collections that started while no request was in flight.",
            ),
            _gc(
                "requests_finished",
                "Requests finished",
                COUNT,
                "Requests the processes finished, as the collector's tuning counts them.",
            ),
            _gc(
                "out_of_band_collections",
                "Out-of-band collections",
                COUNT,
                "Full collections run between requests (MEMOPT_GC_OUT_OF_BAND).",
            ),
            _gc(
                "out_of_band_every",
                "Out-of-band every",
                COUNT,
                "Requests between out-of-band collections, as applied (0: off).",
            ),
            *(
                _gc(
                    f"collections_gen{generation}",
                    f"Collections, generation {generation}",
                    COUNT,
                    f"Collections of generation {generation} (and the younger ones).",
                )
                for generation in range(3)
            ),
            *(
                _gc(
                    f"time_ns_gen{generation}",
                    f"Collection time, generation {generation}",
                    NANOSECONDS,
                    f"The time the collections of generation {generation} took.",
                )
                for generation in range(3)
            ),
            *(
                _gc(
                    f"collected_gen{generation}",
                    f"Objects freed, generation {generation}",
                    COUNT,
                    f"Objects the collections of generation {generation} freed.",
                )
                for generation in range(3)
            ),
            _gc(
                "frozen_objects",
                "Frozen objects",
                COUNT,
                "Objects gc.freeze() put out of the collector's reach, in the latest process.",
            ),
            *(
                _gc(
                    f"threshold{generation}",
                    f"Threshold {generation}",
                    COUNT,
                    f"The collector's threshold {generation} (gc.get_threshold()), in the process "
                    "that flushed last.",
                )
                for generation in range(3)
            ),
        ),
    ),
    Group(
        "flushes",
        "How fresh are these figures?",
        (
            _engine(
                "processes",
                "Processes counted",
                COUNT,
                "Processes whose last flush is in the sums, running or not.",
            ),
            _engine("hosts", "Hosts", COUNT, "Hosts those processes ran on."),
            Figure(
                "flushes",
                "interval_seconds",
                "Flush interval",
                SECONDS,
                "Each process flushes its counters at most this often: up to this many "
                "seconds of a live process's activity are missing from the totals.",
            ),
            Figure(
                "flushes",
                "newest_age_seconds",
                "Newest flush, age",
                SECONDS,
                "Seconds since the most recent flush of any process.",
            ),
            Figure(
                "flushes",
                "oldest_age_seconds",
                "Oldest flush, age",
                SECONDS,
                "Seconds since the last flush of the process that flushed least recently "
                "(stopped, or idle).",
            ),
            Figure(
                "flushes",
                "processes",
                "Processes by last flush",
                PROCESSES,
                "Each process's host and pid, and when it last flushed, newest first.",
            ),
        ),
    ),
)
#: Every figure by ``(section, key)``.
FIGURES: Final = {
    (figure.section, figure.key): figure for group in GROUPS for figure in group.figures
}


# -- reading the report ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """A figure of a report and its value as a person reads it."""

    figure: Figure
    value: Any
    shown: str


def _shown(figure: Figure, value: Any, section: Mapping[str, Any]) -> str:
    if value is None:
        return "n/a"
    shown = figure.unit.show(value)
    if figure.share_of is not None and value and section.get(figure.share_of):
        whole = FIGURES[figure.section, figure.share_of]
        shown += f" ({_percent(value / section[figure.share_of])} of {whole.label.lower()})"
    return shown


def rows(report: Mapping[str, Any]) -> list[tuple[Group, list[Row]]]:
    """The report's figures group by group, with what the catalogue says of each. Figures
    of another store, or of the filter when it is off, are left out; figures the catalogue
    does not describe come last, under their keys."""
    grouped = []
    for group in GROUPS:
        found = []
        for figure in group.figures:
            section = report.get(figure.section, {})
            if figure.derive is not None:
                try:
                    value = figure.derive(section)
                except KeyError:
                    continue
            elif figure.key in section:
                value = section[figure.key]
            else:
                continue
            found.append(Row(figure, value, _shown(figure, value, section)))
        grouped.append((group, found))
    unknown = [
        Row(Figure(name, key, f"{name}.{key}", TEXT, ""), value, _plain(value))
        for name in SECTIONS
        for key, value in report.get(name, {}).items()
        if (name, key) not in FIGURES
    ]
    if unknown:
        grouped.append((Group("other", "Not described yet", ()), unknown))
    return grouped


# -- text --------------------------------------------------------------------------------


def _missing_note(interval: Any) -> str:
    if interval is None:
        return "MEMOPT_STATS_INTERVAL is None: processes with these settings never flush"
    return (
        f"each live process's last {_plain(interval)} s of activity, MEMOPT_STATS_INTERVAL, "
        "may be missing from the sums"
    )


def as_text(
    report: Mapping[str, Any], sample: int = DEFAULT_SAMPLE, meanings: bool = False
) -> str:
    """The report for people: group by group, each figure's label and value in its unit,
    and, with ``meanings``, what each figure means."""
    notes = {
        "speed": "summed over every process's last flush",
        "store": f"sampled: up to {sample:,} sessions for per-session figures",
        "gate": "summed over every process's last flush",
        "client-cache": "summed over every process's last flush",
        "gc": "summed over processes; worst pause: the largest",
        "flushes": _missing_note(report["flushes"]["interval_seconds"]),
    }
    lines = []
    grouped = rows(report)
    width = max((len(row.figure.label) for _, found in grouped for row in found), default=0)
    for group, found in grouped:
        note = notes.get(group.slug)
        lines.append(group.question + (f" ({note})" if note else ""))
        for row in found:
            lines.append(f"  {row.figure.label.ljust(width)}  {row.shown}")
            if meanings and row.figure.meaning:
                lines.append(f"  {''.ljust(width)}  {row.figure.meaning}")
            if row.figure.unit is PROCESSES:
                lines.extend(
                    f"    {process['host']} pid {process['pid']}: last flushed "
                    f"{_seconds(process['age_seconds'])} ago"
                    for process in row.value
                )
        lines.append("")
    return "\n".join(lines)


# -- Prometheus --------------------------------------------------------------------------


def metric_name(section: str, key: str) -> str:
    """The Prometheus name of ``report[section][key]``: counters end in ``_total``."""
    name = f"memopt_{section}_{key}"
    if (section, key) in _COUNTERS or (section == "gc" and key not in _GC_GAUGES):
        return name + "_total"
    return name


def as_prometheus(report: Mapping[str, Any]) -> str:
    """The Prometheus text exposition format: counters end in ``_total``, the rest gauges;
    each metric's ``HELP`` is its meaning in the catalogue.

    The flushes are summed up (newest and oldest age), not given per process: every
    restart brings new process IDs, and a series for each would pile up.
    """
    lines = []
    for section in SECTIONS:
        for key, value in report[section].items():
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, dict):
                samples = [(f'{{key="{label}"}}', item) for label, item in value.items()]
            elif isinstance(value, list) and not (section == "flushes" and key == "processes"):
                samples = [(f'{{index="{index}"}}', item) for index, item in enumerate(value)]
            elif isinstance(value, int | float):
                samples = [("", value)]
            else:
                continue  # text, None, the flushes of each process
            metric = metric_name(section, key)
            figure = FIGURES.get((section, key))
            if figure is not None:
                meaning = figure.meaning.replace("\\", r"\\").replace("\n", r"\n")
                lines.append(f"# HELP {metric} {meaning}")
            kind = "counter" if metric.endswith("_total") else "gauge"
            lines.append(f"# TYPE {metric} {kind}")
            lines.extend(f"{metric}{labels} {item!r}" for labels, item in samples)
    return "\n".join(lines) + "\n"


class PrometheusCollector:
    """The report's figures for a ``prometheus_client`` registry, under the names of
    :func:`as_prometheus`: ``REGISTRY.register(PrometheusCollector())`` in an
    ``AppConfig.ready()`` (django-prometheus serves that default registry).

    Each scrape collects the report (a read of the store). A store that cannot be read
    leaves the figures out of that scrape and logs a warning, so that the registry's other
    metrics are still served. Neither ``prometheus_client`` nor django-prometheus is a
    dependency: this imports the former only when asked for figures.
    """

    def __init__(self, sample: int = DEFAULT_SAMPLE) -> None:
        self.sample = sample

    def describe(self) -> list[Any]:
        """Nothing: without it, registering would collect, reading the store at startup."""
        return []

    def collect(self) -> Iterator[Any]:
        # Imported by name: an optional package, which the type checker may not have.
        parser = importlib.import_module("prometheus_client.parser")
        try:
            text = as_prometheus(collect(self.sample))
        except (ImproperlyConfigured, SessionStoreError) as exc:
            logger.warning("django-memopt's figures are left out of this scrape: %s", exc)
            return
        yield from parser.text_string_to_metric_families(text)
