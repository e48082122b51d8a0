"""One table, written the way its reader needs it: a terminal, a Markdown page, a LaTeX paper,
or a program (JSON).

``bsrnn score``, ``bsrnn evaluate`` and ``bsrnn compare`` build their table once, as rows of
strings, and ``render`` writes it in the chosen format, so the four never disagree on a
number. JSON is not rendered from the strings: each command gives ``to_json`` its numbers at
full precision (NaN becomes ``null``, which strict JSON readers accept).
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

FORMATS = ("text", "markdown", "latex", "json")
"""The values of ``--format``; ``text`` is the default of every command."""

PLUS_MINUS = "±"
NOTE_WIDTH = 100
"""Text tables wrap their notes at this width (a terminal's); other formats keep one line each."""

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


@dataclass(frozen=True)
class Table:
    """Headers, rows of cells, and notes that explain them (what the interval is, the PESQ
    variant), which every format keeps: below a text table, under a Markdown one, as ``%``
    comments above a LaTeX tabular (the caption is the author's to write)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[str]]
    numeric: Sequence[bool]
    """Per column: right-aligned (numbers) or left-aligned (names)."""
    notes: Sequence[str] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if len(self.numeric) != len(self.columns) or any(len(row) != len(self.columns) for row in self.rows):
            raise ValueError("every row and the alignment need one entry per column")


def render(table: Table, fmt: str) -> str:
    """``table`` as ``text``, ``markdown`` or ``latex`` (no trailing newline)."""
    if fmt == "text":
        return _text(table)
    if fmt == "markdown":
        return _markdown(table)
    if fmt == "latex":
        return _latex(table)
    raise ValueError(f"render: expected one of text, markdown, latex, got {fmt!r} (json is to_json's)")


def _text(table: Table) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(table.columns, *table.rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.rjust(width) if numeric else cell.ljust(width)
                         for cell, width, numeric in zip(cells, widths, table.numeric)).rstrip()

    notes = [textwrap.fill(note, NOTE_WIDTH, subsequent_indent="  ") for note in table.notes]
    return "\n".join([line(table.columns), *(line(row) for row in table.rows), *notes])


def _markdown(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", r"\|") for cell in cells) + " |"

    rule = "| " + " | ".join("---:" if numeric else "---" for numeric in table.numeric) + " |"
    lines = [line(table.columns), rule, *(line(row) for row in table.rows)]
    if table.notes:
        lines += ["", *table.notes]
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    """``text`` as LaTeX prints it literally (file names hold ``_``); ± in math mode."""
    escaped = "".join(_LATEX_SPECIAL.get(character, character) for character in text)
    return escaped.replace(PLUS_MINUS, r"$\pm$")


def _latex(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return " & ".join(latex_escape(cell) for cell in cells) + r" \\"

    spec = "".join("r" if numeric else "l" for numeric in table.numeric)
    return "\n".join([*(f"% {note}" for note in table.notes), rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
                      line(table.columns), r"\midrule", *(line(row) for row in table.rows), r"\bottomrule",
                      r"\end{tabular}"])


def _plain(value: object) -> object:
    """``value`` with every non-finite float as None, recursively, for strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def to_json(value: object) -> str:
    """``value`` (dicts, lists, numbers, strings) as indented strict JSON, NaN as ``null``."""
    return json.dumps(_plain(value), indent=2, allow_nan=False)


def number(value: float, decimals: int, *, signed: bool = False) -> str:
    """A table cell for ``value``: fixed decimals, ``n/a`` when there is no number."""
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def interval(mean: float, half_width: float, decimals: int) -> str:
    """``+0.880 ± 0.040``: a mean difference and the half-width of its confidence interval."""
    if not math.isfinite(half_width):
        return number(mean, decimals, signed=True)
    return f"{number(mean, decimals, signed=True)} {PLUS_MINUS} {half_width:.{decimals}f}"


def p_value(value: float) -> str:
    """Three significant digits (``0.344``, ``7.46e-11``): small p-values keep their size."""
    return "n/a" if not math.isfinite(value) else f"{value:.3g}"
