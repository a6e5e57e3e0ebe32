"""System checks: every misconfiguration is reported at startup with a stable ID."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Sequence
from importlib.util import find_spec
from typing import Any, Final

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .backends.base import SessionStoreError, note_previous_engine
from .conf import DURABILITY_CHOICES, conf
from .gc_tuning import (
    DEFAULT_FIRST_THRESHOLD_313,
    incremental_collector,
    python_version,
    valid_out_of_band,
    valid_thresholds,
)
from .previous import refusal

__all__ = ["check_middleware", "check_settings"]

LMDB_ENGINE = "django_memopt.backends.lmdb"
REDIS_ENGINE = "django_memopt.backends.redis"
DEFAULT_SERIALIZER = "django.contrib.sessions.serializers.JSONSerializer"
DJANGO_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
GATE_MIDDLEWARE = "django_memopt.middleware.SessionMiddleware"
# A bearer token a scraper sends: long enough not to be guessed, and what an HTTP header
# can carry unchanged.
METRICS_TOKEN_MIN_LENGTH = 32
METRICS_TOKEN_RE = re.compile(rf"[\x21-\x7e]{{{METRICS_TOKEN_MIN_LENGTH},}}")
FILTER_SETTINGS = (
    "MEMOPT_FILTER",
    "MEMOPT_UNSIGNED_IDS",
    "MEMOPT_FILTER_PATH",
    "MEMOPT_FILTER_CAPACITY",
    "MEMOPT_FILTER_FP_RATE",
)


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _lmdb_store_error() -> str | None:
    """Why the engine cannot open the store at ``MEMOPT_LMDB_PATH`` for writing, or None.

    Asking ``os.access`` is not enough (as root it says yes to ``/proc/x``): this opens the
    store as the engine will, creating the directory. The environment stays open for the
    engine to use; a fork afterwards is handled as for any other.
    """
    try:
        from .backends.lmdb import environment
    except ImportError:
        return None  # the lmdb package is missing: the engine's import says so
    try:
        environment()
    except SessionStoreError as exc:
        return str(exc)
    return None


def _file_creation_error(path: str) -> str | None:
    """Why this process cannot create a file beside ``path``, making its directory as the
    filter does, or None. Tried: ``os.access`` says yes to root whatever the path."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".django-memopt-check-", dir=directory)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as exc:
        return str(exc)
    return None


def _exposed_dir(path: str) -> str | None:
    """Why other local users could read or change what is in ``path``, or None."""
    try:
        found = os.stat(path)
    except OSError:
        return None  # not there yet: the engine creates it with mode 0700
    if found.st_uid not in (os.geteuid(), 0):
        return f"is owned by another user (uid {found.st_uid})"
    if found.st_mode & 0o077:
        return f"can be entered by other users (mode {found.st_mode & 0o777:04o})"
    return None


#: The caches whose connection the Redis engine can take (docs/redis.md, "Connection").
REDIS_CACHE_BACKENDS: Final = (
    "django_redis.cache.RedisCache",
    "django.core.cache.backends.redis.RedisCache",
)


def _check_redis_cache() -> list[CheckMessage]:
    """The Redis engine's connection comes from a Redis cache of ``CACHES``: is there one
    it supports (django-redis's, or Django's own), with its libraries installed?"""
    alias = settings.SESSION_CACHE_ALIAS
    cache: dict[str, Any] = settings.CACHES.get(alias) or {}  # type: ignore[assignment]
    backend = cache.get("BACKEND", "")
    missing = [name for name in ("redis", "django_redis") if find_spec(name) is None]
    if "redis" in missing or (backend.startswith("django_redis.") and missing):
        library = "redis-py" if "redis" in missing else "django-redis"
        return [
            Error(
                f"The Redis session engine needs {library}, which is not installed.",
                hint='pip install "django-memopt[redis]"',
                id="django_memopt.E009",
            )
        ]
    supported = []
    for name in REDIS_CACHE_BACKENDS:
        try:
            supported.append(import_string(name))
        except ImportError:  # django-redis, not installed: Django's own cache can serve
            continue
    try:
        found = import_string(backend)
    except ImportError:
        found = None
    if isinstance(found, type) and issubclass(found, tuple(supported)):
        return []
    return [
        Error(
            f"SESSION_CACHE_ALIAS names the cache {alias!r}, whose BACKEND {backend!r} is "
            "not one the Redis session engine can take its connection from.",
            hint="Name in SESSION_CACHE_ALIAS a cache of CACHES whose BACKEND is "
            + " or ".join(repr(name) for name in REDIS_CACHE_BACKENDS)
            + " (or a subclass of either).",
            id="django_memopt.E008",
        )
    ]


