"""Settings are read on access, with their documented defaults."""

from __future__ import annotations

import os
import tempfile

from django.test import override_settings

from django_memopt.conf import conf


def test_defaults() -> None:
    with override_settings():
        from django.conf import settings

        del settings.MEMOPT_LMDB_PATH
        path = conf.MEMOPT_LMDB_PATH
    assert path == os.path.join(tempfile.gettempdir(), "django-memopt", "tests.settings")
    assert conf.MEMOPT_LMDB_MAP_SIZE == 1024**3
    assert conf.MEMOPT_LMDB_MAX_READERS == 126
    assert conf.MEMOPT_LMDB_DURABILITY == "process"
    assert conf.MEMOPT_TOUCH_INTERVAL == 0


def test_settings_are_read_on_access() -> None:
    with override_settings(
        MEMOPT_LMDB_MAP_SIZE=2**21,
        MEMOPT_LMDB_MAX_READERS=7,
        MEMOPT_LMDB_DURABILITY="system",
        MEMOPT_TOUCH_INTERVAL=30,
    ):
        assert conf.MEMOPT_LMDB_MAP_SIZE == 2**21
        assert conf.MEMOPT_LMDB_MAX_READERS == 7
        assert conf.MEMOPT_LMDB_DURABILITY == "system"
        assert conf.MEMOPT_TOUCH_INTERVAL == 30
    assert conf.MEMOPT_TOUCH_INTERVAL == 0


def test_path_accepts_pathlib() -> None:
    from pathlib import Path

    with override_settings(MEMOPT_LMDB_PATH=Path("/srv/sessions")):
        assert conf.MEMOPT_LMDB_PATH == "/srv/sessions"
