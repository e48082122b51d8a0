"""The run directory's human files: ``config.toml``, ``metrics.jsonl`` and ``train.log``.

Checkpoints belong to the engine; these are the trainer's own, written by rank 0 only.
``metrics.jsonl`` gets one JSON object per event (step logs, epoch evaluations, resumes,
preemptions), appended and flushed line by line, so a crash loses at most the line in flight;
a resumed run appends a ``resume`` event, after which steps beyond the checkpoint are logged
again (readers keep the last entry per ``global_step``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from bsrnn.config import Config, to_toml

CONFIG_NAME = "config.toml"
METRICS_NAME = "metrics.jsonl"
LOG_NAME = "train.log"


class RunFiles:
    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = run_dir
        self.enabled = enabled
        self._metrics = None
        self._log_handler: logging.Handler | None = None
        if enabled:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._metrics = open(run_dir / METRICS_NAME, "a", encoding="utf-8")
            self._log_handler = logging.FileHandler(run_dir / LOG_NAME, encoding="utf-8")
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
            self._log_handler.setLevel(logging.INFO)
            logging.getLogger("bsrnn").addHandler(self._log_handler)

    def write_config(self, config: Config) -> None:
        """Replace config.toml atomically (temp + rename), so it is never half-written."""
        if not self.enabled:
            return
        path = self.run_dir / CONFIG_NAME
        temporary = path.with_name(f".{CONFIG_NAME}.{os.getpid()}.tmp")
        temporary.write_text(to_toml(config), encoding="utf-8")
        os.replace(temporary, path)

    def event(self, kind: str, **fields: Any) -> None:
        if self._metrics is None:
            return
        record = {"event": kind, "time": round(time.time(), 3)}
        record.update(fields)  # NaN/inf are written as NaN/Infinity, which json.loads reads back
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._log_handler is not None:
            logging.getLogger("bsrnn").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every event of a run, in order (for ``bsrnn plot`` and tests)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
