"""Training and validation curves of a run, drawn from its ``metrics.jsonl``.

The curves show the run's current lineage: the entries its latest weights descend from. A
resume from a checkpoint at global step S (a ``resume`` event) abandons every entry logged
before it with a global step after S, since training continues from S and logs those steps
again; a resume from ``best`` can abandon whole epochs. Runs written before ``resume`` events
existed show the same thing as a global step that goes back. Abandoned entries are drawn
dimmed, apart from the lineage, so they cannot read as part of it.

Three panels, each with data as soon as the run has logged anything:

- losses: training losses of each logged step and as epoch means (epoch entries carry them,
  so they show even when ``log_interval`` is longer than an epoch), validation losses;
- PESQ: training batches, epoch means, validation;
- learning rates of both optimizers, from step and epoch entries.

Vertical lines mark the epoch whose generator loss first had the GAN term, the best epoch by
the monitored metric, and each resume. ``select_curves`` computes all of it from the events,
so it can be tested without drawing; ``plot_run`` reads a run directory and draws the PNG,
written through ``bsrnn.output`` (never through a symbolic link, never over the run's files it
reads, over an existing file only with ``overwrite``).
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bsrnn.errors import UserError
from bsrnn.output import InputFiles, check_destinations, write_file

LOSSES, PESQ, LEARNING_RATE = "losses", "PESQ (wide band)", "learning rate"
PANELS = (LOSSES, PESQ, LEARNING_RATE)
Event = dict[str, Any]


@dataclass(frozen=True)
class Line:
    """One curve of a panel. ``kind``: "step" (every logged step), "epoch" (one point per
    epoch), "lr" (a staircase over global steps) or "abandoned" (a branch a resume discarded)."""

    label: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    kind: str
    series: str = ""  # what it measures ("generator", "validation", ...): one colour per series


@dataclass(frozen=True)
class Marker:
    """A vertical line at global step ``x``; ``kind`` is "gan", "best" or "resume"."""

    label: str
    x: float
    kind: str


@dataclass
class Curves:
    """Everything ``plot_run`` draws, computed from the events alone."""

    panels: dict[str, list[Line]] = field(default_factory=lambda: {name: [] for name in PANELS})
    markers: list[Marker] = field(default_factory=list)
    steps: list[Event] = field(default_factory=list)  # the current lineage's step entries
    epochs: list[Event] = field(default_factory=list)  # ... and epoch entries, by global step
    abandoned: list[list[Event]] = field(default_factory=list)  # one list per abandoned branch
    monitor: str = "val_loss"
    best_epoch: int | None = None
    gan_start_epoch: int | None = None
    gan_start_step: int | None = None


def _number(value: Any) -> float | None:
    """A JSON number as float (NaN kept, to draw as a gap); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _step_of(event: Event) -> int | None:
    value = event.get("global_step")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def current_lineage(events: Sequence[Event]) -> tuple[list[Event], list[list[Event]]]:
    """Split the step and epoch entries into the current lineage and abandoned branches.

    A ``resume`` (or ``start``) event at global step S abandons the entries logged before it
    with a global step after S. Without such events (older runs), a step entry at global step
    g abandons earlier entries at g or later, and an epoch entry at g the later steps and the
    epochs at g or later: the run went back to before them.
    """
    kept: list[Event] = []
    abandoned: list[list[Event]] = []

    def cut(drop: Callable[[Event], bool]) -> None:
        nonlocal kept
        dropped = [entry for entry in kept if drop(entry)]
        if dropped:
            abandoned.append(dropped)
            kept = [entry for entry in kept if not drop(entry)]

    for event in events:
        kind, step = event.get("event"), _step_of(event)
        if step is None:
            continue
        if kind in ("resume", "start"):
            cut(lambda entry: entry["global_step"] > step)
        elif kind == "step":
            cut(lambda entry: entry["global_step"] >= step)
            kept.append(event)
        elif kind == "epoch":
            cut(lambda entry: entry["global_step"] > step
                or (entry["event"] == "epoch" and entry["global_step"] >= step))
            kept.append(event)
    return kept, abandoned


def _line(label: str, entries: Sequence[Event], value: Callable[[Event], Any], kind: str,
          series: str = "") -> Line | None:
    points = [(entry["global_step"], _number(value(entry))) for entry in entries]
    points = [(x, y) for x, y in points if y is not None]
    if not points:
        return None
    return Line(label, tuple(float(x) for x, _ in points), tuple(y for _, y in points), kind, series)


def _field_of(group: str, name: str) -> Callable[[Event], Any]:
    """Reads ``entry[group][name]`` (``train`` epoch means, ``lr`` rates), None if absent."""

    def value(entry: Event) -> Any:
        values = entry.get(group)
        return values.get(name) if isinstance(values, Mapping) else None

    return value


