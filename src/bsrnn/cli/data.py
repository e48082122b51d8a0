"""``bsrnn data prepare vbd SOURCE --out DIR``: turn a public corpus into training folders.

Only the parsing lives here; ``bsrnn.data.prepare`` (what is written, the resampler and why,
resume) and ``bsrnn.data.voicebank`` (the release, ``--download``) do the work. Both are
imported when the command runs, so listing commands stays cheap.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bsrnn.errors import UserError

VBD_DESCRIPTION = """\
Prepare VoiceBank+DEMAND (doi 10.7488/ds/2117) for `bsrnn train --data-dir DIR`.

SOURCE holds the release's zips (clean_trainset_28spk_wav.zip, noisy_trainset_28spk_wav.zip,
clean_testset_wav.zip, noisy_testset_wav.zip; the *_56spk_* pair with --speakers 56) or the
folders they unpack to. Every file is resampled to 16 kHz with soxr (quality HQ) and written
as 16-bit WAV to DIR/{train,test}/{clean,noisy}; DIR/SHA256SUMS lists the files and
DIR/prepare.json (written last) records sources, digests, resampler, counts, durations and
speakers. An interrupted run continues where it stopped when run again; a second run leaves
identical bytes.
"""
VBD_EPILOG = """\
examples:
  bsrnn data prepare vbd ~/corpora/vbd --out data/vbd16k            # zips already downloaded
  bsrnn data prepare vbd ~/corpora/vbd --out data/vbd16k --download # fetch what is missing first
  bsrnn train --data-dir data/vbd16k --run-dir runs/vbd
"""


def _available_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prepare = sub.add_parser("prepare", help="turn a public corpus into the folders `bsrnn train --data-dir` reads",
                             description="Turn a public corpus into the 16 kHz split folders `bsrnn train "
                             "--data-dir` reads. DATASET: vbd (VoiceBank+DEMAND).")
    datasets = prepare.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    vbd = datasets.add_parser("vbd", help="VoiceBank+DEMAND (48 kHz zips from Edinburgh DataShare)",
                              description=VBD_DESCRIPTION, epilog=VBD_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    vbd.add_argument("source", metavar="SOURCE", type=Path,
                     help="folder holding the release's zips or unpacked folders (with --download: where the "
                          "zips go)")
    vbd.add_argument("--out", metavar="DIR", type=Path, required=True,
                     help="folder to write train/, test/, SHA256SUMS and prepare.json in")
    vbd.add_argument("--speakers", type=int, choices=(28, 56), default=28,
                     help="training set: 28 speakers (the usual benchmark, default) or 56")
    vbd.add_argument("--download", action="store_true",
                     help="first download the zips SOURCE lacks, resuming partial downloads")
    vbd.add_argument("--mirror", metavar="URL", default=None,
                     help="with --download: base URL of the zips (default: $BSRNN_VBD_MIRROR, else the "
                          "DataShare record's file URLs)")
    vbd.add_argument("--workers", metavar="N", type=int, default=None,
                     help=f"conversion processes (default: number of CPUs, at most 8; {_available_cpus()} here)")
    vbd.set_defaults(_action=_prepare_vbd)


def run(args: argparse.Namespace) -> int:
    return int(args._action(args))


def _prepare_vbd(args: argparse.Namespace) -> int:
    from bsrnn.data.prepare import MANIFEST_NAME, MAX_WORKERS, prepare_voicebank, summary
    from bsrnn.data.voicebank import NAME, fetch_release

    workers = min(_available_cpus(), MAX_WORKERS) if args.workers is None else args.workers
    if workers < 1:
        raise UserError(f"--workers: expected 1 or more processes, got {workers}. "
                        "Fix: pass --workers 1 to convert in this process")
    if args.mirror is not None and not args.download:
        raise UserError(f"--mirror: expected together with --download, found it alone ({args.mirror}). "
                        "Fix: add --download, or leave out --mirror")
    progress = not args.quiet
    if args.download:
        fetch_release(args.source, args.speakers, args.mirror, progress=progress)
    result = prepare_voicebank(args.source, args.out, speakers=args.speakers, workers=workers, progress=progress)
    print(f"Prepared {NAME} ({args.speakers}-speaker training set) in {result.out}: "
          f"{result.written} files written, {result.kept} already there")
    for line in summary(result):
        print(line)
    print(f"Manifest: {result.out / MANIFEST_NAME}. Train with: bsrnn train --data-dir {result.out}")
    return 0
