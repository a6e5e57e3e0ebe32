"""The documentation names every setting and every check ID the code has."""

from __future__ import annotations

import re
from pathlib import Path

from django_memopt.conf import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_setting_is_documented_with_its_default() -> None:
    text = (DOCS / "settings.md").read_text()
    names = [name for name in vars(Settings) if name.startswith("MEMOPT_")]
    assert names
    for name in names:
        section = re.search(rf"^## `{name}`\n\nDefault: (.+)$", text, re.MULTILINE)
        assert section, f"{name} has no section with its default in docs/settings.md"


def test_every_check_id_is_documented() -> None:
    source = (Path(__file__).resolve().parent.parent / "django_memopt" / "checks.py").read_text()
    check_ids = set(re.findall(r'id="(django_memopt\.[EW]\d{3})"', source))
    assert check_ids
    documented = set(re.findall(r"`(django_memopt\.[EW]\d{3})`", (DOCS / "checks.md").read_text()))
    assert check_ids == documented