def _lr_line(label: str, name: str, steps: Sequence[Event], epochs: Sequence[Event]) -> Line | None:
    """A staircase: an epoch entry's rate held over that whole epoch, then logged steps after it."""
    rate_of = _field_of("lr", name)
    points: list[tuple[int, int, float]] = []  # (global step, order at that step, rate)
    previous_end = 0
    for entry in epochs:
        rate = _number(rate_of(entry))
        if rate is not None:
            points += [(previous_end, 1, rate), (entry["global_step"], 0, rate)]
        previous_end = entry["global_step"]
    covered = epochs[-1]["global_step"] if epochs else -1
    for entry in steps:
        rate = _number(rate_of(entry))
        if rate is not None and (entry["global_step"] > covered or not epochs):
            points.append((entry["global_step"], 0, rate))
    if not points:
        return None
    points.sort(key=lambda point: point[:2])
    return Line(label, tuple(float(x) for x, _, _ in points), tuple(rate for _, _, rate in points), "lr", name)


def _setting(events: Sequence[Event], config: Mapping[str, Any], name: str) -> Any:
    """The latest ``start``/``resume`` event's value of ``name``, else the run's config.toml."""
    for event in reversed(events):
        if event.get("event") in ("resume", "start") and event.get(name) is not None:
            return event[name]
    return config.get(name)


def _gan_start_epoch(events: Sequence[Event], epochs: Sequence[Event], config: Mapping[str, Any]) -> int | None:
    """The first epoch trained with the GAN term: as logged (``use_gan``), else as configured."""
    flags = [(entry.get("epoch"), entry["use_gan"]) for entry in epochs if isinstance(entry.get("use_gan"), bool)]
    if flags:
        started = [epoch for epoch, on in flags if on and isinstance(epoch, int)]
        return min(started) if started else None
    configured = _setting(events, config, "gan_start_epoch")
    if isinstance(configured, int) and not isinstance(configured, bool):
        return configured
    total = config.get("epochs")
    return (total + 1) // 2 if isinstance(total, int) and not isinstance(total, bool) else None


def select_curves(events: Sequence[Event], config: Mapping[str, Any] | None = None) -> Curves:
    """What to draw for a run's events (``read_metrics``); ``config`` is its config.toml, if any.

    ``config`` only fills in what old runs' events lack: the monitored metric and the GAN
    start epoch (newer runs log both in their ``start`` and ``resume`` events).
    """
    config = config or {}
    kept, abandoned = current_lineage(events)
    curves = Curves(abandoned=abandoned)
    curves.steps = [entry for entry in kept if entry["event"] == "step"]
    curves.epochs = [entry for entry in kept if entry["event"] == "epoch"]
    steps, epochs = curves.steps, curves.epochs

    candidates: dict[str, list[Line | None]] = {
        LOSSES: [
            _line("train generator loss", steps, lambda e: e.get("loss"), "step", "generator"),
            _line("train discriminator loss", steps, lambda e: e.get("disc_loss"), "step", "discriminator"),
            _line("train generator loss (epoch mean)", epochs, _field_of("train", "loss"), "epoch", "generator"),
            _line("train discriminator loss (epoch mean)", epochs, _field_of("train", "disc_loss"), "epoch",
                  "discriminator"),
            _line("validation generator loss", epochs, lambda e: e.get("val_loss"), "epoch", "validation"),
            _line("validation discriminator loss", epochs, lambda e: e.get("val_disc_loss"), "epoch",
                  "validation discriminator"),
        ],
        PESQ: [
            _line("train PESQ (batch)", steps, lambda e: e.get("pesq"), "step", "generator"),
            _line("train PESQ (epoch mean)", epochs, _field_of("train", "pesq"), "epoch", "generator"),
            _line("validation PESQ", epochs, lambda e: e.get("val_pesq"), "epoch", "validation"),
        ],
        LEARNING_RATE: [
            _lr_line("generator", "generator", steps, epochs),
            _lr_line("discriminator", "discriminator", steps, epochs),
        ],
    }
    for branch in abandoned:
        branch_steps = [entry for entry in branch if entry["event"] == "step"]
        branch_epochs = [entry for entry in branch if entry["event"] == "epoch"]
        candidates[LOSSES] += [
            _line("abandoned branch", branch_steps, lambda e: e.get("loss"), "abandoned"),
            _line("abandoned branch", branch_epochs, lambda e: e.get("val_loss"), "abandoned"),
        ]
        candidates[PESQ] += [
            _line("abandoned branch", branch_steps, lambda e: e.get("pesq"), "abandoned"),
            _line("abandoned branch", branch_epochs, lambda e: e.get("val_pesq"), "abandoned"),
        ]
    curves.panels = {name: [line for line in lines if line is not None] for name, lines in candidates.items()}

    monitor = _setting(events, config, "monitor")
    curves.monitor = monitor if monitor in ("val_loss", "pesq") else "val_loss"
    _mark_best(curves)
    _mark_gan_start(curves, events, config)
    for event in events:
        step = _step_of(event)
        if event.get("event") == "resume" and step is not None and step > 0:
            kind = event.get("kind")
            curves.markers.append(Marker(f"resumed from {kind}" if isinstance(kind, str) else "resumed",
                                         float(step), "resume"))
    return curves


