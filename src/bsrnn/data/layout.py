"""The corpus: paired clean/noisy clips per split, found on disk or built in memory.

Two on-disk layouts are recognised under a data directory DATA:

- split folders (the reference recipe's): ``DATA/train/{clean,noisy}``, ``DATA/test/{clean,noisy}``;
- VoiceBank+DEMAND as distributed: ``DATA/clean_trainset_28spk_wav``,
  ``DATA/noisy_trainset_28spk_wav``, ``DATA/clean_testset_wav``, ``DATA/noisy_testset_wav``.

A pair is a clean and a noisy ``*.wav`` of the same file name in the same split; its name is
the file name without ``.wav``. Pairs are sorted by name in natural order (``p2`` before
``p10``), as the reference's ``natsorted``. Hidden files (``.*``, e.g. macOS ``._x.wav``) and
other extensions are ignored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bsrnn.audio import write_wav
from bsrnn.data.report import DataProblem, ProblemReport
from bsrnn.data.sources import FileSource, Pair
from bsrnn.errors import DataError, UserError

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
SIDES = ("clean", "noisy")


@dataclass(frozen=True)
class Layout:
    """A way of arranging a corpus in folders: (split, side) -> folder relative to DATA."""

    name: str
    folders: dict[tuple[str, str], str]


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "split folders",
        {(split, side): f"{split}/{side}" for split in SPLITS for side in SIDES},
    ),
    Layout(
        "VoiceBank+DEMAND",
        {
            ("train", "clean"): "clean_trainset_28spk_wav",
            ("train", "noisy"): "noisy_trainset_28spk_wav",
            ("test", "clean"): "clean_testset_wav",
            ("test", "noisy"): "noisy_testset_wav",
        },
    ),
)


@dataclass
class Corpus:
    """Pairs per split; ``root``/``layout`` say where they came from (None: in memory)."""

    train: list[Pair] = field(default_factory=list)
    test: list[Pair] = field(default_factory=list)
    root: Path | None = None
    layout: str = "in memory"

    def split(self, name: str) -> list[Pair]:
        """The pairs of split ``name`` ("train" or "test")."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return self.train if name == "train" else self.test

    def describe(self) -> str:
        where = str(self.root) if self.root is not None else "in-memory corpus"
        return f"{where} ({self.layout}: {len(self.train)} train, {len(self.test)} test pairs)"


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders digit runs by value: ``p2_10`` before ``p10_2``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _wav_files(folder: Path) -> tuple[dict[str, Path], list[list[Path]]]:
    """The folder's wavs by name (file name without the suffix), and groups of names that
    differ only in case (``p0.wav``/``p0.WAV``): one of those would silently shadow the other,
    and a case-insensitive file system (macOS, Windows) cannot even hold both."""
    files: dict[str, Path] = {}
    by_folded_name: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.suffix.lower() != ".wav" or not entry.is_file():
            continue
        files[entry.stem] = entry
        by_folded_name.setdefault(entry.name.casefold(), []).append(entry)
    return files, [group for group in by_folded_name.values() if len(group) > 1]


def _layouts_looked_for(data_dir: Path, splits: Iterable[str]) -> str:
    lines = ["Layouts looked for:"]
    for layout in LAYOUTS:
        folders = ", ".join(str(data_dir / layout.folders[(split, side)]) for split in splits for side in SIDES)
        lines.append(f"  {layout.name}: {folders}")
    return "\n".join(lines)


def _choose_layout(data_dir: Path, splits: tuple[str, ...]) -> Layout:
    """The layout with the most of its folders present (the first one on a tie)."""

    def present(layout: Layout) -> int:
        return sum((data_dir / layout.folders[(s, side)]).is_dir() for s in splits for side in SIDES)

    return max(LAYOUTS, key=present)


