"""Child-process entry points for ``test_gc_tuning.py``.

The test process already ran ``MemoptConfig.ready()`` (and so ``gc_tuning.apply()``) once,
so each scenario runs in a fresh interpreter started with the "spawn" context: it sets the
``MEMOPT_GC_*`` settings it is given *before* ``django.setup()``, and reports what it saw
as JSON through ``tests.processes``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from typing import Any
from unittest import mock

from tests.processes import reporting


def configure(overrides: dict[str, Any]) -> None:
    """``tests.settings`` plus ``overrides``, without setting Django up (no ``ready()``)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    from django.conf import settings

    for name, value in overrides.items():
        setattr(settings, name, value)


def setup(overrides: dict[str, Any]) -> None:
    """:func:`configure`, then ``django.setup()``: ``ready()`` applies the settings."""
    configure(overrides)
    import django

    django.setup()


def remove_unused_store() -> None:
    # tests.settings makes an empty directory at import for its default store; no child
    # here opens the store, so it goes.
    from django.conf import settings

    path = settings.MEMOPT_LMDB_PATH
    if os.path.basename(path).startswith("django-memopt-tests-"):
        with contextlib.suppress(OSError):
            os.rmdir(path)


def check_messages() -> list[dict[str, str | None]]:
    from django_memopt.checks import check_settings

    return [
        {"id": message.id, "msg": message.msg, "hint": message.hint}
        for message in check_settings()
    ]


def request() -> None:
    """One request through Django's test client, to a view that does nothing."""
    from django.test import Client

    response = Client().get("/untouched/")
    assert response.status_code == 200, response.status_code


def start_request() -> None:
    """A request of another thread begins (what the WSGI handler signals)."""
    from django.core.signals import request_started

    request_started.send(sender=None, environ={})


def finish_request() -> None:
    """That request's response is closed (``HttpResponse.close()`` signals it)."""
    from django.core.signals import request_finished

    request_finished.send(sender=None)


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in after}


# -- scenarios -------------------------------------------------------------------------------


def startup(overrides: dict[str, Any], result_path: str) -> None:
    """Set up with ``overrides``; then try to apply again, directly and with new settings.

    Reports Python's own thresholds and freeze count (before setup), the ones after setup,
    after a second ``apply()``, and after ``override_settings`` plus ``apply()``; the check
    messages; and how often the measurement is installed.
    """
    with reporting(result_path) as result:
        result["python_thresholds"] = gc.get_threshold()
        result["python_frozen"] = gc.get_freeze_count()
        setup(overrides)
        from django.test import override_settings

        from django_memopt import gc_tuning

        result["thresholds"] = gc.get_threshold()
        result["frozen"] = gc.get_freeze_count()
        result["checks"] = check_messages()
        # New objects since the freeze: a second freeze would take them in too.
        garbage_and_more = [[n] for n in range(10_000)]
        gc_tuning.apply()
        result["thresholds_again"] = gc.get_threshold()
        result["frozen_again"] = gc.get_freeze_count()
        with override_settings(
            MEMOPT_GC_THRESHOLDS=(5, 5, 5), MEMOPT_GC_OUT_OF_BAND=1, MEMOPT_GC_FREEZE=True
        ):
            gc_tuning.apply()
            result["thresholds_overridden"] = gc.get_threshold()
            result["frozen_overridden"] = gc.get_freeze_count()
        result["thresholds_after_override"] = gc.get_threshold()
        result["callbacks"] = gc.callbacks.count(gc_tuning._on_collection)
        del garbage_and_more
        result["figures"] = gc_tuning.figures()
        remove_unused_store()


def workload(overrides: dict[str, Any], count: int, result_path: str) -> None:
    """Allocate ``count`` container objects that stay alive, and as many cycles of garbage.

    Survivors reach the oldest generation, so the collector has reasons to start full
    collections by itself. Reports the figures' difference over the workload.
    """
    with reporting(result_path) as result:
        setup(overrides)
        from django_memopt.gc_tuning import figures

        result["thresholds"] = gc.get_threshold()
        before = figures()
        kept = []
        for n in range(count):
            kept.append([n])  # a list: always tracked (a dict of ints is not)
            cycle: list[Any] = []
            cycle.append(cycle)
        del cycle
        result["delta"] = delta(before, figures())
        result["kept"] = len(kept)
        remove_unused_store()


def out_of_band(every: int, requests: int, result_path: str) -> None:
    """With ``MEMOPT_GC_OUT_OF_BAND = every``: requests through the test client, then with
    another request in flight (signals), then after it finishes."""
    with reporting(result_path) as result:
        setup({"MEMOPT_GC_OUT_OF_BAND": every})
        from django_memopt.gc_tuning import figures

        result["thresholds"] = gc.get_threshold()
        before = figures()
        for _ in range(requests):
            request()
        result["sequential"] = delta(before, figures())

        before = figures()
        start_request()  # another thread's request, in flight all along
        for _ in range(every * 3):
            request()
        result["while_in_flight"] = delta(before, figures())
        finish_request()
        result["after_it_finished"] = delta(before, figures())

        before = figures()
        finish_request()  # a second close() of the same response: no request finished
        result["unmatched_finish"] = delta(before, figures())
        remove_unused_store()


def measurement(result_path: str) -> None:
    """Forced collections between requests and inside one; the figures in a forked child."""
    with reporting(result_path) as result:
        setup({})
        from django_memopt.gc_tuning import figures

        before = figures()
        gc.collect(0)
        result["gen0"] = delta(before, figures())
        before = figures()
        gc.collect(2)
        result["gen2"] = delta(before, figures())
        before = figures()
        cycles = []
        for _ in range(1000):
            cycle: list[Any] = []
            cycle.append(cycle)
            cycles.append(cycle)
        del cycle, cycles
        gc.collect(2)
        result["garbage"] = delta(before, figures())

        start_request()
        before = figures()
        gc.collect(1)
        result["in_request"] = delta(before, figures())
        finish_request()
        before = figures()
        request()  # nothing collected here unless the collector starts one
        gc.collect(0)
        result["after_request"] = delta(before, figures())
        result["figures"] = figures()

        result["forked"] = forked_figures()
        result["parent_after_fork"] = figures()
        remove_unused_store()


def forked_figures() -> dict[str, Any]:
    """The figures in a forked child (as in a gunicorn worker after ``--preload``): at
    first, and after one collection there."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return into the caller
        code = 1
        try:
            from django_memopt.gc_tuning import figures

            at_fork = figures()
            gc.collect(0)
            found = {"at_fork": at_fork, "after_collect": figures()}
            os.write(write_end, json.dumps(found).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    data: dict[str, Any] = json.loads(b"".join(chunks))
    return data


def patched_version(version: list[int], overrides: dict[str, Any], result_path: str) -> None:
    """``apply()`` (called directly) with ``sys.version_info`` patched to ``version``."""
    with reporting(result_path) as result:
        configure(overrides)
        from django_memopt import gc_tuning

        result["python_thresholds"] = gc.get_threshold()
        with mock.patch.object(sys, "version_info", tuple(version)):
            gc_tuning.apply()
            result["checks"] = check_messages()
        result["thresholds"] = gc.get_threshold()
        result["figures"] = gc_tuning.figures()
        remove_unused_store()
