"""Several runs' validation curves on one figure: ``bsrnn plot RUN_DIR RUN_DIR ... --out FILE``.

An ablation is read by comparing runs, not by paging through one figure per run. Each run
keeps its own colour across three panels, all against the global step (the runs' common clock,
whatever their epoch lengths):

- validation PESQ (what picks the best checkpoint), with the run's best epoch starred;
- validation SI-SDR (the fidelity PESQ does not see: a GAN term can buy PESQ with it);
- the generator's learning rate (schedules differ between recipes).

A dashed vertical line in the run's colour marks where its GAN term started. Each run's curves
are its current lineage, as ``bsrnn.plotting.select_curves`` finds it (entries abandoned by a
resume are left out here; the single-run plot shows them). Training losses are not drawn:
recipes with different objectives have losses on different scales, so their curves would
compare nothing.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bsrnn.errors import UserError
from bsrnn.output import InputFiles, check_destinations
from bsrnn.plotting import LEARNING_RATE, Curves, Line, image_format_of, read_run, save_figure, select_curves

log = logging.getLogger(__name__)

VALIDATION_PESQ, VALIDATION_SI_SDR, GENERATOR_LR = "validation PESQ (wide band)", "validation SI-SDR (dB)", \
    "generator learning rate"
COMPARISON_PANELS = (VALIDATION_PESQ, VALIDATION_SI_SDR, GENERATOR_LR)
_EPOCH_VALUES = {VALIDATION_PESQ: "val_pesq", VALIDATION_SI_SDR: "val_si_sdr"}


@dataclass(frozen=True)
class ComparedRun:
    """One run of a comparison: its label, its curves, and the lines each panel draws for it."""

    label: str
    curves: Curves
    lines: dict[str, Line | None]


def _epoch_line(label: str, curves: Curves, key: str) -> Line | None:
    points = [(float(entry["global_step"]), entry.get(key)) for entry in curves.epochs]
    points = [(x, float(y)) for x, y in points
              if isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y)]
    if not points:
        return None
    return Line(label, tuple(x for x, _ in points), tuple(y for _, y in points), "epoch", label)


def compared_run(label: str, curves: Curves) -> ComparedRun:
    """The lines of one run in each comparison panel (None where the run logged nothing for it:
    runs from before whole-utterance validation have no SI-SDR)."""
    learning_rates = [line for line in curves.panels[LEARNING_RATE] if line.series == "generator"]
    lines: dict[str, Line | None] = {panel: _epoch_line(label, curves, key) for panel, key in _EPOCH_VALUES.items()}
    lines[GENERATOR_LR] = learning_rates[0] if learning_rates else None
    return ComparedRun(label, curves, lines)


def run_labels(run_dirs: Sequence[Path]) -> list[str]:
    """A legend label per run: its folder's name, or the path as given where two names clash."""
    names = [run_dir.name or str(run_dir) for run_dir in run_dirs]
    return [name if names.count(name) == 1 else str(run_dir) for name, run_dir in zip(names, run_dirs, strict=True)]


def _check_distinct(run_dirs: Sequence[Path]) -> None:
    """The same run twice (by identity: a second path, a link) is a typo, never a comparison."""
    seen: dict[tuple[int, int], Path] = {}
    for run_dir in run_dirs:
        try:
            status = os.stat(run_dir)
        except OSError:
            continue  # read_run says what is wrong with it
        identity = (status.st_dev, status.st_ino)
        if identity in seen:
            raise UserError(f"{run_dir} and {seen[identity]} are the same run: expected each RUN_DIR once. "
                            "Fix: name each run to compare once.")
        seen[identity] = run_dir


