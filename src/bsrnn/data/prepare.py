"""VoiceBank+DEMAND as released (48 kHz zips) -> the 16 kHz split folders ``bsrnn train`` reads.

``prepare_voicebank(SOURCE, OUT)`` writes ``OUT/{train,test}/{clean,noisy}/p226_001.wav``
(16-bit PCM WAV, mono, 16 kHz), ``OUT/SHA256SUMS`` (one line per wav, ``sha256sum -c`` reads it)
and, last, ``OUT/prepare.json`` (the manifest, described at ``build_manifest``). The manifest is
the commit marker: written after every file it describes is durable, and removed before a rerun
rewrites any of them, so a folder without it is an unfinished preparation, not one to train on.

The resampler, and why
----------------------
soxr (libsoxr through the ``soxr`` package) at quality ``HQ``, on float64 samples, then rounded
to the nearest 16-bit value (ties to even) with no dither, clipped to [-32768, 32767] (clipped
samples are counted in the manifest). Measured with ``benchmarks/resampler_choice.py`` (48 kHz
-> 16 kHz; soxr 1.1.0 / libsoxr 0.1.3, scipy 1.17; 2 shared AMD EPYC cores):

    method                          ripple 0-7k   gain 7.9k  alias 8-8.5k  alias >8.5k  s per hour
    soxr VHQ                        < 0.00001 dB  -67.5 dB   -175.7 dB     -182.2 dB    2.7-5.8
    soxr HQ                         < 0.00001 dB  -51.0 dB   -126.4 dB     -134.4 dB    2.1-3.9
    scipy resample_poly (Kaiser 5)  0.275 dB      -4.9 dB    -6.1 dB       -14.3 dB     6.0-12

(alias: worst output level for an input sine in that band, relative to the sine; both soxr
settings are -3 dB at 7.61 kHz; times: the range of three runs' medians and minima on one core
of a loaded machine, float64 input.) On a speech-like 48 kHz signal with 1/74 of its energy
above 8 kHz, the aliased energy in the output is -205 dB (VHQ), -155 dB (HQ, 0.001 LSB at its
peak) and -33 dB (resample_poly, 831 LSB at its peak). HQ and VHQ outputs differ by at most 73 LSB, all of it from the 7.3-8 kHz transition
band: on the signal's part below 7.3 kHz they agree within 0.006 LSB. resample_poly differs
from both by up to 1500 LSB (117 LSB below 7.3 kHz).

Decision: HQ. Its passband matches VHQ's, and its stopband already lies 25 dB or more below
the rounding noise of the 16-bit output (-101 dB for a full-scale sine): VHQ's extra depth
cannot survive into the files written, and costs 1.2-1.9 times the time. HQ is also the soxr
package's default and librosa's (``res_type="soxr_hq"``). resample_poly with its default
Kaiser window (beta 5) lets through audible aliasing and droops 0.66 dB at 7.2 kHz, so it is
not a candidate for the corpus. Sources at other rates (44.1 kHz, say) go through the same
resampler from their own rate; 16 kHz sources are copied sample for sample (16-bit input comes
out bit-exact). The manifest records each split's source rates, the soxr and libsoxr versions
and these settings.

Resume and byte identity
------------------------
Each wav is encoded in memory, written to a hidden temporary beside its final name
(``.p226_001.wav.<pid>.<random>.partial``), fsynced and renamed (``bsrnn.checkpoint.atomic``),
so a final name never holds half a file. Every few dozen files the folders are fsynced and the
finished files are appended to ``OUT/.prepare-progress.jsonl`` (path, SHA-256, size, frames,
source rate, clipped samples), itself fsynced: the log never names a file whose rename is not
yet durable. Its first line holds the preparation's fingerprint (sources' digests, resampler
version and settings, output format); a rerun with anything different is refused, naming what
changed. An OUT whose split folders are the source folders themselves (a link to the unpacked
release) is refused before anything in it is touched. On a rerun, under an exclusive lock on
``OUT/.lock``: stray temporaries are deleted, a
torn last log line is dropped, every logged file is re-hashed and kept only if it matches, and
the rest are converted again; a file that is already there unlogged (the run was killed between
rename and log) is kept if its bytes equal the new ones. Nothing is rewritten that is already
right. A successful run ends by deleting the progress log and ``OUT/.lock``, so a finished
folder holds only the corpus, ``SHA256SUMS`` and ``prepare.json``; prepared again, it is
checked against ``SHA256SUMS`` and left untouched (a damaged file sends every file through
conversion again, and only those whose bytes differ are rewritten). ``bsrnn train`` and
``evaluate`` refuse a folder with a progress log and no manifest: an unfinished preparation
(``bsrnn.data.layout.check_preparation_finished``).

Output bytes are a function of the source bytes and the recorded resampler version: soxr is
deterministic (no dither, no randomness), WAV headers carry no time, the manifest and
``SHA256SUMS`` hold no timestamps and list everything in a fixed order. So two runs on one
machine, interrupted or not, in any number of workers, give byte-identical wavs, ``SHA256SUMS``
and ``prepare.json``. (Across machines libsoxr may take other SIMD paths, which can change a
rounding in the last bit; the manifest names the versions to compare.) The progress log is the
one file outside that claim: its order follows the run's history.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import io
import itertools
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import soxr
from tqdm import tqdm

from bsrnn import __version__
from bsrnn.audio import SAMPLE_RATE
from bsrnn.checkpoint.atomic import fsync_directory, remove_stale_temporaries, temporary_path
from bsrnn.data.folder_lock import lock_folder
from bsrnn.data.holdout import VOICEBANK_VALID_SPEAKERS
from bsrnn.data.layout import MANIFEST_NAME, PROGRESS_NAME, SIDES, SPLITS, natural_key
from bsrnn.data.voicebank import DOI, NAME, SUFFIX, SourceSet, digest_file, find_release, read_member, speaker_of
from bsrnn.errors import DataError, UserError
from bsrnn.output import check_output_folder
from bsrnn.workers import start_workers

log = logging.getLogger(__name__)

QUALITY = "HQ"
"""soxr quality setting (see the module docstring for the measurement behind it)."""
SUBTYPE = "PCM_16"
CHECKSUMS_NAME = "SHA256SUMS"
MANIFEST_FORMAT = "bsrnn-prepare/1"
COMMIT_EVERY = 32
"""Finished files per fsync of their folders and the progress log."""
MAX_WORKERS = 8
"""More processes than this only wait on the disk."""


def resampler_settings() -> dict[str, Any]:
    """Everything that decides the output samples, as the manifest records it."""
    return {
        "name": "soxr",
        "version": soxr.__version__,
        "libsoxr": soxr.soxr_ext.libsoxr_version(),
        "quality": QUALITY,
        "computed_in": "float64",
        "to_rate": SAMPLE_RATE,
        "quantization": "round to nearest 16-bit value (ties to even), no dither, clipped to [-32768, 32767]",
        "same_rate": "copied sample for sample, no resampling",
    }


# ----------------------------------------------------------------------------- one file
class ConversionError(Exception):
    """A source file that cannot become a training file; the message says what was found."""


@dataclass(frozen=True)
class Converted:
    """One output file, encoded, and what the manifest needs to know of it."""

    wav: bytes
    frames: int
    source_rate: int
    clipped: int


def convert_audio(data: bytes) -> Converted:
    """A mono audio file's bytes -> 16 kHz 16-bit PCM WAV bytes (deterministic)."""
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError) as error:
        raise ConversionError(f"data libsndfile cannot decode ({error})") from error
    if samples.shape[1] != 1:
        raise ConversionError(f"{samples.shape[1]} channels where the release has mono files")
    if samples.shape[0] == 0:
        raise ConversionError("no samples")
    mono = samples[:, 0]
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality=QUALITY)
    scaled = np.rint(mono * 32768.0)
    clipped = int(np.count_nonzero((scaled > 32767) | (scaled < -32768)))
    pcm = np.clip(scaled, -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, SAMPLE_RATE, format="WAV", subtype=SUBTYPE)
    return Converted(buffer.getvalue(), int(pcm.shape[0]), int(rate), clipped)


