"""README's scenario commands, run as written (on the demo set with a tiny model).

Each ```sh block of the scenarios section that starts with `bsrnn train` is taken from
README.md itself, so the documentation cannot drift from what the command does. The only
rewrites: the dataset becomes `--demo` with a tiny model, the run directory a temp dir, and
epoch targets shrink (120 -> 2, 200 -> 3, 140 -> 4).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from e2e import TINY, bsrnn, checkpoint

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
EPOCHS = {"200": "3", "140": "4"}


def scenario_commands() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Your scenarios, as commands"):text.index("### Config fields")]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    return [shlex.split(block.strip()) for block in blocks if block.strip().startswith("bsrnn train")]


def _rewrite(command: list[str], run_dir: Path) -> list[str]:
    assert command[:2] == ["bsrnn", "train"]
    out: list[str] = []
    args = iter(command[2:])
    for arg in args:
        if arg == "--data-dir":
            next(args)
            out += TINY
        elif arg == "--run-dir":
            next(args)
            out += ["--run-dir", str(run_dir)]
        elif arg == "--epochs":
            out += ["--epochs", EPOCHS[next(args)]]
        elif arg == "--save-every-steps":
            out += ["--save-every-steps", next(args) and "2"]
        else:
            out.append(arg)
    return out


def test_the_readme_has_the_six_scenarios() -> None:
    commands = [" ".join(c) for c in scenario_commands()]
    assert len(commands) == 6, commands
    assert "--resume --load last" in commands[1] and "--epochs 200" in commands[3]
    assert "--init-lr 1e-4" in commands[4] and "--resume auto" in commands[5]


def test_the_readme_scenarios_work_in_sequence(tmp_path: Path) -> None:
    fresh, crashed, best, more, fine_tune, requeue = scenario_commands()
    run_dir = tmp_path / "ab5"

    # 1. Fresh run, "crashing" after 3 steps of a 2-epoch target.
    result = bsrnn("train", *_rewrite(fresh, run_dir), "--epochs", "2", "--max-steps", "3")
    assert result.returncode == 0, result.stderr
    # 2. Resume from last: continues to the checkpoint's target (2 epochs).
    result = bsrnn("train", *_rewrite(crashed, run_dir))
    assert result.returncode == 0, result.stderr
    assert "Checkpoint type: last" in result.stderr and "Resuming from: epoch 0, step 3" in result.stderr
    assert checkpoint(run_dir)["epoch"] == 1
    # 3. Resume from best: whatever came after the best epoch is trained again from it.
    result = bsrnn("train", *_rewrite(best, run_dir))
    # Whatever came after the best epoch is trained again; if the best is the last epoch (PESQ
    # often is), the target is already reached and nothing is trained.
    assert result.returncode == 0 and "checkpoint_best.pt" in result.stderr
    assert "Checkpoint type: best" in result.stderr or "Resume epoch >= target epochs" in result.stderr
    assert checkpoint(run_dir)["epoch"] == 1
    # 4. Train more: 2 -> 3 epochs.
    result = bsrnn("train", *_rewrite(more, run_dir))
    assert result.returncode == 0, result.stderr
    assert checkpoint(run_dir)["epoch"] == 2 and "Target epochs: 3" in result.stderr
    # 5. Fine-tune from best with a lower LR, to 4 epochs.
    result = bsrnn("train", *_rewrite(fine_tune, run_dir))
    assert result.returncode == 0, result.stderr
    assert "Current learning rate (generator): 0.0001" in result.stderr
    assert checkpoint(run_dir)["optimizer_state_dict"]["param_groups"][0]["lr"] <= 1e-4
    # 6. Requeue: on a new directory it starts fresh; on this one it resumes (already done).
    result = bsrnn("train", *_rewrite(requeue, tmp_path / "new"), "--epochs", "1", "--max-steps", "1")
    assert result.returncode == 0 and "starting a fresh run" in result.stderr
    result = bsrnn("train", *_rewrite(requeue, run_dir))
    assert result.returncode == 0 and "Resume epoch >= target epochs" in result.stderr


def test_the_python_api_example_resumes_a_run(tmp_path: Path) -> None:
    from bsrnn import Config, train

    run_dir = str(tmp_path / "api")
    tiny = dict(demo=True, num_channel=4, num_layer=1, batch_size=8, cut_len=8000, pesq_workers=0, seed=3)
    first = train(Config(epochs=1, save_model_dir=run_dir, max_steps=2, **tiny))
    assert first.exit_code == 0 and first.global_step == 2
    second = train(Config(epochs=1, save_model_dir=run_dir, demo=True, resume_from_checkpoint=run_dir,
                          load_checkpoint_type="last", max_steps=1))
    assert second.exit_code == 0 and second.global_step == 3
    assert checkpoint(Path(run_dir))["config"]["num_channel"] == 4
