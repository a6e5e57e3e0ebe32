"""Sphinx configuration of the django-memopt documentation (Markdown pages, read by MyST)."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

_PROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())[
    "project"
]

project = _PROJECT["name"]
author = "django-memopt contributors"
copyright = author
try:
    # The installed package: what `tox -e docs` builds against.
    release = metadata.version(project)
except metadata.PackageNotFoundError:
    release = _PROJECT["version"]
version = release

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Every heading down to ### gets an anchor, so `page.md#heading` links resolve.
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"{project} {release}"