@dataclass(frozen=True)
class Task:
    """One output file and the source it comes from (small: it travels to worker processes)."""

    index: int
    split: str
    side: str
    name: str
    source_path: Path
    source_kind: str
    member: str

    @property
    def output(self) -> str:
        """The output's path relative to OUT, with "/" as on every platform."""
        return f"{self.split}/{self.side}/{self.name}{SUFFIX}"

    @property
    def label(self) -> str:
        separator = "/" if self.source_kind == "folder" else ":"
        return f"{self.source_path.name}{separator}{self.member}"


def convert_task(task: Task) -> tuple[int, Converted | str]:
    """Read and convert one task's source; a problem comes back as its description."""
    try:
        return task.index, convert_audio(read_member(task.source_path, task.source_kind, task.member))
    except ConversionError as error:
        return task.index, f"{task.label}: expected a mono {NAME} wav, found {error}"
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        return task.index, f"{task.label}: cannot be read ({error})"


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Record:
    """A finished output file, as the progress log holds it."""

    path: str
    sha256: str
    size: int
    frames: int
    source_rate: int
    clipped: int


def write_output(final: Path, data: bytes) -> None:
    """Write ``data`` under ``final`` durably: temporary beside it, fsync, rename.

    The folder's fsync (which makes the rename durable) is the caller's, once per batch.
    """
    temporary = temporary_path(final)
    try:
        with open(temporary, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class ProgressLog:
    """``OUT/.prepare-progress.jsonl``: the fingerprint, then one line per finished file.

    Lines are appended only after the files they name are durable under their final names.
    """

    def __init__(self, out: Path) -> None:
        self.path = out / PROGRESS_NAME
        self.out = out
        self._pending: list[Record] = []
        self._folders: set[Path] = set()

    def _open(self, flags: int) -> io.BufferedIOBase:
        """The log for writing, never through a link planted under its name (it would write there)."""
        try:
            fd = os.open(self.path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UserError(f"{self.path} is a symbolic link: the preparation's progress log is never written "
                                "through one. Fix: remove the link and run again") from error
            raise
        return os.fdopen(fd, "rb+" if flags & os.O_RDWR else "ab")

    def read(self) -> tuple[dict[str, Any] | None, dict[str, Record]]:
        """(fingerprint, records by path); a torn last line (a crash mid-append) is cut off."""
        if not self.path.exists():
            return None, {}
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]
        if len(complete) != len(raw):
            with self._open(os.O_RDWR) as handle:
                handle.truncate(len(complete))
                os.fsync(handle.fileno())
        lines = complete.decode("utf-8", errors="replace").splitlines()
        try:
            fingerprint = json.loads(lines[0])["fingerprint"] if lines else None
        except (ValueError, KeyError, TypeError):
            fingerprint = None
        records: dict[str, Record] = {}
        for line in lines[1:]:
            try:
                record = Record(**json.loads(line))
            except (ValueError, TypeError):
                continue
            records[record.path] = record
        return fingerprint, records

    def start(self, fingerprint: dict[str, Any]) -> None:
        """A new log holding only ``fingerprint`` (atomically replacing any other)."""
        write_output(self.path, (json.dumps({"fingerprint": fingerprint}, sort_keys=True) + "\n").encode())
        fsync_directory(self.out)

    def add(self, record: Record, folder: Path) -> None:
        self._pending.append(record)
        self._folders.add(folder)
        if len(self._pending) >= COMMIT_EVERY:
            self.flush()

    def flush(self) -> None:
        """Make the pending files' renames durable, then log them."""
        if not self._pending:
            return
        for folder in sorted(self._folders):
            fsync_directory(folder)
        lines = "".join(json.dumps(asdict(record), sort_keys=True) + "\n" for record in self._pending)
        with self._open(os.O_WRONLY | os.O_APPEND) as handle:
            handle.write(lines.encode())
            handle.flush()
            os.fsync(handle.fileno())
        self._pending.clear()
        self._folders.clear()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verified(out: Path, record: Record | None) -> bool:
    """Whether the file a record names is there with the recorded size and SHA-256."""
    if record is None:
        return False
    path = out / record.path
    try:
        return path.stat().st_size == record.size and sha256_of(path) == record.sha256
    except OSError:
        return False


# ----------------------------------------------------------------------------- the job
@dataclass(frozen=True)
class PrepareResult:
    """What a preparation did: the manifest, and how many files it wrote or found done."""

    out: Path
    manifest: dict[str, Any]
    written: int
    """Files written now (a file already there with the same bytes is not written again)."""
    kept: int


def plan(sets: list[SourceSet]) -> list[Task]:
    """Every output file, in the order the manifest lists them: split, name, clean then noisy."""
    tasks: list[Task] = []
    for split in SPLITS:
        by_side = {s.release.side: s for s in sets if s.release.split == split}
        for name in sorted(by_side["clean"].members, key=natural_key):
            for side in SIDES:
                source = by_side[side]
                tasks.append(Task(len(tasks), split, side, name, source.path, source.kind, source.members[name]))
    return tasks


def describe_sources(sets: list[SourceSet], progress: bool) -> list[dict[str, Any]]:
    """Name, size and SHA-256 of each zip (with MD5, the checksum DSpace repositories such as
    DataShare list), or of each file of a folder."""
    total = sum(s.path.stat().st_size if s.kind == "zip" else
                sum((s.path / m).stat().st_size for m in s.members.values()) for s in sets)
    log.info("hashing the sources (%.2f GB)", total / 1e9)
    entries = []
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="hashing sources",
              disable=None if progress else True, leave=False) as bar:
        for source in sets:
            entry: dict[str, Any] = {"set": source.release.folder, "split": source.release.split,
                                     "side": source.release.side, "kind": source.kind}
            if source.kind == "zip":
                digest = digest_file(source.path, md5=True, on_bytes=bar.update)
                entry.update(file=digest.name, size=digest.size, sha256=digest.sha256, md5=digest.md5)
            else:
                files = [digest_file(source.path / source.members[name], on_bytes=bar.update)
                         for name in sorted(source.members, key=natural_key)]
                listing = "".join(f"{f.sha256}  {f.name}\n" for f in files)
                entry.update(folder=source.path.name, size=sum(f.size for f in files),
                             files_sha256=hashlib.sha256(listing.encode()).hexdigest(),
                             files=[{"name": f.name, "size": f.size, "sha256": f.sha256} for f in files])
            entry["wav_files"] = len(source.members)
            entries.append(entry)
    return entries


