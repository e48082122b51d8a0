"""``bsrnn ckpt inspect|verify|export|migrate``: look at, check and convert checkpoints."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bsrnn.cli.enhance import add_load_argument
from bsrnn.output import add_overwrite_argument

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ckpt_command", metavar="ACTION", required=True)
    inspect = sub.add_parser("inspect", help="show what a checkpoint holds (verifies it first)",
                             description="Verify a checkpoint, then show its progress, monitored metric, "
                             "learning rates, contents, lineage of resumes and config. On a run directory, "
                             "also list the superseded and quarantined checkpoints kept there.")
    inspect.add_argument("path", type=Path, help="a checkpoint file or a run directory")
    inspect.add_argument("--load", choices=["auto", "last", "best"], default="auto",
                         help="which checkpoint of a run directory: auto (default) takes checkpoint_last.pt if "
                              "it verifies, else checkpoint_best.pt (what `train --resume` would continue from; "
                              "enhance, evaluate and ckpt export prefer best); best or last takes exactly that file")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(_action=_inspect)

    verify = sub.add_parser("verify", help="exit 0 only if every checkpoint verifies",
                            description="Check the digest and the structure of one checkpoint, or of every "
                            "*.pt file of a run directory (superseded ones included). Exit 0 only if all "
                            "verify; 1 if any is damaged, incomplete or foreign.")
    verify.add_argument("path", type=Path, help="a run directory or a checkpoint file")
    verify.set_defaults(_action=_verify)

    export = sub.add_parser("export", help="write the generator as a self-describing .safetensors bundle or ONNX model",
                            description="Write the generator's weights (no optimizer state) as a "
                            ".safetensors bundle whose metadata holds the architecture, the signal front end "
                            "and the source checkpoint; or, with --format onnx, the spectrum-to-spectrum network "
                            "as an ONNX model with the same metadata, and for a causal model its streaming step "
                            "(needs pip install 'bsrnn[onnx]'). "
                            "`bsrnn enhance` and `evaluate` accept either in place of a run directory. From a run "
                            "directory it takes the checkpoint they would use.")
    export.add_argument("checkpoint", type=Path, help="a checkpoint file or a run directory")
    export.add_argument("--out", type=Path, required=True, help="output FILE.safetensors, or FILE.onnx")
    add_load_argument(export)
    export.add_argument("--format", choices=["safetensors", "onnx"], default="safetensors",
                        help="safetensors (default): the weights, for bsrnn; onnx: the network as an ONNX graph "
                             "(input spectrum [batch, 257, frames, 2], real and imaginary; a causal model also "
                             "holds a streaming step with its state as tensors), for ONNX Runtime")
    add_overwrite_argument(export, "the --out bundle")
    export.set_defaults(_action=_export)

    migrate = sub.add_parser("migrate", help="convert old gene_epoch_*/disc_epoch_* files into a run directory",
                             description="Convert the old per-epoch gene_epoch_N_*/disc_epoch_N files into a "
                             "checkpoint_last.pt that `bsrnn train --resume` continues. The legacy folder is "
                             "never changed; --out must hold no checkpoint.")
    migrate.add_argument("legacy_dir", type=Path, help="folder with gene_epoch_N_* and disc_epoch_N files")
    migrate.add_argument("--out", type=Path, required=True, help="run directory to create")
    migrate.add_argument("--epoch", type=int, default=None, help="epoch to migrate (default: newest)")
    migrate.set_defaults(_action=_migrate)


def run(args: argparse.Namespace) -> int:
    return int(args._action(args))


def _inspect(args: argparse.Namespace) -> int:
    from bsrnn.checkpoint import kept_states, load_checkpoint
    from bsrnn.checkpoint.summary import format_summary, summarize

    summary = summarize(load_checkpoint(args.path, args.load))
    if args.path.is_dir():  # states kept when a run went on from another: they may hold more progress
        kept = kept_states(args.path)
        summary["superseded"] = [str(path) for path in kept if path.suffix == ".pt"]
        summary["quarantined"] = [str(path) for path in kept if path.suffix != ".pt"]
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(format_summary(summary))
        for path in summary.get("superseded", []):
            print(f"  superseded (kept, never overwritten): {path}")
        for path in summary.get("quarantined", []):
            print(f"  quarantined (kept, cannot be resumed from): {path}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from bsrnn import keys
    from bsrnn.checkpoint import verify
    from bsrnn.training.resume import check_resumable

    def resumable_if_a_run(path: Path, payload: Mapping[str, Any]) -> None:
        """A trainer's checkpoint (it registers the trainer's progress) must also be one a run can
        resume from; a checkpoint of another training loop that uses the engine is verified as a file."""
        registered = payload.get("registered")
        if isinstance(registered, list) and keys.PROGRESS in registered:
            check_resumable(path, payload)

    results = verify(args.path, accept=resumable_if_a_run)
    for result in results:
        print(f"{'OK  ' if result.ok else 'FAIL'} {result.path}: {result.message}")
    failed = [result for result in results if not result.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} checkpoint(s) failed verification")
        return 1
    return 0


def _export(args: argparse.Namespace) -> int:
    from bsrnn.bundle import BUNDLE_SUFFIX, write_bundle
    from bsrnn.enhancement import choose_checkpoint
    from bsrnn.errors import UserError
    from bsrnn.onnx_model import ONNX_SUFFIX, require
    from bsrnn.output import check_destinations

    suffix = ONNX_SUFFIX if args.format == "onnx" else BUNDLE_SUFFIX
    if args.out.suffix != suffix:
        raise UserError(f"--out must end in {suffix} for --format {args.format}, got {args.out}")
    if args.out.is_dir():
        raise UserError(f"--out {args.out}: expected a file name, found a folder. Fix: e.g. --out {args.out}/model{suffix}")
    check_destinations([args.out], overwrite=args.overwrite, flag="--out")
    if args.format == "onnx":
        require("onnx")  # before a large checkpoint is read
    loaded, reason = choose_checkpoint(args.checkpoint, args.load)  # the file enhance and evaluate would use
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "onnx":
        from bsrnn.enhancement import generator_of
        from bsrnn.onnx_model import export_onnx

        generator = generator_of(loaded)[0]
        export_onnx(generator, loaded, args.out, overwrite=args.overwrite)
        stream = " (--stream too: it holds the streaming step)" if generator.causal else ""
        print(f"Wrote the generator as an ONNX model to {args.out} (from {loaded.path}); use it with "
              f"`bsrnn enhance {args.out} ...`{stream} or ONNX Runtime")
        return 0
    count = write_bundle(loaded, args.out, overwrite=args.overwrite)
    print(f"Wrote {count} generator tensors to {args.out} (from {loaded.path}: {reason}); use it with "
          f"`bsrnn enhance {args.out} ...`")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from bsrnn.migrate import migrate_legacy_run

    result = migrate_legacy_run(args.legacy_dir, args.out, epoch=args.epoch)
    print(result)
    return 0

