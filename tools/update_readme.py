"""Rewrite the generated parts of README.md (the config table) from the code: ``make docs``.

``tests/test_docs.py`` fails when README.md differs from what this would write.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bsrnn.cli.train import config_table

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- config-table:begin -->\n", "<!-- config-table:end -->"


def with_config_table(text: str) -> str:
    """``text`` with the block between the config-table markers replaced by the current table."""
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:start] + config_table() + text[stop:]


if __name__ == "__main__":
    README.write_text(with_config_table(README.read_text(encoding="utf-8")), encoding="utf-8")
    sys.exit(0)
