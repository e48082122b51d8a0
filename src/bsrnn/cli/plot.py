"""``bsrnn plot RUN_DIR [--out FILE.png]``: training and validation curves as a PNG.

Draws the run's current lineage (entries abandoned by a resume are dimmed), with the GAN start,
the best epoch and each resume marked; ``bsrnn.plotting`` says how each is found.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bsrnn.output import add_overwrite_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory (reads its metrics.jsonl)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.png",
                        help="output PNG (default RUN_DIR/curves.png)")
    add_overwrite_argument(parser, "the --out image (e.g. to redraw RUN_DIR/curves.png)")


def run(args: argparse.Namespace) -> int:
    from bsrnn.plotting import plot_run

    out = plot_run(args.run_dir, args.out or args.run_dir / "curves.png", overwrite=args.overwrite)
    print(f"Wrote {out}")
    return 0
