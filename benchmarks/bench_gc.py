"""Request latency and garbage-collector time under gunicorn, with and without the app's tuning.

Run from the repository root (needs ``pip install -e . gunicorn``)::

    python benchmarks/bench_gc.py --quick
    python benchmarks/bench_gc.py --output docs/benchmarks-gc.md

The example project runs under gunicorn (``--preload``, 2 sync workers) once per setup, all
at the same time, each with a store of its own:

* ``Django defaults``: the collector as Python sets it up (``MEMOPT_GC_FREEZE = False``);
* ``freeze`` (the app's default): ``gc.collect()`` then ``gc.freeze()`` in the master,
  before the workers are forked;
* ``freeze + out-of-band``: also ``MEMOPT_GC_OUT_OF_BAND = 100``.

A load generator (threads of this process, one session each) sends ``GET /`` to one setup
at a time, in rounds that rotate the setups, and times every response. The collector's
figures come from the workers themselves (``manage.py memopt_stats --json``, after the
servers have stopped and flushed). The script removes every temporary file at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import bench_engines as be

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "example_project")


@dataclass
class Setup:
    name: str
    settings: str  # lines appended to the example project's settings
    port: int = 0
    process: Any = None
    latencies_ns: list[int] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)


SETUPS = [
    Setup("Django defaults", "MEMOPT_GC_FREEZE = False"),
    Setup("freeze (the app's default)", "MEMOPT_GC_FREEZE = True"),
    Setup(
        "freeze + out-of-band every 100 requests",
        "MEMOPT_GC_FREEZE = True\nMEMOPT_GC_OUT_OF_BAND = 100",
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings_module(base: str, index: int, setup: Setup) -> str:
    name = f"bench_gc_settings_{index}"
    with open(os.path.join(base, f"{name}.py"), "w") as file:
        file.write(
            "from example_project.settings import *  # noqa: F403\n"
            "DEBUG = False\n"
            f"MEMOPT_LMDB_PATH = {os.path.join(base, f'store-{index}')!r}\n"
            f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.sqlite3', "
            f"'NAME': {os.path.join(base, f'db-{index}.sqlite3')!r}}}}}\n"
            "MEMOPT_STATS_INTERVAL = 1\n"
            f"{setup.settings}\n"
        )
    return name


def environment(base: str, module: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([EXAMPLE, base, env.get("PYTHONPATH", "")])
    env["DJANGO_SETTINGS_MODULE"] = module
    # The shop's own files (the gate's filter among them) apart for each setup.
    env["EXAMPLE_VAR_DIR"] = os.path.join(base, module)
    return env


def start(base: str, index: int, setup: Setup, workers: int) -> None:
    module = settings_module(base, index, setup)
    env = environment(base, module)
    manage = [sys.executable, os.path.join(EXAMPLE, "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True)
    setup.port = free_port()
    setup.process = subprocess.Popen(
        [
            sys.executable, "-m", "gunicorn", "example_project.wsgi:application",
            "--preload", "--workers", str(workers), "--bind", f"127.0.0.1:{setup.port}",
            "--log-level", "warning",
        ],
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            get(setup.port, None)
            return
        except OSError:
            if time.monotonic() > deadline or setup.process.poll() is not None:
                raise RuntimeError(f"gunicorn for {setup.name!r} did not start") from None
            time.sleep(0.1)


def get(port: int, cookie: str | None) -> str | None:
    """``GET /``; the session cookie to send next time."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/", headers={"Cookie": f"sessionid={cookie}"} if cookie else {})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"GET / answered {response.status}")
        for header, value in response.getheaders():
            if header.lower() == "set-cookie" and value.startswith("sessionid="):
                return value.split(";", 1)[0].split("=", 1)[1]
        return cookie
    finally:
        connection.close()


