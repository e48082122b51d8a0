"""Checkpoint I/O benchmark: the durable, verified checkpoint engine against raw file I/O.

Why: ``CheckpointManager`` promises crash-proof, verified files (temp file, fsync, digest,
read-back check, rename, directory fsync) and ``load_checkpoint`` hashes every byte before
unpickling. This script measures what those guarantees cost on a ~1 GiB training state (an
85 M parameter stack of ``nn.Linear`` layers plus Adam state after one step), against the
floor that the machine itself sets: writing and fsyncing the very same bytes with ``os.write``,
and reading them back with one ``read``. Everything is measured in one process, round-robin
(one repetition of every step, then the next; each round starts one step later), so that load
from other users of a shared machine spreads evenly over the steps; the figures are medians.

Each step runs twice in a row and the second run is the headline figure. Why: on the VM this
was written on, memory the guest has freed goes back to the hypervisor within seconds, and the
next first touch of it costs ~2-3 CPU seconds per GiB (``perf``: the time lands in the kernel's
copy into fresh page-cache pages). Whichever step happened to allocate after a pause paid that,
which made single runs vary 5x. Run straight after itself, a step reuses the memory its first
run just freed: that measures the engine, not the hypervisor. The first runs are printed too.
The CPU column (this process, all threads) separates work from waiting for a shared core.

Each digest a checkpoint may carry (``trailer.DIGESTS``: the current xxh3-128 and format 1's
SHA-256) is also timed on the durable write path itself, in the same rounds: the temporary file
written by ``write_checkpoint`` with read-back verification, fsync, rename, directory fsync,
which is what ``CheckpointManager`` does for a last-only save minus building the payload and
rewriting the index. So the cost of the digest shows as the difference between two rows
measured side by side, and each is given as a ratio to the raw write (issue 13's target for the
durable save: 0.7 of a raw write, on a quiet machine). The load average is printed at the start
and at the end: with other work on the cores, the hashing thread gets no core of its own.

    .venv/bin/python benchmarks/checkpoint_io.py                 # ~1 GiB, 5 repetitions
    .venv/bin/python benchmarks/checkpoint_io.py --params 25e6 --repeats 3   # ~0.28 GiB, ~2 min
    .venv/bin/python benchmarks/checkpoint_io.py --params 5e6 --repeats 3   # quick check

Cold reads need the file out of the page cache. The script fsyncs it and asks the kernel to
drop it with ``posix_fadvise(POSIX_FADV_DONTNEED)``, then checks with ``mincore`` how much
of it is still resident; only if that did not work it tries ``/proc/sys/vm/drop_caches``
(machine-wide, needs root). The method that worked is printed.
"""

from __future__ import annotations

import argparse
import ctypes
import io
import math
import mmap
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import bsrnn.checkpoint
from bsrnn.checkpoint import CheckpointManager, atomic, load_checkpoint
from bsrnn.checkpoint.fileformat import DIGEST, DIGESTS, write_checkpoint, write_file_durably
from bsrnn.checkpoint.snapshot import StagingBuffers

REPO_ROOT = Path(__file__).resolve().parents[1]
DIGEST_NAMES = tuple(algorithm.name for algorithm in DIGESTS)
OPERATIONS = (
    "raw_write", "torch_save", *(f"durable_write_{name}" for name in DIGEST_NAMES),
    "durable_last", "durable_best", "async_stall", "async_total", "raw_read_cold", "raw_read_warm", "load_cold", "load_warm",
)
LABELS = {
    "raw_write": "raw os.write + fsync",
    "torch_save": "torch.save + fsync",
    **{f"durable_write_{name}": f"durable write path, {name}" for name in DIGEST_NAMES},
    "durable_last": f"durable save, last only (sync, {DIGEST.name})",
    "durable_best": "durable save, last + best (sync)",
    "async_stall": "async save: save() stall",
    "async_total": "async save: stall + background write",
    "raw_read_cold": "raw read, cold",
    "raw_read_warm": "raw read, warm",
    "load_cold": "verified load_checkpoint, cold",
    "load_warm": "verified load_checkpoint, warm",
}
GB = 1e9

# Targets from the engine's performance brief (see BENCHMARKS.md, "Checkpoint I/O").
TARGET_SAVE_VS_RAW = 0.9  # raw write time / durable save time
TARGET_STALL_FRACTION = 0.10  # async save() stall / durable save time
TARGET_LOAD_VS_RAW = 0.9  # verified-load throughput / raw cold-read throughput
TARGET_DIGEST_SAVE_VS_RAW = 0.7  # raw write time / durable write time, per digest (issue 13, section 3)


