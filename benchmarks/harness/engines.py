"""Every session engine the benchmarks compare, the Django settings they run under, and
the stores' contents.

All of them live in one Django configuration: one SQLite file, one LMDB directory per
durability, a locmem cache and one ``redis-server`` (``config["redis_url"]``). Each is
used through its ``SessionStore`` class, as ``SessionMiddleware`` uses it.
"""

from __future__ import annotations

import importlib
import logging
import os
import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore

from benchmarks.harness import workload
from benchmarks.harness.workload import SIZES, Payloads

MEMOPT_LMDB = "memopt-lmdb"
MEMOPT_LMDB_SYSTEM = "memopt-lmdb-system"
MEMOPT_REDIS = "memopt-redis"
#: memopt-redis with its client-side cache on (the scenarios that run it make it).
MEMOPT_REDIS_CACHED = "memopt-redis, client-side cache"
DB = "db (SQLite)"
CACHED_DB = "cached_db"
FILE = "file"
CACHE = "cache (locmem)"
REDIS_CACHE = "cache (django-redis)"
SIGNED = "signed_cookies"
REDIS_SESSIONS = "django-redis-sessions"
FLOOR = "floor (raw redis-py)"
MEMOPT = (MEMOPT_LMDB, MEMOPT_LMDB_SYSTEM, MEMOPT_REDIS)

REDIS_ALIAS = "sessions"  # the django-redis cache of SESSION_CACHE_ALIAS
FLOOR_PREFIX = "floor:"
REDIS_SESSIONS_PREFIX = "redis_sessions"
SECRET_KEY = "benchmark-secret-key-" + "k" * 40


@dataclass(eq=False)  # hashed by identity: an arm of the interleaved rounds
class Engine:
    """One engine of the comparison; what it is, in words, is in ``templates/engines.md``."""

    name: str
    module: str  # the SESSION_ENGINE module ("" for the stores below that need help)
    on_redis: bool = False
    # (its directory, durability); the registry names the directory by its config key
    lmdb: tuple[str, str] | None = None
    shared_across_processes: bool = True
    cookie_store: bool = False  # the session key is the signed session: a save changes it
    store: Any = None
    keys: dict[str, list[str]] = field(default_factory=dict)  # populated sessions by size
    # django-memopt settings this engine runs with (set directly, as for the LMDB path)
    settings: dict[str, Any] = field(default_factory=dict)

    def activate(self) -> None:
        """Apply this engine's ``settings``, and point django-memopt's LMDB engine at this
        engine's environment (if it is one).

        Both LMDB engines share one module, which keeps one current environment per
        process; switching with ``override_settings`` would close and reopen every
        environment on every switch, so this sets the setting directly and makes the
        engine look again (both environments stay open, cached per path).
        """
        from django.conf import settings

        from django_memopt import conf

        if self.settings:
            for name, value in self.settings.items():
                setattr(settings, name, value)
            conf._cache.clear()
        if self.lmdb is None:
            return
        from django_memopt.backends import lmdb as backend

        path, durability = self.lmdb
        if backend._current is not None and backend._current.path == path:
            return
        settings.MEMOPT_LMDB_PATH, settings.MEMOPT_LMDB_DURABILITY = path, durability
        conf._cache.clear()
        backend._current = None
        if backend.environment().path != path:
            raise SystemExit(f"{self.name}: cannot switch the LMDB environment to this engine")


def _registry() -> list[Engine]:
    """Every engine, in the order of tables, plots and legends."""
    sessions = "django.contrib.sessions.backends."
    return [
        Engine(MEMOPT_LMDB, "django_memopt.backends.lmdb", lmdb=("lmdb", "process")),
        Engine(MEMOPT_LMDB_SYSTEM, "django_memopt.backends.lmdb", lmdb=("lmdb-system", "system")),
        Engine(MEMOPT_REDIS, "django_memopt.backends.redis", on_redis=True),
        Engine(DB, sessions + "db"),
        Engine(CACHED_DB, sessions + "cached_db", on_redis=True),
        Engine(FILE, sessions + "file"),
        Engine(CACHE, "", shared_across_processes=False),  # LocMemCacheSessionStore
        Engine(REDIS_CACHE, sessions + "cache", on_redis=True),
        Engine(SIGNED, sessions + "signed_cookies", cookie_store=True),
        Engine(REDIS_SESSIONS, "redis_sessions.session", on_redis=True),
        Engine(FLOOR, "", on_redis=True),  # FloorSession
    ]


