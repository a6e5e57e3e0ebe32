"""Settings of the django-memopt example project.

The session store is chosen by the ``EXAMPLE_SESSION_STORE`` environment variable:

``lmdb`` (the default)
    django-memopt's LMDB engine under ``var/sessions``; nothing to install or run.
``redis``
    django-memopt's Redis engine on the server at ``EXAMPLE_REDIS_URL`` (``serve.py
    --redis`` starts a private ``redis-server`` and sets it). ``EXAMPLE_REDIS_CLIENT_CACHE``
    is ``MEMOPT_REDIS_CLIENT_CACHE``, in bytes per process: 0 (the default) leaves the
    client-side cache off.
``django-db``
    Django's own ``db`` engine with Django's own middleware, to compare against: the
    session-cost panel then has nothing to show, and concurrent tabs lose cart items.
``django-cache``, ``django-cached-db``, ``django-file``, ``django-signed-cookies``
    Django's other engines, the same way (``cache`` and ``cached_db`` on django-redis at
    ``EXAMPLE_REDIS_URL``), for the benchmark that serves the shop under each engine.

``EXAMPLE_PREVIOUS_STORE=django-db`` with one of django-memopt's stores: the shop ran on
Django's ``db`` engine before, and its sessions are moved into django-memopt's store as
their users come back (``MEMOPT_PREVIOUS_ENGINE``; see docs/moving.md), or all at once with
``manage.py memopt_import``.

``EXAMPLE_METRICS_TOKEN``, if set, is the bearer token that opens ``/metrics/memopt`` to a
Prometheus scraper (staff users can read it without).

Everything the project writes goes under ``EXAMPLE_VAR_DIR`` (default ``var/`` next to
``manage.py``): the SQLite database of the users, the LMDB store and the gate's filter.
Not for production: the fallback secret key is public.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("EXAMPLE_VAR_DIR") or BASE_DIR / "var")
os.makedirs(VAR_DIR, exist_ok=True)

SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "django-insecure-example-project-only-do-not-use-in-production"
)
DEBUG = os.environ.get("DJANGO_DEBUG", "1") != "0"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_memopt",
    "shop",
]

EXAMPLE_SESSION_STORE = os.environ.get("EXAMPLE_SESSION_STORE", "lmdb")
# The Redis stores' cache: django-memopt's Redis engine, and Django's cache and cached_db.
REDIS_CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "sessions": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get("EXAMPLE_REDIS_URL", "redis://127.0.0.1:6379/0"),
    },
}
SESSION_MIDDLEWARE = "django_memopt.middleware.SessionMiddleware"

if EXAMPLE_SESSION_STORE == "lmdb":
    SESSION_ENGINE = "django_memopt.backends.lmdb"
    MEMOPT_LMDB_PATH = VAR_DIR / "sessions"  # the engine creates the directory itself
    # One host: the filter of live session IDs turns unknown IDs away before the store.
    MEMOPT_FILTER = True
    MEMOPT_FILTER_PATH = VAR_DIR / "session-filter"
elif EXAMPLE_SESSION_STORE == "redis":
    SESSION_ENGINE = "django_memopt.backends.redis"
    CACHES = REDIS_CACHES
    SESSION_CACHE_ALIAS = "sessions"
    MEMOPT_REDIS_KEY_PREFIX = "example-shop:"
    MEMOPT_REDIS_CLIENT_CACHE = int(os.environ.get("EXAMPLE_REDIS_CLIENT_CACHE") or 0)
elif EXAMPLE_SESSION_STORE == "django-db":
    SESSION_ENGINE = "django.contrib.sessions.backends.db"
    SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
    INSTALLED_APPS.remove("django_memopt")
elif EXAMPLE_SESSION_STORE in ("django-cache", "django-cached-db"):
    SESSION_ENGINE = {
        "django-cache": "django.contrib.sessions.backends.cache",
        "django-cached-db": "django.contrib.sessions.backends.cached_db",
    }[EXAMPLE_SESSION_STORE]
    SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
    INSTALLED_APPS.remove("django_memopt")
    CACHES = REDIS_CACHES
    SESSION_CACHE_ALIAS = "sessions"
elif EXAMPLE_SESSION_STORE == "django-file":
    SESSION_ENGINE = "django.contrib.sessions.backends.file"
    SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
    INSTALLED_APPS.remove("django_memopt")
    SESSION_FILE_PATH = VAR_DIR / "django-sessions"
    os.makedirs(SESSION_FILE_PATH, exist_ok=True)  # Django's engine requires it to exist
elif EXAMPLE_SESSION_STORE == "django-signed-cookies":
    SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"
    INSTALLED_APPS.remove("django_memopt")
else:
    raise ImproperlyConfigured(
        f"EXAMPLE_SESSION_STORE={EXAMPLE_SESSION_STORE!r}: use 'lmdb', 'redis', 'django-db', "
        "'django-cache', 'django-cached-db', 'django-file' or 'django-signed-cookies'."
    )

EXAMPLE_PREVIOUS_STORE = os.environ.get("EXAMPLE_PREVIOUS_STORE")
if EXAMPLE_PREVIOUS_STORE == "django-db" and SESSION_ENGINE.startswith("django_memopt."):
    # The users' cookies name sessions of Django's db engine (in the same database).
    MEMOPT_PREVIOUS_ENGINE = "django.contrib.sessions.backends.db"
elif EXAMPLE_PREVIOUS_STORE:
    raise ImproperlyConfigured(
        f"EXAMPLE_PREVIOUS_STORE={EXAMPLE_PREVIOUS_STORE!r}: only 'django-db', with "
        "EXAMPLE_SESSION_STORE 'lmdb' or 'redis'."
    )

if SESSION_ENGINE.startswith("django_memopt."):
    # The statistics page is near-live: each worker flushes at most every second.
    MEMOPT_STATS_INTERVAL = 1
    # /metrics/memopt answers staff users, and scrapers sending this bearer token (if set).
    MEMOPT_METRICS_TOKEN = os.environ.get("EXAMPLE_METRICS_TOKEN") or None
    # "Your sessions": an index of each user's sessions, with the client's user agent and
    # IP address (docs/user-sessions.md).
    MEMOPT_USER_SESSIONS = True

MIDDLEWARE = [
    # First, so that it sees the response after the session was saved.
    "shop.middleware.SessionCostMiddleware",
    "django.middleware.security.SecurityMiddleware",
    SESSION_MIDDLEWARE,
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "shop.context_processors.shop",
            ],
        },
    },
]

WSGI_APPLICATION = "example_project.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "db.sqlite3",
        # Several gunicorn workers share the file: wait for a lock rather than fail.
        "OPTIONS": {"timeout": 20},
    }
}

# Messages live in the session too, as one more field.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

LOGIN_URL = "shop:login"
LOGIN_REDIRECT_URL = "shop:home"
LOGOUT_REDIRECT_URL = "shop:home"

# The add-to-cart view waits this long for a (pretend) stock check after it has read the
# session, which makes two tabs' requests overlap: the browser tests use it.
EXAMPLE_STOCK_CHECK_SECONDS = float(os.environ.get("EXAMPLE_STOCK_CHECK_MS", "0")) / 1000

# Errors go to the console (under gunicorn: its error log), DEBUG or not.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["console"], "level": "ERROR"},
        "django_memopt": {"handlers": ["console"], "level": "WARNING"},
    },
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
