"""The session contract, Django's own session tests and the middleware flows, on Redis."""

from __future__ import annotations

import sessions_tests.tests as django_session_tests
from django.test import SimpleTestCase, override_settings

from django_memopt.backends.redis import SessionStore
from tests.contract import GATE_MIDDLEWARE, MiddlewareFlows, SessionContract

REDIS = {"SESSION_ENGINE": "django_memopt.backends.redis", "SESSION_CACHE_ALIAS": "sessions"}


@override_settings(**REDIS)
class TestContract(SessionContract, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestContractWithoutTimeZones(TestContract):
    pass


@override_settings(**REDIS)
class TestDjangoSessionTests(django_session_tests.SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestDjangoSessionTestsWithoutTimeZones(TestDjangoSessionTests):
    pass


@override_settings(**REDIS)
class TestMiddlewareFlows(MiddlewareFlows, SimpleTestCase):
    engine = "django_memopt.backends.redis"


@override_settings(USE_TZ=False)
class TestMiddlewareFlowsWithoutTimeZones(TestMiddlewareFlows):
    pass


class TestMiddlewareFlowsThroughTheGate(TestMiddlewareFlows):
    middleware = GATE_MIDDLEWARE
