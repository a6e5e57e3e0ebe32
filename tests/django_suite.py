"""Django's own session tests (``tests/sessions_tests``) for the installed Django.

Django's wheels do not ship its test suite, its source distributions do: the first run
fetches the sdist of the installed version from PyPI with pip and keeps only that
package, under ``.cache/django-tests/<version>/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import django

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "django-tests"


def session_tests_root() -> Path:
    """A directory to put on ``sys.path`` so that ``import sessions_tests`` works."""
    root = CACHE / django.__version__
    package = root / "sessions_tests"
    if (package / "tests.py").exists():
        return root
    with tempfile.TemporaryDirectory() as download:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                download,
                f"django=={django.__version__}",
            ],
            check=True,
        )
        (sdist,) = Path(download).glob("*.tar.gz")
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root))
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and parts[1:3] == ("tests", "sessions_tests"):
                    target = staging / "sessions_tests" / Path(*parts[3:])
                    target.parent.mkdir(parents=True, exist_ok=True)
                    source = archive.extractfile(member)
                    assert source is not None
                    target.write_bytes(source.read())
    # A rename is atomic, so a concurrent run never sees half a package.
    try:
        (staging / "sessions_tests").rename(package)
    except OSError:
        if not (package / "tests.py").exists():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
