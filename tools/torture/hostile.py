"""``hostile``: files made to hurt are refused, and their code never runs.

Files made to hurt: pickles that run code (as ``checkpoint_last.pt``, as ``--resume`` target,
given to every command that loads), zips and torch files that are not checkpoints, checkpoints
with the wrong architecture or re-hashed wrong shapes, empty files, directories where files
belong. Each must be refused with exit 2 and a message, without a traceback, without the payload
running, before any training step.
"""

from __future__ import annotations

import pickle
import random
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bsrnn import keys
from bsrnn.checkpoint import fileformat, load_checkpoint
from bsrnn.checkpoint.lock import RunDirectoryBusyError, RunDirectoryLock
from torture.common import Completed, Outcome, Workspace, bsrnn_command, call_main, digests, run_child


class _Payload:
    """Unpickling this runs code: it creates the marker file. It must never happen."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, (f"open({self.marker!r}, 'w').close()",)


def hashed(payload: Any, path: Path) -> Path:
    """``payload`` written as a checkpoint with a *valid* digest: only its content can betray it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        fileformat.write_checkpoint(payload, handle)
    return path


def hashed_bytes(data: bytes, path: Path) -> Path:
    """Any zip's bytes given a valid bsrnn digest trailer (a forged, well-formed trailer)."""
    assert data[-22:-18] == b"PK\x05\x06" and data[-2:] == b"\0\0"
    body = data[:-2]
    digest = fileformat.DIGEST
    path.write_bytes(body + digest.comment_field(digest.hexdigest(body)))
    return path


@dataclass
class Case:
    """One hostile situation: commands to run in a prepared folder and what each must say."""

    name: str
    commands: list[tuple[list[str], int, str]]  # (argv, expected exit status, expected text)
    run_dirs: list[Path]  # must hold no new checkpoint afterwards


def _real_payload(reference: Path) -> dict[str, Any]:
    return load_checkpoint(reference / "checkpoint_last.pt").payload


def _reshaped(payload: dict[str, Any], rng: random.Random, section: str) -> tuple[dict[str, Any], str]:
    """A copy of ``payload`` with one tensor of ``section`` given a wrong shape."""
    payload = {key: value for key, value in payload.items()}
    if section.startswith("optimizer"):
        state = {k: dict(v) for k, v in payload[section]["state"].items()}
        index = rng.choice(sorted(state))
        name = rng.choice([n for n, v in state[index].items() if isinstance(v, torch.Tensor) and v.dim() > 0])
        tensor = state[index][name]
        state[index][name] = torch.zeros(tensor.numel() + 1)
        payload[section] = {**payload[section], "state": state}
        return payload, f"{section}[{index}].{name}"
    weights = dict(payload[section])
    name = rng.choice([n for n, v in weights.items() if v.dim() > 0])
    weights[name] = torch.zeros(*weights[name].shape[:-1], weights[name].shape[-1] + 1)
    payload[section] = weights
    return payload, f"{section}.{name}"


