"""Child-process entry points for ``tests/test_bloom.py`` (started with the "spawn" context).

Each child opens the filter itself (so children also race to create the file), waits at
the barrier, adds its IDs, and writes its outcome as JSON to ``result_path``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django_memopt.bloom import SessionFilter
from tests.processes import WAIT, reporting


def session_ids(seed: str, worker: int, count: int) -> list[str]:
    """``count`` distinct 32-character session IDs, the same in parent and child."""
    return [
        hashlib.blake2b(f"{seed}:{worker}:{n}".encode(), digest_size=16).hexdigest()
        for n in range(count)
    ]


def add_ids(
    path: str,
    params: dict[str, Any],
    start: float,
    step: float,
    lifetime: float,
    seed: str,
    worker: int,
    count: int,
    barrier: Any,
    result_path: str,
) -> None:
    """Add ``session_ids(seed, worker, count)``, the n-th at time ``start + n * step``, live
    for ``lifetime`` seconds (a negative one: already expired)."""
    now = [start]
    with (
        reporting(result_path) as result,
        SessionFilter.open(path, **params, clock=lambda: now[0]) as gate,
    ):
        keys = session_ids(seed, worker, count)
        barrier.wait(WAIT)
        for n, key in enumerate(keys):
            now[0] = start + n * step
            gate.add(key, now[0] + lifetime)
        result["added"] = len(keys)
