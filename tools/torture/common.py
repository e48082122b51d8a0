"""What every campaign shares: the workspace, child processes, run comparison, results.

Campaigns run the real ``bsrnn`` command in child processes, each in its own session (process
group), so that a campaign can kill a trainer *and* its PESQ workers and can check that no
process outlives its trainer. Output goes to a log file, never to a pipe: a child blocked on a
full pipe would turn a torture test into a hang.

The training config is the e2e tests' ``TINY`` one, on a smaller written copy of the demo set
(24 training pairs, 4 test pairs): 3 steps per epoch, 2 epochs, a save after every step. A run
is then seconds of work after a few seconds of start-up, so a campaign can afford many cycles,
and ``--data-dir`` skips the demo set's synthesis at every start-up.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bsrnn import keys
from bsrnn.checkpoint import CheckpointError, load_checkpoint, verify
from bsrnn.training.run_files import losses_by_step as logged_losses
from bsrnn.training.run_files import read_metrics_log

STEPS_PER_EPOCH = 3
EPOCHS = 2
TOTAL_STEPS = STEPS_PER_EPOCH * EPOCHS
TRAIN_PAIRS = 24
TEST_PAIRS = 4
# The e2e tests' TINY config without --demo (the data comes from --data-dir).
# --monitor val_loss: the reference run's best is then an earlier epoch than its last, which the
# corrupt and hostile campaigns need (a fallback to best must be told apart from last).
TINY_ARGS = ["--num-channel", "4", "--num-layer", "1", "--batch-size", "8", "--cut-len", "8000",
             "--log-interval", "1", "--pesq-workers", "1", "--seed", "3", "--monitor", "val_loss"]
RUN_TIMEOUT_S = 300.0
"""A tiny run takes well under a minute even on a loaded 2-core machine; beyond this it hangs."""
GROUP_EXIT_TIMEOUT_S = 5.0
"""PESQ workers poll for their parent's death every second; they must be gone within this."""