# --------------------------------------------------------------------------------- the state
def build_state(params: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A stack of square ``nn.Linear`` layers with about ``params`` parameters, after one Adam step.

    One optimizer step creates ``exp_avg`` and ``exp_avg_sq`` for every parameter, so the
    checkpoint holds three float32 copies of the model (85 M parameters -> ~1 GiB), which is
    what a real resume file of such a model weighs. Gradients are random (no forward pass is
    needed to create optimizer state) and freed afterwards.
    """
    width = max(8, min(2048, int(math.sqrt(params / 8))))
    layers = max(1, round(params / (width * width + width)))
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


# ------------------------------------------------------------------------- page-cache control
_libc: ctypes.CDLL | None = None


def _load_libc() -> ctypes.CDLL | None:
    """libc with ``mmap``/``mincore`` typed, or None where there is none (non-Linux)."""
    global _libc
    if _libc is None and sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        _libc = libc
    return _libc


def resident_fraction(path: Path) -> float | None:
    """Fraction of ``path``'s pages in the page cache (``mincore``), None if it cannot be asked.

    This is how the script knows that a "cold" read really goes to the disk, rather than
    assuming that an eviction request was honoured.
    """
    libc = _load_libc()
    size = path.stat().st_size
    if libc is None or size == 0:
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vector = (ctypes.c_ubyte * pages)()
            if libc.mincore(address, size, vector) != 0:
                return None
            resident = pages - bytes(vector).count(b"\x00")  # bit 0 set = resident
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)
    return resident / pages


def evict(path: Path) -> tuple[str, float | None]:
    """Drop ``path`` from the page cache; return (method that worked, fraction still resident).

    fsync first: dirty pages cannot be dropped. ``posix_fadvise`` touches only this file; the
    machine-wide ``drop_caches`` is tried only when the file is still cached afterwards.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    resident = resident_fraction(path)
    if resident is None:
        return "posix_fadvise(DONTNEED), residency not checkable", None
    if resident <= 0.01:
        return "posix_fadvise(DONTNEED)", resident
    try:
        with open("/proc/sys/vm/drop_caches", "w") as control:
            control.write("1\n")
    except OSError as error:
        return f"posix_fadvise(DONTNEED) only partly; drop_caches refused ({error.strerror})", resident
    return "drop_caches", resident_fraction(path)


# ------------------------------------------------------------------------------- operations
@dataclass
class Sample:
    """One timed run: wall-clock seconds and the CPU seconds of this process (all threads)."""

    wall: float
    cpu: float


def timed(operation: Callable[[], object]) -> Sample:
    """Time ``operation`` (its result is dropped outside the timing).

    CPU time is recorded too because the machine is shared: wall time then includes waiting
    for a core, CPU time shows the work itself (kernel copies and page faults included).
    """
    cpu_before = time.process_time()
    started = time.perf_counter()
    result = operation()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    del result
    return Sample(elapsed, cpu)


RAW_WRITE_PIECE = 8 * 1024 * 1024


def raw_write(path: Path, data: bytes) -> None:
    """The floor for a save: ``os.write`` the checkpoint's bytes to a new file, fsync, close.

    In 8 MiB pieces: on this VM one 1 GiB ``write`` call was sometimes markedly slower, and the
    floor should be the best plain writing can do.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view[:RAW_WRITE_PIECE]) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def plain_torch_save(path: Path, state: dict[str, object]) -> None:
    """What a training script without the engine does: ``torch.save`` to a file, then fsync."""
    with open(path, "xb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())


def durable_write(path: Path, payload: dict[str, object], digest: str) -> str:
    """The engine's commit of a last-only save with ``digest``: what the manager does, minus bookkeeping.

    A temporary beside ``path``, written by ``write_checkpoint`` with every piece read back and
    compared, fsynced, renamed over ``path``, directory fsynced: the manager's commit, step by step.
    """
    temporary = atomic.temporary_path(path)
    written = write_file_durably(
        temporary, lambda handle: write_checkpoint(payload, handle, verify=True, digest=digest)
    )
    atomic.commit(temporary, path)
    return written


def raw_read(path: Path) -> int:
    """The floor for a load: one ``read`` of the whole file into memory."""
    with open(path, "rb", buffering=0) as handle:
        return len(handle.readall())


def unlink(path: Path) -> None:
    """Remove a benchmark file (outside the timings)."""
    path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------- report
def median_wall(samples: list[Sample]) -> float:
    return statistics.median(sample.wall for sample in samples)


def print_row(name: str, samples: list[Sample], size: int) -> None:
    """One table row: median wall ms, GB/s at that median, median CPU ms, every repetition."""
    median = median_wall(samples)
    cpu = statistics.median(sample.cpu for sample in samples)
    runs = " ".join(f"{sample.wall * 1e3:.0f}" for sample in samples)
    print(f"  {name:<40} {median * 1e3:8.0f} ms {size / GB / median:6.2f} GB/s {cpu * 1e3:8.0f} ms   [{runs}]")


def print_ratio(name: str, value: float, target: float, higher_is_better: bool) -> None:
    """A ratio with its target and whether this run met it."""
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    print(f"  {name:<52} {value:6.3f}   target {sign} {target:.2f}   {'met' if met else 'NOT MET'}")


def filesystem_of(path: Path) -> str:
    """The mount (device, type) holding ``path``, from /proc/mounts: tmpfs would void the test."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    best = ("", "unknown", "unknown")
    resolved = str(path.resolve())
    for line in mounts:
        device, mount_point, fs_type = line.split()[:3]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best[0]):
            best = (mount_point, device, fs_type)
    return f"{best[1]} ({best[2]}, mounted on {best[0]})"


