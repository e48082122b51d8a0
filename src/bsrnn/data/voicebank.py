"""The VoiceBank+DEMAND release as its authors distribute it: names, where it lives, what is in it.

The release (C. Valentini-Botinhao, University of Edinburgh DataShare, doi 10.7488/ds/2117,
handle 10283/2791) is a set of zip files, each holding one top folder of the same name:

- ``clean_trainset_28spk_wav.zip`` / ``noisy_trainset_28spk_wav.zip``: training set, 28 speakers
  (11572 pairs); ``clean_trainset_56spk_wav.zip`` / ``noisy_trainset_56spk_wav.zip``: the
  56-speaker training set;
- ``clean_testset_wav.zip`` / ``noisy_testset_wav.zip``: the test set, 2 speakers (824 pairs).

Files are ``p<speaker>_<utterance>.wav``, 48 kHz, mono, 16-bit, and a clean file pairs with the
noisy file of the same name. A source folder may hold the zips or the folders they unpack to;
where both are present the zip is used, since one digest then identifies the whole set.

This module only finds and reads the release; ``bsrnn.data.prepare`` turns it into training data.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bsrnn.data.download import download
from bsrnn.data.layout import SIDES, SPLITS, natural_key
from bsrnn.errors import DataError, UserError

log = logging.getLogger(__name__)

DOI = "10.7488/ds/2117"
NAME = "VoiceBank+DEMAND"
DEFAULT_MIRROR = "https://datashare.ed.ac.uk/bitstream/handle/10283/2791"
"""Where DataShare serves the release's files: ``DEFAULT_MIRROR/<file>.zip``, the file URLs of the
record's handle that recipes have long used (DataShare redirects them to its current file links).
The development machine cannot reach the host, so ``--mirror`` / ``$BSRNN_VBD_MIRROR`` replace it
for a local copy or a test server."""
MIRROR_ENV = "BSRNN_VBD_MIRROR"
"""Environment variable that replaces ``DEFAULT_MIRROR`` (``--mirror`` replaces both)."""
SPEAKER_CHOICES = (28, 56)
OFFICIAL_PAIRS = {("train", 28): 11572, ("test", 28): 824, ("test", 56): 824}
"""Pairs per split in the official release, where widely reported; a different count is worth a
warning, not an error."""
SPEAKER_PATTERN = re.compile(r"^(p\d+)_\d+$")
"""``p226_001`` -> speaker ``p226``."""
SUFFIX = ".wav"
_GROUPS_SHOWN = 5


@dataclass(frozen=True)
class ReleaseSet:
    """One zip of the release: which split and side it holds, and its top folder's name."""

    split: str
    side: str
    folder: str

    @property
    def zip_name(self) -> str:
        return f"{self.folder}.zip"


def release_sets(speakers: int) -> list[ReleaseSet]:
    """The four sets of the release with ``speakers`` training speakers (28 or 56)."""
    if speakers not in SPEAKER_CHOICES:
        raise UserError(f"--speakers: expected one of {', '.join(map(str, SPEAKER_CHOICES))}, got {speakers}. "
                        "Fix: pass --speakers 28 (the usual benchmark) or --speakers 56")
    return [
        ReleaseSet(split, side, f"{side}_trainset_{speakers}spk_wav" if split == "train" else f"{side}_testset_wav")
        for split in SPLITS
        for side in SIDES
    ]


def speaker_of(name: str) -> str | None:
    """The speaker of a release file name (``p226_001`` -> ``p226``), None if it has no such form."""
    match = SPEAKER_PATTERN.match(name)
    return match.group(1) if match else None


@dataclass(frozen=True)
class SourceSet:
    """Where one set of the release was found: a zip or a folder, and its wav files by name.

    ``members`` maps a file's name (without ``.wav``) to the member path inside the zip, or to
    the file name inside the folder.
    """

    release: ReleaseSet
    path: Path
    kind: str
    """"zip" or "folder"."""
    members: dict[str, str]

    @property
    def label(self) -> str:
        return self.path.name