def _cluster_configured() -> bool:
    """Whether the cache ``SESSION_CACHE_ALIAS`` is configured for a Redis Cluster: its
    ``CONNECTION_FACTORY`` is ``ClusterConnectionFactory`` (or a subclass), or its
    ``REDIS_CLIENT_CLASS`` is ``redis.cluster.RedisCluster`` (or a subclass)."""
    cache: dict[str, Any] = settings.CACHES.get(settings.SESSION_CACHE_ALIAS) or {}  # type: ignore[assignment]
    options = cache.get("OPTIONS") or {}
    try:
        from redis.cluster import RedisCluster

        from .redis_cluster import ClusterConnectionFactory

        factory = options.get("CONNECTION_FACTORY")
        if isinstance(factory, str) and issubclass(
            import_string(factory), ClusterConnectionFactory
        ):
            return True
        client = options.get("REDIS_CLIENT_CLASS")
        return isinstance(client, str) and issubclass(import_string(client), RedisCluster)
    except (ImportError, TypeError):
        return False


def _check_redis_cluster() -> list[CheckMessage]:
    """What a Redis Cluster does not support (known from ``CACHES``, without connecting)."""
    if not _cluster_configured():
        return []
    messages: list[CheckMessage] = []
    prefix: object = conf.MEMOPT_REDIS_KEY_PREFIX
    if isinstance(prefix, str) and ("{" in prefix or "}" in prefix):
        messages.append(
            Error(
                "MEMOPT_REDIS_KEY_PREFIX holds '{' or '}', and the sessions' cache is a "
                "Redis Cluster: the prefix would be the hash tag of every key, putting "
                "all sessions in one slot (one shard), or split a user's index across two.",
                hint="Use a prefix without braces: the engine tags the keys it must keep "
                "together itself.",
                id="django_memopt.E030",
            )
        )
    if _is_int(conf.MEMOPT_REDIS_CLIENT_CACHE, 1):
        messages.append(
            Warning(
                "MEMOPT_REDIS_CLIENT_CACHE is set, but the sessions' cache is a Redis "
                "Cluster: the client-side cache needs one server's CLIENT TRACKING, and "
                "stays off.",
                hint="Remove the setting (or set it to 0).",
                id="django_memopt.W014",
            )
        )
    return messages


def _check_wait() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if not _is_int(conf.MEMOPT_REDIS_WAIT_REPLICAS, 0):
        errors.append(
            Error(
                "MEMOPT_REDIS_WAIT_REPLICAS must be an int number of replicas, 0 (no wait) "
                "or more.",
                id="django_memopt.E031",
            )
        )
    if not _is_int(conf.MEMOPT_REDIS_WAIT_TIMEOUT, 1):
        errors.append(
            Error(
                "MEMOPT_REDIS_WAIT_TIMEOUT must be an int number of milliseconds, 1 or more.",
                hint="Redis's WAIT would wait forever with 0.",
                id="django_memopt.E032",
            )
        )
    return errors


