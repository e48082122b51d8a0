"""A plain-data summary of a checkpoint, for ``bsrnn ckpt inspect`` and for people.

Generic on purpose: it knows the engine's own keys and a few conventions (``param_groups`` marks
an optimizer state, ``config`` a config dict), nothing about speech.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from bsrnn.checkpoint.loading import LoadedCheckpoint

_PROGRESS_KEYS = ("epoch", "global_step", "step_in_epoch", "val_loss", "best_val_loss")
# Shown in their own sections, not in the contents table.
_ENGINE_RECORDS = ("monitor", "versions", "lineage", "config", "notes")


def tensor_stats(value: Any) -> tuple[int, int]:
    """(number of tensors, bytes) inside a nested state."""
    if isinstance(value, torch.Tensor):
        return 1, value.numel() * value.element_size()
    items: Any = ()
    if isinstance(value, Mapping):
        items = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    count = size = 0
    for item in items:
        item_count, item_size = tensor_stats(item)
        count += item_count
        size += item_size
    return count, size


def learning_rates(payload: Mapping[str, Any]) -> dict[str, list[float]]:
    """Learning rate of every param group of every optimizer state in the payload."""
    rates = {}
    for key, value in payload.items():
        if isinstance(value, Mapping) and "param_groups" in value:
            rates[key] = [float(group["lr"]) for group in value["param_groups"] if "lr" in group]
    return rates


def summarize(loaded: LoadedCheckpoint) -> dict[str, Any]:
    payload = loaded.payload
    contents = {}
    for key, value in payload.items():
        if key in _ENGINE_RECORDS:
            continue
        count, size = tensor_stats(value)
        if count or isinstance(value, (Mapping, list, tuple)):
            contents[key] = {"tensors": count, "bytes": size}
        elif value is None and key not in _PROGRESS_KEYS:
            contents[key] = {"tensors": 0, "bytes": 0, "note": "not saved"}
    return {
        "path": str(loaded.path),
        "kind": loaded.kind,
        "integrity": f"OK ({loaded.digest})",  # labelled with its algorithm: "xxh3-128:<hex>"
        "digest": loaded.digest,
        "format_version": payload.get("format_version"),
        "progress": {key: payload[key] for key in _PROGRESS_KEYS if key in payload},
        "monitor": payload.get("monitor"),
        "learning_rates": learning_rates(payload),
        "contents": contents,
        "config": payload.get("config"),
        "created": payload.get("created"),
        "versions": payload.get("versions"),
        "lineage": payload.get("lineage", []),
        "notes": payload.get("notes", []),
        "save_sequence": payload.get("save_sequence"),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """The human-readable form of ``summarize``'s result."""
    lines = [f"{summary['path']} ({summary['kind']})", f"  integrity: {summary['integrity']}"]
    for key, value in summary["progress"].items():
        lines.append(f"  {key}: {value}")
    monitor = summary.get("monitor") or {}
    if monitor:
        lines.append(
            f"  monitor: {monitor.get('name')} ({monitor.get('mode')}), value {monitor.get('value')}, "
            f"best {monitor.get('best')}"
        )
    for key, rates in summary["learning_rates"].items():
        lines.append(f"  learning rate ({key}): {', '.join(f'{rate:.6g}' for rate in rates)}")
    lines.append(f"  created: {summary.get('created')}   versions: {summary.get('versions')}")
    lines.append("  contents:")
    for key, info in summary["contents"].items():
        note = f"  ({info['note']})" if "note" in info else ""
        lines.append(f"    {key:<28} {info['tensors']:>5} tensors {_human_bytes(info['bytes']):>10}{note}")
    for note in summary.get("notes") or []:
        lines.append(f"  note: {note}")
    lineage = summary.get("lineage") or []
    lines.append(f"  lineage: {len(lineage)} resume(s)")
    for record in lineage:
        lines.append(
            f"    resumed {record.get('resumed_at')} from {record.get('kind')} {record.get('path')} "
            f"(epoch {record.get('epoch')}, step {record.get('global_step')})"
        )
    config = summary.get("config")
    if isinstance(config, Mapping):
        lines.append("  config:")
        lines.extend(f"    {key} = {value!r}" for key, value in config.items())
    return "\n".join(lines)


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"
