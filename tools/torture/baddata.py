"""``baddata``: every kind of broken dataset stops the run before its first step.

A small valid dataset, broken one way per case (missing split, name mismatch, empty, not a wav,
wrong rate, stereo, too short, unreadable, NaN/inf samples, silence, ...). Every case must exit
2 naming the file (or folder) before the first step: no checkpoint, no step.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile

from torture.common import (
    Outcome,
    Workspace,
    bsrnn_command,
    call_main,
    read_events,
    run_child,
)

TRAIN_READS = ("train", "valid")
"""The splits ``bsrnn train`` reads (the dataset has its own ``valid`` folder); the test split is
``evaluate``'s alone, so breaking it must not stop training."""

Breaker = Callable[[Path, random.Random], tuple[str, bool]]
"""Breaks the dataset under the path; returns the text the error must contain and whether the
case could be built (False: skipped, e.g. permissions do not bind root)."""


def _a_wav(data: Path, rng: random.Random, split: str | None = None, side: str | None = None) -> Path:
    split = split or rng.choice(TRAIN_READS)
    side = side or rng.choice(("clean", "noisy"))
    return rng.choice(sorted((data / split / side).glob("*.wav")))


def _rewrite(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> None:
    soundfile.write(str(path), samples, rate, subtype=subtype)


def _samples(path: Path) -> np.ndarray:
    return soundfile.read(str(path), dtype="float32")[0]


def _missing_split(data: Path, rng: random.Random) -> tuple[str, bool]:
    split = "train"  # without its valid folder a dataset is still whole: train holds out pairs
    shutil.rmtree(data / split)
    return str(data / split / "clean"), True


def _missing_side(data: Path, rng: random.Random) -> tuple[str, bool]:
    folder = data / rng.choice(TRAIN_READS) / rng.choice(("clean", "noisy"))
    shutil.rmtree(folder)
    return str(folder), True


def _no_wavs(data: Path, rng: random.Random) -> tuple[str, bool]:
    folder = data / rng.choice(TRAIN_READS) / rng.choice(("clean", "noisy"))
    for path in folder.glob("*.wav"):
        path.unlink()
    return str(folder), True


def _name_mismatch(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    path.rename(path.with_name(path.stem + "_renamed.wav"))
    return path.stem, True


def _empty(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    path.write_bytes(b"")
    return str(path), True


def _header_only(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    _rewrite(path, np.zeros(0, dtype=np.float32), 16000)
    return str(path), True


def _not_wav(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    path.write_text("this is not audio\n" * rng.randint(1, 50))
    return str(path), True


def _damaged_header(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    raw = bytearray(path.read_bytes())
    raw[12:44] = bytes(rng.randrange(256) for _ in range(32))
    path.write_bytes(bytes(raw))
    return str(path), True


def _wrong_rate(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    _rewrite(path, _samples(path), rng.choice((8000, 22050, 44100, 48000)))
    return str(path), True


def _stereo(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    samples = _samples(path)
    _rewrite(path, np.stack([samples, samples], axis=1), 16000)
    return str(path), True


def _too_short(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    _rewrite(path, _samples(path)[: rng.randint(1, 511)], 16000)
    return str(path), True


def _length_mismatch(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    _rewrite(path, _samples(path)[: -rng.randint(1, 200)], 16000)
    return path.name, True


def _unreadable(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    path.chmod(0)
    if os.access(path, os.R_OK):  # root reads anything: the case cannot be built here
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        return str(path), False
    return str(path), True


def _non_finite(value: float) -> Breaker:
    def breaker(data: Path, rng: random.Random) -> tuple[str, bool]:
        path = _a_wav(data, rng)
        samples = _samples(path)
        samples[rng.randrange(samples.size)] = value
        _rewrite(path, samples, 16000, subtype="FLOAT")
        return str(path), True

    return breaker


def _silent(data: Path, rng: random.Random) -> tuple[str, bool]:
    path = _a_wav(data, rng)
    _rewrite(path, np.zeros_like(_samples(path)), 16000)
    return str(path), True


def _data_dir_is_a_file(data: Path, rng: random.Random) -> tuple[str, bool]:
    shutil.rmtree(data)
    data.write_text("not a folder")
    return str(data), True


def _data_dir_missing(data: Path, rng: random.Random) -> tuple[str, bool]:
    shutil.rmtree(data)
    return str(data), True


BREAKERS: dict[str, Breaker] = {
    "missing_split": _missing_split, "missing_side": _missing_side, "no_wavs": _no_wavs,
    "name_mismatch": _name_mismatch, "empty_wav": _empty, "header_only_wav": _header_only,
    "not_a_wav": _not_wav, "damaged_header": _damaged_header, "wrong_rate": _wrong_rate, "stereo": _stereo,
    "too_short": _too_short, "length_mismatch": _length_mismatch, "unreadable": _unreadable,
    "nan_samples": _non_finite(math.nan), "inf_samples": _non_finite(math.inf), "all_silent": _silent,
    "data_dir_is_a_file": _data_dir_is_a_file, "data_dir_missing": _data_dir_missing,
}


def baddata_campaign(workspace: Workspace, trials: int, seed: int, cli_checks: int = 3) -> Outcome:
    """``trials`` rounds of the whole matrix, each case breaking a randomly chosen file."""
    outcome = Outcome("baddata", trials, seed)
    rng = random.Random(seed)
    valid = workspace.data_dir
    cli_done = 0
    for round_index in range(trials):
        for case_index, (name, breaker) in enumerate(BREAKERS.items()):
            trial = f"{round_index}.{name}"
            case = workspace.fresh_dir(f"baddata-{name}")
            data, run_dir = case / "data", case / "run"
            shutil.copytree(valid, data)
            expected, built = breaker(data, rng)
            if not built:
                outcome.count(f"skipped_{name}")
                continue
            argv = ["train", "--data-dir", str(data), "--run-dir", str(run_dir), "--epochs", "1",
                    "--num-channel", "4", "--num-layer", "1", "--batch-size", "8", "--cut-len", "8000",
                    "--pesq-workers", "0"]
            results = [("in process", call_main(argv))]
            if cli_done < cli_checks and (case_index + round_index) % max(len(BREAKERS) // cli_checks, 1) == 0:
                log = workspace.root / "logs" / f"baddata-{round_index}-{name}.log"
                results.append(("bsrnn", run_child(bsrnn_command(*argv), log)))
                cli_done += 1
                outcome.count("cli_runs")
            for how, result in results:
                last = (result.output.strip().splitlines() or [""])[-1]
                if result.returncode != 2:
                    outcome.fail(trial, f"{how}: exit {result.returncode}, expected 2: {last}")
                if "Traceback" in result.output:
                    outcome.fail(trial, f"{how}: a traceback: {last}")
                if expected not in result.output:
                    outcome.fail(trial, f"{how}: the message does not name {expected}: {result.output[-400:]!r}")
                if any(run_dir.glob("*.pt")) or any(e.get("event") == "step" for e in read_events(run_dir)[0]):
                    outcome.fail(trial, f"{how}: a step ran or a checkpoint was written before the refusal")
            outcome.count("cases")
    return outcome
