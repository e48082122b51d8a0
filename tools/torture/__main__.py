"""``python tools/torture`` is the same as ``python tools/torture.py``."""

import sys

from torture.cli import main

sys.exit(main())
