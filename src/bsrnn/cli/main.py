"""Entry point of the ``bsrnn`` command: parse, dispatch, and map errors to exit statuses.

Exit statuses (SPEC section 2): 0 success; 2 usage, config or input errors (message on stderr,
no traceback unless ``--debug``); 1 other failures, a save that found no room included
(``CheckpointWriteError``: the disk, not the input, is at fault); 128+signal after a preemption
save (the train command returns that itself).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from bsrnn.errors import RunFailedError, UserError

log = logging.getLogger("bsrnn")

# name -> (module under bsrnn.cli, one-line help). Modules are imported only when their
# command runs (or when --help lists them), so `bsrnn ckpt verify` does not import the trainer.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train (or resume) a BSRNN + MetricGAN run"),
    "evaluate": ("evaluate", "score a checkpoint on a test set (PESQ, CSIG, CBAK, COVL, SSNR, STOI)"),
    "enhance": ("enhance", "enhance wav files of any length, rate and channel count"),
    "score": ("score", "score enhanced wavs against clean references"),
    "ckpt": ("ckpt", "inspect, verify, export and migrate checkpoints"),
    "plot": ("plot", "plot training and validation curves of a run"),
}


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share one exit path."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}\n(run `{self.prog} --help` for usage)")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="bsrnn", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for all errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"bsrnn.cli.{module_name}")
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command_parser)
        command_parser.set_defaults(_run=module.run)
    return parser


def _configure_logging(quiet: bool) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        _configure_logging(args.quiet)
        return int(args._run(args) or 0)
    except BrokenPipeError:  # `bsrnn ckpt inspect RUN | head`: the reader left; not an error
        sys.stderr.close()
        return 0
    except Exception as error:
        # Imported here: the engine imports torch, and worker processes that re-import this
        # module (multiprocessing's spawn) should not pay for it.
        from bsrnn.checkpoint.errors import CheckpointError, CheckpointWriteError

        if isinstance(error, (RunFailedError, CheckpointWriteError)):  # a full disk is no usage error
            code = 1
        elif isinstance(error, (UserError, CheckpointError)):
            code = 2
        else:
            raise
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