ORDER = [engine.name for engine in _registry()]


# -- Django ----------------------------------------------------------------------------------


def make_config(base: str, redis_url: str, redis_port: int) -> dict[str, str]:
    """Where every store lives, under the temporary directory ``base``."""
    return {
        "lmdb": os.path.join(base, "lmdb-process"),
        "lmdb-system": os.path.join(base, "lmdb-system"),
        "sqlite": os.path.join(base, "sessions.sqlite3"),
        "files": os.path.join(base, "session-files"),
        "jars": os.path.join(base, "cookie-jars"),
        "redis_url": redis_url,
        "redis_port": str(redis_port),
    }


def redis_cache(url: str) -> dict[str, Any]:
    """A django-redis cache on ``url``, with the timeouts every Redis client here uses."""
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
    }


def django_settings(config: dict[str, str]) -> dict[str, Any]:
    return {
        "DEBUG": False,
        "SECRET_KEY": SECRET_KEY,
        "INSTALLED_APPS": ["django.contrib.sessions", "django_memopt"],
        "DATABASES": {
            # Django's defaults for SQLite: rollback journal, synchronous=FULL, 5 s timeout.
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": config["sqlite"]}
        },
        "CACHES": {
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "benchmark-sessions",
                # The default (300) would cull the pre-populated sessions.
                "OPTIONS": {"MAX_ENTRIES": 10_000_000},
            },
            REDIS_ALIAS: redis_cache(config["redis_url"]),
        },
        "SESSION_CACHE_ALIAS": REDIS_ALIAS,
        "SESSION_ENGINE": "django_memopt.backends.lmdb",
        "SESSION_FILE_PATH": config["files"],
        "SESSION_REDIS": {
            "host": "127.0.0.1",
            "port": int(config["redis_port"]),
            "db": 0,
            "prefix": REDIS_SESSIONS_PREFIX,
            "socket_timeout": 1,
        },
        "MEMOPT_LMDB_PATH": config["lmdb"],
        "MEMOPT_LMDB_DURABILITY": "process",
        # No counters flushed at exit: that would reopen the store after it is removed.
        "MEMOPT_STATS_INTERVAL": None,
        "USE_TZ": True,
        "LOGGING_CONFIG": None,
    }


def configure(config: dict[str, str], **overrides: Any) -> None:
    """Configure and set up Django for the engines (once per process), with ``overrides``."""
    import django
    from django.conf import settings

    if settings.configured:
        return
    for directory in ("files", "jars"):
        os.makedirs(config[directory], exist_ok=True)
    settings.configure(**{**django_settings(config), **overrides})
    django.setup()
    # As Django's default logging does with DEBUG off: warnings are emitted, then dropped.
    django_logger = logging.getLogger("django")
    django_logger.addHandler(logging.NullHandler())
    django_logger.propagate = False


def redis_sessions_status() -> str | None:
    """``None`` if django-redis-sessions imports (settings are configured), else why not."""
    try:
        import redis_sessions.session  # noqa: F401
    except Exception as exc:  # unmaintained: anything may break on a newer Django
        return f"{type(exc).__name__}: {exc}"
    return None