def fingerprint_of(speakers: int, sources: list[dict[str, Any]]) -> dict[str, Any]:
    """What decides every output byte; a resume must find the same."""
    return {
        "format": MANIFEST_FORMAT,
        "speakers": speakers,
        "sources": {entry["set"]: {"kind": entry["kind"], "size": entry["size"],
                                   "sha256": entry.get("sha256") or entry["files_sha256"]} for entry in sources},
        "resampler": resampler_settings(),
        "output": {"format": "WAV", "subtype": SUBTYPE, "sample_rate": SAMPLE_RATE},
    }


def differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The fields where two fingerprints differ, as ``field: old -> new`` (digests shortened)."""

    def short(value: Any) -> str:
        if value is None:
            return "absent"
        if isinstance(value, dict):
            return "present"
        text = str(value)
        return text[:12] + "..." if len(text) > 24 else text

    found = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found.extend(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            found.append(f"{prefix}{key}: {short(a)} -> {short(b)}")
    return found


def check_out(out: Path, tasks: list[Task]) -> None:
    """Refuse wav files in OUT's split folders that this preparation would not write: the
    trainer would take them for part of the corpus."""
    expected = {task.output for task in tasks}
    strays = []
    for split in SPLITS:
        for side in SIDES:
            folder = out / split / side
            if folder.is_dir():
                strays.extend(f"{split}/{side}/{entry.name}" for entry in folder.iterdir()
                              if not entry.name.startswith(".") and f"{split}/{side}/{entry.name}" not in expected)
    if strays:
        raise DataError(
            f"--out {out}: expected a new folder or one prepared earlier from the same release, found "
            f"{len(strays)} files this release does not have: {', '.join(sorted(strays, key=natural_key))}. "
            "Fix: choose an empty --out, or remove those files")


def check_not_onto_sources(out: Path, tasks: list[Task]) -> None:
    """Refuse an OUT whose split folder is a source folder (``OUT/train/clean`` made a link to
    the unpacked release, say). By identity, not name: the file names match by design, so
    ``check_out`` passes such a folder, and each rename would replace a 48 kHz original with its
    16 kHz version. (An output name that is a hard link to a source is safe: the rename replaces
    that name, never the file it shares.)"""
    sources = [task.source_path / task.member if task.source_kind == "folder" else task.source_path
               for task in tasks]
    one_per_folder = list({path.parent: path for path in sources}.values())
    for split in SPLITS:
        for side in SIDES:
            check_output_folder(out / split / side, one_per_folder, "--out")


def prepare_voicebank(source: Path, out: Path, speakers: int = 28, workers: int = 1,
                      progress: bool = True) -> PrepareResult:
    """Prepare the release under ``source`` into ``out`` (see the module docstring); resumable."""
    sets = find_release(source, speakers)
    tasks = plan(sets)
    lock = lock_folder(out, "--out", "to write the prepared corpus in")
    try:
        result = _prepare_locked(sets, tasks, out, speakers, workers, progress)
        lock.remove()  # a finished folder keeps no trace of the run that prepared it
        return result
    finally:
        lock.release()


def _prepare_locked(sets: list[SourceSet], tasks: list[Task], out: Path, speakers: int, workers: int,
                    progress: bool) -> PrepareResult:
    check_not_onto_sources(out, tasks)  # before anything in OUT is touched, stale temporaries included
    for folder in [out] + [out / split / side for split in SPLITS for side in SIDES]:
        remove_stale_temporaries(folder, exclusive=True)
    sources = describe_sources(sets, progress)
    fingerprint = fingerprint_of(speakers, sources)
    progress_log = ProgressLog(out)
    logged_fingerprint, records = progress_log.read()
    manifest_path = out / MANIFEST_NAME
    if logged_fingerprint is None and manifest_path.exists():
        try:
            logged_fingerprint = json.loads(manifest_path.read_text())["fingerprint"]
        except (ValueError, KeyError, TypeError):
            logged_fingerprint = None
    if logged_fingerprint is not None and logged_fingerprint != fingerprint:
        raise UserError(
            f"--out {out}: expected a preparation of the same sources with the same settings to resume, found one "
            f"that differs in {'; '.join(differences(logged_fingerprint, fingerprint))}. Fix: choose another --out, "
            f"or delete {out} to prepare it again")
    check_out(out, tasks)
    if logged_fingerprint is not None and not progress_log.path.exists():
        finished = finished_manifest(out, tasks)
        if finished is not None:
            return PrepareResult(out, finished, 0, len(tasks))
    if logged_fingerprint is None or not progress_log.path.exists():
        progress_log.start(fingerprint)
        records = {}

    done: dict[int, Record] = {}
    for task in tqdm(tasks, desc="verifying earlier output", unit="file", leave=False,
                     disable=(None if progress else True) if records else True):
        record = records.get(task.output)
        if verified(out, record):
            assert record is not None
            done[task.index] = record
    pending = [task for task in tasks if task.index not in done]
    problems: list[str] = []
    written = 0
    if pending:
        if manifest_path.exists():  # the folder is no longer complete until the manifest is rewritten
            manifest_path.unlink()
            fsync_directory(out)
        for split in SPLITS:
            for side in SIDES:
                (out / split / side).mkdir(parents=True, exist_ok=True)
        workers = max(1, min(workers, MAX_WORKERS, len(pending)))
        log.info("%d of %d files already prepared and verified; converting %d with %d worker%s",
                 len(done), len(tasks), len(pending), workers, "s" if workers > 1 else "")
        try:
            with tqdm(total=len(pending), desc="preparing", unit="file", disable=None if progress else True) as bar:
                for index, result in _converted(pending, workers):
                    bar.update(1)
                    task = tasks[index]
                    if isinstance(result, str):
                        problems.append(result)
                        continue
                    final = out / task.output
                    if not (final.exists() and final.read_bytes() == result.wav):
                        write_output(final, result.wav)
                        written += 1
                    record = Record(task.output, hashlib.sha256(result.wav).hexdigest(), len(result.wav),
                                    result.frames, result.source_rate, result.clipped)
                    done[index] = record
                    progress_log.add(record, final.parent)
        finally:
            progress_log.flush()
    if problems:
        raise DataError(
            f"SOURCE: expected every {NAME} file to be a readable mono wav, found {len(problems)} that are not: "
            f"{'; '.join(problems)}. The other {len(done)} files are prepared in {out}. Fix: download or unpack "
            "the sets holding them again and rerun the same command (it continues where it stopped)")
    ordered = [done[task.index] for task in tasks]
    checksums = "".join(f"{record.sha256}  {record.path}\n" for record in ordered).encode()
    _write_if_changed(out / CHECKSUMS_NAME, checksums)
    manifest = build_manifest(speakers, sources, fingerprint, tasks, ordered, hashlib.sha256(checksums).hexdigest())
    _write_if_changed(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    progress_log.path.unlink(missing_ok=True)  # the manifest is durable: the folder is finished
    fsync_directory(out)
    return PrepareResult(out, manifest, written, len(tasks) - written)


def finished_manifest(out: Path, tasks: list[Task]) -> dict[str, Any] | None:
    """The manifest of a finished preparation of ``tasks`` in ``out`` whose files all match
    ``SHA256SUMS``, else None.

    A finished folder keeps no progress log, so a rerun checks it against its checksums instead:
    the manifest's digest of ``SHA256SUMS``, then every listed file. Anything else (a damaged or
    missing file, another list) sends the rerun through conversion again, which rewrites only the
    files whose bytes differ.
    """
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text())
        checksums = (out / CHECKSUMS_NAME).read_bytes()
        if hashlib.sha256(checksums).hexdigest() != manifest["output"]["checksums_sha256"]:
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    listed = [line.split("  ", 1) for line in checksums.decode("utf-8", errors="replace").splitlines()]
    if [entry[-1] for entry in listed] != [task.output for task in tasks]:
        return None
    for digest, relative in listed:
        try:
            if sha256_of(out / relative) != digest:
                return None
        except OSError:
            return None
    return manifest


def _converted(pending: list[Task], workers: int) -> Iterator[tuple[int, Converted | str]]:
    """Convert ``pending`` in order, in this process or in ``workers`` processes.

    Workers are spawned by ``bsrnn.workers.start_workers``: a fresh interpreter each
    (a plain fork would copy this process's threads, tqdm's monitor among them), that leaves
    signals to this process and exits within a second of its death, however it dies. (Workers of
    a fork server did not: each holds the server's liveness pipe, so after a SIGKILL of this
    process neither the server nor the workers ever saw it go.) Only this process writes files.
    At most ``4 * workers`` files are in flight, so a slow disk cannot pile converted files up in
    memory.
    """
    if workers == 1:
        yield from map(convert_task, pending)
        return
    executor, _ = start_workers(workers)
    with executor:
        remaining = iter(pending)
        in_flight = collections.deque(executor.submit(convert_task, task)
                                      for task in itertools.islice(remaining, 4 * workers))
        try:
            while in_flight:
                result = in_flight.popleft().result()
                following = next(remaining, None)
                if following is not None:
                    in_flight.append(executor.submit(convert_task, following))
                yield result
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)
            raise


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    write_output(path, data)
    fsync_directory(path.parent)


def build_manifest(speakers: int, sources: list[dict[str, Any]], fingerprint: dict[str, Any], tasks: list[Task],
                   records: list[Record], checksums_sha256: str) -> dict[str, Any]:
    """``prepare.json``: what was prepared from what, and how. No timestamps, fixed order.

    - ``format``, ``bsrnn_version``; ``dataset``: name, DOI, training speakers (28 or 56);
    - ``sources``: per set (zip or folder): split, side, file name, size, SHA-256 (zips also
      MD5, the checksum DataShare publishes); for a folder each file's name, size and SHA-256;
    - ``resampler``: soxr and libsoxr versions, quality, precision, quantization;
    - ``output``: format, subtype, rate, layout, ``SHA256SUMS`` and its SHA-256;
    - ``validation``: the training speakers ``bsrnn train`` holds out to validate on (p226, p287);
    - ``splits``: per split the pairs, frames and seconds per side, speakers and their count,
      the source files' rates (``{"48000": 23144}``), how many were resampled, clipped samples;
    - ``fingerprint``: what a resume compares (sources' digests, resampler, output format).
    """
    splits: dict[str, Any] = {}
    for split in SPLITS:
        chosen = [(task, record) for task, record in zip(tasks, records, strict=True) if task.split == split]
        frames = {side: sum(r.frames for t, r in chosen if t.side == side) for side in SIDES}
        names = [t.name for t, _ in chosen if t.side == "clean"]
        speakers_found = sorted({speaker_of(name) for name in names} - {None}, key=natural_key)  # type: ignore[arg-type]
        rates = collections.Counter(str(r.source_rate) for _, r in chosen)
        splits[split] = {
            "pairs": len(names),
            "frames": frames,
            "duration_s": {side: round(frames[side] / SAMPLE_RATE, 3) for side in SIDES},
            "speakers": speakers_found,
            "speaker_count": len(speakers_found),
            "names_without_speaker": sum(speaker_of(name) is None for name in names),
            "source_rates": dict(sorted(rates.items(), key=lambda item: int(item[0]))),
            "resampled_files": sum(r.source_rate != SAMPLE_RATE for _, r in chosen),
            "clipped_samples": {side: sum(r.clipped for t, r in chosen if t.side == side) for side in SIDES},
        }
    held_out = [speaker for speaker in VOICEBANK_VALID_SPEAKERS if speaker in splits["train"]["speakers"]]
    return {
        "format": MANIFEST_FORMAT,
        "bsrnn_version": __version__,
        "dataset": {"name": NAME, "doi": DOI, "url": f"https://doi.org/{DOI}", "speakers": speakers},
        # What ``bsrnn train`` validates on (``bsrnn.data.holdout``): whole training speakers,
        # never the test split.
        "validation": {"speakers": held_out, "from_split": "train"},
        "sources": sources,
        "resampler": resampler_settings(),
        "output": {
            "format": "WAV",
            "subtype": SUBTYPE,
            "sample_rate": SAMPLE_RATE,
            "channels": 1,
            "layout": "split folders: train/clean, train/noisy, test/clean, test/noisy",
            "checksums": CHECKSUMS_NAME,
            "checksums_sha256": checksums_sha256,
            "files": len(records),
        },
        "splits": splits,
        "fingerprint": fingerprint,
    }


def summary(result: PrepareResult) -> Iterable[str]:
    """Lines for the terminal: per split pairs, hours and speakers."""
    for split, stats in result.manifest["splits"].items():
        speakers = stats["speaker_count"]
        rates = ", ".join(f"{rate} Hz" for rate in stats["source_rates"])
        yield (f"  {split}: {stats['pairs']} pairs, {stats['duration_s']['clean'] / 3600:.2f} h, "
               f"{speakers} speaker{'s' if speakers != 1 else ''}, from {rates}")