def load(setup: Setup, clients: int, requests: int) -> None:
    """``requests`` requests from ``clients`` threads, each keeping its own session."""
    per_client = requests // clients
    lock = threading.Lock()

    def client() -> None:
        cookie = get(setup.port, None)  # a session of its own, not timed
        timings = []
        for _ in range(per_client):
            started = time.perf_counter_ns()
            cookie = get(setup.port, cookie)
            timings.append(time.perf_counter_ns() - started)
        with lock:
            setup.latencies_ns.extend(timings)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def stop_and_collect(base: str, index: int, setup: Setup) -> None:
    setup.process.send_signal(signal.SIGTERM)  # workers exit and flush their counters
    setup.process.wait(30)
    env = environment(base, f"bench_gc_settings_{index}")
    done = subprocess.run(
        [sys.executable, os.path.join(EXAMPLE, "manage.py"), "memopt_stats", "--json"],
        env={**env, "PYTHONPATH": env["PYTHONPATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(done.stdout)
    setup.figures = {**report["gc"], "requests": report["engine"]["loads"]}


# -- report ----------------------------------------------------------------------------------


def percentile(values: list[int], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def table_lines(setups: list[Setup]) -> list[str]:
    """The Markdown table of the results, one line per setup."""
    rows = [
        "| setup | requests | median ms | p99 ms | GC ms in requests | GC µs per "
        "request | GC ms between requests | full collections | worst pause ms | "
        "frozen objects |",
        "|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setup in setups:
        figures = setup.figures
        finished = figures.get("requests_finished", 0) or 1
        in_request_ms = figures.get("in_request_time_ns", 0) / 1e6
        rows.append(
            f"| {setup.name} | {len(setup.latencies_ns):,} "
            f"| {statistics.median(setup.latencies_ns) / 1e6:.2f} "
            f"| {percentile(setup.latencies_ns, 0.99) / 1e6:.2f} "
            f"| {in_request_ms:.1f} | {in_request_ms / finished * 1000:.1f} "
            f"| {figures.get('between_requests_time_ns', 0) / 1e6:.1f} "
            f"| {figures.get('collections_gen2', 0)} "
            f"| {figures.get('worst_pause_ns', 0) / 1e6:.2f} "
            f"| {figures.get('frozen_objects', 0):,} |"
        )
    return rows


def render(argv: list[str], rounds: int, per_round: int, clients: int, workers: int) -> str:
    import django

    return "\n".join(
        [
            "# Benchmark: the garbage collector under gunicorn, with and without the app's tuning",
            "",
            "Generated by `benchmarks/bench_gc.py`; every number below comes from the run "
            "described here.",
            "",
            f"The example project under gunicorn (`--preload`, {workers} sync workers), one "
            f"server per setup, all running at once. {clients} client threads of the "
            "benchmark, one session each, send `GET /` (the shop's home page: reads and "
            "writes the session, renders a template) to one setup at a time; "
            f"{rounds} rounds of {per_round:,} requests per setup, the setups in a shuffled "
            "order each round. Latency is timed by the client (a new connection per request, "
            "as gunicorn's sync workers close it). The collector's figures are the workers' "
            "own, summed over both workers by `manage.py memopt_stats --json`.",
            "",
            *table_lines(SETUPS),
            "",
            *be.machine_and_run(argv, "benchmarks/bench_gc.py", f"Django {django.get_version()}"),
        ]
    )


def measure(rounds: int, per_round: int, clients: int, workers: int, seed: int) -> None:
    """Serve and load every setup; fills in each of ``SETUPS``' latencies and figures."""
    rng = random.Random(seed)
    base = tempfile.mkdtemp(prefix="memopt-bench-gc-")
    sys.path[:0] = [EXAMPLE, base]
    try:
        for index, setup in enumerate(SETUPS):
            start(base, index, setup, workers)
        for setup in SETUPS:
            load(setup, clients, per_round // 4)  # warm-up, not recorded
            setup.latencies_ns.clear()
        for _ in range(rounds):
            order = list(SETUPS)
            rng.shuffle(order)
            for setup in order:
                load(setup, clients, per_round)
        for index, setup in enumerate(SETUPS):
            stop_and_collect(base, index, setup)
        os.environ["DJANGO_SETTINGS_MODULE"] = "bench_gc_settings_0"
    finally:
        for setup in SETUPS:
            if setup.process is not None and setup.process.poll() is None:
                setup.process.kill()
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--output", help="write the report to this Markdown file")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rounds, per_round, clients, workers = (2, 200, 4, 2) if args.quick else (10, 1000, 4, 2)
    measure(rounds, per_round, clients, workers, args.seed)
    report = render(sys.argv[1:] if argv is None else argv, rounds, per_round, clients, workers)
    be.publish(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