def make_engines(
    config: dict[str, str], names: list[str] | None = None, *, browser_jar: bool = False
) -> list[Engine]:
    """The engines named (default: every one that loads), in the registry's order.

    ``browser_jar``: ``signed_cookies`` goes through :class:`BrowserJar` (for the
    lost-update test; timing uses the engine as it is).
    """
    engines = [e for e in _registry() if names is None or e.name in names]
    if redis_sessions_status() is not None:
        engines = [engine for engine in engines if engine.name != REDIS_SESSIONS]
    for engine in engines:
        if engine.lmdb is not None:
            directory, durability = engine.lmdb
            engine.lmdb = (config[directory], durability)
        if engine.name == CACHE:
            engine.store = LocMemCacheSessionStore
        elif engine.name == FLOOR:
            FloorSession.client = _redis_client(config["redis_url"])
            engine.store = FloorSession
        elif engine.name == SIGNED and browser_jar:
            BrowserJar.directory = config["jars"]
            engine.store = BrowserJar
        else:
            engine.store = importlib.import_module(engine.module).SessionStore
    return engines


def setup(config: dict[str, str], names: list[str] | None = None, **kwargs: Any) -> list[Engine]:
    """Configure Django in this process and make the engines: what a child process runs."""
    configure(config)
    return make_engines(config, names, **kwargs)


def named(engines: list[Engine], name: str) -> Engine:
    return next(engine for engine in engines if engine.name == name)


def _redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


# -- stores that need help ---------------------------------------------------------------


class LocMemCacheSessionStore(CacheSessionStore):
    """Django's ``cache`` engine on the locmem cache ``default``.

    ``SESSION_CACHE_ALIAS`` names the Redis cache (the ``cache`` engine on django-redis
    and django-memopt's Redis engine use it), so this copy of Django's ``__init__`` names
    the other cache; nothing else differs.
    """

    def __init__(self, session_key: str | None = None) -> None:
        from django.core.cache import caches

        self._cache = caches["default"]
        SessionBase.__init__(self, session_key)


class BrowserJar:
    """Django's ``signed_cookies`` engine as browsers drive it, for the lost-update test.

    With that engine the session *is* the cookie, so concurrent requests race in the
    browser: each request carries the cookie the browser holds when it is sent, and each
    response's ``Set-Cookie`` replaces it, the last to arrive winning. The browser's
    cookie jar is a file here (writer threads and processes share it), and its path is
    the "session key" the lost-update test passes around: making a session reads the jar
    (the request is sent), ``save()`` puts the new cookie in it (the response arrives).
    Everything else is the engine's own ``SessionStore``.
    """

    directory = ""

    def __init__(self, jar: str | None = None) -> None:
        from django.contrib.sessions.backends.signed_cookies import SessionStore

        cookie = None
        if jar is None:
            jar = os.path.join(self.directory, f"jar-{uuid.uuid4().hex}")
        else:
            with open(jar) as held:
                cookie = held.read()
        self.session_key = jar
        self._session = SessionStore(cookie)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def __setitem__(self, name: str, value: Any) -> None:
        self._session[name] = value

    def save(self, must_create: bool = False) -> None:
        self._session.save(must_create)
        arriving = f"{self.session_key}.{os.getpid()}.{threading.get_ident()}"
        with open(arriving, "w") as response:
            response.write(self._session.session_key)
        os.replace(arriving, self.session_key)  # atomic: a whole cookie, one or the other


class FloorSession:
    """The floor: plain redis-py commands, one round trip each, and no session logic.

    It offers just what the timed requests call. A load is ``HGETALL`` of the session's
    hash (a copy of the ``memopt-redis`` hash: the same reply), on the first read; a save
    is one ``HSET`` of the assigned fields, each value packed with msgpack.
    """

    client: Any = None

    def __init__(self, session_key: str | None = None) -> None:
        self.session_key = session_key or None
        self.accessed = self.modified = False
        self._stored: dict[bytes, bytes] | None = None
        self._changes: dict[str, bytes] = {}

    def get(self, name: str, default: Any = None) -> Any:
        self.accessed = True
        if self._stored is None:
            key = self.session_key
            self._stored = self.client.hgetall(FLOOR_PREFIX + key) if key else {}
        return self._stored.get(name.encode(), default)

    def __setitem__(self, name: str, value: Any) -> None:
        import msgpack

        self.accessed = self.modified = True
        self._changes[name] = msgpack.packb(value)

    def is_empty(self) -> bool:
        return False

    def get_expire_at_browser_close(self) -> bool:
        return False

    def get_expiry_age(self) -> int:
        return 1209600

    def save(self) -> None:
        if self.session_key is None:
            self.session_key = workload.random_session_key(random.Random())
        self.client.hset(FLOOR_PREFIX + self.session_key, mapping=self._changes)

    def delete(self) -> None:
        if self.session_key:
            self.client.delete(FLOOR_PREFIX + self.session_key)


