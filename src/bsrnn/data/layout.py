"""The corpus: paired clean/noisy clips per split, found on disk or built in memory.

Two on-disk layouts are recognised under a data directory DATA:

- split folders (the reference recipe's): ``DATA/train/{clean,noisy}``, ``DATA/test/{clean,noisy}``,
  and optionally ``DATA/valid/{clean,noisy}``, a validation split of the user's own;
- VoiceBank+DEMAND as distributed: ``DATA/clean_trainset_28spk_wav``,
  ``DATA/noisy_trainset_28spk_wav``, ``DATA/clean_testset_wav``, ``DATA/noisy_testset_wav``.

A folder's audio files are those ``bsrnn.audio.is_audio_file`` accepts: any format libsndfile
reads (``.wav``, ``.flac``, ``.ogg``, ``.aiff``, ...; hidden files such as macOS ``._x.wav``
and other suffixes are ignored). A file's name is its file name without the suffix, and a pair
is a clean and a noisy file of the same name in the same split, whatever their formats
(``x.flac`` pairs with ``x.wav``). Pairs are sorted by name in natural order (``p2`` before
``p10``), as the reference's ``natsorted``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bsrnn.audio import audio_files_by_name, describe_name_clashes, write_audio
from bsrnn.data.report import DataProblem, ProblemReport
from bsrnn.data.sources import FileSource, Pair
from bsrnn.errors import DataError, UserError
from bsrnn.output import InputFiles, check_destinations
from bsrnn.text import printable_name

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
VALID_SPLIT = "valid"
"""An optional split: a validation set the user chose. Without one, ``holdout`` carves the
validation set out of ``train``."""
SIDES = ("clean", "noisy")
MANIFEST_NAME = "prepare.json"
"""What ``bsrnn data prepare`` writes last into a folder it prepared: the commit marker of a
finished preparation (``bsrnn.data.prepare``)."""
PROGRESS_NAME = ".prepare-progress.jsonl"
"""``bsrnn data prepare``'s progress log, present only while a preparation is unfinished."""


@dataclass(frozen=True)
class Layout:
    """A way of arranging a corpus in folders: (split, side) -> folder relative to DATA."""

    name: str
    folders: dict[tuple[str, str], str]


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "split folders",
        {(split, side): f"{split}/{side}" for split in (*SPLITS, VALID_SPLIT) for side in SIDES},
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
    """Pairs per split; ``root``/``layout`` say where they came from (None: in memory).

    ``valid`` is empty unless the corpus brings its own validation split (a ``valid`` folder,
    or the demo corpus).
    """

    train: list[Pair] = field(default_factory=list)
    test: list[Pair] = field(default_factory=list)
    valid: list[Pair] = field(default_factory=list)
    root: Path | None = None
    layout: str = "in memory"

    def split(self, name: str) -> list[Pair]:
        """The pairs of split ``name`` ("train", "test" or "valid")."""
        if name not in (*SPLITS, VALID_SPLIT):
            raise ValueError(f"unknown split {name!r}; expected one of {(*SPLITS, VALID_SPLIT)}")
        return {"train": self.train, "test": self.test, VALID_SPLIT: self.valid}[name]

    def describe(self) -> str:
        """Where the corpus is and its pairs per split; a split that was not read (training
        never reads the test split) or is empty is left out rather than shown as 0."""
        where = str(self.root) if self.root is not None else "in-memory corpus"
        counts = [f"{len(pairs)} {name}" for name, pairs in
                  (("train", self.train), ("valid", self.valid), ("test", self.test)) if pairs]
        return f"{where} ({self.layout}: {', '.join(counts) or 'no'} pairs)"