def _zip_members(path: Path, folder: str) -> tuple[dict[str, str], list[str]]:
    """The wav members of a release zip by name, and the names found more than once.

    Members are ``<folder>/<name>.wav`` (the release) or ``<name>.wav`` (a zip made by hand);
    folders, hidden files (``._x.wav``, ``__MACOSX/``) and other suffixes are left out.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(
            f"{path}: expected a zip archive of the {NAME} release, found a file zipfile cannot open ({error}). "
            "Fix: the download is probably damaged or incomplete: delete it and download it again "
            "(`--download` does)") from error
    members: dict[str, str] = {}
    repeated: list[str] = []
    for info in infos:
        if info.is_dir():
            continue
        parts = info.filename.split("/")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != folder):
            continue
        base = parts[-1]
        if base.startswith(".") or not base.lower().endswith(SUFFIX):
            continue
        name = base[: -len(SUFFIX)]
        if name in members:
            repeated.append(name)
        members[name] = info.filename
    return members, repeated


def _folder_members(path: Path) -> dict[str, str]:
    return {
        entry.name[: -len(SUFFIX)]: entry.name
        for entry in path.iterdir()
        if not entry.name.startswith(".") and entry.name.lower().endswith(SUFFIX) and entry.is_file()
    }


def find_release(source: Path, speakers: int) -> list[SourceSet]:
    """The four sets of the release under ``source``, checked for presence and pairing.

    One DataError names everything wrong at once: each set that is neither a zip nor a folder,
    each file present on one side of a split only, each set without wav files.
    """
    sets = release_sets(speakers)
    if not source.is_dir():
        found = "a file" if source.exists() else "nothing"
        raise UserError(
            f"SOURCE {source}: expected a folder holding the {NAME} zips ({', '.join(s.zip_name for s in sets)}) "
            f"or the folders they unpack to, found {found}. Fix: pass the folder you downloaded them to, "
            "or add --download to fetch them there")
    missing = [release for release in sets
               if not (source / release.zip_name).is_file() and not (source / release.folder).is_dir()]
    if missing:
        names = ", ".join(f"{release.zip_name} (or folder {release.folder})" for release in missing)
        raise DataError(
            f"SOURCE {source}: expected the {NAME} release ({speakers}-speaker training set), missing "
            f"{len(missing)} of 4: {names}. Fix: download them from https://doi.org/{DOI} into {source}, "
            "or add --download")
    found_sets: list[SourceSet] = []
    problems: list[str] = []
    for release in sets:
        zip_path = source / release.zip_name
        if zip_path.is_file():
            members, repeated = _zip_members(zip_path, release.folder)
            found_sets.append(SourceSet(release, zip_path, "zip", members))
            if repeated:
                problems.append(f"{zip_path.name} holds {', '.join(sorted(set(repeated), key=natural_key))} "
                                "twice (at its top and in its folder)")
        else:
            found_sets.append(SourceSet(release, source / release.folder, "folder",
                                        _folder_members(source / release.folder)))
    check_case_twins(source, found_sets)
    for found in found_sets:
        if not found.members:
            problems.append(f"{found.label} holds no .wav files")
    for split in SPLITS:
        clean, noisy = (next(s for s in found_sets if s.release.split == split and s.release.side == side)
                        for side in SIDES)
        for one, other in ((clean, noisy), (noisy, clean)):
            unpaired = sorted(one.members.keys() - other.members.keys(), key=natural_key)
            if unpaired and other.members:
                problems.append(f"{len(unpaired)} files of {one.label} are missing from {other.label}: "
                                + ", ".join(f"{name}{SUFFIX}" for name in unpaired))
    if problems:
        raise DataError(
            f"SOURCE {source}: expected every clean file of the {NAME} release to have a noisy file of the "
            f"same name and the reverse, found: {'; '.join(problems)}. Fix: download or unpack the sets named "
            "again (a partly unpacked folder is the usual cause), or delete the damaged zip and use --download")
    for split in SPLITS:
        pairs = len(next(s for s in found_sets if s.release.split == split).members)
        official = OFFICIAL_PAIRS.get((split, speakers))
        if official is not None and pairs != official:
            log.warning("%s set: %d pairs, where the official %s release has %d; preparing what is there",
                        split, pairs, NAME, official)
    return found_sets


def case_twins(members: Iterable[str]) -> list[list[str]]:
    """Groups of names that differ only in case (``P232_001``, ``p232_001``), each sorted."""
    by_folded: dict[str, list[str]] = {}
    for name in members:
        by_folded.setdefault(name.casefold(), []).append(name)
    return sorted((sorted(names) for names in by_folded.values() if len(names) > 1), key=lambda g: natural_key(g[0]))


def check_case_twins(source: Path, found_sets: list[SourceSet]) -> None:
    """Refuse sets holding files whose names differ only in case, naming every group.

    Prepared, they would become two files that ``bsrnn train`` and ``evaluate`` refuse (which
    one a pair means cannot be guessed), and one file on a case-insensitive file system. The
    official release has none, so such a set is not the original.
    """
    found = [f"{found.label}: {' and '.join(f'{name}{SUFFIX}' for name in group)}"
             for found in found_sets for group in case_twins(found.members)]
    if found:
        more = f" (and {len(found) - _GROUPS_SHOWN} more)" if len(found) > _GROUPS_SHOWN else ""
        raise DataError(
            f"SOURCE {source}: expected file names that differ in more than case, as in the {NAME} release, "
            f"found {len(found)} group(s) that differ only in case: {'; '.join(found[:_GROUPS_SHOWN])}{more}. "
            "Fix: keep one file of each "
            "group (rename or remove the others), or download the original release again (--download)")


_open_zips: dict[tuple[int, Path], zipfile.ZipFile] = {}


def read_member(path: Path, kind: str, member: str) -> bytes:
    """The bytes of one file of a set: ``member`` of the zip at ``path`` (CRC-checked as it is
    read), or of the folder at ``path``.

    Open zips are kept per process, so a worker opens each archive once, never one inherited
    from its parent (a shared file offset would mix up reads).
    """
    if kind == "folder":
        return (path / member).read_bytes()
    key = (os.getpid(), path)
    archive = _open_zips.get(key)
    if archive is None:
        archive = _open_zips[key] = zipfile.ZipFile(path)
    return archive.read(member)


@dataclass(frozen=True)
class FileDigest:
    """A file's name, size and SHA-256 (and MD5 where a publisher lists one to compare with)."""

    name: str
    size: int
    sha256: str
    md5: str | None = None


