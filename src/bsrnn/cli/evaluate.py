"""``bsrnn evaluate CHECKPOINT_OR_RUN_DIR --data-dir DIR``: score a checkpoint on a test set.

Every test utterance is enhanced at full length and scored with the same code as
``bsrnn score`` (PESQ, CSIG, CBAK, COVL, SSNR, STOI): a table of means, one CSV row per file.
``--pcs`` scores the outputs of perceptual contrast stretching, as ``bsrnn enhance --pcs``
writes them.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bsrnn.cli.enhance import PCS_ON, add_pcs_argument, add_precision_argument
from bsrnn.output import add_overwrite_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_OR_RUN_DIR_OR_BUNDLE",
                        help="checkpoint file, run directory, or model bundle (.safetensors) or ONNX model (.onnx) "
                             "from `bsrnn ckpt export`")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", type=Path, help="dataset root; its test split is used")
    source.add_argument("--demo", action="store_true", help="the built-in demo set's test split")
    parser.add_argument("--load", choices=["auto", "best", "last"], default="auto",
                        help="which checkpoint of a run directory (default auto: checkpoint_best.pt if it "
                             "verifies, else checkpoint_last.pt)")
    parser.add_argument("--csv", type=Path, help="write one row per file here")
    add_overwrite_argument(parser, "the --csv file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="scoring processes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_precision_argument(parser)
    add_pcs_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Check every output and input first (the CSV's folder, the checkpoint, every test file,
    decoded), so that nothing fails after minutes of enhancing and scoring."""
    from tqdm import tqdm

    from bsrnn.data import FileSource, check_data_dir, demo_corpus, load_pair
    from bsrnn.data.validate import check_finite_samples
    from bsrnn.enhancement import enhance_waveform, load_generator
    from bsrnn.errors import UserError
    from bsrnn.metrics import check_csv_path, format_table, score_files, write_csv
    from bsrnn.output import InputFiles

    if args.csv is not None:
        check_csv_path(args.csv, overwrite=args.overwrite)
    generator = load_generator(args.checkpoint, args.load, args.device, args.precision)
    print(generator.describe())
    if args.pcs:
        print(PCS_ON)
    corpus = demo_corpus(seed=0) if args.demo else check_data_dir(args.data_dir, splits=("test",))
    if not args.demo:
        check_finite_samples(corpus, splits=("test",))
    pairs = corpus.test
    # What this command reads, which its CSV must never replace: the checkpoint and the test files.
    inputs = InputFiles([generator.path, *(source.path for pair in pairs for source in (pair.clean, pair.noisy)
                                           if isinstance(source, FileSource))])
    if args.csv is not None:
        check_csv_path(args.csv, overwrite=args.overwrite, inputs=inputs)
    print(f"Evaluating on {len(pairs)} test utterances")
    jobs = []
    for pair in tqdm(pairs, desc="enhance", disable=None):
        clean, noisy = load_pair(pair)
        # The noisy file's name, as `bsrnn score` names the files of `bsrnn enhance`'s output, so
        # both CSVs join on the same column; an in-memory demo pair has only its name.
        label = pair.noisy.path.name if isinstance(pair.noisy, FileSource) else pair.name
        jobs.append((label, clean, enhance_waveform(generator.enhancer, noisy, args.device, pcs=args.pcs)))
    scores = score_files(jobs, workers=max(1, args.workers))
    print(format_table(scores))
    if args.csv is not None:
        try:
            write_csv(scores, args.csv, overwrite=args.overwrite, inputs=inputs)
        except OSError as error:
            raise UserError(f"--csv {args.csv}: cannot write it ({error}). Fix: choose a writable path; "
                            "the table above has the means") from error
        print(f"Wrote {args.csv}")
    return 0
