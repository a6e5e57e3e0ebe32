"""The engine comparison in Markdown: its tables, its plots and the LMDB engine's page.

Every page that shows engines (the one-run page, the LMDB page, the Redis page) takes
its tables from here, each for the engines it is about.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

from benchmarks.harness import plots, writers
from benchmarks.harness.engines import (
    CACHE,
    CACHED_DB,
    DB,
    FILE,
    FLOOR,
    MEMOPT_LMDB,
    MEMOPT_LMDB_SYSTEM,
    MEMOPT_REDIS,
    REDIS_CACHE,
    REDIS_SESSIONS,
    SIGNED,
)
from benchmarks.harness.report import change, met, render, table, us
from benchmarks.harness.workload import COLD, OPERATION_TEXT, OPERATIONS, SIZE_SPECS, SIZES
from benchmarks.scenarios.engines import FULL, Profile, Result, SaveBytes

LMDB_PAGE = [MEMOPT_LMDB, MEMOPT_LMDB_SYSTEM, DB, FILE, CACHE]
BROWSER_COOKIE_LIMIT = 4096  # bytes of one cookie that browsers are required to keep
COUNTED = {  # what each engine's bytes per save count
    MEMOPT_LMDB: "the delta: the sealed fields changed",
    MEMOPT_LMDB_SYSTEM: "the delta: the sealed fields changed",
    MEMOPT_REDIS: "received by Redis: the `EVALSHA` and its arguments",
    DB: "the encoded session (`session_data`)",
    CACHED_DB: "received by Redis: the cache `SET` (the database row is written too)",
    FILE: "the session file",
    CACHE: "the pickled session",
    REDIS_CACHE: "received by Redis: the `GET` and the `SET`",
    SIGNED: "the new cookie: the whole signed session",
    REDIS_SESSIONS: "received by Redis: the `SETEX`",
    FLOOR: "received by Redis: one `HSET` of the changed key",
}


def shown(result: Result, names: Sequence[str]) -> list[str]:
    """The engines of ``names`` this run measured, in the registry's order."""
    return [name for name in result.names if name in names]


def engine_list(result: Result, names: Sequence[str]) -> str:
    texts = dict(re.findall(r"^- `([^`]+)`: (.+)$", render("engines"), re.MULTILINE))
    lines = [f"- `{name}`: {texts[name]}" for name in shown(result, names)]
    if result.skipped is not None and REDIS_SESSIONS in names:
        lines.append(f"- `{REDIS_SESSIONS}`: left out, it failed to import: {result.skipped}")
    return "\n".join(lines) + "\n"


def _rounds(profile: Profile) -> str:
    text = ", ".join(f"{op} {count:,}" for op, count in profile.rounds.items())
    return f"{text}; {profile.cold_rounds:,} for the cold case"


def method(result: Result, sizes_header: str, cookies: bool = False) -> str:
    """How the latency was measured, and the session sizes."""
    profile = result.profile
    header = ["size", "keys", "JSON bytes", "memopt sealed fields", sizes_header]
    header.append("pickled (cache)")
    rows = [list(row) for row in result.size_rows]
    note = ""
    if cookies:
        header.append("signed cookie (B)")
        for size, row in zip(SIZES, rows, strict=True):
            over = result.cookie_bytes[size] > BROWSER_COOKIE_LIMIT
            row.append(f"{result.cookie_bytes[size]:,}" + " [^cookie-limit]" * over)
        if max(result.cookie_bytes.values()) > BROWSER_COOKIE_LIMIT:
            note = "\n" + render("cookie-limit", limit=BROWSER_COOKIE_LIMIT)
    rounds = _rounds(profile) + ("" if profile == FULL else f" (a full run: {_rounds(FULL)})")
    return render(
        "engines-method",
        fs_type=result.fs_type,
        sessions=profile.sessions,
        burst=profile.burst,
        warmup=profile.warmup,
        rounds=rounds,
        sizes=table(header, rows),
        cookie_note=note,
    )


