"""The Python API works from a plain script, with no ``if __name__ == "__main__":`` guard.

PESQ workers are spawned processes; a spawned child normally re-runs the parent's main script
(or module) to make its functions unpicklable, and a script without the guard would call
``train()`` again in every worker, forever. The workers must never run the user's main module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bsrnn.metrics.pesq_pool import PesqPool

TIMEOUT_S = 300


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{command} did not finish in {TIMEOUT_S} s (the workers re-ran the script?):\n"
                    f"{(error.stderr or b'')[-3000:]!r}")


@pytest.mark.slow
def test_a_plain_script_without_a_main_guard_trains_once_and_scores_pesq_in_workers(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = tmp_path / "plain_script.py"
    script.write_text(textwrap.dedent(f"""
        import os
        from bsrnn import Config, train

        print(f"TOP LEVEL RAN in {{os.getpid()}}", flush=True)
        result = train(Config(demo=True, epochs=1, max_steps=2, num_channel=4, num_layer=1, batch_size=2,
                              cut_len=16000, log_interval=1, pesq_workers=2, device="cpu",
                              save_model_dir={str(run_dir)!r}))
        print("EXIT CODE", result.exit_code, "STEPS", result.global_step, flush=True)
    """))
    result = _run([sys.executable, str(script)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("TOP LEVEL RAN") == 1, result.stdout
    assert "EXIT CODE 0 STEPS 2" in result.stdout
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    steps = [event for event in map(json.loads, lines) if event["event"] == "step"]
    assert [step["global_step"] for step in steps] == [1, 2]
    # The discriminator was trained on PESQ scores computed by the worker processes.
    assert all(step["pesq_valid"] > 0 for step in steps), steps


def test_workers_do_not_run_a_main_module_started_with_python_dash_m(tmp_path: Path) -> None:
    """``python -m package.module`` is re-imported by name in spawned children, unless hidden."""
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text(textwrap.dedent("""
        import numpy as np
        from bsrnn.metrics.pesq_pool import PesqPool

        print("TOP LEVEL RAN", flush=True)
        rng = np.random.default_rng(0)
        clean = [rng.standard_normal(16000).astype(np.float32) * 0.1]
        with PesqPool(workers=1) as pool:
            scores = pool.score(clean, clean)
        print("VALID", bool(scores.valid.all()), flush=True)
    """))
    result = _run([sys.executable, "-m", "userpkg.job"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("TOP LEVEL RAN") == 1, result.stdout
    assert "VALID True" in result.stdout


def test_hiding_the_main_module_from_workers_leaves_it_intact_in_the_parent() -> None:
    main = sys.modules["__main__"]
    before = (getattr(main, "__spec__", None), getattr(main, "__file__", None))
    with PesqPool(workers=1) as pool:
        pool.score([np.ones(8000, dtype=np.float32)], [np.ones(8000, dtype=np.float32)])
    assert (getattr(main, "__spec__", None), getattr(main, "__file__", None)) == before