# ------------------------------------------------------------------------------------ results
@dataclass
class Outcome:
    """A campaign's result: the failures found and counters for the one-line summary."""

    campaign: str
    trials: int
    seed: int
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def count(self, key: str, amount: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + amount

    def fail(self, trial: int | str, message: str) -> None:
        self.failures.append(f"trial {trial}: {message}")

    def line(self) -> str:
        """One line: verdict, counts, seed, time; the first failure when there is one."""
        verdict = "PASS" if self.ok else f"FAIL ({len(self.failures)} failure(s))"
        counts = ", ".join(f"{key} {value}" for key, value in sorted(self.counts.items()))
        text = f"{self.campaign}: {verdict}; {self.trials} trial(s), seed {self.seed}, {self.seconds:.1f} s"
        if counts:
            text += f" [{counts}]"
        if self.failures:
            text += f"; first: {self.failures[0]}"
        return text


# ---------------------------------------------------------------------------------- children
def child_env() -> dict[str, str]:
    """One thread per process (the machine is shared) and unbuffered output for the logs."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def live_group_members(pgid: int) -> list[int]:
    """PIDs of the group's processes that still run (zombies do not count: they hold nothing)."""
    members = []
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the group is alive if a signal 0 reaches it
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def kill_group(pgid: int) -> None:
    """SIGKILL every process of a group (the cleanup of every child in a ``finally``)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_group_gone(pgid: int, timeout: float = GROUP_EXIT_TIMEOUT_S) -> list[int]:
    """Wait until no process of the group runs; return the survivors after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        members = live_group_members(pgid)
        if not members or time.monotonic() >= deadline:
            return members
        time.sleep(0.05)


class Child:
    """A command in its own session whose output goes to ``log_path``.

    Output goes through a pipe that a thread drains into the log file: a child under an
    ``RLIMIT_FSIZE`` could not write its own messages into a file, and a drained pipe never
    fills up. Always use as a context manager: leaving the block kills the whole process
    group, whatever happened, so no campaign leaves a trainer or a PESQ worker behind.
    """

    def __init__(self, command: Sequence[str], log_path: Path,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.command = list(command)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env(), start_new_session=True, preexec_fn=preexec_fn,
        )
        self.pid = self.process.pid
        self._drain = threading.Thread(target=self._copy_output, name=f"drain-{self.pid}", daemon=True)
        self._drain.start()

    def _copy_output(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        fd = stream.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self._log.write(chunk)
            self._log.flush()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        kill_group(self.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._drain.join(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if it did not exit within ``timeout`` (left running)."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def output(self) -> str:
        """Everything printed so far (after an exit: everything, once the pipe is drained)."""
        if self.process.poll() is not None:
            self._drain.join(timeout=5)
        return self.log_path.read_bytes().decode(errors="replace")


@dataclass
class Completed:
    """A finished child: exit status (None: killed after its timeout), output, wall time."""

    returncode: int | None
    output: str
    seconds: float


def run_child(command: Sequence[str], log_path: Path, timeout: float = RUN_TIMEOUT_S,
              preexec_fn: Callable[[], None] | None = None) -> Completed:
    with Child(command, log_path, preexec_fn) as child:
        code = child.wait(timeout)
        return Completed(code, child.output(), time.monotonic() - child.started)


def bsrnn_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bsrnn", *args]


def torchrun_command(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "bsrnn", "train", *args, "--device", "cpu"]


@contextlib.contextmanager
def _captured_logging(stream: io.StringIO) -> Iterator[None]:
    """Route the root logger to ``stream`` for one in-process command, then put it back."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


def call_main(argv: Sequence[str]) -> Completed:
    """Run ``bsrnn`` in this process (what the command does, minus ~4 s of start-up).

    An exception escaping ``main`` is what a user would see as a traceback, so it is returned
    as output containing ``Traceback`` with exit status 1, never raised.
    """
    from bsrnn.cli.main import main

    buffer = io.StringIO()
    started = time.monotonic()
    with _captured_logging(buffer), contextlib.redirect_stderr(buffer), contextlib.redirect_stdout(buffer):
        try:
            code = main(list(argv))
        except Exception:  # a traceback the user would see: report it, do not stop the campaign
            buffer.write(traceback.format_exc())
            code = 1
    return Completed(code, buffer.getvalue(), time.monotonic() - started)


# --------------------------------------------------------------------------------- workspace
class Workspace:
    """A scratch folder holding the dataset and the uninterrupted reference runs.

    References are computed once and shared by every campaign of an invocation (``all``) or of
    a test module, since an uninterrupted run costs as much as several kill cycles.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._counter = 0
        self._reference: Path | None = None
        self.reference_seconds = 0.0
        self._ddp_reference: Path | None = None

    def fresh_dir(self, prefix: str) -> Path:
        """A new, not yet existing path under the workspace (also when a workdir is reused)."""
        while True:
            self._counter += 1
            path = self.root / f"{prefix}-{self._counter:04d}"
            if not path.exists():
                return path

    @property
    def data_dir(self) -> Path:
        """The small demo dataset on disk, written on first use."""
        path = self.root / "data"
        if not (path / "test" / "noisy").is_dir():
            write_small_corpus(path)
        return path

    def train_args(self, run_dir: Path, *extra: str) -> list[str]:
        """``bsrnn train`` arguments of the campaigns' single-process config."""
        return ["train", *TINY_ARGS, "--data-dir", str(self.data_dir), "--epochs", str(EPOCHS),
                "--save-every-steps", "1", "--run-dir", str(run_dir), *extra]

    def ddp_args(self, run_dir: Path, *extra: str) -> list[str]:
        """Arguments after ``bsrnn train`` for 2 ranks: batch 4 keeps 3 steps per epoch per rank."""
        # torchrun's own parser takes "--monitor" for an abbreviation of its --monitor-interval
        # (ambiguous), so the 2-rank runs keep the default monitor.
        tiny = TINY_ARGS[: TINY_ARGS.index("--monitor")]
        args = [*tiny, "--data-dir", str(self.data_dir), "--epochs", str(EPOCHS),
                "--save-every-steps", "1", "--run-dir", str(run_dir), *extra]
        args[args.index("--batch-size") + 1] = "4"
        return args

    def reference(self) -> Path:
        """The uninterrupted single-process run every interrupted one must reproduce."""
        if self._reference is None:
            run_dir = self.root / "reference"
            self.reference_seconds = self._reference_run(run_dir, bsrnn_command(*self.train_args(run_dir)))
            self._reference = run_dir
        return self._reference

    def _reference_run(self, run_dir: Path, command: list[str]) -> float:
        """Run an uninterrupted reference, or reuse one that a previous invocation completed in
        this workdir with the same command and the same bsrnn source (else it would be stale)."""
        done = run_dir.with_name(run_dir.name + ".done.json")
        key = {"command": command, "source": source_fingerprint()}
        if done.exists() and (run_dir / "checkpoint_last.pt").exists():
            record = json.loads(done.read_text())
            if record.get("key") == key:
                return float(record["seconds"])
        shutil.rmtree(run_dir, ignore_errors=True)
        result = run_child(command, self.root / "logs" / f"{run_dir.name}.log")
        if result.returncode != 0:
            raise RuntimeError(f"the reference run {run_dir.name} failed ({result.returncode}):\n"
                               f"{result.output[-3000:]}")
        done.write_text(json.dumps({"seconds": result.seconds, "key": key}))
        return result.seconds

    def ddp_reference(self) -> Path:
        """The uninterrupted 2-rank run."""
        if self._ddp_reference is None:
            run_dir = self.root / "ddp-reference"
            self._reference_run(run_dir, torchrun_command(*self.ddp_args(run_dir)))
            self._ddp_reference = run_dir
        return self._ddp_reference


def source_fingerprint() -> str:
    """SHA-256 of the installed bsrnn package's Python sources."""
    import bsrnn

    digest = hashlib.sha256()
    for path in sorted(Path(bsrnn.__file__).parent.rglob("*.py")):
        digest.update(path.as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def write_small_corpus(path: Path) -> None:
    """24 training and 4 test pairs of the demo set, 1-2 s long, as 16-bit wavs."""
    from bsrnn.data import demo_corpus, write_corpus

    corpus = demo_corpus(seed=0, num_train=TRAIN_PAIRS, num_test=TEST_PAIRS,
                         train_seconds=(1.0, 2.0), test_seconds=(1.0, 1.5))
    temporary = path.with_name(path.name + ".partial")
    write_corpus(corpus, temporary, overwrite=True)
    os.replace(temporary, path)


# ------------------------------------------------------------------------------- run checks
def read_events(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """Events of ``metrics.jsonl`` and the number of lines that do not parse (torn lines)."""
    events, torn = read_metrics_log(run_dir)
    return events, len(torn)


def last_logged_step(run_dir: Path) -> int:
    """The highest global step any process of the run logged (0 if none)."""
    steps = [event["global_step"] for event in read_events(run_dir)[0] if event.get("event") == "step"]
    return max(steps, default=0)


def losses_by_step(run_dir: Path) -> dict[int, tuple[float, float]]:
    """The last logged (loss, disc_loss) of every global step (``run_files.losses_by_step``)."""
    return logged_losses(read_events(run_dir)[0])


def committed_step(run_dir: Path) -> int | None:
    """``global_step`` of ``checkpoint_last.pt`` (None if there is none yet)."""
    if not (run_dir / "checkpoint_last.pt").exists():
        return None
    return int(load_checkpoint(run_dir, "last").payload["global_step"])


def damaged_checkpoints(run_dir: Path) -> list[str]:
    """Messages for every ``*.pt`` of the run directory that does not verify."""
    if not any(run_dir.glob("*.pt")):
        return []
    try:
        return [f"{result.path.name}: {result.message}" for result in verify(run_dir) if not result.ok]
    except CheckpointError as error:
        return [str(error)]


def digests(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every ``*.pt`` of a run directory (to prove a refused command changed none)."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "not a file"
            for path in sorted(run_dir.glob("*.pt"))}


def leftovers(run_dir: Path) -> list[str]:
    """Files a finished run must not hold: temporaries, and checkpoints beyond last and best."""
    names = sorted(path.name for path in run_dir.iterdir())
    allowed = {"checkpoint_last.pt", "checkpoint_best.pt", "checkpoint_index.json", "config.toml", "metrics.jsonl",
               "status.json", "train.log", ".lock"}
    return [name for name in names if name not in allowed]


def _tensor_differences(prefix: str, a: Any, b: Any) -> list[str]:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
            and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [prefix]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{prefix} keys"]
        return [diff for key in a for diff in _tensor_differences(f"{prefix}.{key}", a[key], b[key])]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{prefix} length"]
        return [diff for i, (x, y) in enumerate(zip(a, b)) for diff in _tensor_differences(f"{prefix}[{i}]", x, y)]
    return [] if a == b or (a != a and b != b) else [f"{prefix} ({a!r} != {b!r})"]


COMPARED_KEYS = (keys.GENERATOR, keys.DISCRIMINATOR, keys.GENERATOR_OPTIMIZER, keys.DISCRIMINATOR_OPTIMIZER,
                 keys.GENERATOR_SCHEDULER, keys.DISCRIMINATOR_SCHEDULER, "epoch", "global_step", "step_in_epoch",
                 "val_loss", "best_val_loss", "val_pesq")


def state_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Every tensor of both networks and optimizers (bit for bit), schedulers and counters."""
    differences = []
    for key in COMPARED_KEYS:
        differences += _tensor_differences(key, a.get(key), b.get(key))
    progress_a = {k: v for k, v in (a.get("progress") or {}).items()}
    progress_b = {k: v for k, v in (b.get("progress") or {}).items()}
    differences += _tensor_differences("progress", progress_a, progress_b)
    return differences


def run_differences(run_dir: Path, reference: Path) -> list[str]:
    """How a finished run differs from the reference: both checkpoints, logged losses, files."""
    problems = []
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        try:
            mine = load_checkpoint(run_dir / name).payload
        except CheckpointError as error:
            problems.append(f"{name}: {error}")
            continue
        theirs = load_checkpoint(reference / name).payload
        differences = state_differences(mine, theirs)
        if differences:
            problems.append(f"{name} differs from the uninterrupted run in {len(differences)} place(s): "
                            f"{', '.join(differences[:4])}")
    if losses_by_step(run_dir) != losses_by_step(reference):
        problems.append("the logged losses differ from the uninterrupted run's")
    torn = read_events(run_dir)[1]
    if torn:
        problems.append(f"metrics.jsonl has {torn} line(s) that are not JSON")
    extra = leftovers(run_dir)
    if extra:
        problems.append(f"left in the run directory: {', '.join(extra)}")
    return problems


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02,
               alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll ``condition`` until true (True), ``timeout`` passes or ``alive`` turns false (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if not alive():
            return condition()
        time.sleep(interval)
    return False


def partial_files(run_dir: Path) -> list[str]:
    """Checkpoint save temporaries currently in the run directory (``.checkpoint_{last,best}.pt.*.partial``;
    not the index's, which is rewritten after a commit)."""
    try:
        return [entry.name for entry in os.scandir(run_dir) if entry.name.endswith(".partial")
                and entry.name.startswith((".checkpoint_last.pt.", ".checkpoint_best.pt."))]
    except FileNotFoundError:
        return []


def timing_of(reference: Path) -> tuple[float, float]:
    """(seconds per training step, seconds of a validation) measured on the reference run."""
    events = read_events(reference)[0]
    steps = [e for e in events if e.get("event") == "step"]
    gaps = [b["time"] - a["time"] for a, b in zip(steps, steps[1:]) if b["step"] > a["step"]]
    step_s = sum(gaps) / len(gaps) if gaps else 1.0
    validations = []
    for event in events:
        if event.get("event") == "epoch":
            before = [s["time"] for s in steps if s["global_step"] == event["global_step"]]
            if before:
                validations.append(event["time"] - before[-1])
    return step_s, (sum(validations) / len(validations) if validations else 1.0)


def json_line(**fields: Any) -> str:
    return json.dumps(fields, sort_keys=True)
