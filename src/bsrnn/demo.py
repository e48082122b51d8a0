"""``make demo``: the whole workflow on the built-in demo set, in a minute or two on 2 CPU cores.

Runs the real commands, in subprocesses, and shows each one before it runs:
1. ``bsrnn train --demo`` with a small model (``SMALL_MODEL``: 20 epochs of 12 steps); after a
   few steps the demo sends SIGTERM, as a cluster preemption would: the trainer finishes the
   step, saves, and exits 143;
2. the same command with ``--resume``: the resume summary, then training to the end;
3. ``bsrnn ckpt verify``, and ``bsrnn evaluate`` on the demo test set: the enhanced files beat
   the noisy input on every metric it prints (``tests/test_demo.py`` checks each by a margin);
4. ``bsrnn plot``; and where everything is, with the commands to try ``enhance`` and ``score``
   on a few demo utterances written as WAV files into ``RUN_DIR/audio``.

The demo starts from an empty run directory, so it deletes the one it made last time. It
never deletes anything else: a directory it creates carries a marker file (``.bsrnn-demo``),
and an existing directory without that mark (a real run's checkpoints, say) is refused, as is
a symbolic link (the demo never deletes through one). Inside its own directory it deletes only
the files it wrote, by content: it records each one's SHA-256 when it ends
(``.bsrnn-demo-files.json``), and whatever is not recorded so (``bsrnn enhance``'s output, a
checkpoint trained further there) is moved to a sibling folder first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from bsrnn.errors import UserError

MARKER_NAME = ".bsrnn-demo"
AUDIO_DIR_NAME = "audio"
_MARKER_TEXT = (
    "This directory was created by the bsrnn demo (make demo, or python -m bsrnn.demo).\n"
    "The next demo run with the same directory deletes and recreates it.\n"
    "Delete this file to keep the directory: the demo then refuses to touch it.\n"
)
FILES_NAME = ".bsrnn-demo-files.json"
"""The files the last demo wrote, by path in its directory and SHA-256: all the next demo deletes."""
SMALL_MODEL = ["--num-channel", "16", "--num-layer", "2", "--batch-size", "4", "--cut-len", "16000",
               "--epochs", "20", "--recipe", "improved", "--init-lr", "6e-3", "--time-loss-weight", "1.0",
               "--log-interval", "6", "--seed", "0"]
"""The demo's training: a 16-channel, 2-layer model, 20 epochs of 12 steps (about a minute on 2
loaded CPU cores), with the ``improved`` recipe at a learning rate of 6e-3 and a waveform loss of
weight 1.0 (a rate of 1e-3 learned half as much PESQ in 10 epochs as 3e-3; 1.0 instead of 0.2
added STOI and SI-SDR). Mean improvement over the noisy input on the demo test set, measured:
the earlier 2 epochs of the reference recipe, PESQ -0.05, STOI -0.10, SI-SDR -7.3 dB; these
settings with the recipe's earlier clean targets, PESQ +0.84, STOI +0.050, SI-SDR +4.5 dB, and
every other metric improves too (the same training with seeds 1-4: at least +0.66, +0.059,
+5.3 dB); with its stretched targets (``pcs_target``, since 2026-12-06), PESQ +0.95, STOI
+0.060, SI-SDR +5.5 dB, SSNR +3.2 dB (seeds 1-4: at least +0.94, +0.052, +3.5 dB, +1.8 dB)."""
PREEMPT_AFTER_STEP = 6
"""The first logged training step (``--log-interval``): the demo sends SIGTERM once it is logged."""


def _bsrnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "bsrnn", *args]


def _show(command: list[str]) -> None:
    shown = ["bsrnn", *command[3:]] if command[1:3] == ["-m", "bsrnn"] else command
    print(f"\n$ {shlex.join(shown)}", flush=True)


def _run(command: list[str]) -> int:
    _show(command)
    return subprocess.run(command, check=False).returncode


def _steps_logged(run_dir: Path) -> int:
    from bsrnn.training.run_files import read_metrics_log

    events, _torn = read_metrics_log(run_dir)
    return max((e.get("global_step", 0) for e in events if e.get("event") == "step"), default=0)


def _refusal(run_dir: Path, found: str) -> UserError:
    return UserError(
        f"The demo directory {run_dir} {found}. The demo only replaces a directory it created itself "
        f"(one that holds a {MARKER_NAME} file), an empty one, or a missing one, so it has not touched it. "
        f"Fix: choose another directory (make demo DEMO_DIR=runs/demo2, or python -m bsrnn.demo "
        f"--run-dir runs/demo2), or remove {run_dir} yourself if you no longer need it."
    )


def prepare_demo_dir(run_dir: Path) -> None:
    """Make ``run_dir`` an empty directory that carries the demo's mark, or refuse with UserError.

    Deletes only what a previous demo made: in a directory holding a regular ``.bsrnn-demo``
    file, the files it recorded with their content unchanged; the rest is moved aside first
    (``keep_user_files``). A missing or empty directory is used as is; a symbolic link, a file,
    or a directory without the mark (which may hold a real run's checkpoints) is refused before
    anything changes.
    """
    if run_dir.is_symlink():
        raise _refusal(run_dir, "is a symbolic link (the demo never deletes through one)")
    if run_dir.exists():
        if not run_dir.is_dir():
            raise _refusal(run_dir, "is a file, not a directory")
        if any(run_dir.iterdir()):
            marker = run_dir / MARKER_NAME
            if marker.is_symlink() or not marker.is_file():
                raise _refusal(run_dir, f"exists and was not made by the demo (it has no {MARKER_NAME} file)")
            keep_user_files(run_dir)
            try:
                shutil.rmtree(run_dir)  # does not follow symbolic links inside the directory
            except OSError as error:
                raise UserError(
                    f"Could not remove the previous demo directory {run_dir}: {error.strerror or error}. "
                    f"Fix: remove {run_dir} yourself, or choose another directory (make demo DEMO_DIR=runs/demo2)."
                ) from error
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / MARKER_NAME).write_text(_MARKER_TEXT, encoding="utf-8")


def _files_in(run_dir: Path) -> list[tuple[str, Path]]:
    """Every entry below ``run_dir`` that is not a folder (links included, never followed), by
    its path relative to ``run_dir``; the demo's own two bookkeeping files left out."""
    found = []
    for root, folders, names in os.walk(run_dir):  # does not descend into linked folders
        for name in names + [folder for folder in folders if os.path.islink(os.path.join(root, folder))]:
            path = Path(root) / name
            relative = path.relative_to(run_dir).as_posix()
            if relative not in (MARKER_NAME, FILES_NAME):
                found.append((relative, path))
    return sorted(found)


def _sha256_of_regular_file(path: Path) -> str | None:
    """The file's SHA-256; None for a link, a FIFO or anything else that is no regular file."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_demo_files(run_dir: Path) -> None:
    """Write ``FILES_NAME``: what the demo wrote, so that the next demo deletes that and no more."""
    files = {relative: _sha256_of_regular_file(path) for relative, path in _files_in(run_dir)}
    (run_dir / FILES_NAME).write_text(json.dumps(files, indent=1) + "\n", encoding="utf-8")


def _recorded(run_dir: Path) -> dict[str, str]:
    try:
        files = json.loads((run_dir / FILES_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # a demo that never finished: nothing is known to be the demo's
    return files if isinstance(files, dict) else {}


def keep_user_files(run_dir: Path) -> Path | None:
    """Move every file in ``run_dir`` that the last demo did not write, as it wrote it, to a new
    sibling folder (same relative paths), and say where; return that folder (None if none).

    By content: a checkpoint the user trained further in the demo's directory is theirs, though
    the demo wrote one of that name; so are ``bsrnn enhance``'s output, which the demo's closing
    lines suggest writing to ``audio/enhanced``, and any link (moved as a link).
    """
    recorded = _recorded(run_dir)
    theirs = [(relative, path) for relative, path in _files_in(run_dir)
              if recorded.get(relative) is None or recorded[relative] != _sha256_of_regular_file(path)]
    if not theirs:
        return None
    target = run_dir.with_name(f"{run_dir.name}-kept")
    copy = 2
    while target.exists() or target.is_symlink():
        target = run_dir.with_name(f"{run_dir.name}-kept-{copy}")
        copy += 1
    for relative, path in theirs:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        path.rename(target / relative)
    shown = ", ".join(relative for relative, _ in theirs[:5]) + (f" ({len(theirs)} in all)" if len(theirs) > 5 else "")
    print(f"Kept what the last demo did not write in {run_dir} ({shown}) in {target}: the demo replaces only "
          "what it made.")
    return target


def _activation_command() -> str | None:
    """How to put this interpreter's ``bsrnn`` on PATH, e.g. ``. .venv/bin/activate``."""
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix == sys.base_prefix or not activate.is_file():
        return None  # not a virtual environment: bsrnn is wherever pip put it
    try:
        shown = os.path.relpath(activate)
    except ValueError:  # another drive (Windows)
        shown = str(activate)
    if shown.startswith(".."):
        shown = str(activate)
    elif os.sep not in shown:
        shown = f".{os.sep}{shown}"  # `. activate` would search PATH, not the current directory
    return f". {shlex.quote(shown)}"


def try_it_commands(run_dir: Path) -> list[str]:
    """The shell lines that enhance and score the demo's WAV files with the trained run."""
    audio = run_dir / AUDIO_DIR_NAME
    lines = [
        shlex.join(["bsrnn", "enhance", str(run_dir), str(audio / "noisy"), "--out", str(audio / "enhanced")]),
        shlex.join(["bsrnn", "score", str(audio / "clean"), str(audio / "enhanced")]),
    ]
    activation = _activation_command()
    return [activation, *lines] if activation else lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"),
                        help=f"directory to create (a previous demo's, marked by {MARKER_NAME}, is replaced)")
    args = parser.parse_args(argv)
    try:
        return _demo(args.run_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _demo(run_dir: Path) -> int:
    prepare_demo_dir(run_dir)
    try:
        return _demo_steps(run_dir)
    finally:  # what is there now is the demo's, however it ended (an error, Ctrl-C)
        try:
            record_demo_files(run_dir)
        except OSError as error:  # never in place of the error that ended the demo
            print(f"[demo] could not record what it wrote ({error}): the next demo keeps all of {run_dir} aside")


def _demo_steps(run_dir: Path) -> int:
    from bsrnn.data.demo_corpus import write_demo_audio

    write_demo_audio(run_dir / AUDIO_DIR_NAME)
    train = _bsrnn("train", "--demo", "--run-dir", str(run_dir), *SMALL_MODEL)

    print("== 1. Train on the demo set; a simulated preemption (SIGTERM) arrives after a few steps")
    _show(train)
    process = subprocess.Popen(train)
    deadline = time.monotonic() + 600
    while (process.poll() is None and _steps_logged(run_dir) < PREEMPT_AFTER_STEP
           and time.monotonic() < deadline):
        time.sleep(0.2)
    if process.poll() is None:
        print("\n[demo] sending SIGTERM, as a cluster scheduler would", flush=True)
        process.send_signal(signal.SIGTERM)
    code = process.wait()
    print(f"[demo] the trainer exited with {code} (128 + SIGTERM = 143)")

    print("\n== 2. Requeue: the same command with --resume continues exactly where it stopped")
    if _run([*train, "--resume"]) != 0:
        return 1
    print("\n== 3. Verify the checkpoints and evaluate the best one on the demo test set")
    if _run(_bsrnn("ckpt", "verify", str(run_dir))) != 0:
        return 1
    if _run(_bsrnn("evaluate", str(run_dir), "--demo", "--csv", str(run_dir / "evaluation.csv"))) != 0:
        return 1
    print("\n== 4. Plot the curves")
    if _run(_bsrnn("plot", str(run_dir))) != 0:
        return 1
    print("\nEverything is in", run_dir)
    for path in sorted(run_dir.iterdir()):
        if not path.name.startswith("."):
            print(f"  {path}")
    print("Inspect a checkpoint:  bsrnn ckpt inspect", shlex.quote(str(run_dir / "checkpoint_best.pt")))
    print(f"\nTry the trained model on the demo's WAV files in {run_dir / AUDIO_DIR_NAME} "
          "(noisy/ and clean/, 16 kHz); copy and paste:")
    for line in try_it_commands(run_dir):
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