@register(deploy=True)
def check_client_cache_server(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """With ``check --deploy``: whether the Redis server lets the client-side cache track
    (known only by asking it; a server that cannot be reached is left to the engine)."""
    if settings.SESSION_ENGINE != REDIS_ENGINE or not _is_int(conf.MEMOPT_REDIS_CLIENT_CACHE, 1):
        return []
    if _cluster_configured():
        return []  # W014 says it stays off
    from redis.exceptions import RedisError

    from .backends.redis import connection
    from .client_cache import tracking_refusal

    try:
        refused = tracking_refusal(connection().connection_pool, conf.MEMOPT_REDIS_KEY_PREFIX)
    except (RedisError, OSError):
        return []
    if refused is None:
        return []
    return [
        Warning(
            f"MEMOPT_REDIS_CLIENT_CACHE is set, but the Redis server refuses the client-side "
            f"cache ({refused}): every process will run without it.",
            hint="Allow CLIENT (CLIENT ID, CLIENT TRACKING) in the ACL of the cache's user and "
            "keep io-threads at 1, or set MEMOPT_REDIS_CLIENT_CACHE = 0.",
            id="django_memopt.W011",
        )
    ]


def _check_client_cache() -> list[CheckMessage]:
    size: object = conf.MEMOPT_REDIS_CLIENT_CACHE
    if not _is_int(size, 0):
        return [
            Error(
                "MEMOPT_REDIS_CLIENT_CACHE must be an int number of bytes, 0 (no cache) or more.",
                id="django_memopt.E025",
            )
        ]
    if size and settings.SESSION_ENGINE != REDIS_ENGINE:
        return [
            Warning(
                "MEMOPT_REDIS_CLIENT_CACHE is set, but SESSION_ENGINE is not the Redis "
                "engine: it has no effect.",
                hint=f"Set SESSION_ENGINE = {REDIS_ENGINE!r}, or remove the setting.",
                id="django_memopt.W008",
            )
        ]
    return []


@register()
def check_middleware(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Whether ``MIDDLEWARE`` and ``SESSION_ENGINE`` fit together: the session middleware,
    the gate and the engine (registered when ``AppConfig.ready()`` imports this module)."""
    errors: list[CheckMessage] = []
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if GATE_MIDDLEWARE in middleware and DJANGO_MIDDLEWARE in middleware:
        errors.append(
            Error(
                "MIDDLEWARE holds both Django's SessionMiddleware and django-memopt's.",
                hint=f"Keep {GATE_MIDDLEWARE!r} only: it is Django's, with the gate.",
                id="django_memopt.E010",
            )
        )
    if (
        settings.SESSION_ENGINE in (LMDB_ENGINE, REDIS_ENGINE)
        and DJANGO_MIDDLEWARE in middleware
        and GATE_MIDDLEWARE not in middleware
    ):
        errors.append(
            Warning(
                f"SESSION_ENGINE {settings.SESSION_ENGINE!r} is django-memopt's, but MIDDLEWARE "
                "has Django's SessionMiddleware: the session-ID gate is off.",
                hint="The gate gives a cookie that cannot name a session (a malformed or "
                "forged ID; an unsigned one, as MEMOPT_UNSIGNED_IDS says; an unknown one, with "
                "MEMOPT_FILTER) a fresh session without asking the store, and counts it. "
                f"Replace {DJANGO_MIDDLEWARE!r} with {GATE_MIDDLEWARE!r} in MIDDLEWARE (it is "
                "Django's, with the gate), or add 'django_memopt.W007' to "
                "SILENCED_SYSTEM_CHECKS.",
                id="django_memopt.W007",
            )
        )
    if GATE_MIDDLEWARE in middleware and not settings.SESSION_ENGINE.startswith("django_memopt."):
        errors.append(
            Error(
                f"{GATE_MIDDLEWARE} checks session IDs only for django-memopt's engines, "
                f"not for SESSION_ENGINE {settings.SESSION_ENGINE!r}.",
                hint=f"Use {LMDB_ENGINE!r} or {REDIS_ENGINE!r}, or Django's SessionMiddleware.",
                id="django_memopt.E011",
            )
        )
    configured = [name for name in FILTER_SETTINGS if hasattr(settings, name)]
    if configured and GATE_MIDDLEWARE not in middleware:
        errors.append(
            Warning(
                f"{', '.join(configured)} set, but nothing asks the session-ID gate: "
                f"{GATE_MIDDLEWARE} is not in MIDDLEWARE.",
                hint=f"Replace {DJANGO_MIDDLEWARE!r} with {GATE_MIDDLEWARE!r}.",
                id="django_memopt.W002",
            )
        )
    return errors


USER_SESSION_METADATA: Final = ("ip", "user_agent")


def _check_user_sessions() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    enabled: object = conf.MEMOPT_USER_SESSIONS
    if not isinstance(enabled, bool):
        errors.append(
            Error("MEMOPT_USER_SESSIONS must be True or False.", id="django_memopt.E027")
        )
    recorded: object = conf.MEMOPT_USER_SESSIONS_METADATA
    if not (
        isinstance(recorded, list | tuple | set | frozenset)
        and all(item in USER_SESSION_METADATA for item in recorded)
    ):
        errors.append(
            Error(
                "MEMOPT_USER_SESSIONS_METADATA must be a tuple holding any of "
                f"{', '.join(map(repr, USER_SESSION_METADATA))}.",
                hint="For example ('user_agent',) to record no IP address, or () for none.",
                id="django_memopt.E028",
            )
        )
    if not _is_int(conf.MEMOPT_USER_SESSIONS_REFRESH, 0):
        errors.append(
            Error(
                "MEMOPT_USER_SESSIONS_REFRESH must be an int number of seconds, 0 or more.",
                id="django_memopt.E029",
            )
        )
    if enabled is True and not settings.SESSION_ENGINE.startswith("django_memopt."):
        errors.append(
            Warning(
                "MEMOPT_USER_SESSIONS is on, but SESSION_ENGINE "
                f"{settings.SESSION_ENGINE!r} is not django-memopt's: no index is kept.",
                hint=f"Use {LMDB_ENGINE!r} or {REDIS_ENGINE!r}, or remove the setting.",
                id="django_memopt.W012",
            )
        )
    elif (
        enabled is True
        and recorded
        and GATE_MIDDLEWARE not in list(getattr(settings, "MIDDLEWARE", None) or ())
    ):
        errors.append(
            Warning(
                "MEMOPT_USER_SESSIONS_METADATA asks for the client's IP address or user "
                f"agent, but {GATE_MIDDLEWARE} (which hands them to the session) is not in "
                "MIDDLEWARE: none is recorded.",
                hint=f"Replace {DJANGO_MIDDLEWARE!r} with {GATE_MIDDLEWARE!r}, or set "
                "MEMOPT_USER_SESSIONS_METADATA = ().",
                id="django_memopt.W013",
            )
        )
    return errors


def _check_filter() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    enabled: object = conf.MEMOPT_FILTER
    if not isinstance(enabled, bool):
        errors.append(Error("MEMOPT_FILTER must be True or False.", id="django_memopt.E012"))
    elif enabled is True and settings.SESSION_ENGINE == REDIS_ENGINE:
        errors.append(
            Warning(
                "MEMOPT_FILTER is on with the Redis engine: the filter is a file of this "
                "host and knows only the sessions written here. With web servers on "
                "several hosts it would turn away sessions created on the others, "
                "logging their users out.",
                hint="Set MEMOPT_FILTER = False, or, once sure that one host serves the "
                "whole site, add 'django_memopt.W003' to SILENCED_SYSTEM_CHECKS. "
                "MEMOPT_UNSIGNED_IDS = False turns away unknown IDs on any number of hosts.",
                id="django_memopt.W003",
            )
        )
    path = getattr(settings, "MEMOPT_FILTER_PATH", None)
    if path is not None and not (isinstance(path, str | os.PathLike) and os.fspath(path)):
        errors.append(
            Error(
                "MEMOPT_FILTER_PATH must be a non-empty path (str or pathlib.Path).",
                id="django_memopt.E013",
            )
        )
    elif (
        path is not None  # by default the filter is in the LMDB directory: E002 covers it
        and conf.MEMOPT_FILTER is True
        and (reason := _file_creation_error(conf.MEMOPT_FILTER_PATH))
    ):
        errors.append(
            Error(
                f"The session-ID filter's directory for {conf.MEMOPT_FILTER_PATH!r} cannot be "
                f"created or written: {reason}",
                hint="Set MEMOPT_FILTER_PATH to a file in a directory the web server's "
                "user can write to.",
                id="django_memopt.E014",
            )
        )
    unsigned_ids: object = conf.MEMOPT_UNSIGNED_IDS
    if not (unsigned_ids is None or isinstance(unsigned_ids, bool)):
        errors.append(
            Error(
                f"MEMOPT_UNSIGNED_IDS must be None (unsigned IDs let in during the migration "
                f"window the store records), True or False; got {unsigned_ids!r}.",
                id="django_memopt.E017",
            )
        )
    if not _is_int(conf.MEMOPT_FILTER_CAPACITY, 1):
        errors.append(
            Error("MEMOPT_FILTER_CAPACITY must be a positive int.", id="django_memopt.E015")
        )
    fp_rate: object = conf.MEMOPT_FILTER_FP_RATE
    if not (isinstance(fp_rate, float) and 0 < fp_rate <= 0.5):
        errors.append(
            Error(
                "MEMOPT_FILTER_FP_RATE must be a float above 0 and at most 0.5.",
                id="django_memopt.E016",
            )
        )
    return errors


def _check_previous_engine() -> list[CheckMessage]:
    """``MEMOPT_PREVIOUS_ENGINE``: an engine the fallback can read, let through the gate,
    and not kept on longer than the previous engine's cookies can live."""
    path: object = conf.MEMOPT_PREVIOUS_ENGINE
    if path is None:
        return []
    problem = refusal(path)
    if problem is not None:
        return [
            Error(
                f"MEMOPT_PREVIOUS_ENGINE {path!r} {problem}.",
                hint="Name the SESSION_ENGINE the site used before django-memopt, such as "
                "'django.contrib.sessions.backends.db', or None.",
                id="django_memopt.E026",
            )
        ]
    errors: list[CheckMessage] = []
    if conf.MEMOPT_UNSIGNED_IDS is False:
        errors.append(
            Warning(
                "MEMOPT_UNSIGNED_IDS = False turns away the previous engine's session IDs "
                "at the gate, so MEMOPT_PREVIOUS_ENGINE never sees them.",
                hint="Remove MEMOPT_UNSIGNED_IDS (None) while the fallback is on: the "
                "previous engine's IDs then pass the gate to be looked up.",
                id="django_memopt.W010",
            )
        )
    if not settings.SESSION_ENGINE.startswith("django_memopt."):
        return errors
    try:
        since = note_previous_engine()
    except (SessionStoreError, ImproperlyConfigured):
        return errors  # the store's own checks say why it cannot be asked
    if time.time() - since > settings.SESSION_COOKIE_AGE:
        errors.append(
            Warning(
                f"MEMOPT_PREVIOUS_ENGINE has been on since "
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(since))}, longer than "
                "SESSION_COOKIE_AGE: the previous engine's sessions have all expired, unless "
                "some were given a longer lifetime (set_expiry).",
                hint="Remove MEMOPT_PREVIOUS_ENGINE: cookies unknown to the store then cost "
                "no lookup in the previous engine. Sessions copied already keep working.",
                id="django_memopt.W009",
            )
        )
    return errors


