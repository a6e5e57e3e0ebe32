"""Child-process workers for ``test_moving.py``: requests in several processes carrying
the same cookies of the previous engine at the same moment."""

from __future__ import annotations

import os
import time
from importlib import import_module
from pathlib import Path
from typing import Any

from tests.processes import reporting


def setup(store: str, setup_args: tuple[Any, ...], file_path: str) -> Any:
    """Configure this child for ``store`` (as ``tests/{store}_workers.py`` does) with the
    fallback to Django's file engine at ``file_path``; the engine's ``SessionStore``."""
    overrides = {
        "SESSION_FILE_PATH": file_path,
        "MEMOPT_PREVIOUS_ENGINE": "django.contrib.sessions.backends.file",
    }
    workers = import_module(f"tests.{store}_workers")
    if store == "lmdb":
        workers.setup(*setup_args, **overrides)
    else:
        workers.setup(*setup_args)
        from django.test.utils import override_settings

        override_settings(**overrides).enable()
    SessionStore = import_module(f"django_memopt.backends.{store}").SessionStore
    SessionStore().exists("openthestore")
    return SessionStore


def move_sessions(
    store: str,
    setup_args: tuple[Any, ...],
    file_path: str,
    old_keys: list[str],
    name: str,
    gathering: str,
    together: int,
    result_path: str,
) -> None:
    """Once ``together`` processes are ready (each leaves a file in the directory
    ``gathering``, so that every process starts at once), one request per old key: read
    the cart, set the field ``name``, save. Reports the key each request ended on."""
    with reporting(result_path) as result:
        SessionStore = setup(store, setup_args, file_path)
        Path(gathering, name).touch()
        deadline = time.monotonic() + 60
        while len(os.listdir(gathering)) < together:
            if time.monotonic() > deadline:
                raise AssertionError("the other processes never got ready")
            time.sleep(0.001)
        ended_on: dict[str, str | None] = {}
        for old_key in old_keys:
            session = SessionStore(old_key)
            if session.get("cart") != ["tea"]:
                raise AssertionError(f"{old_key}: the cart is {session.get('cart')!r}")
            session[name] = True
            session.save()
            ended_on[old_key] = session.session_key
        result["ended_on"] = ended_on
