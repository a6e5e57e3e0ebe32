from __future__ import annotations

import sys
import tempfile

from tests.django_suite import session_tests_root
from tests.redis_cluster import free_ports
from tests.redis_server import free_port

sys.path.append(str(session_tests_root()))

SECRET_KEY = "django-memopt-tests-not-secret-0123456789abcdefghijklmnopqrstuvwxyz"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django_memopt",
    "sessions_tests",  # Django's own session tests, for its SessionTestsMixin
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
# Django's own middleware, so that the engines are tested without the gate as well (the
# gate's tests put it in): the warning that the gate is off is expected here.
SILENCED_SYSTEM_CHECKS = ["django_memopt.W007"]
ROOT_URLCONF = "tests.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.contrib.messages.context_processors.messages"]},
    }
]
USE_TZ = True
# The suite's own redis-server listens here (started by conftest.py).
REDIS_TEST_PORT = free_port()
# The suite's Redis Cluster, six nodes (started by conftest.py for the tests that use it).
REDIS_CLUSTER_TEST_PORTS = free_ports(6)
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "sessions": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{REDIS_TEST_PORT}/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
    },
}
SESSION_ENGINE = "django_memopt.backends.lmdb"
MEMOPT_LMDB_PATH = tempfile.mkdtemp(prefix="django-memopt-tests-")
# The tests that need counters in the store flush them themselves: the suite's own exit
# flush would come after its store is removed.
MEMOPT_STATS_INTERVAL = None
