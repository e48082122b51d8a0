"""TensorBoard logs of a run (``bsrnn train --tensorboard``), in ``RUN_DIR/tensorboard/``.

``metrics.jsonl`` is the run's record; TensorBoard is for watching a long run from a browser
(curves, and what the model sounds like now). So it shows the same values, at the same
points, with the global step as the x axis:

- ``train/<value>``: every value of a ``metrics.jsonl`` step event (``loss`` and its terms,
  ``disc_loss`` and its terms, ``pesq``, ``pesq_valid``), at the steps that event is logged
  (``log_interval`` / ``log_seconds``); ``lr/generator``, ``lr/discriminator``;
  ``speed/steps_per_s`` (the step event's mean rate) and ``speed/pesq_wait_share``: the share
  of the wall time since the previous logged point that the trainer spent waiting for PESQ
  scores (``StepResult.pesq_wait_s``; the clock restarts after each validation round, so
  validation time does not dilute it). Near 0, PESQ is off the critical path; a large share
  says more ``--pesq-workers`` would speed training up.
- at each validation round: ``valid/<value>`` (``val_loss`` as ``valid/loss``, ...),
  ``train_epoch/<value>`` (the epoch's means, as in the epoch event), ``progress/epoch``,
  and for the first ``EXAMPLES`` validation items (the same audio every epoch) the enhanced
  audio and its log-magnitude spectrogram (``audio/<name>/enhanced``,
  ``spectrogram/<name>/enhanced``). Their ``clean`` and ``noisy`` audio and spectrograms are
  written once, when the directory holds no event file yet.

A resumed run appends a new event file to the same directory (TensorBoard reads them all),
and continues at the checkpoint's global step. The new file starts with a purge at the step
after it, so what an abandoned continuation wrote beyond the checkpoint (a resume from best,
a crash after the last save) is hidden, as readers of ``metrics.jsonl`` keep the last entry per
step. Written by rank 0 only.

The trainer calls this log only through an ``Observer`` (``training/observers.py``): whatever
fails here (a full disk, a bug) warns once and switches these logs off; training and the saves
go on. So this module raises its errors rather than guarding each write itself.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bsrnn.audio import SAMPLE_RATE, istft, stft
from bsrnn.errors import UserError
from bsrnn.training.steps import Networks

TENSORBOARD_DIR = "tensorboard"
"""The folder of the run directory that holds the event files."""
EXAMPLES = 3
"""How many validation items (the first ones) are heard and seen every epoch."""
DYNAMIC_RANGE_DB = 80.0
"""Spectrogram images span this many dB below the example's loudest bin (clean or noisy), the
same scale every epoch, so that images of different epochs compare."""
COLORMAP = "magma"
EVENT_FILE_GLOB = "events.out.tfevents.*"


class TensorBoardMissingError(UserError):
    """``--tensorboard`` was asked for and the ``tensorboard`` package cannot be imported."""


def require_tensorboard() -> None:
    """Fail now, with the fix, if ``torch.utils.tensorboard`` cannot be used here.

    Called by ``train()`` before anything is created or trained: finding out at the end of the
    first epoch (or not at all, with an empty folder) would waste the run's first hours.
    """
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it; checked by name for the message)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as error:
        raise TensorBoardMissingError(
            "--tensorboard (tensorboard = true) asks for TensorBoard logs in RUN_DIR/tensorboard/, but the "
            f"tensorboard package cannot be imported here ({error}). Fix: pip install tensorboard (from a "
            "checkout of bsrnn, pip install -e '.[tensorboard]' also works), or train without --tensorboard."
        ) from error


@dataclass(frozen=True)
class Example:
    """One validation item shown in TensorBoard: its name and its audio [samples], a fixed crop or the
    whole utterance (``validation_length``): examples may differ in length."""

    name: str
    clean: torch.Tensor
    noisy: torch.Tensor


def examples_of(dataset: Sequence[tuple[torch.Tensor, torch.Tensor, str]], count: int = EXAMPLES) -> list[Example]:
    """The first ``count`` items of a validation set (``FixedCrops``, ``FullUtterances``: (clean, noisy, name))."""
    examples = []
    for index in range(min(count, len(dataset))):
        clean, noisy, name = dataset[index]
        examples.append(Example(name, clean.detach().float().cpu(), noisy.detach().float().cpu()))
    return examples


def tag_name(name: str) -> str:
    """``name`` as one part of a TensorBoard tag: no '/', which would split it into groups."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name) or "_"


def log_magnitude_db(audio: torch.Tensor) -> np.ndarray:
    """The magnitude spectrogram of ``audio`` [samples] in dB, [257 bins, frames] (``bsrnn.audio.stft``)."""
    magnitude = stft(audio.float()).abs().numpy()
    return 20.0 * np.log10(np.maximum(magnitude, 1e-10))


def spectrogram_image(db: np.ndarray, top_db: float, dynamic_range_db: float = DYNAMIC_RANGE_DB) -> np.ndarray:
    """An RGB image [height, width, 3] uint8 of a dB spectrogram, low frequencies at the bottom.

    ``top_db`` maps to the brightest colour and ``top_db - dynamic_range_db`` (and below) to the
    darkest: a fixed scale per example, not per image, so a quieter enhanced output looks quieter.
    """
    from matplotlib import colormaps

    scaled = np.clip((db - (top_db - dynamic_range_db)) / dynamic_range_db, 0.0, 1.0)
    rgba = colormaps[COLORMAP](scaled[::-1])  # row 0 is the top of the image: the highest bin
    return (rgba[..., :3] * 255).round().astype(np.uint8)


