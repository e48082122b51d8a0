"""Library versions and timestamps recorded in every checkpoint (for lineage and inspect)."""

from __future__ import annotations

import datetime
import platform

import torch


def library_versions() -> dict[str, str]:
    from bsrnn import __version__  # the package root only; never the speech code

    versions = {"bsrnn": __version__, "torch": str(torch.__version__), "python": platform.python_version()}
    if torch.version.cuda:
        versions["cuda"] = str(torch.version.cuda)
    return versions


def now_iso() -> str:
    """Local time with offset, to the second: what a user compares with `ls -l`."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
