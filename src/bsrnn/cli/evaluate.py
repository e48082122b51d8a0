"""``bsrnn evaluate CHECKPOINT_OR_RUN_DIR --data-dir DIR``: score a checkpoint on a test set.

Every test utterance is enhanced at full length and scored with the same code as
``bsrnn score`` (PESQ, CSIG, CBAK, COVL, SSNR, STOI, SI-SDR). The noisy inputs are scored too
(one more scoring pass; ``--no-baseline`` skips it), so the table is the one a paper prints:
noisy mean, enhanced mean, the improvement with its 95 % confidence interval, the files
improved (``bsrnn.metrics.report``), in ``--format`` text, markdown, latex or json. ``--csv``
writes one row per file, the noisy input's metrics included, and its settings beside it.
``--pcs`` scores the outputs of perceptual contrast stretching, as ``bsrnn enhance --pcs``
writes them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bsrnn.cli.enhance import (
    PCS_ON,
    add_device_argument,
    add_load_argument,
    add_pcs_argument,
    add_precision_argument,
)
from bsrnn.cli.main import inform, quiet
from bsrnn.cli.score import CSV_HELP, add_format_argument
from bsrnn.output import add_overwrite_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_OR_RUN_DIR_OR_BUNDLE",
                        help="checkpoint file, run directory, or model bundle (.safetensors) or ONNX model (.onnx) "
                             "from `bsrnn ckpt export`")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", type=Path, help="dataset root; its test split is used")
    source.add_argument("--demo", action="store_true", help="the built-in demo set's test split")
    add_load_argument(parser)
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="do not score the noisy inputs: the table then has no noisy column, improvement "
                             "or interval. Scoring them is one more scoring pass (about doubles the scoring time)")
    add_format_argument(parser)
    parser.add_argument("--csv", metavar="FILE", type=Path, help=CSV_HELP)
    add_overwrite_argument(parser, "the --csv file and its settings file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="scoring processes")
    add_device_argument(parser)
    add_precision_argument(parser)
    add_pcs_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Check every output and input first (the CSV's folder, the checkpoint, every test file,
    decoded), so that nothing fails after minutes of enhancing and scoring."""
    from tqdm import tqdm

    from bsrnn.cli.score import print_and_write, score_with_baseline
    from bsrnn.data import FileSource, check_data_dir, demo_corpus, load_pair
    from bsrnn.data.validate import check_finite_samples
    from bsrnn.enhancement import enhance_waveform, inference_device, load_generator
    from bsrnn.metrics import check_csv_path
    from bsrnn.output import InputFiles

    # What the user reads along the way: stdout with a text table; stderr otherwise, so that
    # stdout holds nothing but the Markdown, LaTeX or JSON asked for.
    stream = sys.stdout if args.format == "text" else sys.stderr
    device = inference_device(args.device, args.precision)
    if args.csv is not None:
        check_csv_path(args.csv, overwrite=args.overwrite)
    generator = load_generator(args.checkpoint, args.load, device, args.precision)
    inform(args, f"{generator.describe()}; on {device}", stream)
    if args.pcs:
        inform(args, PCS_ON, stream)
    corpus = demo_corpus(seed=0) if args.demo else check_data_dir(args.data_dir, splits=("test",))
    if not args.demo:
        check_finite_samples(corpus, splits=("test",))
    pairs = corpus.test
    # What this command reads, which its CSV must never replace: the checkpoint and the test files.
    inputs = InputFiles([generator.path, *(source.path for pair in pairs for source in (pair.clean, pair.noisy)
                                           if isinstance(source, FileSource))])
    if args.csv is not None:
        check_csv_path(args.csv, overwrite=args.overwrite, inputs=inputs)
    inform(args, f"Evaluating on {len(pairs)} test utterances"
           + ("" if args.baseline else " (no noisy baseline: --no-baseline)"), stream)
    jobs, baseline = [], []
    for pair in tqdm(pairs, desc="enhance", disable=True if quiet(args) else None):
        clean, noisy = load_pair(pair)
        # The clean file's name, as `bsrnn score` names its rows, so that `bsrnn compare` pairs an
        # evaluation with a score of any other system's output (whose suffix may differ from the
        # noisy input's); an in-memory demo pair has only its name.
        label = pair.clean.path.name if isinstance(pair.clean, FileSource) else pair.name
        jobs.append((label, clean, enhance_waveform(generator.enhancer, noisy, device, pcs=args.pcs)))
        if args.baseline:
            baseline.append((label, clean, noisy))
    scores, noisy_scores = score_with_baseline(jobs, baseline if args.baseline else None, max(1, args.workers),
                                               progress=not quiet(args))
    source: dict[str, object] = {
        "command": "evaluate",
        "scored": f"evaluate of {generator.path}" + (f", {args.precision}" if args.precision != "fp32" else "")
                  + (", PCS" if args.pcs else ""),
        "checkpoint": str(generator.path.resolve()),
        "model": generator.describe(),
        "load": args.load,
        "precision": args.precision,
        "pcs": bool(args.pcs),
        "device": str(device),
        "test_set": "demo" if args.demo else str(args.data_dir.resolve()),
    }
    print_and_write(scores, noisy_scores, args, source, inputs)
    return 0