class TensorBoardLog:
    """The run's ``SummaryWriter`` in ``RUN_DIR/tensorboard``, and what the trainer writes there.

    ``global_step`` is where this invocation starts (0, or the checkpoint's). ``clock`` measures
    the PESQ wait share (a test may pass its own).
    """

    def __init__(self, run_dir: Path, examples: Sequence[Example], global_step: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.directory = Path(run_dir) / TENSORBOARD_DIR
        if self.directory.is_symlink() or (self.directory.exists() and not self.directory.is_dir()):
            # The run directory's files are never written through links (run_files.open_in_run_dir).
            raise UserError(f"{self.directory} is {'a symbolic link' if self.directory.is_symlink() else 'not a folder'}; "
                            "TensorBoard logs are never written through links. Remove it to get TensorBoard logs.")
        self.examples = list(examples)
        self._top_db = [max(float(log_magnitude_db(example.clean).max()), float(log_magnitude_db(example.noisy).max()))
                        for example in self.examples]
        self._clock = clock
        self._interval_start = clock()
        self._pesq_wait = 0.0
        written_before = self.directory.is_dir() and any(self.directory.glob(EVENT_FILE_GLOB))
        self._writer: Any = SummaryWriter(log_dir=str(self.directory),
                                          purge_step=global_step + 1 if written_before else None)
        if not written_before:
            try:
                self._add_references(global_step)
            except BaseException:
                self._writer.close()  # no writer thread left behind by a log that never started
                raise

    # --------------------------------------------------------------------------- writing
    def _add_example(self, index: int, kind: str, audio: torch.Tensor, global_step: int) -> None:
        example = self.examples[index]
        name = f"{index}_{tag_name(example.name)}"
        samples = audio.detach().float().cpu().clamp(-1.0, 1.0)
        self._writer.add_audio(f"audio/{name}/{kind}", samples, global_step, sample_rate=SAMPLE_RATE)
        image = spectrogram_image(log_magnitude_db(samples), self._top_db[index])
        self._writer.add_image(f"spectrogram/{name}/{kind}", image, global_step, dataformats="HWC")

    def _add_references(self, global_step: int) -> None:
        for index, example in enumerate(self.examples):
            self._add_example(index, "noisy", example.noisy, global_step)
            self._add_example(index, "clean", example.clean, global_step)
        self._writer.flush()

    def _add_scalars(self, prefix: str, values: Mapping[str, float], global_step: int) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{prefix}/{key}", float(value), global_step)

    # ------------------------------------------------------------------------ the hooks
    def waited_for_pesq(self, seconds: float) -> None:
        """Count one training step's wait for its PESQ scores (every step, logged or not)."""
        self._pesq_wait += seconds

    def step(self, global_step: int, values: Mapping[str, float], learning_rates: Mapping[str, float],
             steps_per_s: float) -> None:
        """The scalars of one ``metrics.jsonl`` step event, and the PESQ wait share since the last."""
        now = self._clock()
        elapsed = now - self._interval_start
        share = self._pesq_wait / elapsed if elapsed > 0 else math.nan
        self._interval_start, self._pesq_wait = now, 0.0
        self._add_scalars("train", values, global_step)
        self._add_scalars("lr", learning_rates, global_step)
        self._writer.add_scalar("speed/steps_per_s", steps_per_s, global_step)
        if math.isfinite(share):
            self._writer.add_scalar("speed/pesq_wait_share", share, global_step)

    def validation(self, global_step: int, epoch: int, values: Mapping[str, float],
                   train_means: Mapping[str, float], nets: Networks, device: torch.device) -> None:
        """One validation round: its values, the epoch's training means, the examples enhanced now."""
        enhanced = self.enhance(nets, device)
        self._add_scalars("valid", {key.removeprefix("val_"): value for key, value in values.items()}, global_step)
        self._add_scalars("train_epoch", train_means, global_step)
        self._writer.add_scalar("progress/epoch", epoch, global_step)
        for index, audio in enumerate(enhanced):
            self._add_example(index, "enhanced", audio, global_step)
        self._writer.flush()  # an epoch's values show at once, not up to two minutes later
        self._interval_start, self._pesq_wait = self._clock(), 0.0  # validation time is no PESQ wait

    @torch.no_grad()
    def enhance(self, nets: Networks, device: torch.device) -> list[torch.Tensor]:
        """The examples enhanced by the generator as validation runs it (eval mode, same forward).

        One example at a time, each at its own length: whole validation utterances (the default
        ``validation_length``) differ in length, and whole-utterance validation runs them one
        per batch too. Eval mode and no gradient: no dropout, so no random number is drawn and
        training goes on exactly as without ``--tensorboard``.
        """
        was_training = nets.generator.training
        nets.generator.eval()
        try:
            run_generator = nets.run_generator or nets.generator
            enhanced = []
            for example in self.examples:
                noisy = example.noisy.to(device).unsqueeze(0)
                estimate = istft(run_generator(stft(noisy)), length=noisy.shape[-1])
                enhanced.append(estimate[0].float().cpu())
        finally:
            nets.generator.train(was_training)
        return enhanced

    def close(self) -> None:
        """Flush and close the event file (every exit path of the trainer comes here)."""
        self._writer.close()
