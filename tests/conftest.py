from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[RedisServer]:
    """The suite's redis-server, on the port ``tests/settings.py`` configured."""
    server = RedisServer(settings.REDIS_TEST_PORT).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """The suite's Redis Cluster, on the ports ``tests/settings.py`` configured: started
    by the first test that asks for it."""
    cluster = RedisCluster(settings.REDIS_CLUSTER_TEST_PORTS).start()
    yield cluster
    cluster.cleanup()


@pytest.fixture(scope="session", autouse=True)
def _remove_the_test_store() -> Iterator[None]:
    """The suite's default LMDB directory (``tests/settings.py``) goes when the run ends."""
    yield
    from django_memopt.backends.lmdb import close_environments

    close_environments()
    shutil.rmtree(settings.MEMOPT_LMDB_PATH, ignore_errors=True)
