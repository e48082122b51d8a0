"""The vocabulary of dataset problems and the one error that reports all of them.

A problem has a ``kind`` (what went wrong, shared by every file it happens to), a ``where``
(the file or folder) and a ``detail`` (what was found there). ``ProblemReport`` collects them
during a scan and raises a single ``DataError`` grouped by kind: each group says what was
expected, names a few files with what was found, gives the count, and the fix.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

from bsrnn.audio import AUDIO_SUFFIXES, N_FFT, READABLE, SAMPLE_RATE
from bsrnn.errors import DataError

FILES_SHOWN_PER_KIND = 5


class ProblemKind(NamedTuple):
    title: str
    expected: str
    fix: str


PROBLEM_KINDS: dict[str, ProblemKind] = {
    "missing_folder": ProblemKind(
        "missing folders",
        "the corpus folders of one supported layout (listed below)",
        "create the folders or point --data-dir at the folder that holds them",
    ),
    "no_audio": ProblemKind(
        "folders without audio files",
        f"at least one audio file ({', '.join(sorted(AUDIO_SUFFIXES))})",
        "copy the corpus files there",
    ),
    "name_mismatch": ProblemKind(
        "clean/noisy name mismatches",
        "the same names (file names without their suffix) in the clean and the noisy folder of a split",
        "add the missing partner files or remove the unpaired ones",
    ),
    "missing": ProblemKind("missing files", "the file to exist", "restore the file or remove its partner"),
    "unreadable": ProblemKind(
        "unreadable files", "a file this user can read", "fix the permissions, e.g. `chmod -R a+rX DATA_DIR`"
    ),
    "empty": ProblemKind(
        "empty files", "audio samples", "re-copy the file from the original corpus, or delete the pair"
    ),
    "not_audio": ProblemKind(
        "files that are not readable audio",
        READABLE,
        "convert it, e.g. `sox IN -b 16 OUT.flac`, or delete the pair",
    ),
    "rate": ProblemKind(
        "wrong sample rate",
        f"{SAMPLE_RATE} Hz",
        "for VoiceBank+DEMAND as released (48 kHz), run `bsrnn data prepare vbd SOURCE --out DIR` (SOURCE: the "
        "folder of its zips or unpacked folders) and pass --data-dir DIR; for another corpus, resample it to "
        f"{SAMPLE_RATE} Hz into a new folder, e.g. `sox IN -r {SAMPLE_RATE} OUT.wav` or "
        f"`ffmpeg -i IN -ar {SAMPLE_RATE} OUT.wav` per file, or bsrnn.audio.resample in Python",
    ),
    "channels": ProblemKind(
        "multi-channel files", "mono audio", "downmix to mono, e.g. `sox IN -c 1 OUT.wav`, or keep one channel"
    ),
    "too_short": ProblemKind(
        "clips shorter than one frame",
        f"at least one STFT frame ({N_FFT} samples)",
        "delete the pair: it is too short to train or score on",
    ),
    "length_mismatch": ProblemKind(
        "clean/noisy length mismatches",
        "clean and noisy files of equal length",
        "re-create the pair so that both sides are aligned sample for sample",
    ),
    "non_finite": ProblemKind(
        "NaN/inf samples", "finite samples", "re-create the file; NaN/inf samples would poison training"
    ),
    "silent": ProblemKind(
        "all-silent clips", "audible samples", "delete the pair or replace the file (PESQ cannot score silence)"
    ),
}


class DataProblem(DataError):
    """One problem with one file or folder; on its own, a complete error message.

    Constructible from the message alone, so it survives being re-raised from a DataLoader
    worker process (which rebuilds exceptions as ``type(message)``).
    """

    def __init__(self, message: str, kind: str = "unreadable", where: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.where = where
        self.detail = detail

    @classmethod
    def of(cls, kind: str, where: str, detail: str) -> DataProblem:
        """A problem of a known ``kind`` whose message says expected, found and fix."""
        expected, fix = PROBLEM_KINDS[kind].expected, PROBLEM_KINDS[kind].fix
        return cls(f"{where}: expected {expected}, found {detail}. Fix: {fix}.", kind, where, detail)


class ProblemReport:
    """Problems collected during a scan, raised together as one DataError."""

    def __init__(self) -> None:
        self._by_kind: dict[str, list[DataProblem]] = defaultdict(list)
        self.notes: list[str] = []
        """Extra lines for the message, e.g. which layouts were looked for."""

    def add(self, problem: DataProblem) -> None:
        self._by_kind[problem.kind].append(problem)

    def extend(self, other: ProblemReport) -> None:
        for problems in other._by_kind.values():
            for problem in problems:
                self.add(problem)
        self.notes.extend(note for note in other.notes if note not in self.notes)

    def __len__(self) -> int:
        return sum(len(problems) for problems in self._by_kind.values())

    def kinds(self) -> dict[str, int]:
        """How many problems of each kind."""
        return {kind: len(problems) for kind, problems in self._by_kind.items()}

    def message(self, subject: str) -> str:
        """The full multi-line report; ``subject`` names what was checked."""
        lines = [f"{subject}: {len(self)} problem(s) found. Fix them and run again."]
        for kind in sorted(self._by_kind, key=list(PROBLEM_KINDS).index):
            problems = self._by_kind[kind]
            spec = PROBLEM_KINDS[kind]
            lines.append(f"- {spec.title} ({len(problems)}): expected {spec.expected}.")
            for problem in problems[:FILES_SHOWN_PER_KIND]:
                lines.append(f"    {problem.where}: {problem.detail}")
            if len(problems) > FILES_SHOWN_PER_KIND:
                lines.append(f"    ... and {len(problems) - FILES_SHOWN_PER_KIND} more")
            lines.append(f"  Fix: {spec.fix}.")
        lines.extend(self.notes)
        return "\n".join(lines)

    def raise_if_any(self, subject: str) -> None:
        """Raise one DataError listing every problem, if there is any."""
        if len(self):
            raise DataError(self.message(subject))