def plot_comparison(run_dirs: Sequence[Path], out: Path, *, overwrite: bool = False) -> Path:
    """Draw the validation curves of several runs on one figure at ``out``.

    ``out`` is checked before anything is drawn, as ``plot_run`` checks it: an existing file is
    replaced only with ``overwrite``, and never any run's ``metrics.jsonl`` or ``config.toml``.
    """
    from bsrnn.training.run_files import CONFIG_NAME, METRICS_NAME

    if len(run_dirs) < 2:
        raise ValueError(f"plot_comparison: expected two or more runs, found {len(run_dirs)}")
    _check_distinct(run_dirs)
    loaded = [read_run(run_dir) for run_dir in run_dirs]
    inputs = InputFiles([path for run_dir in run_dirs for path in (run_dir / METRICS_NAME, run_dir / CONFIG_NAME)])
    check_destinations([out], overwrite=overwrite, flag="--out", inputs=inputs)
    runs = []
    labels = run_labels(run_dirs)
    for label, (events, config) in zip(labels, loaded, strict=True):
        recipe = config.get("recipe")
        runs.append(compared_run(f"{label} ({recipe})" if isinstance(recipe, str) else label,
                                 select_curves(events, config)))
    title = f"{len(runs)} runs against the global step"
    # A config.toml from before the field was written: that run validated on crops.
    lengths = {label: config.get("validation_length", "crops") if config else None
               for label, (_, config) in zip(labels, loaded, strict=True)}
    if len({length for length in lengths.values() if isinstance(length, str)}) > 1:
        # Whole utterances and 2 s crops give different numbers for the same model.
        shown = ", ".join(f"{label}: {VALIDATION_LENGTHS.get(length, length)}" for label, length in lengths.items())
        log.warning("WARNING: these runs validate on different things (%s): their validation curves are not "
                    "comparable, only their shapes", shown)
        title += f"; validation differs ({shown}): not comparable"
    return _draw(runs, title, out, overwrite=overwrite, inputs=inputs)


VALIDATION_LENGTHS = {"full": "whole utterances", "crops": "crops"}
"""How a run's ``validation_length`` is shown."""


def _draw(runs: Sequence[ComparedRun], title: str, out: Path, *, overwrite: bool, inputs: InputFiles) -> Path:
    from matplotlib.figure import Figure

    image_format = image_format_of(out)
    figure = Figure(figsize=(16, 4.5), layout="constrained")
    axes = dict(zip(COMPARISON_PANELS, figure.subplots(1, 3)))
    colours = [f"C{index % 10}" for index in range(len(runs))]
    for panel, axis in axes.items():
        for run, colour in zip(runs, colours, strict=True):
            line = run.lines[panel]
            if line is not None:
                style = "-" if panel == GENERATOR_LR else "o-"
                axis.plot(line.x, line.y, style, color=colour, markersize=3, label=run.label)
            if run.curves.gan_start_step is not None:
                axis.axvline(run.curves.gan_start_step, color=colour, linestyle="--", linewidth=1,
                             label=f"{run.label}: GAN term from epoch {run.curves.gan_start_epoch}"
                             if panel == VALIDATION_PESQ else "_gan")
        if panel == VALIDATION_PESQ:
            for run, colour in zip(runs, colours, strict=True):
                best = [entry for entry in run.curves.epochs if entry.get("epoch") == run.curves.best_epoch]
                if best and run.lines[panel] is not None and isinstance(best[0].get("val_pesq"), (int, float)):
                    axis.plot([best[0]["global_step"]], [best[0]["val_pesq"]], "*", color=colour, markersize=14,
                              zorder=5, label="_best")
        if all(run.lines[panel] is None for run in runs):
            axis.text(0.5, 0.5, "not logged by these runs", transform=axis.transAxes, ha="center", va="center")
        axis.set_title(panel)
        axis.set_xlabel("global step")
        axis.grid(alpha=0.3)
        if any(not artist.get_label().startswith("_") for artist in axis.get_lines()):
            axis.legend(fontsize="x-small")
    figure.suptitle(title)
    return save_figure(figure, out, image_format, overwrite=overwrite, inputs=inputs)
