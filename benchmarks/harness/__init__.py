"""What every benchmark shares: workloads, engines, servers, timing, reports and plots."""

from __future__ import annotations

import sys


def log(text: str) -> None:
    """Progress, on stderr (pages go to files, or to stdout)."""
    print(text, file=sys.stderr, flush=True)
