"""How a child process of ``test_redis_store.py`` configures itself: ``setup()``.

The tests start the workers of ``tests/session_workers.py`` with the ``multiprocessing``
"spawn" context: each child is a fresh interpreter that configures Django itself
(``tests.settings``), then points the cache alias ``"sessions"`` at the redis-server whose
port it is given (the child's own import of ``tests.settings`` picked another, unused
port) and uses the Redis engine with the key prefix it is given.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

ENGINE = "django_memopt.backends.redis"


DJANGO_REDIS = "django_redis.cache.RedisCache"
#: Django's own Redis cache backend: the other connection source the engine supports.
DJANGO_OWN = "django.core.cache.backends.redis.RedisCache"
#: django-redis's cache on a Redis Cluster (docs/redis.md, "Redis Cluster").
CLUSTER_FACTORY = "django_memopt.redis_cluster.ClusterConnectionFactory"


def redis_caches(port: int, backend: str = DJANGO_REDIS, cluster: bool = False) -> dict[str, Any]:
    """``CACHES`` with the alias ``"sessions"`` on the redis-server at ``port``, through
    the cache ``backend`` (django-redis's, or Django's own); with ``cluster``, a node of a
    Redis Cluster, through django-redis as docs/redis.md configures one."""
    options: dict[str, Any] = (
        {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}
        if backend == DJANGO_REDIS
        else {"socket_connect_timeout": 1, "socket_timeout": 1}
    )
    if cluster:
        options["CONNECTION_FACTORY"] = CLUSTER_FACTORY
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "sessions": {
            "BACKEND": backend,
            "LOCATION": f"redis://127.0.0.1:{port}/0",
            "OPTIONS": options,
        },
    }


def setup(port: int, prefix: str, backend: str = DJANGO_REDIS, cluster: bool = False) -> None:
    """Configure Django from ``tests.settings``, with sessions in Redis at ``port``
    reached through the cache ``backend`` (with ``cluster``, the Redis Cluster that node
    is part of)."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.test.utils import override_settings

    # tests.settings makes an empty directory at import for its LMDB store: unused here.
    unused = settings.MEMOPT_LMDB_PATH
    if os.path.basename(unused).startswith("django-memopt-tests-"):
        with contextlib.suppress(OSError):
            os.rmdir(unused)
    # As override_settings in a test: the setting_changed signal resets Django's cache
    # handler (and the engine's client), so nothing configured at import time is kept.
    override_settings(
        CACHES=redis_caches(port, backend, cluster),
        SESSION_ENGINE=ENGINE,
        SESSION_CACHE_ALIAS="sessions",
        MEMOPT_REDIS_KEY_PREFIX=prefix,
    ).enable()
    from django_memopt.backends.redis import connection, is_cluster

    if cluster:
        if not is_cluster():
            raise RuntimeError("the child's sessions' cache is not the Redis Cluster")
        return
    actual = int(connection().info("server")["tcp_port"])
    if actual != port:
        raise RuntimeError(f"the child talks to the redis-server on port {actual}, not {port}")