def scan_corpus(data_dir: str | Path, splits: Iterable[str] = SPLITS) -> tuple[Corpus, ProblemReport]:
    """The corpus under ``data_dir`` and the structural problems found on the way.

    Structural problems are missing folders, folders without wavs and names present on one
    side only; unpaired files are left out of the corpus. Files are not opened here. Wav names
    that differ only in case in one folder raise a DataError naming each group (with the
    other problems found): which of them a pair should use cannot be guessed.
    """
    root = Path(data_dir)
    wanted = tuple(splits)
    if not root.is_dir():
        found = "a file" if root.exists() else "nothing"
        raise DataError(
            f"Data directory {root}: expected a folder holding a corpus, found {found}. "
            f"Fix: pass --data-dir the corpus root, or use --demo.\n{_layouts_looked_for(root, wanted)}"
        )
    layout = _choose_layout(root, wanted)
    corpus = Corpus(root=root, layout=layout.name)
    report = ProblemReport()
    case_clashes: list[list[Path]] = []
    for split in wanted:
        folders = {side: root / layout.folders[(split, side)] for side in SIDES}
        missing = [folder for folder in folders.values() if not folder.is_dir()]
        for folder in missing:
            report.add(DataProblem.of("missing_folder", str(folder), f"no such folder ({layout.name} layout)"))
        if missing:
            continue
        files: dict[str, dict[str, Path]] = {}
        for side, folder in folders.items():
            files[side], clashes = _wav_files(folder)
            case_clashes.extend(clashes)
        for side, folder in folders.items():
            if not files[side]:
                report.add(DataProblem.of("no_wavs", str(folder), "no .wav files"))
        for side, other in (("clean", "noisy"), ("noisy", "clean")):
            for name in sorted(files[side].keys() - files[other].keys(), key=natural_key):
                report.add(
                    DataProblem.of("name_mismatch", str(files[side][name]), f"no {name}.wav in {folders[other]}")
                )
        names = sorted(files["clean"].keys() & files["noisy"].keys(), key=natural_key)
        corpus.split(split).extend(
            Pair(name, FileSource(files["clean"][name]), FileSource(files["noisy"][name])) for name in names
        )
    if report.kinds().get("missing_folder"):
        report.notes.append(_layouts_looked_for(root, wanted))
    if case_clashes:
        shown = "; ".join(" and ".join(str(path) for path in group) for group in case_clashes[:5])
        more = f" (and {len(case_clashes) - 5} more)" if len(case_clashes) > 5 else ""
        message = (
            f"Data directory {root}: expected one file per name, found {len(case_clashes)} name(s) that differ "
            f"only in case: {shown}{more}. Fix: keep one file of each (rename or remove the others)."
        )
        if len(report):
            message += "\n" + report.message(f"Data directory {root}")
        raise DataError(message)
    return corpus, report


def find_corpus(data_dir: str | Path, splits: Iterable[str] = SPLITS) -> Corpus:
    """The corpus under ``data_dir``; one DataError lists every structural problem.

    Only folders and names are checked; ``validate.check_data_dir`` also checks every file.
    """
    corpus, report = scan_corpus(data_dir, splits)
    report.raise_if_any(f"Data directory {data_dir}")
    logger.info("Found %s", corpus.describe())
    return corpus


def write_corpus(corpus: Corpus, out_dir: str | Path, overwrite: bool = False, subtype: str = "PCM_16") -> Path:
    """Write ``corpus`` as ``out_dir/{train,test}/{clean,noisy}/NAME.wav`` and return out_dir.

    Writes nothing else. Existing files are never replaced unless ``overwrite``: the check
    runs before the first write, so a refusal leaves ``out_dir`` untouched.
    """
    root = Path(out_dir)
    targets = [
        (root / split / side / f"{pair.name}.wav", getattr(pair, side))
        for split in SPLITS
        for pair in corpus.split(split)
        for side in SIDES
    ]
    existing = [str(path) for path, _ in targets if path.exists()]
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise UserError(
            f"write_corpus: expected {root} to hold none of the files to write, found {len(existing)}: "
            f"{shown}. Fix: choose an empty folder or pass overwrite=True."
        )
    for path, source in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        samples, rate = source.load()
        write_wav(path, samples, rate, subtype=subtype)
    logger.info("Wrote %d files under %s", len(targets), root)
    return root