def _check_gc() -> list[CheckMessage]:
    """The ``MEMOPT_GC_*`` settings, against this Python's collector (``sys.version_info``)."""
    errors: list[CheckMessage] = []
    freeze: object = conf.MEMOPT_GC_FREEZE
    if not isinstance(freeze, bool):
        errors.append(Error("MEMOPT_GC_FREEZE must be True or False.", id="django_memopt.E018"))
    thresholds: object = conf.MEMOPT_GC_THRESHOLDS
    version = ".".join(map(str, python_version()))
    if thresholds is None:
        pass
    elif not valid_thresholds(thresholds):
        first_is_zero = (
            isinstance(thresholds, tuple | list)
            and 1 <= len(thresholds) <= 3
            and thresholds[0] == 0
            and not isinstance(thresholds[0], bool)
        )
        errors.append(
            Error(
                f"MEMOPT_GC_THRESHOLDS must be None or a tuple of 1 to 3 ints, the first at "
                f"least 1 and the others at least 0; got {thresholds!r}.",
                hint="A first threshold of 0 would turn automatic collection off. To run "
                "without it, call gc.disable() yourself, knowing that reference cycles are "
                "then never freed unless gc.collect() is called."
                if first_is_zero
                else "For example (2000, 10, 10), or None to keep Python's own.",
                id="django_memopt.E019",
            )
        )
    elif incremental_collector():
        errors.append(
            Error(
                f"MEMOPT_GC_THRESHOLDS cannot be applied on Python {version}: CPython 3.14.0 "
                "to 3.14.4 collect incrementally, the second threshold means something else "
                "there and the third is ignored. It is not applied.",
                hint="Remove MEMOPT_GC_THRESHOLDS (set it to None) on this Python, or "
                "upgrade to 3.14.5 or later, which went back to 3.13's collector.",
                id="django_memopt.E020",
            )
        )
    elif python_version() >= (3, 13) and thresholds[0] > DEFAULT_FIRST_THRESHOLD_313:
        errors.append(
            Warning(
                f"MEMOPT_GC_THRESHOLDS sets a first threshold of {thresholds[0]}, "
                f"above Python 3.13's default of {DEFAULT_FIRST_THRESHOLD_313}: on 3.13, larger "
                "first thresholds measured slower, not faster.",
                hint=f"Keep the first threshold at {DEFAULT_FIRST_THRESHOLD_313} or below, "
                "or set MEMOPT_GC_THRESHOLDS = None; measure before raising it.",
                id="django_memopt.W004",
            )
        )
    every: object = conf.MEMOPT_GC_OUT_OF_BAND
    if every is not None and not valid_out_of_band(every):
        errors.append(
            Error(
                f"MEMOPT_GC_OUT_OF_BAND must be None or an int of at least 1 (requests "
                f"between full collections); got {every!r}.",
                id="django_memopt.E021",
            )
        )
    elif every is not None and incremental_collector():
        errors.append(
            Warning(
                f"MEMOPT_GC_OUT_OF_BAND is not applied on Python {version}: the incremental "
                "collector of CPython 3.14.0 to 3.14.4 has no full collections to move out of "
                "requests.",
                hint="Set MEMOPT_GC_OUT_OF_BAND = None on this Python, or upgrade to 3.14.5 "
                "or later.",
                id="django_memopt.W005",
            )
        )
    return errors


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    map_size_valid = _is_int(conf.MEMOPT_LMDB_MAP_SIZE, 1024**2)
    max_readers_valid = _is_int(conf.MEMOPT_LMDB_MAX_READERS, 1)
    path = getattr(settings, "MEMOPT_LMDB_PATH", None)
    if path is not None and not (isinstance(path, str | os.PathLike) and os.fspath(path)):
        errors.append(
            Error(
                "MEMOPT_LMDB_PATH must be a non-empty path (str or pathlib.Path).",
                id="django_memopt.E001",
            )
        )
    elif (
        settings.SESSION_ENGINE == LMDB_ENGINE
        and map_size_valid  # the store is opened with them: E003 and E004 come first
        and max_readers_valid
        and (reason := _lmdb_store_error())
    ):
        errors.append(
            Error(
                reason,
                hint="Set MEMOPT_LMDB_PATH to a directory the web server's user can create or "
                "write to.",
                id="django_memopt.E002",
            )
        )
    elif settings.SESSION_ENGINE == LMDB_ENGINE and (
        exposure := _exposed_dir(conf.MEMOPT_LMDB_PATH)
    ):
        errors.append(
            Warning(
                f"The LMDB session store directory {conf.MEMOPT_LMDB_PATH!r} {exposure}.",
                hint="Session data is not encrypted and session IDs are credentials: give the "
                "directory to the web server's user with mode 0700 (chmod 700), as the engine "
                "creates it.",
                id="django_memopt.W006",
            )
        )
    if not map_size_valid:
        errors.append(
            Error(
                "MEMOPT_LMDB_MAP_SIZE must be an int of at least 1048576 (1 MiB).",
                id="django_memopt.E003",
            )
        )
    if not max_readers_valid:
        errors.append(
            Error("MEMOPT_LMDB_MAX_READERS must be a positive int.", id="django_memopt.E004")
        )
    if conf.MEMOPT_LMDB_DURABILITY not in DURABILITY_CHOICES:
        errors.append(
            Error(
                "MEMOPT_LMDB_DURABILITY must be one of "
                + ", ".join(map(repr, DURABILITY_CHOICES))
                + ".",
                id="django_memopt.E005",
            )
        )
    if not _is_int(conf.MEMOPT_TOUCH_INTERVAL, 0):
        errors.append(
            Error(
                "MEMOPT_TOUCH_INTERVAL must be an int number of seconds, 0 or more.",
                id="django_memopt.E006",
            )
        )
    prefix: object = conf.MEMOPT_REDIS_KEY_PREFIX
    if not (isinstance(prefix, str) and prefix):
        errors.append(
            Error("MEMOPT_REDIS_KEY_PREFIX must be a non-empty str.", id="django_memopt.E007")
        )
    compress_from: object = conf.MEMOPT_COMPRESS_FROM
    if compress_from is not None and not _is_int(compress_from, 1):
        errors.append(
            Error(
                "MEMOPT_COMPRESS_FROM must be None or a positive int (bytes).",
                hint="The default is 128: payloads shorter than that never compress well.",
                id="django_memopt.E024",
            )
        )
    interval: object = conf.MEMOPT_STATS_INTERVAL
    if interval is not None and not (
        isinstance(interval, int | float) and not isinstance(interval, bool) and interval >= 0
    ):
        errors.append(
            Error(
                "MEMOPT_STATS_INTERVAL must be a number of seconds, 0 or more, or None.",
                id="django_memopt.E022",
            )
        )
    token: object = conf.MEMOPT_METRICS_TOKEN
    if token is not None and not (isinstance(token, str) and METRICS_TOKEN_RE.fullmatch(token)):
        errors.append(
            Error(
                f"MEMOPT_METRICS_TOKEN must be None or a str of {METRICS_TOKEN_MIN_LENGTH} or "
                "more printable ASCII characters without spaces (it goes in an HTTP header).",
                hint="For example secrets.token_urlsafe(32), read from the environment; or "
                "None, which opens the metrics view to staff users only.",
                id="django_memopt.E023",
            )
        )
    errors += _check_client_cache()
    errors += _check_user_sessions()
    errors += _check_wait()
    if settings.SESSION_ENGINE == REDIS_ENGINE:
        errors += _check_redis_cache()
        errors += _check_redis_cluster()
    errors += _check_filter()
    errors += _check_previous_engine()
    errors += _check_gc()
    if (
        settings.SESSION_ENGINE.startswith("django_memopt.")
        and settings.SESSION_SERIALIZER != DEFAULT_SERIALIZER
    ):
        errors.append(
            Warning(
                "SESSION_SERIALIZER is ignored by django-memopt's session engines.",
                hint="Session values are stored with django-memopt's own msgpack codec; "
                "see the supported types in the documentation.",
                id="django_memopt.W001",
            )
        )
    return errors
