"""django-memopt's settings: one typed property per ``MEMOPT_*`` setting, read on access.

Nothing is read at import time, and what was read is forgotten when Django signals a
changed setting (``setting_changed``: ``override_settings`` and pytest-django's
``settings`` fixture send it), so they work everywhere. Values are validated by the
system checks in :mod:`django_memopt.checks`, not here.
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Final, Literal

from django.conf import ENVIRONMENT_VARIABLE, settings
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["DURABILITY_CHOICES", "conf"]

DURABILITY_CHOICES: Final = ("process", "system")
Durability = Literal["process", "system"]


_UNREAD: Final = object()
_UNSET: Final = object()
# Settings read so far. Django's settings raise AttributeError for one that is not set,
# which costs a microsecond on every read of a default: the hot path reads several.
_cache: dict[str, Any] = {}


def _setting(name: str, default: Any) -> Any:
    value = _cache.get(name, _UNREAD)
    if value is _UNREAD:
        value = _cache[name] = getattr(settings, name, _UNSET)
    return default if value is _UNSET else value


@receiver(setting_changed)
def _forget_settings(**kwargs: Any) -> None:
    _cache.clear()


class Settings:
    """Shadows Django's settings with django-memopt's defaults."""

    @property
    def MEMOPT_LMDB_PATH(self) -> str:
        """Directory of the LMDB environment (created on first use)."""
        path: str | os.PathLike[str] | None = _setting("MEMOPT_LMDB_PATH", None)
        if path is None:
            # One directory per settings module, so two projects on a host do not share.
            module = os.environ.get(ENVIRONMENT_VARIABLE) or "default"
            path = os.path.join(
                tempfile.gettempdir(), "django-memopt", re.sub(r"[^\w.-]", "_", module)
            )
        return os.fspath(path)

    @property
    def MEMOPT_LMDB_MAP_SIZE(self) -> int:
        """The most bytes the LMDB file may grow to (address space, reserved lazily)."""
        return _setting("MEMOPT_LMDB_MAP_SIZE", 1024**3)  # type: ignore[no-any-return]

    @property
    def MEMOPT_LMDB_MAX_READERS(self) -> int:
        """Concurrent read transactions across all processes (worker threads, in total)."""
        return _setting("MEMOPT_LMDB_MAX_READERS", 126)  # type: ignore[no-any-return]

    @property
    def MEMOPT_LMDB_DURABILITY(self) -> Durability:
        """``"process"``: survives any process crash; ``"system"``: survives an OS crash."""
        return _setting("MEMOPT_LMDB_DURABILITY", "process")  # type: ignore[no-any-return]

    @property
    def MEMOPT_REDIS_KEY_PREFIX(self) -> str:
        """Prefix of the Redis keys of the session hashes."""
        return _setting("MEMOPT_REDIS_KEY_PREFIX", "memopt:session:")  # type: ignore[no-any-return]

    @property
    def MEMOPT_REDIS_CLIENT_CACHE(self) -> int:
        """Bytes of sessions each process keeps in its client-side cache; 0: none."""
        return _setting("MEMOPT_REDIS_CLIENT_CACHE", 0)  # type: ignore[no-any-return]

    @property
    def MEMOPT_REDIS_WAIT_REPLICAS(self) -> int:
        """How many replicas must acknowledge each session write (Redis ``WAIT``) before
        it counts as done; 0: none (Redis's asynchronous replication)."""
        return _setting("MEMOPT_REDIS_WAIT_REPLICAS", 0)  # type: ignore[no-any-return]

    @property
    def MEMOPT_REDIS_WAIT_TIMEOUT(self) -> int:
        """How long a session write waits for ``MEMOPT_REDIS_WAIT_REPLICAS``, in ms."""
        return _setting("MEMOPT_REDIS_WAIT_TIMEOUT", 1000)  # type: ignore[no-any-return]

    @property
    def MEMOPT_FILTER(self) -> bool:
        """Whether the host's filter of live session IDs is kept and asked."""
        return _setting("MEMOPT_FILTER", False)  # type: ignore[no-any-return]

    @property
    def MEMOPT_UNSIGNED_IDS(self) -> bool | None:
        """Whether session IDs without a tag are let in; ``None``: during the store's
        migration window only."""
        return _setting("MEMOPT_UNSIGNED_IDS", None)  # type: ignore[no-any-return]

    @property
    def MEMOPT_FILTER_PATH(self) -> str:
        """The filter's file, shared by every process of the host (default: beside LMDB's)."""
        path: str | os.PathLike[str] | None = _setting("MEMOPT_FILTER_PATH", None)
        if path is None:
            return os.path.join(self.MEMOPT_LMDB_PATH, "session-filter")
        return os.fspath(path)

    @property
    def MEMOPT_FILTER_CAPACITY(self) -> int:
        """Live sessions the filter is sized for."""
        return _setting("MEMOPT_FILTER_CAPACITY", 1_000_000)  # type: ignore[no-any-return]

    @property
    def MEMOPT_FILTER_FP_RATE(self) -> float:
        """Target share of unknown IDs the filter lets through to the store, at capacity."""
        return _setting("MEMOPT_FILTER_FP_RATE", 0.01)  # type: ignore[no-any-return]

    @property
    def MEMOPT_GC_FREEZE(self) -> bool:
        """Collect, then freeze, every object alive when the app is ready (once per process)."""
        return _setting("MEMOPT_GC_FREEZE", True)  # type: ignore[no-any-return]

    @property
    def MEMOPT_GC_THRESHOLDS(self) -> tuple[int, ...] | None:
        """``gc.set_threshold()`` arguments to apply at startup; ``None`` keeps Python's."""
        return _setting("MEMOPT_GC_THRESHOLDS", None)  # type: ignore[no-any-return]

    @property
    def MEMOPT_GC_OUT_OF_BAND(self) -> int | None:
        """Collect the oldest generation after every this many responses, never during one."""
        return _setting("MEMOPT_GC_OUT_OF_BAND", None)  # type: ignore[no-any-return]

    @property
    def MEMOPT_STATS_INTERVAL(self) -> float | None:
        """Seconds between a process's flushes of its counters to the store; ``None``: never."""
        return _setting("MEMOPT_STATS_INTERVAL", 10.0)  # type: ignore[no-any-return]

    @property
    def MEMOPT_METRICS_TOKEN(self) -> str | None:
        """The bearer token that opens the metrics view to a scraper; ``None``: staff only."""
        return _setting("MEMOPT_METRICS_TOKEN", None)  # type: ignore[no-any-return]

    @property
    def MEMOPT_COMPRESS_FROM(self) -> int | None:
        """Field payloads of at least this many bytes are compressed; ``None``: none is."""
        return _setting("MEMOPT_COMPRESS_FROM", 128)  # type: ignore[no-any-return]

    @property
    def MEMOPT_PREVIOUS_ENGINE(self) -> str | None:
        """The ``SESSION_ENGINE`` the site switched from, read through for cookies our store
        does not know; ``None``: no fallback."""
        return _setting("MEMOPT_PREVIOUS_ENGINE", None)  # type: ignore[no-any-return]

    @property
    def MEMOPT_TOUCH_INTERVAL(self) -> int:
        """Seconds: an unmodified session's expiry is refreshed at most this often."""
        return _setting("MEMOPT_TOUCH_INTERVAL", 0)  # type: ignore[no-any-return]

    @property
    def MEMOPT_USER_SESSIONS(self) -> bool:
        """Keep an index of each user's sessions (``django_memopt.user_sessions``)."""
        return _setting("MEMOPT_USER_SESSIONS", False)  # type: ignore[no-any-return]

    @property
    def MEMOPT_USER_SESSIONS_METADATA(self) -> tuple[str, ...]:
        """What the index records of each session's client: ``"ip"``, ``"user_agent"``."""
        return _setting("MEMOPT_USER_SESSIONS_METADATA", ("ip", "user_agent"))  # type: ignore[no-any-return]

    @property
    def MEMOPT_USER_SESSIONS_REFRESH(self) -> int:
        """Seconds: a session's index entry (last seen, client) is rewritten at most this
        often."""
        return _setting("MEMOPT_USER_SESSIONS_REFRESH", 300)  # type: ignore[no-any-return]


conf: Final = Settings()
