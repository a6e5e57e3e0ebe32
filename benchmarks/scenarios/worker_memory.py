"""Part of scenario ``memory``: what the example shop's gunicorn workers take in memory.

The example project runs under gunicorn (``--preload``, ``WORKERS`` sync workers, on
LMDB), one setup at a time, with the shop launcher of the harness: the app's
default (``MEMOPT_GC_FREEZE`` on), the freeze off, and Django's own ``db`` engine and
middleware (the shop's ``EXAMPLE_SESSION_STORE=django-db``). Client threads of this
process, each a shopper with a session of its own, send a fixed mix of requests: sign up,
add products to the cart, view the home, session and cart pages, log out and in again.
Before and after them, each worker's USS and PSS come from ``/proc/<pid>/smaps_rollup``.

A fourth run of the default setup, under ``PYTHONTRACEMALLOC=1`` (which costs memory of
its own, so it is not in the first table), dumps a ``tracemalloc`` snapshot in the
master once the app is loaded and in each worker as it exits: the memory allocated by
lines of ``django_memopt`` itself, before the fork and since.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import statistics
import string
import threading
import time
import tracemalloc
import urllib.parse
from dataclasses import dataclass, field

from benchmarks.harness import shop
from benchmarks.scenarios.collector import Setup

WORKERS, CLIENTS = 3, 6
PASSWORD = "a benchmark shopper's password"
# What a gunicorn hook writes: each worker's collector figures, and snapshots if traced.
HOOKS = """
import gc, json, os, tracemalloc

OUT = os.environ["MEMOPT_BENCH_HOOKS"]
_at_fork = {}


def when_ready(server):  # in the master, the app loaded (and frozen) before any fork
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(os.path.join(OUT, "master.snapshot"))


def post_fork(server, worker):
    _at_fork["gen2"] = gc.get_stats()[2]["collections"]


def worker_exit(server, worker):
    pid = os.getpid()
    figures = {
        "full_collections": gc.get_stats()[2]["collections"] - _at_fork.get("gen2", 0),
        "frozen": gc.get_freeze_count(),
    }
    with open(os.path.join(OUT, f"worker-{pid}.json"), "w") as out:
        json.dump(figures, out)
    if tracemalloc.is_tracing():  # what is held, not the garbage awaiting a collection
        gc.collect()
        tracemalloc.take_snapshot().dump(os.path.join(OUT, f"worker-{pid}.snapshot"))
"""
# Password hashing is not what is measured: PBKDF2 would make each sign-up and log-in
# take most of a second.
COMMON_SETTINGS = 'PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]\n'


@dataclass
class Worker:
    pid: int
    before: dict[str, int]  # smaps_rollup figures (bytes) before the requests
    after: dict[str, int] = field(default_factory=dict)  # and after them
    figures: dict[str, int] = field(default_factory=dict)  # from the exit hook


@dataclass
class Run:
    name: str
    workers: list[Worker]
    master: dict[str, int]  # the master's smaps_rollup figures after the requests
    requests: int
    seconds: float

    def mean(self, when: str, key: str) -> float:
        return statistics.mean(getattr(w, when)[key] for w in self.workers)

    def spread(self, when: str, key: str) -> tuple[int, int]:
        values = [getattr(w, when)[key] for w in self.workers]
        return min(values), max(values)

    @property
    def total_pss(self) -> int:
        """The whole server's memory: the master's PSS and every worker's."""
        return self.master["Pss"] + sum(w.after["Pss"] for w in self.workers)


@dataclass
class AppMemory:
    """Memory allocated by lines of django_memopt (tracemalloc, one frame per trace)."""

    by_module: dict[str, tuple[int, float]]  # module -> (master at fork, added per worker)
    traced: tuple[int, float]  # everything Python allocated: master, added per worker
    workers: int


@dataclass
class Result:
    runs: list[Run]
    app: AppMemory | None
    requests: int


def _setups() -> list[Setup]:
    return [
        Setup("django-memopt (LMDB), freeze (the default)", COMMON_SETTINGS),
        Setup("django-memopt (LMDB), no freeze", COMMON_SETTINGS + "MEMOPT_GC_FREEZE = False"),
        Setup(
            "Django's `db` engine and middleware",
            COMMON_SETTINGS,
            env={"EXAMPLE_SESSION_STORE": "django-db"},
        ),
    ]


# -- memory of a process ---------------------------------------------------------------------


def smaps(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in bytes, with ``USS`` (its private pages) added."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                found[parts[0].rstrip(":")] = int(parts[1]) * 1024
    found["USS"] = found["Private_Clean"] + found["Private_Dirty"] + found["Private_Hugetlb"]
    return found


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (gunicorn's workers), from ``/proc``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def _workers_of(setup: Setup) -> list[int]:
    deadline = time.monotonic() + 30
    while len(found := children(setup.process.pid)) < WORKERS:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{setup.name}: {len(found)} of {WORKERS} workers started")
        time.sleep(0.1)
    return found


# -- the shoppers ----------------------------------------------------------------------------


class Browser:
    """One shopper's cookies, sent with each request and updated from each response."""

    def __init__(self, port: int, rng: random.Random) -> None:
        self.port = port
        # Django takes a well-formed CSRF cookie the client made up, as a browser's first.
        token = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))
        self.cookies = {"csrftoken": token}

    def send(self, method: str, path: str, form: dict[str, str] | None = None) -> int:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if method == "POST":
            form = {**(form or {}), "csrfmiddlewaretoken": self.cookies["csrftoken"]}
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            for name, value in response.getheaders():
                if name.lower() == "set-cookie":
                    self._update(value)
            return response.status
        finally:
            connection.close()

    def _update(self, header: str) -> None:
        pair, _, attributes = header.partition(";")
        name, _, value = pair.strip().partition("=")
        if not value.strip('"') or "max-age=0" in attributes.lower():
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = value


