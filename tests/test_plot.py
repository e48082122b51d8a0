"""``bsrnn plot``: the current lineage only, every panel populated, GAN start and best marked."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from bsrnn.cli.main import main
from bsrnn.errors import UserError
from bsrnn.plotting import LEARNING_RATE, LOSSES, PESQ, current_lineage, plot_run, select_curves

STEPS_PER_EPOCH = 4
LR = {"generator": 1e-3, "discriminator": 1e-3}


def step(global_step: int, loss: float, pesq: float = 2.0) -> dict[str, Any]:
    epoch = (global_step - 1) // STEPS_PER_EPOCH
    return {"event": "step", "epoch": epoch, "step": global_step - epoch * STEPS_PER_EPOCH,
            "global_step": global_step, "loss": loss, "disc_loss": loss / 10, "pesq": pesq, "pesq_valid": 4.0,
            "lr": dict(LR)}


def epoch(index: int, val_loss: float, use_gan: bool | None = None, lr: float = 1e-3,
          val_pesq: float = 2.5) -> dict[str, Any]:
    event = {"event": "epoch", "epoch": index, "global_step": (index + 1) * STEPS_PER_EPOCH,
             "train": {"loss": val_loss + 0.1, "disc_loss": 0.05, "pesq": val_pesq - 0.2},
             "val_loss": val_loss, "val_disc_loss": 0.04, "val_pesq": val_pesq,
             "lr": {"generator": lr, "discriminator": lr}, "nonfinite_skipped": 0}
    if use_gan is not None:
        event["use_gan"] = use_gan
    return event


def resumed_from_best() -> list[dict[str, Any]]:
    """Four epochs (best: epoch 1), a resume from best at global step 8, two better epochs."""
    first = [{"event": "start", "global_step": 0, "gan_start_epoch": 2, "monitor": "val_loss"}]
    for index, val_loss in enumerate((1.0, 0.8, 0.9, 0.95)):
        first += [step(4 * index + 2, 5.0), step(4 * index + 4, 5.0), epoch(index, val_loss, use_gan=index >= 2)]
    second = [{"event": "resume", "global_step": 8, "epoch": 1, "kind": "best", "gan_start_epoch": 2,
               "monitor": "val_loss"}]
    for index, val_loss in ((2, 0.7), (3, 0.75)):
        second += [step(4 * index + 2, 3.0), step(4 * index + 4, 3.0), epoch(index, val_loss, use_gan=True)]
    return first + second


def write_run(run_dir: Path, events: list[dict[str, Any]], config: str = "") -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(event) + "\n" for event in events))
    if config:
        (run_dir / "config.toml").write_text(config)
    return run_dir


def line(curves, panel: str, label: str):
    (found,) = [line for line in curves.panels[panel] if line.label == label]
    return found


def test_a_resume_from_best_abandons_the_later_entries_of_the_old_branch() -> None:
    curves = select_curves(resumed_from_best())
    assert [entry["global_step"] for entry in curves.steps] == [2, 4, 6, 8, 10, 12, 14, 16]
    assert [entry["loss"] for entry in curves.steps] == [5.0] * 4 + [3.0] * 4  # the new branch after step 8
    assert [entry["val_loss"] for entry in curves.epochs] == [1.0, 0.8, 0.7, 0.75]
    (branch,) = curves.abandoned
    assert [(entry["event"], entry["global_step"]) for entry in branch] == [
        ("step", 10), ("step", 12), ("epoch", 12), ("step", 14), ("step", 16), ("epoch", 16)]
    assert line(curves, LOSSES, "validation generator loss").y == (1.0, 0.8, 0.7, 0.75)
    abandoned = [line for line in curves.panels[LOSSES] if line.kind == "abandoned"]
    assert [line.y for line in abandoned] == [(5.0,) * 4, (0.9, 0.95)]


def test_the_best_epoch_gan_start_and_resume_are_marked_on_the_lineage() -> None:
    curves = select_curves(resumed_from_best())
    assert curves.best_epoch == 2  # 0.7 in the current branch, not the abandoned 0.9
    assert curves.gan_start_epoch == 2 and curves.gan_start_step == 8
    marks = {(marker.kind, marker.x) for marker in curves.markers}
    assert marks == {("best", 12.0), ("gan", 8.0), ("resume", 8.0)}
    assert any(marker.label == "resumed from best" for marker in curves.markers)


def test_sparse_step_logs_still_fill_every_panel_from_the_epoch_entries() -> None:
    events = [epoch(0, 1.0, use_gan=False, lr=1e-3), epoch(1, 0.9, use_gan=False, lr=1e-3),
              epoch(2, 0.8, use_gan=True, lr=5e-4)]
    curves = select_curves(events)
    assert all(curves.panels[panel] for panel in (LOSSES, PESQ, LEARNING_RATE))
    assert line(curves, LOSSES, "train generator loss (epoch mean)").y == (1.1, 1.0, 0.9)
    assert line(curves, PESQ, "train PESQ (epoch mean)").y == pytest.approx((2.3, 2.3, 2.3))
    rates = line(curves, LEARNING_RATE, "generator")
    # Held over each epoch: (0..4] and (4..8] at 1e-3, then (8..12] at 5e-4.
    assert rates.x == (0, 4, 4, 8, 8, 12) and rates.y == (1e-3,) * 4 + (5e-4,) * 2
    assert curves.gan_start_epoch == 2 and curves.gan_start_step == 8


def test_steps_after_the_last_epoch_extend_the_learning_rate_curve() -> None:
    curves = select_curves([step(2, 1.0), step(4, 1.0), epoch(0, 1.0), step(6, 1.0)])
    assert line(curves, LEARNING_RATE, "discriminator").x == (0, 4, 6)


def test_runs_without_resume_events_detect_the_rewind_from_the_global_steps() -> None:
    events = [step(2, 5.0), step(4, 5.0), epoch(0, 1.0), step(6, 5.0), step(8, 5.0), epoch(1, 1.2),
              step(10, 5.0),
              step(6, 3.0), step(8, 3.0), epoch(1, 0.9)]  # resumed from best (epoch 0, step 4)
    kept, abandoned = current_lineage(events)
    assert [(entry["event"], entry["global_step"], entry.get("loss")) for entry in kept] == [
        ("step", 2, 5.0), ("step", 4, 5.0), ("epoch", 4, None), ("step", 6, 3.0), ("step", 8, 3.0), ("epoch", 8, None)]
    assert [[entry["global_step"] for entry in branch] for branch in abandoned] == [[6, 8, 8, 10]]


def test_old_runs_take_the_monitor_and_gan_start_from_config_toml() -> None:
    events = [epoch(index, 1.0, val_pesq=pesq) for index, pesq in enumerate((2.0, 2.6, 2.4, 2.5))]
    curves = select_curves(events, {"monitor": "pesq", "epochs": 4, "gan_start_epoch": None})
    assert curves.monitor == "pesq" and curves.best_epoch == 1
    assert curves.gan_start_epoch == 2 and curves.gan_start_step == 8  # (4 + 1) // 2


def test_a_gan_that_has_not_started_is_not_marked() -> None:
    curves = select_curves([{"event": "start", "global_step": 0, "gan_start_epoch": 5, "monitor": "val_loss"},
                            epoch(0, 1.0, use_gan=False)])
    assert curves.gan_start_step is None and all(marker.kind != "gan" for marker in curves.markers)


def test_the_png_renders_without_warnings_and_marks_everything(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", resumed_from_best())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plot_run(run_dir, run_dir / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_a_run_with_only_epoch_entries_renders_without_warnings(tmp_path: Path) -> None:
    """The learning-rate panel used to be empty here, and matplotlib warned about its legend."""
    run_dir = write_run(tmp_path / "run", [epoch(0, 1.0), epoch(1, 0.9)], config="epochs = 2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_run(run_dir, tmp_path / "out" / "curves.png")
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000


def test_a_run_with_no_entries_yet_says_so_instead_of_blaming_the_directory(tmp_path: Path, capsys) -> None:
    run_dir = write_run(tmp_path / "run", [{"event": "start", "global_step": 0}], config="log_interval = 500\n")
    with pytest.raises(UserError, match="no training entries to plot yet") as caught:
        plot_run(run_dir, run_dir / "curves.png")
    assert "every 500 steps" in str(caught.value) and "run directory" not in str(caught.value)
    assert main(["plot", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "plot again once the run has logged some" in err
    assert not (run_dir / "curves.png").exists()


@pytest.mark.parametrize(("make", "expected"), [
    (lambda path: None, "does not exist"),
    (lambda path: path.mkdir(), "has no metrics.jsonl"),
    (lambda path: path.write_text("x"), "is a file"),
])
def test_a_path_that_is_no_run_directory_is_named_with_the_fix(tmp_path: Path, make, expected: str) -> None:
    path = tmp_path / "somewhere"
    make(path)
    with pytest.raises(UserError, match=expected):
        plot_run(path, tmp_path / "curves.png")


def test_an_existing_plot_is_redrawn_only_with_overwrite(tmp_path: Path, capsys) -> None:
    run_dir = write_run(tmp_path / "run", resumed_from_best())
    assert main(["plot", str(run_dir)]) == 0
    first = (run_dir / "curves.png").stat().st_mtime_ns
    assert main(["plot", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "found 1 that exist already" in err and "curves.png" in err and "--overwrite" in err
    assert (run_dir / "curves.png").stat().st_mtime_ns == first
    assert main(["plot", str(run_dir), "--overwrite"]) == 0
    assert sorted(path.name for path in run_dir.iterdir()) == ["curves.png", "metrics.jsonl"]


def test_a_symlinked_curves_png_is_refused_and_what_it_points_at_kept(tmp_path: Path, capsys) -> None:
    """The reproduction: `bsrnn plot` wrote through a symbolic link named curves.png."""
    run_dir = write_run(tmp_path / "run", resumed_from_best())
    precious = tmp_path / "precious.txt"
    precious.write_text("not a plot")
    (run_dir / "curves.png").symlink_to(precious)
    for extra in ([], ["--overwrite"]):
        assert main(["plot", str(run_dir), *extra]) == 2
        assert "symbolic link(s) where outputs would go" in capsys.readouterr().err
    assert precious.read_text() == "not a plot" and (run_dir / "curves.png").is_symlink()


def test_the_plot_never_replaces_the_metrics_it_reads(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", resumed_from_best())
    before = (run_dir / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="that are inputs"):
        plot_run(run_dir, run_dir / "metrics.jsonl", overwrite=True)
    assert (run_dir / "metrics.jsonl").read_bytes() == before


def test_a_fifo_for_metrics_jsonl_is_named_as_not_a_regular_file(tmp_path: Path, capsys) -> None:
    import os

    os.mkfifo(tmp_path / "metrics.jsonl")  # read, it would block the command for ever
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'metrics.jsonl'} is a FIFO, not a regular file" in err and "has no" not in err


@pytest.mark.timeout(30)  # the bug was a hang: reading a FIFO waits for a writer that never comes
@pytest.mark.parametrize("kind", ["fifo", "binary"])
def test_a_config_toml_that_is_a_fifo_or_not_text_is_no_config_and_the_plot_is_drawn(tmp_path: Path, kind: str) -> None:
    """tools/torture.py adversary: `bsrnn plot` hung reading a FIFO named config.toml, and died
    with a UnicodeDecodeError traceback on one holding another program's binary file."""
    run_dir = write_run(tmp_path / "run", resumed_from_best())
    if kind == "fifo":
        os.mkfifo(run_dir / "config.toml")
    else:
        (run_dir / "config.toml").write_bytes(b"PK\x03\x04\x80\xff not text")
    assert plot_run(run_dir, tmp_path / "curves.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------- several runs
from bsrnn.plot_comparison import (  # noqa: E402
    GENERATOR_LR,
    VALIDATION_PESQ,
    VALIDATION_SI_SDR,
    compared_run,
    plot_comparison,
    run_labels,
)


def with_si_sdr(events: list[dict[str, Any]], offset: float) -> list[dict[str, Any]]:
    return [{**event, "val_si_sdr": event["val_pesq"] * 4 + offset} if event["event"] == "epoch" else event
            for event in events]


def test_a_compared_run_draws_its_lineages_validation_curves_and_its_learning_rate() -> None:
    run = compared_run("a", select_curves(with_si_sdr(resumed_from_best(), 1.0)))
    pesq = run.lines[VALIDATION_PESQ]
    assert pesq is not None and pesq.x == (4.0, 8.0, 12.0, 16.0)  # the abandoned epochs at 12 and 16 left out
    si_sdr = run.lines[VALIDATION_SI_SDR]
    assert si_sdr is not None and si_sdr.y == (11.0, 11.0, 11.0, 11.0)
    assert run.lines[GENERATOR_LR] is not None and set(run.lines[GENERATOR_LR].y) == {1e-3}
    assert run.curves.gan_start_step == 8
    older = compared_run("b", select_curves(resumed_from_best()))  # before whole-utterance validation
    assert older.lines[VALIDATION_SI_SDR] is None and older.lines[VALIDATION_PESQ] is not None


def test_runs_are_labelled_by_their_folder_unless_two_folders_share_a_name() -> None:
    assert run_labels([Path("runs/ref"), Path("runs/imp")]) == ["ref", "imp"]
    assert run_labels([Path("a/run"), Path("b/run"), Path("c")]) == ["a/run", "b/run", "c"]


def test_several_runs_draw_one_figure_where_out_says(tmp_path: Path, capsys) -> None:
    first = write_run(tmp_path / "ref", with_si_sdr(resumed_from_best(), 0.0), config='recipe = "reference"\n')
    second = write_run(tmp_path / "imp", with_si_sdr(resumed_from_best(), 2.0), config='recipe = "improved"\n')
    out = tmp_path / "figures" / "both.png"
    assert main(["plot", str(first), str(second), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert f"Wrote {out}" in capsys.readouterr().out
    assert sorted(path.name for path in first.iterdir()) == ["config.toml", "metrics.jsonl"]  # nothing in a run
    assert main(["plot", str(first), str(second), "--out", str(out)]) == 2  # exists: only with --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["plot", str(first), str(second), "--out", str(out), "--overwrite"]) == 0


def test_runs_that_validate_on_different_things_are_drawn_with_a_warning_in_the_log_and_the_title(
        tmp_path: Path, caplog) -> None:
    whole = write_run(tmp_path / "whole", resumed_from_best(), config='validation_length = "full"\n')
    crops = write_run(tmp_path / "crops", resumed_from_best(), config='validation_length = "crops"\n')
    out = tmp_path / "both.png"
    assert main(["plot", str(whole), str(crops), "--out", str(out)]) == 0 and out.exists()
    assert "validate on different things (whole: whole utterances, crops: crops)" in caplog.text
    caplog.clear()
    same = write_run(tmp_path / "same", resumed_from_best(), config='validation_length = "full"\n')
    assert main(["plot", str(whole), str(same), "--out", str(tmp_path / "same.png")]) == 0
    assert "validate on different things" not in caplog.text


def test_several_runs_without_out_the_same_run_twice_or_out_onto_a_run_are_refused(tmp_path: Path, capsys) -> None:
    first = write_run(tmp_path / "ref", resumed_from_best())
    second = write_run(tmp_path / "imp", resumed_from_best())
    assert main(["plot", str(first), str(second)]) == 2
    err = capsys.readouterr().err
    assert "expected --out FILE.png, found none" in err and "--out comparison.png" in err
    (tmp_path / "again").symlink_to(first)
    assert main(["plot", str(first), str(tmp_path / "again"), "--out", str(tmp_path / "x.png")]) == 2
    assert "are the same run" in capsys.readouterr().err
    before = (second / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match="that are inputs"):
        plot_comparison([first, second], second / "metrics.jsonl", overwrite=True)
    assert (second / "metrics.jsonl").read_bytes() == before
    assert main(["plot", str(first), str(tmp_path / "typo"), "--out", str(tmp_path / "x.png")]) == 2
    assert "typo does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
