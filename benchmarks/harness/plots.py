"""matplotlib figures for the pages: PNG files that depend on the figures only.

Every engine keeps one colour in every plot, whichever engines ran: tab10's colours in the
order of the tables (``memopt-lmdb-system``, on no plot, takes none of the ten).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.harness.engines import MEMOPT_LMDB_SYSTEM, MEMOPT_REDIS_CACHED, ORDER

PLOTTED = [name for name in ORDER if name != MEMOPT_LMDB_SYSTEM] + [MEMOPT_REDIS_CACHED]


@contextmanager
def figure(path: str, **options: Any) -> Iterator[tuple[Any, Any]]:
    """``(figure, axes)`` of ``plt.subplots(**options)``, saved to ``path`` at the end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "django-memopt", "font.size": 9})
    drawn, axes = plt.subplots(**options)
    yield drawn, axes
    # No "Software" entry: the file depends on the figures, not on the version drawing it.
    drawn.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(drawn)


def colour(name: str) -> Any:
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    return palette[PLOTTED.index(name) % len(palette)]
