"""``python -m benchmarks``, or ``python benchmarks``: see :mod:`benchmarks.run`."""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # run as ``python benchmarks``: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