def plan(shopper: int, count: int, rng: random.Random) -> list[tuple[str, str, dict[str, str]]]:
    """The ``count`` requests of one shopper: sign up, then shop, logging out and in once."""
    from shop.catalog import PRODUCTS

    user = f"shopper{shopper}"
    account = {"username": user, "password1": PASSWORD, "password2": PASSWORD}
    requests = [("GET", "/", {}), ("POST", "/accounts/sign-up/", account)]
    skus = sorted(PRODUCTS)
    logged_out = False
    while len(requests) < count:
        if not logged_out and len(requests) >= count // 2:
            logged_out = True
            requests.append(("POST", "/accounts/log-out/", {}))
            login = {"username": user, "password": PASSWORD}
            requests.append(("POST", "/accounts/log-in/", login))
        requests.append(("POST", "/cart/add/", {"sku": rng.choice(skus), "next": "/"}))
        requests += [("GET", "/", {}), ("GET", "/session/", {}), ("GET", "/cart/", {})]
    return requests[:count]


def _shop(port: int, requests: int, seed: int) -> None:
    """``requests`` requests from ``CLIENTS`` shoppers at once; every answer checked."""
    failures: list[str] = []

    def shopper(n: int) -> None:
        rng = random.Random(f"{seed}-{n}")
        browser = Browser(port, rng)
        share = requests // CLIENTS + (n < requests % CLIENTS)
        for method, path, form in plan(n, share, rng):
            status = browser.send(method, path, form)
            if status != (200 if method == "GET" else 302):
                failures.append(f"{method} {path} answered {status}")
                return

    threads = [threading.Thread(target=shopper, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"the shop failed: {failures[0]}")


# -- the runs --------------------------------------------------------------------------------


def _hooked(base: str, index: int, setup: Setup) -> str:
    """Give ``setup`` the gunicorn hooks; the directory they write to."""
    out = os.path.join(base, f"hooks-{index}")
    os.makedirs(out, exist_ok=True)
    setup.env["MEMOPT_BENCH_HOOKS"] = out
    return out


def _run(base: str, index: int, setup: Setup, requests: int, config: str) -> tuple[Run, str]:
    out = _hooked(base, index, setup)
    shop.launch(base, index, setup, WORKERS, "--config", config)
    try:
        pids = _workers_of(setup)
        workers = [Worker(pid, smaps(pid)) for pid in pids]
        started = time.perf_counter()
        _shop(setup.port, requests, index)
        seconds = time.perf_counter() - started
        time.sleep(0.5)  # the last responses' sockets closed, the workers back in accept()
        if children(setup.process.pid) != pids:
            raise RuntimeError(f"{setup.name}: a worker was replaced during the requests")
        for worker in workers:
            worker.after = smaps(worker.pid)
        master = smaps(setup.process.pid)
    finally:
        shop.stop(setup)
    for worker in workers:
        with open(os.path.join(out, f"worker-{worker.pid}.json")) as figures:
            worker.figures = json.load(figures)
    return Run(setup.name, workers, master, requests, seconds), out


def _app_memory(out: str, pids: list[int]) -> AppMemory:
    """What the traced run's snapshots say of django_memopt's own allocations."""
    app = [tracemalloc.Filter(True, os.path.join("*", "django_memopt", "*"))]
    master = tracemalloc.Snapshot.load(os.path.join(out, "master.snapshot"))
    at_fork = {
        _module(stat.traceback[0].filename): stat.size
        for stat in master.filter_traces(app).statistics("filename")
    }
    added: dict[str, list[int]] = {}
    traced_added = []
    for pid in pids:
        worker = tracemalloc.Snapshot.load(os.path.join(out, f"worker-{pid}.snapshot"))
        traced_added.append(sum(s.size for s in worker.statistics("filename")))
        for diff in worker.filter_traces(app).compare_to(master.filter_traces(app), "filename"):
            added.setdefault(_module(diff.traceback[0].filename), []).append(diff.size_diff)
    traced_master = sum(s.size for s in master.statistics("filename"))
    modules = set(at_fork) | set(added)
    return AppMemory(
        {
            module: (at_fork.get(module, 0), sum(added.get(module, [])) / len(pids))
            for module in modules
        },
        (traced_master, statistics.mean(traced_added) - traced_master),
        len(pids),
    )


def _module(filename: str) -> str:
    parts = filename.split(os.sep)
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("django_memopt") :])


def measure(base: str, requests: int) -> Result:
    """Every setup in turn under ``base``, then the traced run."""
    import sys

    from benchmarks.harness.servers import EXAMPLE, ROOT

    sys.path[:0] = [p for p in (ROOT, EXAMPLE) if p not in sys.path]
    os.makedirs(base, exist_ok=True)
    config = os.path.join(base, "gunicorn_hooks.py")
    with open(config, "w") as hooks:
        hooks.write(HOOKS)
    setups = _setups()
    runs = [_run(base, index, setup, requests, config)[0] for index, setup in enumerate(setups)]
    traced = Setup("traced", COMMON_SETTINGS, env={"PYTHONTRACEMALLOC": "1"})
    run, out = _run(base, len(setups), traced, requests, config)
    return Result(runs, _app_memory(out, [w.pid for w in run.workers]), requests)
