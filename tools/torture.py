#!/usr/bin/env python
"""Torture campaigns: ``python tools/torture.py CAMPAIGN --trials N --seed S`` (or ``all``).

The campaigns live in the ``torture`` package beside this file (``tools/torture/``); a folder
with an ``__init__.py`` takes precedence over this module for ``import torture``, so this
script is only the entry point. See RELIABILITY.md for what each campaign proves.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from torture.cli import main  # noqa: E402  (the path above makes the package importable)

if __name__ == "__main__":
    sys.exit(main())
