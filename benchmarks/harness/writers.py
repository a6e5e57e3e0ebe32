"""Concurrent writers on one session: how many updates each engine loses.

Each writer repeats a request: load the session, some simulated view work, set its own
key ``writer-{i}`` to the iteration number, save (through the middleware's calls). At the
end the session is read back: a writer whose last saved value is not there has lost an
update. Writers are processes (spawned, each configuring Django itself, starting together
at a barrier) or threads of one process.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from benchmarks.harness import engines as registry
from benchmarks.harness.engines import Engine
from benchmarks.harness.workload import READ_KEYS, Payloads, respond, session_payload

PROCESSES, THREADS = 4, 8
MAX_ATTEMPTS = 50  # per writer iteration, retrying "database is locked"


@dataclass(frozen=True)
class Plan:
    iterations: int  # requests per writer
    think_ms: float  # simulated view work between loading and saving


@dataclass
class LostUpdates:
    engine: str
    mode: str  # "processes" or "threads"
    writers: int
    iterations: int
    lost: int
    errors: Counter[str]


def _classify(exc: BaseException) -> tuple[str, bool]:
    """(error kind, retry?) for an exception raised by one writer iteration."""
    from django.contrib.sessions.backends.base import UpdateError
    from django.db import OperationalError

    cause = exc if isinstance(exc, OperationalError) else exc.__context__
    if isinstance(cause, OperationalError) and "locked" in str(cause):
        return "db_locked", True
    if isinstance(exc, UpdateError):
        return "update_error", False
    return type(exc).__name__, False


def _request(engine: Engine, session_key: str, writer: int, n: int, think_s: float) -> Any:
    session = engine.store(session_key)
    session.get(READ_KEYS[0])  # loads the session
    if think_s:
        time.sleep(think_s)  # the view's own work
    session[f"writer-{writer}"] = n
    respond(session)
    return session


def write_loop(engine: Engine, session_key: str, writer: int, plan: Plan) -> dict[str, Any]:
    """One writer: ``plan.iterations`` requests that each set ``writer-{writer}`` and save."""
    from django.db import connections

    engine.activate()
    last = 0
    errors: Counter[str] = Counter()
    for n in range(1, plan.iterations + 1):
        for _attempt in range(MAX_ATTEMPTS):
            try:
                session = _request(engine, session_key, writer, n, plan.think_ms / 1000)
            except Exception as exc:
                kind, retry = _classify(exc)
                errors[kind] += 1
                if retry:
                    time.sleep(0.001)
                    continue
                break
            if session.session_key != session_key:
                errors["new_session"] += 1
            else:
                last = n
            break
        else:
            errors["gave_up"] += 1
    connections.close_all()
    return {"writer": writer, "last": last, "errors": dict(errors)}


def _process_writer(
    config: dict[str, str],
    name: str,
    session_key: str,
    writer: int,
    plan: Plan,
    barrier: Any,
    results: Any,
) -> None:
    engine = registry.setup(config, [name], browser_jar=True)[0]
    engine.activate()
    engine.store(session_key).exists(session_key)  # open connections before the start line
    barrier.wait()
    results.put(write_loop(engine, session_key, writer, plan))


def _shared_session(engine: Engine, payloads: Payloads) -> str:
    engine.activate()
    session = engine.store(None)
    session.update(session_payload(payloads, "medium", 10**6))
    session.save()
    return str(session.session_key)


def _tally(
    engine: Engine, session_key: str, results: list[dict[str, Any]], mode: str, plan: Plan
) -> LostUpdates:
    engine.activate()
    stored = engine.store(session_key)
    lost = 0
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result["errors"])
        if stored.get(f"writer-{result['writer']}", 0) != result["last"]:
            lost += 1
    if stored.get(READ_KEYS[0]) is None:
        errors["session_gone"] += 1
    return LostUpdates(engine.name, mode, len(results), plan.iterations, lost, errors)


def _run_processes(
    engine: Engine, config: dict[str, str], payloads: Payloads, plan: Plan
) -> LostUpdates:
    ctx = multiprocessing.get_context("spawn")
    session_key = _shared_session(engine, payloads)
    barrier = ctx.Barrier(PROCESSES)
    results_queue = ctx.Queue()
    processes = [
        ctx.Process(
            target=_process_writer,
            args=(config, engine.name, session_key, writer, plan, barrier, results_queue),
        )
        for writer in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + 600
    while len(results) < PROCESSES and time.monotonic() < deadline:
        try:
            results.append(results_queue.get(timeout=1))
        except queue.Empty:
            if not any(process.is_alive() for process in processes) and results_queue.empty():
                break
    for process in processes:
        process.join()
    if len(results) < PROCESSES:
        raise SystemExit(f"{engine.name}: {PROCESSES - len(results)} writer processes failed")
    return _tally(engine, session_key, results, "processes", plan)


def _run_threads(engine: Engine, payloads: Payloads, plan: Plan) -> LostUpdates:
    session_key = _shared_session(engine, payloads)
    barrier = threading.Barrier(THREADS)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def target(writer: int) -> None:
        engine.store(session_key).exists(session_key)
        barrier.wait()
        result = write_loop(engine, session_key, writer, plan)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=target, args=(writer,)) for writer in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _tally(engine, session_key, results, "threads", plan)


def lost_updates(
    engines: list[Engine], config: dict[str, str], payloads: Payloads, plan: Plan
) -> list[LostUpdates]:
    """Writer processes on each engine shared across processes, then writer threads on
    every engine (``signed_cookies`` through a shared browser cookie jar)."""
    jars = {engine.name: engine for engine in registry.make_engines(config, browser_jar=True)}
    writers = [jars[engine.name] for engine in engines if engine.name != registry.FLOOR]
    found = [
        _run_processes(engine, config, payloads, plan)
        for engine in writers
        if engine.shared_across_processes
    ]
    found += [_run_threads(engine, payloads, plan) for engine in writers]
    return found