def latency(result: Result, names: Sequence[str], bases: Sequence[str], cold: str = "") -> str:
    """One table per operation: medians per size, then each engine against ``bases``."""
    names = shown(result, names)
    profile = result.profile
    parts = []
    for op in (*OPERATIONS, COLD):
        if op == COLD:
            parts.append(f"### {COLD}: the typical request, each right after another engine's\n")
            parts.append(
                f"{profile.cold_rounds:,} rounds per size; in each round every engine (in a "
                "shuffled order) serves one typical request, so each request starts just after "
                f"another engine's, with its own code and data cold in the CPU caches.{cold}\n"
            )
        else:
            parts.append(f"### {op}: {OPERATION_TEXT[op]}\n")
            parts.append(
                f"{profile.rounds[op]:,} rounds per size of {profile.burst - 1} recorded "
                "requests per engine.\n"
            )
        header = ["engine", *(f"{size} µs" for size in SIZES), *(f"× {b}" for b in bases)]
        rows = []
        for name in names:
            ratios = [
                " / ".join(f"{result.ratio(op, size, name, b):.2f}" for size in SIZES)
                for b in bases
            ]
            rows.append([f"`{name}`", *(us(result.ns(op, size, name)) for size in SIZES), *ratios])
        parts.append(table(header, rows))
    bases_text = " and ".join(f"`{name}`'s" for name in bases)
    parts.append(
        f"*× {bases[0]}*: each engine's time as a multiple of {bases_text} (small / medium / "
        "large; above 1: slower).\n"
    )
    return "\n".join([*parts, checks(result, names)])


