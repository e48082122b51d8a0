"""``make demo``: the whole workflow on the built-in demo set, in a minute or two on 2 CPU cores.

Runs the real commands, in subprocesses, and shows each one before it runs:
1. ``bsrnn train --demo`` with a small model; after a few steps the demo sends SIGTERM, as a
   cluster preemption would: the trainer finishes the step, saves, and exits 143;
2. the same command with ``--resume``: the resume summary, then training to the end;
3. ``bsrnn ckpt verify`` and ``bsrnn evaluate`` on the demo test set;
4. ``bsrnn plot``; and where everything is.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SMALL_MODEL = ["--num-channel", "16", "--num-layer", "2", "--batch-size", "4", "--cut-len", "16000",
               "--epochs", "2", "--log-interval", "4", "--seed", "0"]


def _bsrnn(*args: str) -> list[str]:
    return [sys.executable, "-m", "bsrnn", *args]


def _show(command: list[str]) -> None:
    shown = ["bsrnn", *command[3:]] if command[1:3] == ["-m", "bsrnn"] else command
    print(f"\n$ {shlex.join(shown)}", flush=True)


def _run(command: list[str]) -> int:
    _show(command)
    return subprocess.run(command, check=False).returncode


def _steps_logged(run_dir: Path) -> int:
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        return 0
    steps = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return max((s.get("global_step", 0) for s in steps if s.get("event") == "step"), default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"))
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir
    if run_dir.exists():
        shutil.rmtree(run_dir)
    train = _bsrnn("train", "--demo", "--run-dir", str(run_dir), *SMALL_MODEL)

    print("== 1. Train on the demo set; a simulated preemption (SIGTERM) arrives after a few steps")
    _show(train)
    process = subprocess.Popen(train)
    deadline = time.monotonic() + 600
    while process.poll() is None and _steps_logged(run_dir) < 8 and time.monotonic() < deadline:
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
    print("Inspect a checkpoint:  bsrnn ckpt inspect", run_dir / "checkpoint_best.pt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
