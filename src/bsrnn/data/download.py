"""Resumable HTTP downloads of large files: a file appears under its name only once complete.

The release zips are gigabytes on a server far away, so a download is expected to break. Bytes
go to ``NAME.partial`` beside the destination; a later attempt (in this call after a dropped
connection, or in a later run) asks for the rest with an HTTP ``Range: bytes=N-`` request and
appends. A server that ignores the range (answers 200) is read from the start again. Only when
the size the server announced has arrived is the partial file fsynced and renamed to ``NAME``,
so a file under its final name is always whole (as far as the server's length goes; the zip's
own checks and the recorded SHA-256 catch the rest).

Proxies come from the usual environment variables (``https_proxy``, ``no_proxy``), as urllib
reads them.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from bsrnn import __version__
from bsrnn.checkpoint.atomic import fsync_directory
from bsrnn.errors import RunFailedError, UserError

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
PARTIAL_SUFFIX = ".partial"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


class DownloadError(RunFailedError):
    """The server could not be reached or kept dropping the connection: exit 1, partial file kept."""


def partial_path(destination: Path) -> Path:
    return destination.with_name(destination.name + PARTIAL_SUFFIX)


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a ``Content-Range`` header; None where absent or ``*``."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None, None
    first = int(match.group(1)) if match.group(1) else None
    total = int(match.group(3)) if match.group(3) != "*" else None
    return first, total


def _finish(partial: Path, destination: Path) -> None:
    with open(partial, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, destination)
    fsync_directory(destination.parent)


def download(url: str, destination: Path, progress: bool = True, retries: int = 8,
             retry_wait_s: float = 2.0, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``destination``, resuming ``destination.partial`` if there is one.

    Up to ``retries`` failures in a row (connection errors, server errors, short bodies) are
    retried after a growing wait; any progress resets the count. A 4xx answer other than 416 is
    a ``UserError`` (wrong URL, no retry); running out of retries is a ``DownloadError`` that
    keeps the partial file for the next run.
    """
    partial = partial_path(destination)
    failures = 0
    last_error = ""
    while True:
        offset = partial.stat().st_size if partial.exists() else 0
        try:
            done, gained = _attempt(url, partial, destination, offset, progress, timeout_s)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            if isinstance(error, urllib.error.HTTPError) and 400 <= error.code < 500 and error.code != 416:
                raise UserError(
                    f"{url}: expected the file {destination.name}, the server answered {error.code} {error.reason}. "
                    "Fix: check --mirror (or $BSRNN_VBD_MIRROR), or download the file by hand into "
                    f"{destination.parent}") from error
            done, gained = False, (partial.stat().st_size if partial.exists() else 0) > offset
            last_error = f"{type(error).__name__}: {error}"
        if done:
            return destination
        failures = 0 if gained else failures + 1
        if failures > retries:
            have = partial.stat().st_size if partial.exists() else 0
            raise DownloadError(
                f"{url}: expected to download {destination.name}, but the transfer failed {failures} times in a row "
                f"(last: {last_error or 'the connection closed early'}); {have} bytes are kept in {partial}. "
                "Fix: check the network and run the same command again to resume")
        wait = min(retry_wait_s * 2 ** max(failures - 1, 0), 60.0)
        log.info("%s: transfer interrupted (%s); resuming in %.0f s", destination.name,
                 last_error or "connection closed early", wait)
        time.sleep(wait)


def _attempt(url: str, partial: Path, destination: Path, offset: int, progress: bool,
             timeout_s: float) -> tuple[bool, bool]:
    """One request: (whether the file is now complete, whether bytes were added)."""
    headers = {"User-Agent": f"bsrnn/{__version__} (+https://doi.org/10.7488/ds/2117)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        # A new opener per request: it reads the proxy variables as they are now.
        response = urllib.request.build_opener().open(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left to send: complete, or the file changed
            _, total = _content_range(error.headers.get("Content-Range"))
            if total == offset:
                _finish(partial, destination)
                return True, False
            log.info("%s: the server's file no longer matches %s; starting again", destination.name, partial.name)
            partial.unlink()
            return False, True
        raise
    with response:
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html"):
            raise UserError(
                f"{url}: expected the zip {destination.name}, the server sent a web page ({content_type}). "
                "Fix: check --mirror (or $BSRNN_VBD_MIRROR) names the folder holding the zips, or download the "
                f"file with a browser into {destination.parent}")
        first, total = _content_range(response.headers.get("Content-Range"))
        length = response.headers.get("Content-Length")
        if response.status == 206 and first == offset:
            mode = "ab"
        else:
            if offset:
                log.info("%s: the server ignored the resume request; downloading from the start", destination.name)
            offset, mode, total = 0, "wb", None
        if total is None and length is not None:
            total = offset + int(length)
        written = offset
        with open(partial, mode) as handle, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=destination.name,
            disable=None if progress else True, leave=False,
        ) as bar:
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
    gained = written > offset or mode == "wb"
    if total is not None and written != total:
        return False, gained
    _finish(partial, destination)
    return True, gained