def _mark_best(curves: Curves) -> None:
    """The epoch with the best monitored value (the first one on ties; NaN never counts)."""
    key, better = ("val_loss", float.__lt__) if curves.monitor == "val_loss" else ("val_pesq", float.__gt__)
    best: tuple[float, Event] | None = None
    for entry in curves.epochs:
        value = _number(entry.get(key))
        if value is not None and math.isfinite(value) and (best is None or better(value, best[0])):
            best = (value, entry)
    if best is not None:
        value, entry = best
        curves.best_epoch = entry.get("epoch")
        curves.markers.append(Marker(f"best: epoch {curves.best_epoch} ({curves.monitor} {value:.4g})",
                                     float(entry["global_step"]), "best"))


def _mark_gan_start(curves: Curves, events: Sequence[Event], config: Mapping[str, Any]) -> None:
    """Where the GAN term started: the end of the epoch before it (step 0 for epoch 0)."""
    epoch = _gan_start_epoch(events, curves.epochs, config)
    curves.gan_start_epoch = epoch
    if epoch is None:
        return
    ends = {entry.get("epoch"): entry["global_step"] for entry in curves.epochs}
    step = 0 if epoch == 0 else ends.get(epoch - 1)
    if step is not None:
        curves.gan_start_step = step
        curves.markers.append(Marker(f"GAN term from epoch {epoch}", float(step), "gan"))


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.toml, or nothing if it is missing or unreadable (it only fills gaps)."""
    from bsrnn.training.run_files import CONFIG_NAME, open_in_run_dir

    try:  # a regular file only: a FIFO named config.toml would block this reader forever
        with open(open_in_run_dir(run_dir / CONFIG_NAME, os.O_RDONLY), "rb") as handle:
            return tomllib.load(handle)
    except (OSError, UserError, ValueError):  # TOMLDecodeError, or UnicodeDecodeError for bytes that are not text
        return {}


def read_run(run_dir: Path) -> tuple[list[Event], dict[str, Any]]:
    """The events and config of ``run_dir``, or UserError saying why there is nothing to plot."""
    from bsrnn.checkpoint.reading import file_kind
    from bsrnn.training.run_files import METRICS_NAME, read_metrics

    if not run_dir.exists():
        raise UserError(f"Run directory {run_dir} does not exist: expected the --run-dir of a `bsrnn train` run. "
                        "Fix: check the path.")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file: expected a run directory (the folder that holds {METRICS_NAME}). "
                        f"Fix: pass its folder, e.g. `bsrnn plot {run_dir.parent}`.")
    metrics = run_dir / METRICS_NAME
    if metrics.exists() and not metrics.is_file():
        raise UserError(f"{metrics} is {file_kind(metrics.stat().st_mode)}, not a regular file: expected the "
                        f"{METRICS_NAME} a `bsrnn train` run writes. Fix: move it away, or plot the run it was "
                        "copied from")
    if not metrics.is_file():
        raise UserError(f"{run_dir} has no {METRICS_NAME}: expected the --run-dir of a `bsrnn train` run, which "
                        "writes it when training starts. Fix: check the path.")
    events = read_metrics(run_dir)
    if not any(event.get("event") in ("step", "epoch") for event in events):
        config = _read_config(run_dir)
        interval = config.get("log_interval")
        every = f"every {interval} steps" if isinstance(interval, int) else "every --log-interval steps"
        raise UserError(
            f"{run_dir} has no training entries to plot yet: {run_dir / METRICS_NAME} holds no step or epoch "
            f"entry. The trainer logs one {every} and one at the end of each epoch. "
            "Fix: plot again once the run has logged some."
        )
    return events, _read_config(run_dir)


_COLOURS = {"generator": "tab:blue", "discriminator": "tab:orange", "validation": "tab:green",
            "validation discriminator": "tab:red"}
_MARKER_LOOKS = {"gan": ("black", "--"), "best": ("tab:purple", ":"), "resume": ("0.5", "-.")}


def draw(curves: Curves, title: str, out: Path, *, overwrite: bool = False,
         inputs: InputFiles | None = None) -> Path:
    """Draw ``curves`` as a PNG at ``out`` (matplotlib's object API: no global state, no GUI).

    Another suffix matplotlib writes (``.svg``, ``.pdf``) gives that format. Written through
    ``bsrnn.output.write_file``: ``out`` is replaced only when the image is complete, and only
    with ``overwrite``; ``inputs`` are files it must never replace.
    """
    from matplotlib.figure import Figure

    image_format = image_format_of(out)
    figure = Figure(figsize=(16, 4.5), layout="constrained")
    axes = dict(zip(PANELS, figure.subplots(1, 3)))
    for name, axis in axes.items():
        abandoned_labelled = False
        for line in curves.panels[name]:
            label, colour = line.label, _COLOURS.get(line.series)
            if line.kind == "abandoned":
                label, abandoned_labelled = ("_" + label if abandoned_labelled else label), True
                axis.plot(line.x, line.y, color="0.65", alpha=0.6, linewidth=0.8, label=label, zorder=1)
            elif line.kind == "step":
                axis.plot(line.x, line.y, color=colour, alpha=0.45, linewidth=0.8, label=label)
            elif line.kind == "lr":
                axis.plot(line.x, line.y, color=colour, label=label,
                          linestyle="--" if line.series == "discriminator" else "-")
            else:
                axis.plot(line.x, line.y, "o-", color=colour, markersize=3, label=label)
        for marker in curves.markers:
            colour, style = _MARKER_LOOKS[marker.kind]
            # Labelled once, in the first panel: the same lines cross every panel.
            axis.axvline(marker.x, color=colour, linestyle=style, linewidth=1,
                         label=marker.label if name == LOSSES else "_" + marker.label)
        _star_best(axis, curves, name)
        axis.set_title(name)
        axis.set_xlabel("global step")
        axis.grid(alpha=0.3)
        if not curves.panels[name]:
            axis.text(0.5, 0.5, "nothing logged yet", transform=axis.transAxes, ha="center", va="center")
        if any(not artist.get_label().startswith("_") for artist in axis.get_lines()):
            axis.legend(fontsize="x-small")
    figure.suptitle(title)
    return save_figure(figure, out, image_format, overwrite=overwrite, inputs=inputs)


def image_format_of(out: Path) -> str:
    """The image format ``out``'s suffix names (``png`` without one), or UserError if matplotlib
    cannot write it: checked before anything is drawn."""
    from matplotlib.backend_bases import FigureCanvasBase

    image_format = out.suffix[1:].lower() or "png"
    if image_format not in FigureCanvasBase.get_supported_filetypes():
        raise UserError(f"--out {out}: expected an image suffix matplotlib writes (e.g. .png, .svg, .pdf), found "
                        f"{out.suffix!r}. Fix: e.g. --out {out.with_suffix('.png')}")
    return image_format


def save_figure(figure: Any, out: Path, image_format: str, *, overwrite: bool, inputs: InputFiles | None) -> Path:
    """Write a matplotlib ``figure`` to ``out`` through ``bsrnn.output.write_file`` (complete or
    not at all; over an existing file only with ``overwrite``; never over ``inputs``)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_file(out, lambda temporary: figure.savefig(temporary, dpi=100, format=image_format),
                   overwrite=overwrite, flag="--out", inputs=inputs)
    except OSError as error:
        raise UserError(f"Could not write {out}: {error.strerror or error}. Fix: choose another --out.") from error
    return out


def _star_best(axis: Any, curves: Curves, panel: str) -> None:
    """A star on the monitored validation curve at the best epoch."""
    key = "val_loss" if curves.monitor == "val_loss" else "val_pesq"
    if curves.best_epoch is None or panel != (LOSSES if key == "val_loss" else PESQ):
        return
    for entry in curves.epochs:
        if entry.get("epoch") == curves.best_epoch:
            axis.plot([entry["global_step"]], [entry[key]], "*", color="tab:purple", markersize=14, zorder=5,
                      label="_best")
            return


def plot_run(run_dir: Path, out: Path, *, overwrite: bool = False) -> Path:
    """Write a PNG with losses, PESQ and learning rates of ``run_dir``'s current lineage.

    ``out`` is checked before anything is drawn: an existing file is replaced only with
    ``overwrite``, and never the run's ``metrics.jsonl`` or ``config.toml`` (what the plot reads).
    """
    from bsrnn.training.run_files import CONFIG_NAME, METRICS_NAME

    events, config = read_run(run_dir)
    inputs = InputFiles([run_dir / METRICS_NAME, run_dir / CONFIG_NAME])
    check_destinations([out], overwrite=overwrite, flag="--out", inputs=inputs)
    curves = select_curves(events, config)
    last = max((entry["global_step"] for entry in curves.steps + curves.epochs), default=0)
    title = f"{run_dir}: {len(curves.epochs)} epoch(s), global step {last}"
    dropped = sum(len(branch) for branch in curves.abandoned)
    if dropped:
        title += f" ({dropped} entries of abandoned branches dimmed)"
    return draw(curves, title, out, overwrite=overwrite, inputs=inputs)
