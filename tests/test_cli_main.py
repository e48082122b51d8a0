"""The ``bsrnn`` entry point: shared flags anywhere, suggestions for typos, a help text for users."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsrnn.cli.main import COMMANDS, build_parser, main
from bsrnn.errors import UserError


@pytest.mark.parametrize("argv", [
    ["--debug", "-q", "plot", "runs/x"],
    ["plot", "--debug", "-q", "runs/x"],
    ["plot", "runs/x", "--quiet", "--debug"],
    ["-q", "plot", "runs/x", "--debug"],
    ["ckpt", "verify", "runs/x", "--debug", "-q"],
    ["ckpt", "--debug", "verify", "-q", "runs/x"],
])
def test_debug_and_quiet_work_before_and_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.debug is True and args.quiet is True


def test_without_the_flags_both_are_off_and_a_flag_before_the_command_is_kept() -> None:
    args = build_parser().parse_args(["plot", "runs/x"])
    assert args.debug is False and args.quiet is False
    args = build_parser().parse_args(["--debug", "train", "--demo"])
    assert args.debug is True and args.quiet is False


def test_debug_after_the_command_shows_the_traceback(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "missing")
    assert main(["plot", missing]) == 2
    assert capsys.readouterr().err.startswith("error: Run directory")
    with pytest.raises(UserError, match="does not exist"):
        main(["plot", missing, "--debug"])


def test_a_mistyped_option_gets_the_closest_one_and_the_commands_usage(capsys) -> None:
    assert main(["train", "--epohcs", "3"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: bsrnn train: unrecognized arguments: --epohcs 3; did you mean --epochs? "
                   "Run `bsrnn train --help` for usage.\n")


def test_several_mistyped_options_each_get_a_suggestion(capsys) -> None:
    assert main(["train", "--demo", "--rundir", "x", "--log-intervall=5"]) == 2
    err = capsys.readouterr().err
    assert "did you mean --run-dir (for --rundir), --log-interval (for --log-intervall)?" in err


def test_nested_commands_and_choices_get_suggestions_too(capsys) -> None:
    assert main(["ckpt", "vrify", "runs/x"]) == 2
    assert "invalid choice: 'vrify'" in (err := capsys.readouterr().err) and "did you mean 'verify'?" in err
    assert main(["trian"]) == 2
    assert "did you mean 'train'?" in capsys.readouterr().err
    assert main(["ckpt", "inspect", "runs/x", "--jsn"]) == 2
    err = capsys.readouterr().err
    assert "bsrnn ckpt inspect: unrecognized arguments: --jsn; did you mean --json?" in err
    assert err.count("\n") == 1  # one line


def test_an_unknown_option_with_nothing_close_gets_no_guess(capsys) -> None:
    assert main(["plot", "runs/x", "--zzzzzz"]) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --zzzzzz." in err and "did you mean" not in err


def test_the_top_level_help_speaks_to_users(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and "Entry point" not in out
    assert "speech enhancement" in out and "bsrnn train --demo" in out
    for command in COMMANDS:
        assert f"({command})" in out and f"    {command} " in out


def test_no_command_prints_the_help_and_exits_2(capsys) -> None:
    assert main([]) == 2
    assert "usage: bsrnn" in capsys.readouterr().out


# ----------------------------------------------------------------------------- inference defaults, -q
def test_inference_runs_where_train_does_by_default_cuda_if_available() -> None:
    import torch

    from bsrnn.enhancement import inference_device

    for command in (["enhance", "run", "x.wav", "--out", "o"], ["evaluate", "run", "--demo"]):
        assert build_parser().parse_args(command).device == "auto"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert inference_device("auto").type == expected
    assert inference_device("auto", "int8").type == "cpu"  # int8 has CPU kernels only
    assert inference_device("cpu").type == "cpu"
    with pytest.raises(UserError, match="expected cpu, cuda, cuda:N or auto"):
        inference_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda: expected a machine with CUDA"):
            inference_device("cuda")


def test_enhance_help_says_the_device_default_and_why(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["enhance", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default auto, as for train: cuda if available, else cpu" in text


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_enhance_prints_nothing_but_writes_its_files(tmp_path: Path, capsys, where: str) -> None:
    import numpy as np
    import soundfile

    from bsrnn.checkpoint import CheckpointManager
    from tiny_generator import TINY_CONFIG, tiny_generator

    with CheckpointManager(tmp_path / "run") as manager:
        manager.register("model_state_dict", tiny_generator())
        manager.save(metric=0.5, values={"epoch": 0, "step_in_epoch": 0, "config": TINY_CONFIG})
    soundfile.write(tmp_path / "x.wav", 0.1 * np.random.default_rng(0).standard_normal(16000), 16000)
    command = ["enhance", str(tmp_path / "run"), str(tmp_path / "x.wav"), "--out", str(tmp_path / "out")]
    assert main(["-q", *command] if where == "before" else [*command, "-q"]) == 0
    printed = capsys.readouterr()
    assert (printed.out, printed.err) == ("", "")
    assert (tmp_path / "out" / "x.wav").is_file()
    assert main([*command[:-1], str(tmp_path / "loud")]) == 0  # without -q it says what it did
    assert "Enhancing 1 file(s)" in capsys.readouterr().out


def test_version_prints_the_versions_and_exits_0() -> None:
    import subprocess
    import sys

    from bsrnn import __version__

    result = subprocess.run([sys.executable, "-m", "bsrnn", "--version"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"bsrnn {__version__} (torch ") and "Python" in result.stdout


@pytest.mark.parametrize("flags,expected", [
    (["--init-lr", "-1e-3"], "init_lr: expected a finite number > 0"),  # argparse took -1e-3 for a flag
    (["--init-lr=-1e-3"], "init_lr: expected a finite number > 0"),
    (["--grad-clip", "-.5E+1"], "grad_clip: expected a finite number > 0"),
    (["--loss-weights", "0", "0", "0"], "loss_weights: expected three finite numbers >= 0, not all 0"),
    (["--loss-weights", "-1e-1", "0", "1"], "loss_weights: expected three finite numbers >= 0"),
    (["--seed", "18446744073709551616"], "seed: expected an integer from 0 to 9223372036854775807"),
])
def test_out_of_range_train_values_are_refused_by_the_config_check_before_anything_exists(
        tmp_path: Path, capsys, flags: list[str], expected: str) -> None:
    run_dir = tmp_path / "run"
    tiny = ["--max-steps", "1", "--num-channel", "4", "--num-layer", "1", "--batch-size", "2", "--cut-len", "8000",
            "--pesq-workers", "0"]  # should the check ever let one through, it trains one tiny step, not a run
    assert main(["train", "--demo", "--run-dir", str(run_dir), *tiny, *flags]) == 2
    err = capsys.readouterr().err
    assert expected in err and "expected one argument" not in err and "Traceback" not in err
    assert not run_dir.exists()
