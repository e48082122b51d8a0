"""``bsrnn plot RUN_DIR [--out FILE.png]``: training and validation curves as a PNG;
``bsrnn plot RUN_DIR RUN_DIR ... --out FILE.png``: several runs' validation curves on one figure.

One run: its current lineage (entries abandoned by a resume are dimmed), with the GAN start, the
best epoch and each resume marked; ``bsrnn.plotting`` says how each is found. Several runs:
validation PESQ, validation SI-SDR and the learning rate of each, in one colour per run
(``bsrnn.plot_comparison``); the figure belongs to no one run, so ``--out`` is required.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bsrnn.errors import UserError
from bsrnn.output import add_overwrite_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR",
                        help="run directory (reads its metrics.jsonl); two or more draw one comparison figure")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.png",
                        help="output PNG (default RUN_DIR/curves.png for one run; required for several)")
    add_overwrite_argument(parser, "the --out image (e.g. to redraw RUN_DIR/curves.png)")


def run(args: argparse.Namespace) -> int:
    from bsrnn.plot_comparison import plot_comparison
    from bsrnn.plotting import plot_run

    if len(args.run_dirs) == 1:
        run_dir = args.run_dirs[0]
        out = plot_run(run_dir, args.out or run_dir / "curves.png", overwrite=args.overwrite)
    elif args.out is None:
        raise UserError(f"bsrnn plot with {len(args.run_dirs)} runs draws one comparison figure, which belongs to "
                        "none of them: expected --out FILE.png, found none. Fix: e.g. "
                        f"`bsrnn plot {' '.join(str(path) for path in args.run_dirs)} --out comparison.png`")
    else:
        out = plot_comparison(args.run_dirs, args.out, overwrite=args.overwrite)
    print(f"Wrote {out}")
    return 0