def hostile_cases(workspace: Workspace, root: Path, rng: random.Random, marker: Path) -> list[Case]:
    """Every hostile situation, freshly built under ``root``."""
    reference = workspace.reference()
    data = str(workspace.data_dir)
    real = _real_payload(reference)
    evil_state = {"format": fileformat.FORMAT_NAME, "format_version": fileformat.FORMAT_VERSION,
                  keys.GENERATOR: {"weight": _Payload(marker)}, "epoch": 0}
    evil_files = {
        "raw-pickle": lambda p: p.write_bytes(pickle.dumps({"epoch": _Payload(marker)})),
        "torch-pickle": lambda p: torch.save({"epoch": _Payload(marker)}, p),
        "hashed-pickle": lambda p: hashed(evil_state, p),
    }
    cases: list[Case] = []

    def run_dir_with(name: str, builder: Callable[[Path], Any], with_best: bool = False) -> Path:
        run_dir = root / name
        run_dir.mkdir(parents=True)
        builder(run_dir / "checkpoint_last.pt")
        if with_best:
            shutil.copy(reference / "checkpoint_best.pt", run_dir / "checkpoint_best.pt")
        return run_dir

    def train(run_dir: Path, *extra: str) -> list[str]:
        return workspace.train_args(run_dir, *extra)

    refused = "is not a bsrnn checkpoint"
    for kind, builder in evil_files.items():
        run_dir = run_dir_with(f"{kind}-last", builder)
        cases.append(Case(f"{kind} as checkpoint_last.pt", [(train(run_dir, "--resume"), 2, refused)], [run_dir]))
        evil = root / f"{kind}.pt"
        builder(evil)
        fresh = root / f"{kind}-fresh"
        fresh_dir = root / f"{kind}-fresh-dir"
        cases.append(Case(f"{kind} as --resume FILE", [(train(fresh, "--resume", str(evil)), 2, refused)], [fresh]))
        cases.append(Case(f"{kind} as --resume DIR", [(train(fresh_dir, "--resume", str(run_dir)), 2, refused)],
                          [fresh_dir]))
        cases.append(Case(f"{kind} given to every loading command", [
            (["ckpt", "inspect", str(evil)], 2, refused),
            (["ckpt", "verify", str(evil)], 1, f"FAIL {evil}"),
            (["ckpt", "export", str(evil), "--out", str(root / f"{kind}.safetensors")], 2, refused),
            (["evaluate", str(evil), "--data-dir", data], 2, refused),
            (["enhance", str(evil), str(next((workspace.data_dir / "test" / "noisy").glob("*.wav"))),
              "--out", str(root / f"{kind}-enhanced")], 2, refused),
        ], []))

    def zip_not_checkpoint(path: Path) -> None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "a zip, not a checkpoint")

    run_dir = run_dir_with("zip", zip_not_checkpoint)
    cases.append(Case("a zip that is not a checkpoint", [(train(run_dir, "--resume"), 2, refused)], [run_dir]))

    def forged_zip(path: Path) -> None:
        zip_not_checkpoint(path)
        hashed_bytes(path.read_bytes(), path)

    run_dir = run_dir_with("forged-zip", forged_zip)
    cases.append(Case("a zip with a forged valid trailer", [(train(run_dir, "--resume"), 2, "checkpoint_last.pt")],
                      [run_dir]))
    other_tool = {"model": real[keys.GENERATOR], "epoch": 3, "optimizer": real[keys.GENERATOR_OPTIMIZER]}
    run_dir = run_dir_with("other-tool", lambda p: torch.save(other_tool, p))
    cases.append(Case("another tool's torch.save dict", [(train(run_dir, "--resume"), 2, refused)], [run_dir]))
    run_dir = run_dir_with("other-tool-hashed", lambda p: hashed(other_tool, p))
    cases.append(Case("another tool's dict with a valid trailer", [(train(run_dir, "--resume"), 2, refused)],
                      [run_dir]))
    run_dir = run_dir_with("newer-format", lambda p: hashed({**real, "format_version": 99}, p))
    cases.append(Case("a newer format version", [(train(run_dir, "--resume"), 2, "newer than this bsrnn")],
                      [run_dir]))
    run_dir = run_dir_with("architecture", lambda p: shutil.copy(reference / "checkpoint_last.pt", p))
    cases.append(Case("a checkpoint of another num_channel, flags conflicting",
                      [(train(run_dir, "--resume", "--num-channel", "8"), 2, "num_channel: checkpoint 4, config 8")],
                      []))
    for section in (*keys.NETWORKS, *keys.OPTIMIZERS):
        payload, where = _reshaped(real, rng, section)
        run_dir = run_dir_with(f"reshaped-{section}", lambda p, payload=payload: hashed(payload, p))
        cases.append(Case(f"re-hashed checkpoint with {where} reshaped",
                          [(train(run_dir, "--resume", "--epochs", "3"), 2, "checkpoint_last.pt")], []))
    missing = {**real, keys.DISCRIMINATOR: dict(list(real[keys.DISCRIMINATOR].items())[1:])}
    run_dir = run_dir_with("missing-tensor", lambda p: hashed(missing, p))
    cases.append(Case("re-hashed checkpoint with a tensor missing",
                      [(train(run_dir, "--resume", "--epochs", "3"), 2, "checkpoint_last.pt")], []))
    malformed = {**real, "config": "not a table", "epoch": "seven"}
    run_dir = run_dir_with("malformed", lambda p: hashed(malformed, p))
    cases.append(Case("re-hashed checkpoint with malformed values", [(train(run_dir, "--resume"), 2, "checkpoint_last.pt")],
                      []))
    run_dir = run_dir_with("empty", lambda p: p.write_bytes(b""))
    cases.append(Case("an empty checkpoint_last.pt", [(train(run_dir, "--resume"), 2, "empty")], [run_dir]))
    run_dir = run_dir_with("directory", lambda p: p.mkdir())
    cases.append(Case("a directory as checkpoint_last.pt", [(train(run_dir, "--resume"), 2, "directory")], [run_dir]))
    run_dir = run_dir_with("directory-with-best", lambda p: p.mkdir(), with_best=True)
    cases.append(Case("a directory as checkpoint_last.pt beside a good best",
                      [(train(run_dir, "--resume"), 2, "directory")], []))
    a_file = root / "run-dir-is-a-file"
    a_file.write_text("not a folder")
    cases.append(Case("--run-dir naming a file", [(train(a_file), 2, str(a_file))], []))
    cases.append(Case("--resume of a missing directory",
                      [(train(root / "nowhere-run", "--resume", str(root / "nowhere")), 2, "Checkpoint not found")], []))
    return cases