def digest_file(path: Path, md5: bool = False, on_bytes: Callable[[int], object] | None = None) -> FileDigest:
    """Size and SHA-256 (and MD5 if asked) of ``path``, read in 4 MiB blocks; ``on_bytes`` (a
    progress bar's ``update``) hears of every block."""
    sha = hashlib.sha256()
    md = hashlib.md5(usedforsecurity=False) if md5 else None
    size = 0
    with open(path, "rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            sha.update(block)
            if md is not None:
                md.update(block)
            size += len(block)
            if on_bytes is not None:
                on_bytes(len(block))
    return FileDigest(path.name, size, sha.hexdigest(), md.hexdigest() if md is not None else None)


def mirror_url(mirror: str | None) -> str:
    """The base URL to download from: ``mirror``, else ``$BSRNN_VBD_MIRROR``, else DataShare."""
    base = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    if not base.startswith(("http://", "https://")):
        origin = "--mirror" if mirror else MIRROR_ENV
        raise UserError(f"{origin}: expected an http:// or https:// URL of a folder holding the {NAME} zips, "
                        f"got {base!r}. Fix: pass e.g. --mirror {DEFAULT_MIRROR}")
    return base.rstrip("/")


def fetch_release(source: Path, speakers: int, mirror: str | None = None, progress: bool = True,
                  retries: int = 8, retry_wait_s: float = 2.0) -> list[Path]:
    """Download the zips of the release that ``source`` lacks (neither zip nor folder there).

    Interrupted downloads resume from their ``.partial`` file. Returns the zips downloaded now.
    One download into ``source`` at a time (``folder_lock``): a second one is refused.
    """
    from bsrnn.data.folder_lock import lock_folder

    base = mirror_url(mirror)
    lock = lock_folder(source, "SOURCE", f"to download the {NAME} zips into")
    try:
        fetched = _fetch_locked(source, speakers, base, progress, retries, retry_wait_s)
        lock.remove()  # the folder keeps no trace of the download
        return fetched
    finally:
        lock.release()


def _fetch_locked(source: Path, speakers: int, base: str, progress: bool, retries: int,
                  retry_wait_s: float) -> list[Path]:
    fetched: list[Path] = []
    for release in release_sets(speakers):
        target = source / release.zip_name
        if target.is_file() or (source / release.folder).is_dir():
            log.info("%s: already in %s, not downloaded", release.zip_name, source)
            continue
        log.info("downloading %s/%s", base, release.zip_name)
        download(f"{base}/{release.zip_name}", target, progress=progress, retries=retries,
                 retry_wait_s=retry_wait_s)
        log.info("downloaded %s (%.1f MB)", target, target.stat().st_size / 1e6)
        fetched.append(target)
    return fetched
