"""What the statistics counters and the gate's hooks add to a typical request (LMDB).

Run from the repository root::

    python benchmarks/bench_overhead.py

One process, one LMDB store of 200 medium sessions (the payloads of ``bench_engines.py``).
Blocks of 300 typical requests (load, read 2 keys, change 1, save) alternate between the
engine as it is and the engine with its counters (all but the one of decoded fields) and
the gate's write hooks replaced by no-ops (the session-ID filter is off, as by default).
Prints the median of each and the difference.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "benchmarks")]


def main() -> int:
    import django
    from django.conf import settings

    base = tempfile.mkdtemp(prefix="memopt-bench-overhead-")
    try:
        settings.configure(
            SECRET_KEY="benchmark-secret-key-" + "k" * 40,
            INSTALLED_APPS=["django.contrib.sessions", "django_memopt"],
            SESSION_ENGINE="django_memopt.backends.lmdb",
            MEMOPT_LMDB_PATH=os.path.join(base, "lmdb"),
            MEMOPT_STATS_INTERVAL=None,
            USE_TZ=True,
        )
        django.setup()
        import bench_engines as be

        import django_memopt.backends.base as engine
        from django_memopt.backends.lmdb import SessionStore

        payloads = {"medium": be.make_payloads("medium")}
        keys = []
        for n in range(200):
            session = SessionStore()
            session.update(be.session_payload(payloads, "medium", n))
            session.save()
            keys.append(session.session_key)
        hooks = (engine.record_write, engine.confirm_write, engine.counter, engine._delta_size)
        sink: Counter[str] = Counter()
        none = (lambda *a: None, lambda *a: None, lambda: sink, lambda delta: 0)
        timings: dict[str, list[int]] = {"as it is": [], "without counters and hooks": []}
        for block in range(60):
            order = list(zip(timings, (hooks, none), strict=True))
            for label, functions in order if block % 2 else reversed(order):
                (engine.record_write, engine.confirm_write, engine.counter,
                 engine._delta_size) = functions  # fmt: skip
                for n in range(300):
                    started = time.perf_counter_ns()
                    be.op_typical(SessionStore, keys[n % 200], n)
                    timings[label].append(time.perf_counter_ns() - started)
        medians = {label: statistics.median(values) / 1000 for label, values in timings.items()}
        for label, median in medians.items():
            print(f"{label}: median {median:.1f} µs per typical request (medium session)")
        with_hooks, without = medians.values()
        print(f"difference: {with_hooks - without:+.1f} µs ({with_hooks / without - 1:+.1%})")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
