"""The documentation names every setting with its default, every check ID, every page."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from django_memopt import conf as conf_module
from django_memopt.conf import Settings

DOCS = Path(__file__).resolve().parent.parent / "docs"


def documented_defaults() -> dict[str, str]:
    """Each ``## `MEMOPT_…``` section of docs/settings.md and its ``Default:`` line."""
    text = (DOCS / "settings.md").read_text()
    return dict(re.findall(r"^## `(MEMOPT_\w+)`\n\nDefault: (.+)$", text, re.MULTILINE))


def test_every_setting_is_documented_with_its_default() -> None:
    names = [name for name in vars(Settings) if name.startswith("MEMOPT_")]
    assert names
    documented = documented_defaults()
    for name in names:
        assert name in documented, f"{name} has no section with its default in docs/settings.md"


def test_documented_defaults_are_the_code_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings with none of MEMOPT_* set: every property falls back to its default.
    monkeypatch.setattr(conf_module, "settings", SimpleNamespace())
    monkeypatch.setattr(conf_module, "_cache", {})
    checked = 0
    for name, line in documented_defaults().items():
        literal = re.match(r"`([^`]+)`", line)
        assert literal, f"docs/settings.md: the default of {name} is not in backticks"
        try:
            documented = ast.literal_eval(literal.group(1))
        except (ValueError, SyntaxError):
            continue  # a computed default, such as a path: described in words
        assert documented == getattr(Settings(), name), f"docs/settings.md: default of {name}"
        checked += 1
    assert checked >= 10


def test_the_summary_table_agrees_with_the_sections() -> None:
    text = (DOCS / "settings.md").read_text()
    table = dict(re.findall(r"^\| \[`(MEMOPT_\w+)`\]\(#\w+\) \| (`[^`]+`)", text, re.MULTILINE))
    sections = {name: line.split("`")[1] for name, line in documented_defaults().items()}
    assert {name: value.strip("`") for name, value in table.items()} == sections


def test_every_check_id_is_documented() -> None:
    source = (Path(__file__).resolve().parent.parent / "django_memopt" / "checks.py").read_text()
    check_ids = set(re.findall(r'id="(django_memopt\.[EW]\d{3})"', source))
    assert check_ids
    documented = set(re.findall(r"`(django_memopt\.[EW]\d{3})`", (DOCS / "checks.md").read_text()))
    assert check_ids == documented


def test_every_page_is_in_the_index_toctrees() -> None:
    # Sphinx warns about a page in no toctree; the docs build makes warnings errors.
    index = (DOCS / "index.md").read_text()
    entries = set()
    for block in re.findall(r"^```\{toctree\}\n(.*?)^```", index, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                titled = re.fullmatch(r".*<(.+)>", line)
                entries.add(titled.group(1) if titled else line)
    pages = {path.stem for path in DOCS.glob("*.md")} - {"index"}
    assert pages <= entries, f"pages in no toctree of docs/index.md: {sorted(pages - entries)}"
    assert entries <= pages, f"toctree entries with no page: {sorted(entries - pages)}"
