"""Child processes for the multi-process tests: starting, waiting, and reporting back.

Children are started with the "spawn" context (a fresh interpreter, no inherited store
handles, no fork warnings on a threaded parent). Each writes its results and any errors to
a JSON file, which the parent reads with :func:`result_of`.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SPAWN = multiprocessing.get_context("spawn")
# How long the parent waits for all its children, and a child for its own threads.
JOIN_TIMEOUT = 45.0
WAIT = 60.0


# -- the parent's side -----------------------------------------------------------------------


@contextlib.contextmanager
def children() -> Iterator[Callable[..., Any]]:
    """Start spawned child processes; whatever happens, none outlives the block."""
    started: list[Any] = []

    def start(target: Callable[..., None], *args: Any) -> Any:
        process = SPAWN.Process(target=target, args=args, daemon=True)
        process.start()
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.is_alive():
                process.kill()
        for process in started:
            process.join(10)
            if process.exitcode is not None:
                process.close()


def finish(processes: list[Any], timeout: float = JOIN_TIMEOUT) -> list[int]:
    """Wait for ``processes`` (all within ``timeout``); their exit codes."""
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [process.pid for process in processes if process.is_alive()]
    assert not hung, f"child processes {hung} did not finish within {timeout} s"
    return [process.exitcode for process in processes]


def result_of(path: Path) -> dict[str, Any]:
    assert path.exists(), f"the child wrote no {path.name}"
    result: dict[str, Any] = json.loads(path.read_text())
    assert result["errors"] == [], "\n".join(result["errors"])
    return result


# -- the child's side ------------------------------------------------------------------------


def report(result_path: str, **data: Any) -> None:
    partial = f"{result_path}.partial"
    with open(partial, "w") as file:
        json.dump(data, file)
    os.replace(partial, result_path)


@contextlib.contextmanager
def reporting(result_path: str) -> Iterator[dict[str, Any]]:
    """Collect the child's results and errors; write them out however the body ends."""
    result: dict[str, Any] = {"errors": []}
    try:
        yield result
    except BaseException:
        result["errors"].append(traceback.format_exc())
        raise
    finally:
        report(result_path, **result)


def run_threads(count: int, body: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=body, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a worker thread did not finish in time")
