"""The session contract, Django's own session tests and the middleware flows, on LMDB."""

from __future__ import annotations

from unittest import mock

import sessions_tests.tests as django_session_tests
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, SimpleTestCase, override_settings

from django_memopt.backends.lmdb import SessionStore
from django_memopt.middleware import SessionMiddleware as GateSessionMiddleware
from tests.contract import GATE_MIDDLEWARE, MiddlewareFlows, SessionContract


class TestContract(SessionContract, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestContractWithoutTimeZones(TestContract):
    pass


class TestDjangoSessionTests(django_session_tests.SessionTestsMixin, SimpleTestCase):
    backend = SessionStore


@override_settings(USE_TZ=False)
class TestDjangoSessionTestsWithoutTimeZones(TestDjangoSessionTests):
    pass


@override_settings(SESSION_ENGINE="django_memopt.backends.lmdb")
class TestDjangoMiddlewareTests(django_session_tests.SessionMiddlewareTests):
    def test_empty_session_saved(self) -> None:
        # Django's version reads the row through the db engine's model; same flow here.
        def set_session(request: HttpRequest) -> HttpResponse:
            request.session["foo"] = "bar"
            return HttpResponse("Session test")

        request = RequestFactory().get("/")
        middleware = django_session_tests.SessionMiddleware(set_session)
        middleware(request)
        del request.session["foo"]
        response = middleware.process_response(request, HttpResponse("Session test"))
        stored = SessionStore._read(request.session.session_key)
        assert stored is not None and stored.fields == {}
        assert f"Set-Cookie: sessionid={request.session.session_key}" in str(response.cookies)
        assert response.headers["Vary"] == "Cookie"


@override_settings(MEMOPT_FILTER=True)
class TestDjangoMiddlewareTestsThroughTheGate(TestDjangoMiddlewareTests):
    """Django's middleware tests, with django-memopt's middleware in place of Django's."""

    def setUp(self) -> None:
        super().setUp()
        self.enterContext(
            mock.patch.object(django_session_tests, "SessionMiddleware", GateSessionMiddleware)
        )


class TestMiddlewareFlows(MiddlewareFlows, SimpleTestCase):
    engine = "django_memopt.backends.lmdb"


@override_settings(USE_TZ=False)
class TestMiddlewareFlowsWithoutTimeZones(TestMiddlewareFlows):
    pass


@override_settings(MEMOPT_FILTER=True)
class TestMiddlewareFlowsThroughTheGate(TestMiddlewareFlows):
    middleware = GATE_MIDDLEWARE
