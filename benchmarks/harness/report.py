"""Markdown for the pages: tables, number formats, and the "Machine and run" section.

The machine's description comes from pyperf's metadata collection (the CPU model, its
frequency and governor, the kernel's ASLR setting, the clock and the Python build), the
same that pyperf stores with every pyperformance result.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# What the pages name of the machine, from pyperf's metadata, and how.
MACHINE_KEYS = {
    "cpu_model_name": "CPU",
    "cpu_freq": "CPU frequency",
    "cpu_config": "CPU configuration",
    "aslr": "ASLR",
    "timer": "timer",
    "python_compiler": "Python built with",
}
PACKAGES = (
    "Django",
    "lmdb",
    "msgpack",
    "django-redis",
    "redis",
    "hiredis",
    "django-redis-sessions",
    "gunicorn",
    "uvicorn",
    "uvloop",
    "httptools",
    "matplotlib",
    "pyperf",
)


TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "templates")


def render(template: str, **values: Any) -> str:
    """``benchmarks/templates/<template>.md`` with ``values`` put in (``str.format``)."""
    with open(os.path.join(TEMPLATES, f"{template}.md"), encoding="utf-8") as source:
        return source.read().format(**values)


# -- numbers and tables ----------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> str:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column (default: ``lrr...``)."""
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"


def us(ns: float) -> str:
    """Nanoseconds as microseconds, to three significant figures or so."""
    value = ns / 1000
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def change(new: float, old: float, less: str = "faster", more: str = "slower") -> str:
    """``new`` against ``old`` in words, e.g. "42% faster" or "8% slower"."""
    share = 1 - new / old
    return f"{share:.0%} {less}" if share >= 0 else f"{-share:.0%} {more}"


def met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# -- the run ---------------------------------------------------------------------------------


def load_average() -> str:
    try:
        return ", ".join(f"{load:.2f}" for load in os.getloadavg())
    except OSError:
        return "unknown"


def package_digest() -> str:
    """A hash of django_memopt's source, to tell whether it changed during the run."""
    import django_memopt

    root = os.path.dirname(django_memopt.__file__)
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                digest.update(name.encode())
                with open(os.path.join(folder, name), "rb") as source:
                    digest.update(source.read())
    return digest.hexdigest()


def package_revision() -> str:
    """The git commit of the django_memopt being measured, and whether it has changes."""
    import django_memopt

    root = os.path.dirname(django_memopt.__file__)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return "not in a git checkout"
    return f"git commit {commit}" + (" with uncommitted changes" if dirty else "")


def _machine() -> dict[str, str]:
    import pyperf

    # A Run collects the system's metadata when it is made (its one value is a placeholder).
    metadata = pyperf.Run([1.0], metadata={"name": "machine"}).get_metadata()
    return {key: str(pyperf.format_metadata(key, value)) for key, value in metadata.items()}


def _packages() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            continue
    return ", ".join(found)


def _command(argv: Sequence[str]) -> str:
    args = []
    for arg in argv:
        if os.path.isabs(arg):
            relative = os.path.relpath(arg)
            arg = relative if not relative.startswith("..") else os.path.basename(arg)
        args.append(shlex.quote(arg))
    return " ".join(["python -m benchmarks", *args])


@dataclass
class Run:
    """What every page says about the run that produced it."""

    argv: list[str]
    quick: bool
    machine: dict[str, str] = field(default_factory=_machine)
    packages: str = field(default_factory=_packages)
    revision: str = field(default_factory=package_revision)
    digest: str = field(default_factory=package_digest)
    date: str = field(default_factory=lambda: f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    changed: bool = False  # django_memopt's source changed during the run

    @property
    def command(self) -> str:
        return _command(self.argv)


@dataclass
class Span:
    """One scenario's stretch of the run: its load averages and wall time."""

    load_start: str
    load_end: str = ""
    seconds: float = 0.0


def machine_section(run: Run, spans: Sequence[Span], extra: Sequence[str] = ()) -> str:
    """The "Machine and run" section: ``spans`` are the scenarios the page's figures come
    from, ``extra`` the lines only that page has (the Redis server and its round trip)."""
    machine = run.machine
    lines = [
        "## Machine and run\n",
        f"- Platform: `{machine.get('platform', sys.platform)}`, "
        f"{machine.get('cpu_count', os.cpu_count())} CPUs",
        *(f"- {label}: {machine[key]}" for key, label in MACHINE_KEYS.items() if key in machine),
        f"- Python {machine.get('python_version', sys.version.split()[0])}; {run.packages}",
        *extra,
        f"- django-memopt measured: {run.revision}",
        f"- Date: {run.date}",
        f"- Load average (1, 5, 15 min) at the start: {spans[0].load_start}; at the end: "
        f"{spans[-1].load_end}",
        f"- Wall time: {_duration(sum(span.seconds for span in spans))}",
        f"- Command: `{run.command}`",
    ]
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def notices(run: Run) -> str:
    """The warnings a page opens with, when they apply."""
    found = []
    if run.changed:
        found.append(
            "> **Warning: django_memopt's source changed during this run**, so the numbers "
            "do not all come from one version. Re-run it.\n"
        )
    if run.quick:
        found.append(
            "> **Quick smoke run** (`--quick`): too few samples to quote; use a full run.\n"
        )
    return "\n".join(found)


def page(
    title: str,
    intro: str,
    scenarios: Sequence[str],
    run: Run,
    body: Sequence[str],
    spans: Sequence[Span],
    extra: Sequence[str] = (),
) -> str:
    """A whole page: title, what generated it, notices, ``body``, then the machine."""
    names = ", ".join(f"`{name}`" for name in scenarios)
    head = (
        f"# {title}\n\nGenerated by `python -m benchmarks` (scenario{'s' * (len(scenarios) > 1)}"
        f" {names}); every number below comes from the run described at the end. {intro}"
    ).rstrip() + "\n"
    parts = [head, notices(run), *body, machine_section(run, spans, extra)]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parts))