# -- contents --------------------------------------------------------------------------------


def redis_key(engine: Engine, session_key: str) -> str:
    """The Redis key an engine on Redis keeps session ``session_key`` under."""
    from django.contrib.sessions.backends.cache import KEY_PREFIX
    from django.core.cache import caches

    from django_memopt.conf import conf

    if engine.name == MEMOPT_REDIS:
        return conf.MEMOPT_REDIS_KEY_PREFIX + session_key
    if engine.name == FLOOR:
        return FLOOR_PREFIX + session_key
    if engine.name == REDIS_SESSIONS:
        return f"{REDIS_SESSIONS_PREFIX}:{session_key}"
    prefix = KEY_PREFIX if engine.name == REDIS_CACHE else "django.contrib.sessions.cached_db"
    return str(caches[REDIS_ALIAS].client.make_key(prefix + session_key))


def sealed_fields(engine: Engine, session_key: str) -> dict[str, bytes]:
    """A django-memopt session's sealed fields, as its store's read primitive returns them."""
    stored = engine.store._read(session_key)
    return {} if stored is None else dict(stored.fields)


def populate(engines: list[Engine], payloads: Payloads, count: int, admin: Any) -> None:
    """``count`` sessions of each size in every engine, each checked to read back."""
    from django.db import transaction

    for engine in engines:
        if engine.name == FLOOR:
            continue
        engine.activate()
        for size in SIZES:
            keys: list[str] = []
            # One transaction for the SQLite inserts; every other engine commits per session.
            with transaction.atomic():
                for j in range(count):
                    session = engine.store(None)
                    session.update(workload.session_payload(payloads, size, j))
                    session.save()
                    keys.append(session.session_key)
            engine.keys[size] = keys
        _check(engine, payloads)
    floors = [engine for engine in engines if engine.name == FLOOR]
    if floors:
        _populate_floor(floors[0], named(engines, MEMOPT_REDIS), admin)


def _check(engine: Engine, payloads: Payloads) -> None:
    """Refuse to time an engine that does not return what was stored, or an LMDB engine
    opened with another durability than its name says."""
    if engine.lmdb is not None:
        from django_memopt.backends.lmdb import environment

        if environment().env.flags()["sync"] != (engine.lmdb[1] == "system"):
            raise SystemExit(f"{engine.name}: LMDB opened with the wrong durability")
    for size in SIZES:
        for j in (0, len(engine.keys[size]) - 1):
            got = dict(engine.store(engine.keys[size][j]).items())
            if got != workload.session_payload(payloads, size, j):
                raise SystemExit(f"{engine.name}: {size} session {j} does not read back")


def _populate_floor(floor: Engine, memopt: Engine, admin: Any) -> None:
    """The floor's sessions: hashes of the sealed fields of the ``memopt-redis`` sessions
    (as its store reads them, whatever form it keeps them in), under the floor's prefix."""
    for size in SIZES:
        for key in memopt.keys[size]:
            stored = {name.encode(): value for name, value in sealed_fields(memopt, key).items()}
            admin.hset(FLOOR_PREFIX + key, mapping=stored)
            if admin.hgetall(FLOOR_PREFIX + key) != stored:
                raise SystemExit(f"{floor.name}: {size} session {key} does not read back")
        floor.keys[size] = list(memopt.keys[size])
