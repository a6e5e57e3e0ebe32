"""The example shop, served by ``example_project/serve.py``, and headless Chromium.

Each store the shop can run on gets its own server (gunicorn with ``--preload`` and
several workers, as ``python3 scripts/dev.py example`` runs it) in a temporary directory.
Chromium is Debian's (``MEMOPT_CHROMIUM`` or ``chromium`` on ``PATH``), driven by
Playwright. Screenshots go to ``artifacts/browser/`` in the repository root.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "example_project" / "serve.py"
ARTIFACTS = ROOT / "artifacts" / "browser"
# The add-to-cart view's pretend stock check: long enough that two tabs' requests overlap.
STOCK_CHECK_MS = 600
# What opens the shop's /metrics/memopt to a scraper.
METRICS_TOKEN = "browser-tests-metrics-token-0123456789abcdef"
# Chromium on a machine with no network and no display (as the Debian package runs as root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Shop:
    store: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/accounts/log-in/")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def start_shop(store: str, directory: Path, **environment: str) -> Shop:
    """The shop on ``store``, keeping what it writes under ``directory`` (where an earlier
    run's users and sessions are found again); ``environment`` adds to its environment."""
    port = free_port()
    log = directory / f"serve-{store}.log"
    env = {
        **os.environ,
        "EXAMPLE_VAR_DIR": str(directory / "var"),
        "EXAMPLE_STOCK_CHECK_MS": str(STOCK_CHECK_MS),
        "EXAMPLE_METRICS_TOKEN": METRICS_TOKEN,
        "DJANGO_DEBUG": "0",
        **environment,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the shop's own settings, not the suite's
    env.pop("EXAMPLE_REDIS_URL", None)  # --store redis starts a private redis-server
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(SERVE), "--store", store, "--workers", "3",
             "--bind", f"127.0.0.1:{port}"],
            env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    shop = Shop(store, f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + 60
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_shop(shop)
            pytest.fail(f"the example shop ({store}) did not start:\n{shop.log_text()}")
        time.sleep(0.2)
    return shop


def stop_shop(shop: Shop) -> None:
    """SIGTERM to serve.py, which stops gunicorn and its own redis-server."""
    if shop.process.poll() is None:
        shop.process.send_signal(signal.SIGTERM)
        try:
            shop.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(shop.process.pid, signal.SIGKILL)
            shop.process.wait(10)


@pytest.fixture(scope="module", params=["lmdb", "redis"])
def shop(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    """The shop on each of django-memopt's stores."""
    found = start_shop(request.param, tmp_path_factory.mktemp(f"shop-{request.param}"))
    yield found
    stop_shop(found)
    assert "Traceback" not in found.log_text(), found.log_text()


@pytest.fixture(scope="module")
def django_db_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    """The shop on Django's own ``db`` engine, for comparison."""
    found = start_shop("django-db", tmp_path_factory.mktemp("shop-django-db"))
    yield found
    stop_shop(found)


def chromium_path() -> str:
    found = os.environ.get("MEMOPT_CHROMIUM") or shutil.which("chromium")
    if not found:
        pytest.fail(
            "the browser tests need Chromium: install Debian's chromium package "
            "(python3 scripts/dev.py test does) or set MEMOPT_CHROMIUM"
        )
    return found


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def new_context(browser: Any) -> Iterator[Any]:
    """Browser contexts (each its own cookie jar), closed after the test."""
    opened: list[Any] = []

    def make(**options: Any) -> Any:
        context = browser.new_context(viewport={"width": 1100, "height": 900}, **options)
        context.set_default_timeout(15_000)
        opened.append(context)
        return context

    yield make
    for context in opened:
        context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Any:
    """``screenshot(page, step[, selector])`` saves a PNG under artifacts/browser/."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name).strip("-")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, step: str, selector: str | None = None) -> Path:
        """The whole page, or only the element ``selector`` matches."""
        path = ARTIFACTS / f"{name}-{step}.png"
        if selector is None:
            page.screenshot(path=str(path), full_page=True)
        else:
            page.locator(selector).screenshot(path=str(path))
        return path

    return take
