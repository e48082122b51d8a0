"""README.md's claims hold: the generated config table, the help texts, the console examples."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from e2e import env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "tools"))

from update_readme import with_config_table  # noqa: E402  (tools/ is not an installed package)


def test_the_readme_config_table_is_the_one_generated_from_the_config() -> None:
    text = README.read_text(encoding="utf-8")
    assert text == with_config_table(text), "README.md's config table is stale: run `make docs`"


def test_the_readme_starts_with_the_two_commands_and_says_how_to_activate_the_environment() -> None:
    text = README.read_text(encoding="utf-8")
    first_block = text.split("\n\n")[1]
    assert "make demo" in first_block and "make test" in first_block
    assert ". .venv/bin/activate" in text


def test_every_command_and_ckpt_action_describes_itself_in_its_help() -> None:
    from bsrnn.cli.main import COMMANDS

    for command in [*COMMANDS, "ckpt inspect", "ckpt verify", "ckpt export", "ckpt migrate"]:
        result = subprocess.run([sys.executable, "-m", "bsrnn", *command.split(), "--help"],
                                capture_output=True, text=True, env=env(), timeout=120)
        assert result.returncode == 0, result.stderr
        usage, _, rest = result.stdout.partition("\n\n")
        description = rest.split("\n\n")[0]
        assert description and not description.lstrip().startswith(("positional", "options")), command


def _console_examples() -> list[tuple[str, str]]:
    """(command, first line of what it prints) of each ```console block in README.md."""
    blocks = re.findall(r"```console\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    examples = []
    for block in blocks:
        lines = block.strip().splitlines()
        assert lines[0].startswith("$ "), block
        examples.append((lines[0][2:], lines[1]))
    return examples


@pytest.mark.slow
@pytest.mark.parametrize("command,expected", _console_examples())
def test_each_console_example_in_the_readme_prints_what_it_shows(tmp_path: Path, command: str, expected: str) -> None:
    argv = shlex.split(command)
    assert argv[0] == "bsrnn"
    result = subprocess.run([sys.executable, "-m", "bsrnn", *argv[1:]], capture_output=True, text=True,
                            env=env(), timeout=300, cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()
