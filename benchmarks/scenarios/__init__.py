"""The scenarios, in the order the command runs them: name -> module.

A scenario is a module with ``measure(quick: bool) -> result``, which the command calls in
a fresh process of its own (so it may configure Django as it needs), and functions that
turn its picklable result into Markdown for the pages (``benchmarks/pages.py``). Adding
one is a module here, a line below, and the page or section that shows it.
"""

from __future__ import annotations

SCENARIOS = {
    name: f"benchmarks.scenarios.{name}"
    for name in (
        "engines",
        "client_cache",
        "memory",
        "gate",
        "filter_check",
        "session_ids",
        "overhead",
        "stats_command",
        "pooling",
        "collector",
        "user_sessions",
        "moving",
        "site",
        "asgi",
    )
}
