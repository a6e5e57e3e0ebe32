"""A django-redis connection factory for a Redis Cluster.

django-redis has no cluster client of its own, and its default factory hands a connection
pool to the client class it is told, which ``redis.cluster.RedisCluster`` does not take
(jazzband/django-redis#606). This factory makes one ``RedisCluster`` per process for each
``LOCATION`` (a URL of any node: the client learns the others), with the cache's
``OPTIONS`` (``PASSWORD``, ``USERNAME``, ``SOCKET_TIMEOUT``, ``SOCKET_CONNECT_TIMEOUT``,
and ``REDIS_CLIENT_KWARGS`` passed to ``RedisCluster``, such as ``require_full_coverage``)::

    CACHES = {
        "sessions": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://cluster.example:6379/0",
            "OPTIONS": {
                "CONNECTION_FACTORY": "django_memopt.redis_cluster.ClusterConnectionFactory",
            },
        },
    }

The session engine (``django_memopt.backends.redis``) then routes each command to the
primary serving its key's slot (docs/redis.md, "Redis Cluster").
"""

from __future__ import annotations

import threading
from typing import Any

from django_redis.pool import ConnectionFactory
from redis.cluster import RedisCluster

__all__ = ["ClusterConnectionFactory"]

# One client per process and configuration: django-redis makes a factory per cache
# client (often per request), and a RedisCluster holds a pool per node.
_clusters: dict[str, RedisCluster] = {}
_lock = threading.Lock()


class ClusterConnectionFactory(ConnectionFactory):  # type: ignore[misc]
    """Connects a django-redis cache to a Redis Cluster: its client is a
    ``redis.cluster.RedisCluster`` (see the module's docstring)."""

    def connect(self, url: str) -> Any:
        params = self.make_connection_params(url)
        params.pop("parser_class", None)  # RedisCluster picks its own
        kwargs = {**params, **self.redis_client_cls_kwargs}
        name = repr(sorted(kwargs.items()))
        with _lock:
            client = _clusters.get(name)
            if client is None:
                client = RedisCluster.from_url(kwargs.pop("url"), **kwargs)
                _clusters[name] = client
        return client

    def disconnect(self, connection: Any) -> None:
        connection.disconnect_connection_pools()
