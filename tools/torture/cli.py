"""The command line: one campaign (or ``all``), a trial count and a seed; one line per campaign.

Exit status 0 only if every campaign passed; 1 if any found a loss; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from torture.common import Outcome, Workspace, source_fingerprint

# name -> (module, function, what it proves)
CAMPAIGNS: dict[str, tuple[str, str, str]] = {
    "kill": ("crash", "kill_campaign", "SIGKILL at random instants, resume until done, bit-identical end"),
    "signals": ("crash", "signals_campaign", "SIGTERM/SIGUSR1/SIGINT (and a second one during the save)"),
    "corrupt": ("corrupt", "corrupt_campaign", "byte flips and truncations of both checkpoints: detected, named"),
    "diskfull": ("diskfull", "diskfull_campaign", "saves into a full disk or past a file-size limit"),
    "hostile": ("hostile", "hostile_campaign", "code-running pickles, foreign files, wrong shapes, dirs"),
    "baddata": ("baddata", "baddata_campaign", "broken datasets: exit 2 naming the file, before any step"),
    "nan": ("nan", "nan_campaign", "non-finite losses skipped, counted, stopped at the limit"),
    "concurrency": ("concurrency", "concurrency_campaign", "a second trainer on a run directory is refused"),
    "race": ("race", "race_campaign", "two identical trainers at random offsets: progress never goes back"),
    "ddp": ("ddp", "ddp_campaign", "a SIGKILLed rank: bounded exit, bit-identical resume"),
    "adversary": ("adversary", "adversary_campaign", "every run file x every hostile form x every command"),
}
MATRIX_CAMPAIGNS = ("adversary",)
"""Campaigns whose trials are the combinations of a matrix: ``--trials all`` runs all of them."""
ALL = 0
"""``--trials all``, as the campaigns of ``MATRIX_CAMPAIGNS`` receive it."""


def trial_count(text: str) -> int:
    """``--trials``: a positive count, or ``all`` (``ALL``: every combination of a matrix campaign)."""
    if text == "all":
        return ALL
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or 'all', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 trial, got {count}")
    return count


def campaign_function(name: str) -> Callable[..., Outcome]:
    module_name, function_name, _ = CAMPAIGNS[name]
    module = importlib.import_module(f"torture.{module_name}")
    return getattr(module, function_name)


def run_campaign(name: str, workspace: Workspace, trials: int, seed: int, **options: object) -> Outcome:
    """Run one campaign, timing it; an unexpected exception is a failure, not a crash."""
    started = time.monotonic()
    source = source_fingerprint()
    try:
        outcome = campaign_function(name)(workspace, trials, seed, **options)
    except (OSError, RuntimeError, ValueError, KeyError, AssertionError) as error:
        outcome = Outcome(name, trials, seed)
        outcome.fail("setup", f"the campaign itself failed: {type(error).__name__}: {error}")
    outcome.seconds = time.monotonic() - started
    if source_fingerprint() != source:  # a shared working tree: results may mix two versions
        outcome.counts["SOURCES_CHANGED_DURING_CAMPAIGN"] = 1
    return outcome


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torture.py", description=__doc__.splitlines()[0])
    parser.add_argument("campaign", choices=[*CAMPAIGNS, "all"], help="campaign to run")
    parser.add_argument("--trials", type=trial_count, default=3,
                        help="trials (kills, signals, corruptions, rounds, combinations...); 'all': every "
                             "combination of a matrix campaign (adversary)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, run dirs)")
    parser.add_argument("--cli-checks", type=int, default=3,
                        help="in-process campaigns (corrupt, hostile, baddata): how many cases also go "
                             "through a real `bsrnn` subprocess (default 3)")
    parser.add_argument("--exec", dest="exec_mode", action="store_true",
                        help="adversary: run each command as a new `python -m bsrnn` process, not a fork of "
                             "this warm one (exact start-up, 3-4 s more per command)")
    parser.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                        help="adversary: start no new combination after this many seconds (the counts say "
                             "how many ran)")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="adversary: only the combinations whose label ('FOLDER/FILE | FORM | COMMAND') "
                             "contains TEXT, e.g. to reproduce one")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trials == ALL and args.campaign not in MATRIX_CAMPAIGNS:
        print(f"--trials all is for {', '.join(MATRIX_CAMPAIGNS)}; give {args.campaign} a count", file=sys.stderr)
        return 2
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bsrnn-torture-"))
    workspace = Workspace(root)
    names = list(CAMPAIGNS) if args.campaign == "all" else [args.campaign]
    outcomes = []
    try:
        for name in names:
            options: dict[str, object] = {"cli_checks": args.cli_checks} if name in ("corrupt", "hostile",
                                                                                     "baddata") else {}
            if name == "adversary":
                options = {"exec_mode": args.exec_mode, "time_limit": args.time_limit, "only": args.only,
                           "keep": args.keep}
            outcome = run_campaign(name, workspace, args.trials, args.seed, **options)
            print(outcome.line(), flush=True)
            for failure in outcome.failures[1:20]:
                print(f"    {failure}", flush=True)
            outcomes.append(outcome)
    finally:
        if args.keep or args.workdir:
            print(f"scratch folder kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if all(outcome.ok for outcome in outcomes) else 1
