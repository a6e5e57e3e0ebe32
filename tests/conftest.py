from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from django.conf import settings


@pytest.fixture(scope="session", autouse=True)
def _remove_the_test_store() -> Iterator[None]:
    """The suite's default LMDB directory (``tests/settings.py``) goes when the run ends."""
    yield
    from django_memopt.backends.lmdb import close_environments

    close_environments()
    shutil.rmtree(settings.MEMOPT_LMDB_PATH, ignore_errors=True)
