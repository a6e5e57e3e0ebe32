"""A user's sessions through Django itself: ``login()``, ``logout()``, a password change,
the gate's middleware handing over the client, the view and the admin action (on LMDB;
the store contract runs the index on every store: ``contract.UserSessionsContract``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.models import User
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import Client, RequestFactory, override_settings

from django_memopt.backends.base import USER_ENTRY_FIELD
from django_memopt.backends.lmdb import SessionStore
from django_memopt.middleware import SessionMiddleware
from django_memopt.user_sessions import end_other_sessions, sessions_of
from django_memopt.views import end_sessions_of_users

GATE = [
    "django_memopt.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]


@pytest.fixture
def user(tmp_path: Path, django_user_model: Any) -> Iterator[User]:
    with override_settings(
        MEMOPT_USER_SESSIONS=True,
        MEMOPT_LMDB_PATH=str(tmp_path / "store"),
        SESSION_ENGINE="django_memopt.backends.lmdb",
        MIDDLEWARE=GATE,
    ):
        yield django_user_model.objects.create_user("ada", password="correct horse")


def request_through_the_gate(**meta: Any) -> Any:
    """A request whose session comes from the gate's middleware, as a view sees it."""
    request = RequestFactory().get("/", **meta)
    SessionMiddleware(lambda request: None).process_request(request)
    request._messages = FallbackStorage(request)
    return request


def logged_in(user: User, agent: str) -> Any:
    request = request_through_the_gate(HTTP_USER_AGENT=agent, REMOTE_ADDR="198.51.100.4")
    request.user = user  # as AuthenticationMiddleware would, for update_session_auth_hash()
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    request.session.save()  # as the middleware does at the end of the request
    return request


@pytest.mark.django_db
def test_djangos_login_logout_and_password_change_keep_the_index(user: User) -> None:
    laptop = logged_in(user, "Laptop/1.0")
    phone = logged_in(user, "Phone/2.0")
    listed = sessions_of(user, current=laptop.session)
    assert [(s.user_agent, s.ip, s.current) for s in listed] == [
        ("Laptop/1.0", "198.51.100.4", True),
        ("Phone/2.0", "198.51.100.4", False),
    ]
    # A password change: Django cycles the key; the other devices are ended at once.
    old_key = laptop.session.session_key
    user.set_password("battery staple")
    user.save()
    update_session_auth_hash(laptop, user)
    laptop.session.save()
    assert end_other_sessions(user, laptop.session) == 1
    [left] = sessions_of(user, current=laptop.session)
    assert left.current and left.created == listed[0].created
    assert laptop.session.session_key != old_key
    assert not SessionStore().exists(phone.session.session_key)
    logout(laptop)
    assert sessions_of(user) == []


@pytest.mark.django_db
def test_the_view_lists_ends_one_ends_the_others_and_logs_out(user: User) -> None:
    devices = []
    for agent in ("Laptop/1.0", "Phone/2.0", "Tablet/3.0"):
        client = Client(HTTP_USER_AGENT=agent)
        assert client.post(f"/log-in/{user.username}/").status_code == 200
        devices.append(client)
    laptop = devices[0]
    page = laptop.get("/sessions/")
    assert page.status_code == 200
    text = page.content.decode()
    assert text.count("<tr data-handle=") == 3 and "(this device)" in text
    for client in devices:
        assert client.cookies["sessionid"].value not in text  # handles, never keys
    [phone] = [s for s in sessions_of(user) if s.user_agent == "Phone/2.0"]
    assert laptop.post("/sessions/", {"handle": phone.handle}).status_code == 302
    assert devices[1].get("/sessions/").status_code == 302  # logged out: to the login page
    assert laptop.post("/sessions/", {"handle": "0" * 24}).status_code == 302  # nothing
    assert laptop.post("/sessions/", {"others": "1"}).status_code == 302
    assert [s.user_agent for s in sessions_of(user)] == ["Laptop/1.0"]
    [mine] = sessions_of(user)
    laptop.post("/sessions/", {"handle": mine.handle})
    assert sessions_of(user) == []
    assert laptop.get("/sessions/").status_code == 302
    assert Client().get("/sessions/").status_code == 302  # anonymous: to the login page


@pytest.mark.django_db
def test_the_admin_action_ends_every_session_of_the_users_selected(
    user: User, django_user_model: Any
) -> None:
    other = django_user_model.objects.create_user("grace", password="x")
    for someone in (user, user, other):
        logged_in(someone, "Browser/1.0")
    said: list[tuple[str, int]] = []

    class Admin:
        def message_user(self, request: Any, message: str, level: int) -> None:
            said.append((message, level))

    queryset = django_user_model.objects.filter(pk=user.pk)
    end_sessions_of_users(Admin(), request_through_the_gate(), queryset)
    assert said == [("Ended 2 session(s) of 1 user(s).", messages.SUCCESS)]
    assert sessions_of(user) == [] and len(sessions_of(other)) == 1


@pytest.mark.django_db
def test_off_by_default_it_writes_nothing(user: User) -> None:
    with override_settings(MEMOPT_USER_SESSIONS=False):
        request = logged_in(user, "Laptop/1.0")
        assert request.session.client is None  # the middleware hands nothing over
        assert USER_ENTRY_FIELD not in request.session
    assert sessions_of(user) == []