def natural_key(name: str) -> list[int | str]:
    """Sort key that orders digit runs by value: ``p2_10`` before ``p10_2``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _layouts_looked_for(data_dir: Path, splits: Iterable[str]) -> str:
    lines = ["Layouts looked for:"]
    for layout in LAYOUTS:
        folders = ", ".join(str(data_dir / layout.folders[(split, side)])
                            for split in splits for side in SIDES if (split, side) in layout.folders)
        lines.append(f"  {layout.name}: {folders}")
    return "\n".join(lines)


def check_preparation_finished(root: Path) -> None:
    """Refuse a folder that ``bsrnn data prepare`` started and did not finish.

    Its split folders hold only the files converted so far: training on them would silently
    use part of the corpus, and scores on a partial test split would not compare with anyone's.
    A preparation writes ``prepare.json`` last and keeps its progress log until then, so a
    progress log without a manifest is exactly an unfinished (or still running) preparation.
    """
    if not (root / PROGRESS_NAME).exists() or (root / MANIFEST_NAME).exists():
        return
    speakers = ""
    try:
        first = (root / PROGRESS_NAME).read_text(encoding="utf-8", errors="replace").split("\n", 1)[0]
        if json.loads(first)["fingerprint"]["speakers"] == 56:
            speakers = " --speakers 56"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise DataError(
        f"Data directory {root}: expected a finished `bsrnn data prepare` folder (with {MANIFEST_NAME}), found "
        f"one whose preparation stopped before the end or is still running ({PROGRESS_NAME} and no "
        f"{MANIFEST_NAME}): it holds only part of the corpus. Fix: finish it with `bsrnn data prepare vbd SOURCE "
        f"--out {root}{speakers}` (SOURCE: the folder of the release's zips; it continues where it stopped), "
        "then run this command again"
    )


def _choose_layout(data_dir: Path, splits: tuple[str, ...]) -> Layout:
    """The layout with the most of its folders present (the first one on a tie)."""

    def present(layout: Layout) -> int:
        return sum((data_dir / layout.folders[(s, side)]).is_dir()
                   for s in splits for side in SIDES if (s, side) in layout.folders)

    return max(LAYOUTS, key=present)


def scan_corpus(data_dir: str | Path, splits: Iterable[str] = SPLITS) -> tuple[Corpus, ProblemReport]:
    """The corpus under ``data_dir`` and the structural problems found on the way.

    Structural problems are missing folders, folders without audio files and names present on
    one side only; unpaired files are left out of the corpus. Files are not opened here. A folder
    that ``bsrnn data prepare`` left unfinished is refused (``check_preparation_finished``). Files
    of one folder whose names differ only in case, or only in format (``x.wav``, ``x.flac``),
    raise a DataError naming each group (with the other problems found): which of them a pair
    should use cannot be guessed.
    """
    root = Path(data_dir)
    wanted = tuple(splits)
    if not root.is_dir():
        found = "a file" if root.exists() else "nothing"
        raise DataError(
            f"Data directory {root}: expected a folder holding a corpus, found {found}. "
            f"Fix: pass --data-dir the corpus root, or use --demo.\n{_layouts_looked_for(root, wanted)}"
        )
    check_preparation_finished(root)
    layout = _choose_layout(root, wanted)
    corpus = Corpus(root=root, layout=layout.name)
    report = ProblemReport()
    name_clashes: list[list[Path]] = []
    for split in wanted:
        if (split, SIDES[0]) not in layout.folders:
            report.add(DataProblem.of("missing_folder", str(root / split), f"no {split} split in the {layout.name} layout"))
            continue
        folders = {side: root / layout.folders[(split, side)] for side in SIDES}
        missing = [folder for folder in folders.values() if not folder.is_dir()]
        for folder in missing:
            report.add(DataProblem.of("missing_folder", str(folder), f"no such folder ({layout.name} layout)"))
        if missing:
            continue
        files: dict[str, dict[str, Path]] = {}
        for side, folder in folders.items():
            files[side], clashes = audio_files_by_name(folder)
            name_clashes.extend(clashes)
        for side, folder in folders.items():
            if not files[side]:
                report.add(DataProblem.of("no_audio", str(folder), "no audio files"))
        for side, other in (("clean", "noisy"), ("noisy", "clean")):
            for name in sorted(files[side].keys() - files[other].keys(), key=natural_key):
                detail = f"no audio file named {name} in {folders[other]}"
                report.add(DataProblem.of("name_mismatch", str(files[side][name]), detail))
        names = sorted(files["clean"].keys() & files["noisy"].keys(), key=natural_key)
        corpus.split(split).extend(  # a name that is not UTF-8 is spelt out: it is logged and hashed in training
            Pair(printable_name(name), FileSource(files["clean"][name]), FileSource(files["noisy"][name]))
            for name in names
        )
    if report.kinds().get("missing_folder"):
        report.notes.append(_layouts_looked_for(root, wanted))
    if name_clashes:
        message = (
            f"Data directory {root}: expected one audio file per name, found {describe_name_clashes(name_clashes)}. "
            "Fix: keep one file of each (rename or remove the others)."
        )
        if len(report):
            message += "\n" + report.message(f"Data directory {root}")
        raise DataError(message)
    return corpus, report


def splits_present(data_dir: str | Path) -> tuple[str, ...]:
    """``SPLITS``, plus ``valid`` where ``data_dir`` holds a ``valid`` folder of its own."""
    return (*SPLITS, VALID_SPLIT) if (Path(data_dir) / VALID_SPLIT).is_dir() else SPLITS


def find_corpus(data_dir: str | Path, splits: Iterable[str] = SPLITS) -> Corpus:
    """The corpus under ``data_dir``; one DataError lists every structural problem.

    Only folders and names are checked; ``validate.check_data_dir`` also checks every file.
    """
    corpus, report = scan_corpus(data_dir, splits)
    report.raise_if_any(f"Data directory {data_dir}")
    logger.info("Found %s", corpus.describe())
    return corpus


def write_corpus(corpus: Corpus, out_dir: str | Path, overwrite: bool = False, subtype: str = "PCM_16") -> Path:
    """Write ``corpus`` as ``out_dir/{train,test,valid}/{clean,noisy}/NAME.wav`` and return out_dir.

    The ``valid`` folders are written only when the corpus has a validation split.

    Writes nothing else. Existing files are never replaced unless ``overwrite``, a source file
    of the corpus never (by identity: writing a corpus onto itself would re-encode it), and no
    link is written through; the checks run before the first write, so a refusal leaves
    ``out_dir`` untouched.
    """
    root = Path(out_dir)
    targets = [
        (root / split / side / f"{pair.name}.wav", getattr(pair, side))
        for split in (*SPLITS, VALID_SPLIT)
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
    inputs = InputFiles(source.path for _, source in targets if isinstance(source, FileSource))
    # Existing files are refused above, in this function's words (overwrite=True, not a flag);
    # this adds what is refused even with overwrite: links, and the corpus's own files.
    check_destinations([path for path, _ in targets], overwrite=True, flag="write_corpus", inputs=inputs)
    for path, source in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        samples, rate = source.load()
        write_audio(path, samples, rate, subtype=subtype, overwrite=overwrite, flag="write_corpus", inputs=inputs)
    logger.info("Wrote %d files under %s", len(targets), root)
    return root