def checks(result: Result, names: Sequence[str]) -> str:
    """The sanity checks after every timed request, and how precise the medians are."""
    bad = {k: v for k, v in result.anomalies.items() if k.split(":")[0] in names}
    checked = (
        "- **Sanity checks failed** during timing (results above are suspect): "
        + ", ".join(f"{k}: {v}" for k, v in sorted(bad.items()))
        if bad
        else "- Every timed request was checked afterwards (outside the timing): each load "
        "found its session, each miss found nothing, each create got a key."
    )
    noise = {cell: share for cell, share in result.noise.items() if cell[2] in names}
    widest = max(noise, key=noise.__getitem__)
    typical = sorted(noise.values())[len(noise) // 2]
    return (
        f"{checked}\n- Precision: the 95% confidence interval of a median (from the order "
        f"statistics of its samples) spans ±{typical:.1%} of it in the median cell, "
        f"±{noise[widest]:.1%} at worst (`{widest[2]}`, {widest[0]}, {widest[1]}).\n"
    )


def lazy(result: Result) -> str:
    rows = [
        [f"`{row.engine}`", row.size, us(row.lazy_ns), us(row.eager_ns)]
        + [change(row.lazy_ns, row.eager_ns)]
        for row in result.lazy
    ]
    header = ["engine", "size", "lazy µs", "every field decoded µs", "lazy is"]
    return render("lazy", samples=result.profile.lazy_samples, table=table(header, rows))


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


BYTES_COLUMNS: dict[str, tuple[str, Callable[[SaveBytes], str]]] = {
    "written": ("written per save (B)", lambda row: _count(row.written)),
    "sent": ("sent to Redis by the save (B)", lambda row: _count(row.written)),
    "rewrite": ("whole-session rewrite (B)", lambda row: _count(row.rewrite)),
    "share": (
        "save / rewrite",
        lambda row: "n/a" if row.rewrite is None else f"{100 * row.written / row.rewrite:.1f}%",
    ),
    "record": ("record replaced in the store (B)", lambda row: _count(row.stored)),
    "value": ("value replaced in Redis (B)", lambda row: _count(row.stored)),
    "write()": ("bytes passed to write() (B)", lambda row: _count(row.os_bytes)),
    "load": ("received by the load (B)", lambda row: _count(row.load_out)),
    "counted": ("what is counted", lambda row: COUNTED[row.engine]),
}


def save_bytes(result: Result, names: Sequence[str], columns: Sequence[str]) -> str:
    rows = [
        [f"`{row.engine}`", *(BYTES_COLUMNS[c][1](row) for c in columns)]
        for row in result.save_bytes
        if row.engine in names
    ]
    align = "l" + "".join("l" if c == "counted" else "r" for c in columns)
    return table(["engine", *(BYTES_COLUMNS[c][0] for c in columns)], rows, align)


def lost_updates(result: Result, names: Sequence[str]) -> str:
    """Lost updates per engine, processes and threads, with the errors the writers met."""
    rows, notes = [], ""
    for name in shown(result, names):
        cells, errors = [], Counter[str]()
        for mode in ("processes", "threads"):
            row = next((r for r in result.lost if r.engine == name and r.mode == mode), None)
            cells.append("n/a [^per-process]" if row is None else str(row.lost))
            errors.update(row.errors if row is not None else {})
        if name == FLOOR:
            continue
        if cells[0].startswith("n/a"):
            notes = (
                "[^per-process]: Each process has a `LocMemCache` of its own, so processes "
                "share no session: nothing to measure.\n"
            )
        other = {k: v for k, v in errors.items() if k not in ("update_error", "db_locked")}
        rows.append(
            [f"`{name}`", *cells, str(errors["update_error"]), str(errors["db_locked"])]
            + [", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "0"]
        )
    header = [
        "engine",
        f"processes: lost of {writers.PROCESSES}",
        f"threads: lost of {writers.THREADS}",
        "SessionInterrupted",
        "DB locked (retried)",
        "other errors",
    ]
    plan = result.profile.writers
    return render(
        "lost-updates",
        iterations=plan.iterations,
        think_ms=plan.think_ms,
        processes=writers.PROCESSES,
        threads=writers.THREADS,
        table=table(header, rows),
        notes=notes,
        jar=render("browser-jar").rstrip() if SIGNED in names else "",
    )


def lost_by(result: Result, names: Sequence[str], mode: str | None = None) -> str:
    """``engine lost/writers`` for the engines of ``names`` (and of ``mode``), in words."""
    return ", ".join(
        f"`{row.engine}`" + ("" if mode else f" ({row.mode})") + f" {row.lost}/{row.writers}"
        for row in result.lost
        if row.engine in names and mode in (None, row.mode)
    )


def lost_total(result: Result, names: Sequence[str]) -> tuple[int, int, int]:
    """(updates lost, errors, runs) of the engines of ``names``."""
    rows = [row for row in result.lost if row.engine in names]
    return sum(r.lost for r in rows), sum(sum(r.errors.values()) for r in rows), len(rows)


# -- plots -----------------------------------------------------------------------------------


def plot_latency(result: Result, names: Sequence[str], path: str) -> None:
    options = {"nrows": len(SIZES), "figsize": (10, 11), "sharey": True}
    with plots.figure(path, **options) as (drawn, axes):
        width = 0.8 / len(names)
        for axis, size in zip(axes, SIZES, strict=True):
            for n, name in enumerate(names):
                xs = [i - 0.4 + width * (n + 0.5) for i in range(len(OPERATIONS))]
                ys = [result.ns(op, size, name) / 1000 for op in OPERATIONS]
                axis.bar(xs, ys, width, color=plots.colour(name), label=name)
            keys, target = SIZE_SPECS[size]
            axis.set_title(f"{size} session ({keys} keys, about {target / 1024:g} KB as JSON)")
            axis.set_yscale("log")
            axis.set_ylabel("median µs per request (log)")
            axis.set_xticks(range(len(OPERATIONS)), OPERATIONS)
            axis.grid(axis="y", which="major", alpha=0.3)
        axes[-1].set_xlabel("operation")
        handles, labels = axes[0].get_legend_handles_labels()
        drawn.legend(handles, labels, loc="lower center", ncol=5, frameon=False)
        drawn.suptitle("Request latency by engine, operation and size (lower is better)")
        drawn.tight_layout(rect=(0, 0.06, 1, 0.98))


def plot_bytes(result: Result, names: Sequence[str], path: str) -> None:
    rows = [row for row in result.save_bytes if row.engine in names]
    with plots.figure(path, figsize=(10, 5.5)) as (drawn, axis):
        ys = range(len(rows))
        written, rewrite = [r.written for r in rows], [r.rewrite or 0 for r in rows]
        axis.barh([y - 0.2 for y in ys], written, 0.4, label="written by the save")
        axis.barh([y + 0.2 for y in ys], rewrite, 0.4, label="whole-session rewrite", color="0.8")
        for y, row in zip(ys, rows, strict=True):
            axis.text(row.written * 1.08, y - 0.2, f"{row.written:,.0f} B", va="center")
        axis.set_yticks(list(ys), [row.engine for row in rows])
        axis.invert_yaxis()
        axis.set_xscale("log")
        axis.set_xlabel("bytes per save (log)")
        axis.set_title("Bytes written per save: one small key changed in a medium session")
        axis.legend(loc="lower right")
        axis.grid(axis="x", alpha=0.3)
        drawn.tight_layout()


def plot_lost(result: Result, names: Sequence[str], path: str) -> None:
    names = [name for name in names if name != FLOOR]
    rows = {(row.engine, row.mode): row for row in result.lost}
    with plots.figure(path, figsize=(10, 4.8)) as (drawn, axis):
        for offset, mode, shade in ((-0.2, "processes", "C0"), (0.2, "threads", "C1")):
            for x, name in enumerate(names):
                row = rows.get((name, mode))
                if row is None:
                    axis.text(x + offset, 2, "n/a", ha="center", rotation=90, fontsize=8)
                    continue
                share = 100 * row.lost / row.writers
                axis.bar(x + offset, share, 0.4, color=shade, label=mode if x == 0 else None)
                text = f"{row.lost}/{row.writers}"
                axis.text(x + offset, share + 2, text, ha="center", fontsize=8)
        axis.set_xticks(range(len(names)), names, rotation=25, ha="right")
        axis.set_ylim(0, 110)
        axis.set_ylabel("writers whose last update was lost (%)")
        axis.set_title(
            f"Lost updates: {writers.PROCESSES} writer processes or {writers.THREADS} writer "
            "threads on one session"
        )
        axis.legend(loc="upper left")
        axis.grid(axis="y", alpha=0.3)
        drawn.tight_layout()


# -- the LMDB page ---------------------------------------------------------------------------


def _speed(result: Result, label: str, memopt: str) -> tuple[bool, str]:
    at = {name: result.ns(label, "medium", name) for name in (memopt, DB, FILE, CACHE)}
    file_x, db_x, cache_x = (at[name] / at[memopt] for name in (FILE, DB, CACHE))
    text = (
        f"`{memopt}` took {us(at[memopt])} µs; `file` took {file_x:.1f}x that, `db` "
        f"{db_x:.1f}x, `cache` {cache_x:.2f}x"
    )
    return file_x >= 10 and db_x >= 10 and cache_x > 1, text


def lmdb_verdicts(result: Result) -> str:
    (ok, text), (cold_ok, cold_text) = (
        _speed(result, op, MEMOPT_LMDB) for op in ("typical", COLD)
    )
    system_text = _speed(result, "typical", MEMOPT_LMDB_SYSTEM)[1]
    memopt = result.bytes_of(MEMOPT_LMDB)
    share = memopt.written / (memopt.rewrite or 1)
    django = ", ".join(f"`{name}` {result.bytes_of(name).written:,.0f} B" for name in (DB, FILE))
    lost, errors, runs = lost_total(result, [MEMOPT_LMDB, MEMOPT_LMDB_SYSTEM])
    return (
        f"- Typical request on a medium session, `{MEMOPT_LMDB}` at least 10x faster than "
        "Django's `file` and `db` engines and faster than `cache` on local memory: "
        f"{met(ok)} in this run: {text}. Measured cold (each request right after another "
        f"engine's), the same target is {met(cold_ok)}: {cold_text}. With durability "
        f'"system": {system_text}.\n'
        "- Bytes written per save with one small key changed in a medium session at most 10% "
        f"of a whole-session rewrite: {met(share <= 0.10)}: the delta is {memopt.written:,.0f} "
        f"B against {memopt.rewrite or 0:,.0f} B of sealed fields ({100 * share:.1f}%); "
        f"Django's engines rewrite the whole session ({django}). Note that the LMDB store still "
        f"replaces the whole {memopt.stored:,.0f} B record inside its write transaction, and "
        f"LMDB handed {memopt.os_bytes:,.0f} B of pages to `write()` per commit: the delta "
        "bounds what is encoded and sent, not the pages LMDB rewrites.\n"
        f"- Zero lost updates for memopt: {met(lost == 0)}: {lost} final values lost and "
        f"{errors} errors over {runs} memopt runs. Django's engines lost: "
        f"{lost_by(result, [DB, FILE, CACHE])}.\n"
        "- The engines that flush to disk on every commit (`db` on SQLite with its default "
        "`synchronous=FULL`, and `memopt-lmdb-system`), and `file`, which creates and renames a "
        "file on every save, are the ones most exposed to other disk activity on the machine: "
        "a cell measured while something else was writing can be far slower than in a quiet "
        "moment (the load averages below say how busy the machine was). `memopt-lmdb` and "
        "`cache` never wait for the disk.\n"
    )


def lmdb_body(result: Result) -> list[str]:
    return [
        render(
            "lmdb-page",
            request=render("request"),
            engines=engine_list(result, LMDB_PAGE),
            method=method(result, "Django db/file encoding"),
            latency=latency(result, LMDB_PAGE, [MEMOPT_LMDB], cold=render("lmdb-cold").rstrip()),
            bytes_samples=result.profile.bytes_samples,
            bytes=save_bytes(
                result, LMDB_PAGE, ["written", "rewrite", "share", "record", "write()"]
            ),
            lost=lost_updates(result, LMDB_PAGE),
            verdicts=lmdb_verdicts(result),
        )
    ]