def _lock_is_free(run_dir: Path) -> bool:
    if not run_dir.is_dir():
        return True
    try:
        lock = RunDirectoryLock(run_dir).acquire()
    except RunDirectoryBusyError:
        return False
    lock.release()
    return True


def judge(outcome: Outcome, trial: str, result: Completed, expected_code: int, expected_text: str,
          marker: Path, how: str) -> None:
    last = (result.output.strip().splitlines() or [""])[-1]
    if marker.exists():
        outcome.fail(trial, f"{how}: THE PAYLOAD RAN (marker {marker} exists)")
        marker.unlink()
    if result.returncode != expected_code:
        outcome.fail(trial, f"{how}: exit {result.returncode}, expected {expected_code}: {last}")
    if "Traceback" in result.output:
        outcome.fail(trial, f"{how}: a traceback: {last}")
    if expected_text not in result.output:
        outcome.fail(trial, f"{how}: the message lacks {expected_text!r}: {last}")
    if "Epoch 0, Step" in result.output or "Saved checkpoint" in result.output:
        outcome.fail(trial, f"{how}: training started before the refusal")


def hostile_campaign(workspace: Workspace, trials: int, seed: int, cli_checks: int = 3) -> Outcome:
    """``trials`` rounds of every hostile case (fresh files, random tensors); see the module doc."""
    outcome = Outcome("hostile", trials, seed)
    rng = random.Random(seed)
    cli_done = 0
    for round_index in range(trials):
        root = workspace.fresh_dir("hostile")
        marker = root / "PAYLOAD_RAN"
        cases = hostile_cases(workspace, root, rng, marker)
        for case_index, case in enumerate(cases):
            for argv, code, text in case.commands:
                trial = f"{round_index}.{case_index} {case.name} ({argv[0]}{' ' + argv[1] if argv[0] == 'ckpt' else ''})"
                before = {d: digests(d) if d.is_dir() else {} for d in case.run_dirs}
                judge(outcome, trial, call_main(argv), code, text, marker, "in process")
                outcome.count("commands")
                if argv[0] == "train":
                    run_dir = Path(argv[argv.index("--run-dir") + 1])
                    if not _lock_is_free(run_dir):
                        outcome.fail(trial, f"after the refusal, {run_dir} stays locked by this process")
                if cli_done < cli_checks and (case_index + round_index) % max(len(cases) // cli_checks, 1) == 0:
                    log = workspace.root / "logs" / f"hostile-{round_index}-{case_index}.log"
                    judge(outcome, trial, run_child(bsrnn_command(*argv), log), code, text, marker, "bsrnn")
                    outcome.count("cli_commands")
                    cli_done += 1
                for run_dir, digest in before.items():
                    if run_dir.is_dir() and digests(run_dir) != digest:
                        outcome.fail(trial, f"{run_dir.name}: checkpoints changed after the refusal")
        outcome.count("cases", len(cases))
    return outcome
