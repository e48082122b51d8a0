"""Entry point of the ``bsrnn`` command: parse, dispatch, and map errors to exit statuses.

Exit statuses: 0 success; 2 usage, config or input errors (message on stderr,
no traceback unless ``--debug``); 1 other failures, a save that found no room included
(``CheckpointWriteError``: the disk, not the input, is at fault); 128+signal after a preemption
save (the train command returns that itself).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import platform
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from bsrnn.errors import RunFailedError, UserError

log = logging.getLogger("bsrnn")

# name -> (module under bsrnn.cli, one-line help). Modules are imported only when their
# command runs (or when --help lists them), so `bsrnn ckpt verify` does not import the trainer.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train (or resume) a BSRNN + MetricGAN run"),
    "evaluate": ("evaluate", ("score a checkpoint on a test set against its noisy inputs (PESQ, CSIG, CBAK, "
                              "COVL, SSNR, STOI, SI-SDR)")),
    "enhance": ("enhance", "enhance audio files of any length, rate, channel count and format"),
    "score": ("score", "score enhanced audio against clean references (any system's outputs), or rate "
                       "audio without one (DNSMOS)"),
    "compare": ("compare", "compare two systems' score CSVs file by file (differences, intervals, sign tests)"),
    "ckpt": ("ckpt", "inspect, verify, export and migrate checkpoints"),
    "plot": ("plot", "plot training and validation curves of a run"),
    "data": ("data", "prepare public corpora (VoiceBank+DEMAND) as 16 kHz training folders"),
}


DESCRIPTION = """\
Band-Split RNN speech enhancement. Prepare a public corpus such as
VoiceBank+DEMAND for training (data), train a model on pairs of clean and noisy
recordings (train), check it on a test set (evaluate), remove noise from your
own audio files with it (enhance), measure any enhanced files against clean ones
(score), tell whether one system beats another (compare), draw its training
curves (plot) and manage its checkpoints (ckpt).

Try it on built-in demo data first:  bsrnn train --demo --run-dir runs/demo
"""
EPILOG = """\
Run `bsrnn COMMAND --help` for a command's options; --debug and -q may also follow
the command. Exit status: 0 success, 2 usage or input error, 1 other failure,
128+N when training stopped for signal N (after saving).
"""

# Set on the namespace by the innermost parser that met arguments it does not know, so the
# error names that command's usage and suggests among its options.
_EXTRAS_PARSER = "unknown_arguments_parser"
_LONG_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


def _did_you_mean(typed: str, candidates: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(typed, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


_NEGATIVE_NUMBER = re.compile(r"^-(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
"""A command-line word that is a negative number (``-3``, ``-0.5``, ``-1e-3``), not an option."""


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors share one exit path.

    Unknown options and mistyped choices come back with the closest valid one, and the error
    names the command whose options were meant (``bsrnn train``, not ``bsrnn``). A negative
    number in scientific notation is a value like ``-0.001`` (argparse's own pattern knows only
    ``-3`` and ``-0.5``, so ``--init-lr -1e-3`` was "expected one argument"): the value then
    reaches the check that knows its range and says so.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def option_strings(self) -> list[str]:
        """Every option this parser accepts, as its usage line shows them (plus --help)."""
        return sorted(set(_LONG_OPTION.findall(self.format_usage())) | {"--help"})

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        choice = _INVALID_CHOICE.search(message)
        if choice:
            guess = _did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
            if guess:
                message += f"; did you mean '{guess}'?"
        end = "" if message.endswith(("?", ".")) else "."
        raise UserError(f"{self.prog}: {message}{end} Run `{self.prog} --help` for usage.")

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and not hasattr(namespace, _EXTRAS_PARSER):
            setattr(namespace, _EXTRAS_PARSER, self)
        return namespace, extras

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        namespace, extras = self.parse_known_args(args, namespace)
        if extras:
            parser: _ArgumentParser = getattr(namespace, _EXTRAS_PARSER, self)
            options = set(parser.option_strings()) | set(self.option_strings())
            guesses = []
            for extra in extras:
                flag = extra.split("=", 1)[0]
                guess = _did_you_mean(flag, sorted(options)) if flag.startswith("-") else None
                if guess:
                    guesses.append((flag, guess))
            message = f"unrecognized arguments: {' '.join(extras)}"
            if len(guesses) == 1:
                message += f"; did you mean {guesses[0][1]}?"
            elif guesses:
                message += "; did you mean " + ", ".join(f"{guess} (for {flag})" for flag, guess in guesses) + "?"
            parser.error(message)
        return namespace


class _CommandParser(_ArgumentParser):
    """A command's parser: also takes --debug and -q, so they work after the command name.

    Their default is "absent", so a command that does not repeat them keeps the values given
    before its name (argparse copies every attribute of the command's namespace over the
    top-level one). A command's own option of the same name would win (``resolve``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("conflict_handler", "resolve")
        super().__init__(*args, **kwargs)
        add_common_options(self, default=argparse.SUPPRESS)


def add_common_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """--debug and -q/--quiet, accepted before the command and after it."""
    parser.add_argument("--debug", action="store_true", default=default,
                        help="show a traceback for every error, user errors included")
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="print only warnings and errors")


def quiet(args: argparse.Namespace) -> bool:
    """Whether ``-q`` asked for warnings and errors only: no progress lines, no progress bars."""
    return bool(getattr(args, "quiet", False))


def inform(args: argparse.Namespace, message: str, stream: TextIO | None = None) -> None:
    """Print a progress line for the user (stdout, or ``stream``), unless ``-q``; results are
    printed as they are."""
    if not quiet(args):
        print(message, file=stream or sys.stdout)


def version_line() -> str:
    """``bsrnn --version``: this package's version, and torch's and Python's, which decide what a
    checkpoint can be loaded with (read from package metadata: torch is not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from bsrnn import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    return f"bsrnn {__version__} (torch {torch_version}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="bsrnn", description=DESCRIPTION, epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line(),
                        help="print the versions of bsrnn, torch and Python, and exit")
    add_common_options(parser, default=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_CommandParser)
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


def _printable_file_names() -> None:
    """Let stdout and stderr print any file name: a name that is not UTF-8 (``b"\\xfd"``, which
    Python holds as the surrogate ``"\\udcfd"``) is shown as ``\\udcfd`` instead of raising
    ``UnicodeEncodeError`` in the middle of a command (and losing its other files' work)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)  # a replaced stream (tests) may lack it
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (OSError, ValueError):  # a stream that cannot be reconfigured keeps its handler
                pass


def main(argv: Sequence[str] | None = None) -> int:
    _printable_file_names()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # before parsing succeeds; the parsed value once it has
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = args.debug
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