# ------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=float, default=85e6, help="model parameters (default 85e6 -> ~1 GiB state)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions of each operation (default 5)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=REPO_ROOT / "runs" if (REPO_ROOT / "runs").is_dir() else Path(tempfile.gettempdir()),
        help="where the scratch directory goes; must be the real disk, not tmpfs (default: runs/)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    args.dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="checkpoint_io_bench.", dir=args.dir))
    try:
        run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def run(args: argparse.Namespace, scratch: Path) -> None:
    load_before = os.getloadavg()
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"torch threads {torch.get_num_threads()}")
    print(f"engine: {Path(bsrnn.checkpoint.__file__).parent}; digests {', '.join(DIGEST_NAMES)}, "
          f"new files {DIGEST.name}")
    print(f"scratch directory {scratch} on {filesystem_of(scratch)}")
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")

    model, optimizer = build_state(args.params)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    state = {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict()}

    managers: dict[str, CheckpointManager] = {}
    for name, async_save in (("last", False), ("best", False), ("async", True)):
        manager = CheckpointManager(scratch / name, monitor="val_loss", mode="min", async_save=async_save)
        manager.register("model_state_dict", model)
        manager.register("optimizer_state_dict", optimizer)
        managers[name] = manager

    # The bytes for the raw baselines are the engine's own checkpoint file.
    managers["last"].save(values={"epoch": 0})
    checkpoint = managers["last"].last_path
    blob = checkpoint.read_bytes()
    size = len(blob)
    print(f"state: {parameters / 1e6:.1f} M parameters + Adam state, checkpoint {size / 2**30:.3f} GiB "
          f"({size:,} bytes); {args.repeats} rounds, every step run twice in a row per round")

    samples: dict[str, list[Sample]] = {key: [] for key in OPERATIONS}  # run straight after itself
    samples_first: dict[str, list[Sample]] = {key: [] for key in OPERATIONS}  # run after another step
    evictions: list[tuple[str, float | None]] = []
    metric = [1e9]
    raw_path = scratch / "raw.bin"
    plain_path = scratch / "plain.pt"
    payload = {"format": bsrnn.checkpoint.FORMAT_NAME, "format_version": bsrnn.checkpoint.FORMAT_VERSION, **state}
    digest_paths = {name: scratch / f"digest-{name}.pt" for name in DIGEST_NAMES}

    def run_step(step: str) -> dict[str, Sample]:
        """Execute one step once; set-up (eviction) and clean-up (unlink) are not timed."""
        if step == "raw_write":
            sample = timed(lambda: raw_write(raw_path, blob))
            unlink(raw_path)
            return {"raw_write": sample}
        if step == "torch_save":
            sample = timed(lambda: plain_torch_save(plain_path, state))
            unlink(plain_path)
            return {"torch_save": sample}
        if step.startswith("durable_write_"):
            name = step.removeprefix("durable_write_")
            return {step: timed(lambda: durable_write(digest_paths[name], payload, name))}
        if step == "durable_last":
            return {"durable_last": timed(lambda: managers["last"].save(values={"epoch": 1}))}
        if step == "durable_best":
            metric[0] -= 1.0  # strictly improving: every save writes last and best
            return {"durable_best": timed(lambda: managers["best"].save(metric=metric[0], values={"epoch": 1}))}
        if step == "async":
            stall = timed(lambda: managers["async"].save(values={"epoch": 1}))
            finish = timed(managers["async"].wait_until_finished)
            return {"async_stall": stall, "async_total": Sample(stall.wall + finish.wall, stall.cpu + finish.cpu)}
        operation = {"raw_read": lambda: raw_read(checkpoint), "load": lambda: load_checkpoint(checkpoint)}[step]
        evictions.append(evict(checkpoint))
        cold = timed(operation)
        warm = timed(operation)  # straight after the cold read: the file is in the page cache
        return {f"{step}_cold": cold, f"{step}_warm": warm}

    first_async_stall = run_step("async")["async_stall"]  # allocates the staging buffers once
    steps = ["raw_write", "torch_save", *(f"durable_write_{name}" for name in DIGEST_NAMES), "durable_last",
             "durable_best", "async", "raw_read", "load"]
    for round_index in range(args.repeats):
        # Each round starts one step later, so that no step always follows the same one. Each
        # step runs twice in a row; the second run is the headline figure (see the docstring).
        shift = round_index % len(steps)
        for step in steps[shift:] + steps[:shift]:
            for key, sample in run_step(step).items():
                samples_first[key].append(sample)
            for key, sample in run_step(step).items():
                samples[key].append(sample)

    for manager in managers.values():
        manager.close()

    # Context for the limits: the unavoidable CPU passes over the bytes, each alone.
    hash_samples = {
        algorithm.name: [timed(lambda: algorithm.hexdigest(blob)) for _ in range(3)] for algorithm in DIGESTS
    }
    serialize_samples = [timed(lambda: torch.save(state, _NullSink())) for _ in range(3)]
    staging = StagingBuffers()
    staging.snapshot(state)  # allocate once, as the async manager does at its first save
    snapshot_samples = [timed(lambda: staging.snapshot(state)) for _ in range(3)]
    del staging

    load_after = os.getloadavg()
    methods = sorted({method for method, _ in evictions})
    worst_residency = max((residency or 0.0 for _, residency in evictions), default=0.0)
    print(f"cache eviction for cold reads: {', '.join(methods)}; "
          f"at most {worst_residency:.1%} of the file still cached after eviction (mincore)")
    print()
    print(f"  {'operation':<40} {'median wall':>11} {'at median':>11} {'median CPU':>11}   [each repetition, wall ms]")
    for key in OPERATIONS:
        print_row(LABELS[key], samples[key], size)
    print("  context, each alone in memory:")
    for name, hashed in hash_samples.items():
        print_row(f"{name} digest (one thread)", hashed, size)
    print_row("torch.save to a null sink (CRC32 on)", serialize_samples, size)
    print_row("snapshot into reused staging buffers", snapshot_samples, size)
    print(f"  first async save() stall (allocates the staging buffers): {first_async_stall.wall * 1e3:.0f} ms")
    print()
    print("  the same steps, first of the two runs (after a different step; see the docstring):")
    for key in OPERATIONS:
        print_row(LABELS[key], samples_first[key], size)
    print()

    for name in DIGEST_NAMES:
        print_ratio(f"raw write / durable write path, {name}",
                    median_wall(samples["raw_write"]) / median_wall(samples[f"durable_write_{name}"]),
                    TARGET_DIGEST_SAVE_VS_RAW, higher_is_better=True)
    for name in DIGEST_NAMES:
        cpu = statistics.median(sample.cpu for sample in samples[f"durable_write_{name}"])
        print(f"  {'CPU s per GiB, durable write path, ' + name:<52} {cpu / (size / 2**30):6.3f}   (informative)")
    durable = median_wall(samples["durable_last"])
    print_ratio("raw write / durable save (last only)", median_wall(samples["raw_write"]) / durable,
                TARGET_SAVE_VS_RAW, higher_is_better=True)
    print(f"  {'torch.save+fsync / durable save (last only)':<52} "
          f"{median_wall(samples['torch_save']) / durable:6.3f}   (informative)")
    print(f"  {'durable last+best / durable last only':<52} "
          f"{median_wall(samples['durable_best']) / durable:6.3f}   (informative)")
    print_ratio("async save() stall / durable save", median_wall(samples["async_stall"]) / durable,
                TARGET_STALL_FRACTION, higher_is_better=False)
    print_ratio("verified load / raw read throughput, cold",
                median_wall(samples["raw_read_cold"]) / median_wall(samples["load_cold"]),
                TARGET_LOAD_VS_RAW, higher_is_better=True)
    print(f"  {'verified load / raw read throughput, warm':<52} "
          f"{median_wall(samples['raw_read_warm']) / median_wall(samples['load_warm']):6.3f}   "
          "(informative)")
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")


class _NullSink(io.RawIOBase):
    """A stream that discards what it is given: times ``torch.save``'s own CPU work alone."""

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        return memoryview(data).nbytes  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
