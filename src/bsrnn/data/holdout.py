"""The validation split: which pairs choose ``checkpoint_best.pt``, never the test set.

Model selection on the test set inflates the test score it is then judged by (several public
speech-enhancement recipes name checkpoints by test loss). A run's validation pairs therefore
come from its training data, by the first rule that applies:

1. ``valid_speakers``: whole speakers held out of ``train`` (a pair's speaker is its name up to
   the first ``_``: ``p226`` for ``p226_001``). Naming a speaker the split lacks is an error.
2. ``valid_fraction`` > 0: a pair is held out when the SHA-256 of its name, read as a number in
   [0, 1), is below the fraction (about that fraction of ``train``, at least one pair). The
   choice depends on a pair's name alone: adding files to a corpus never moves an old pair
   between the two sides.
3. The corpus's own ``valid`` split (a ``DATA/valid`` folder, or the demo corpus's).
4. The speakers recorded by ``bsrnn data prepare`` in ``prepare.json``.
5. VoiceBank+DEMAND (``train`` holds speakers ``p226`` and ``p287``): those two, as
   SpeechBrain's recipe holds out.
6. Otherwise ``DEFAULT_VALID_FRACTION`` of ``train`` by rule 2.

Held-out pairs never train. ``ValidationSplit.rule`` goes into every checkpoint, with the
names' digest, to keep the split fixed for the life of a run
(``training.plan.validation_record``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsrnn.data.layout import MANIFEST_NAME, Corpus
from bsrnn.data.sources import Pair
from bsrnn.errors import UserError

VOICEBANK_VALID_SPEAKERS = ("p226", "p287")
DEFAULT_VALID_FRACTION = 0.05


def speaker_of(name: str) -> str:
    """A pair's speaker: its name up to the first ``_`` (the whole name if it has none)."""
    return name.split("_", 1)[0]


@dataclass(frozen=True)
class ValidationSplit:
    """The pairs a run trains on, the pairs it validates on, and how they were chosen."""

    train: list[Pair]
    valid: list[Pair]
    rule: dict[str, Any]
    """Machine-readable rule: {"kind": "speakers", "speakers": [...]}, {"kind": "fraction", ...},
    {"kind": "folder"} or {"kind": "test"} (runs from before validation splits)."""

    def describe(self) -> str:
        """One line for the log: how many pairs, and by which rule."""
        kind = self.rule["kind"]
        if kind == "speakers":
            how = f"speakers {', '.join(self.rule['speakers'])} held out of the training split"
        elif kind == "fraction":
            how = f"{self.rule['fraction']:g} of the training split held out (by a hash of each name)"
        elif kind == "folder":
            how = "the corpus's own validation split"
        else:
            how = "the TEST split: this run started before validation splits; a new run holds out training data"
        source = f" ({self.rule['source']})" if self.rule.get("source") else ""
        return f"Validation: {len(self.valid)} pairs, {how}{source}; training on {len(self.train)} pairs"


def by_speakers(train: Sequence[Pair], speakers: Sequence[str], source: str = "") -> ValidationSplit:
    """Hold out every pair of ``speakers``; each must have at least one pair in ``train``."""
    wanted = list(dict.fromkeys(speakers))
    present = {speaker_of(pair.name) for pair in train}
    missing = [speaker for speaker in wanted if speaker not in present]
    if missing:
        shown = ", ".join(sorted(present)[:12]) + (" ..." if len(present) > 12 else "")
        raise UserError(
            f"Validation speakers {', '.join(missing)}: expected pairs of theirs in the training split, found none "
            f"(a speaker is a name's part before the first '_'; speakers present: {shown}). Fix --valid-speakers, "
            "or hold out a fraction with --valid-fraction."
        )
    chosen = set(wanted)
    rule: dict[str, Any] = {"kind": "speakers", "speakers": wanted}
    if source:
        rule["source"] = source
    return ValidationSplit(
        [pair for pair in train if speaker_of(pair.name) not in chosen],
        [pair for pair in train if speaker_of(pair.name) in chosen],
        rule,
    )


def name_position(name: str) -> float:
    """Where a name falls in [0, 1): the first 64 bits of its SHA-256. A function of the name alone."""
    # surrogateescape: a name that is not UTF-8 hashes as the bytes it was read from (UTF-8 names as before)
    return int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2**64


def by_fraction(train: Sequence[Pair], fraction: float, source: str = "") -> ValidationSplit:
    """Hold out the pairs whose ``name_position`` is below ``fraction`` (the lowest one if none is)."""
    if not 0 < fraction < 1:
        raise UserError(f"valid_fraction: expected a number in (0, 1), found {fraction}")
    chosen = {pair.name for pair in train if name_position(pair.name) < fraction}
    if not chosen and train:
        chosen = {min(train, key=lambda pair: name_position(pair.name)).name}
    rule: dict[str, Any] = {"kind": "fraction", "fraction": fraction}
    if source:
        rule["source"] = source
    return ValidationSplit(
        [pair for pair in train if pair.name not in chosen], [pair for pair in train if pair.name in chosen], rule
    )


def prepared_speakers(root: Path | None) -> list[str] | None:
    """The validation speakers ``bsrnn data prepare`` recorded under ``root``, if any."""
    if root is None or not (root / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    speakers = (manifest.get("validation") or {}).get("speakers") if isinstance(manifest, dict) else None
    return list(speakers) if isinstance(speakers, list) and speakers else None


def hold_out(corpus: Corpus, valid_speakers: Sequence[str] = (), valid_fraction: float = 0.0) -> ValidationSplit:
    """The run's validation split by the module's rules (the first that applies)."""
    if valid_speakers and valid_fraction > 0:
        raise UserError(
            f"Validation split: expected --valid-speakers or --valid-fraction, found both "
            f"({', '.join(valid_speakers)} and {valid_fraction:g}). Fix: keep the one you mean."
        )
    if valid_speakers:
        return by_speakers(corpus.train, valid_speakers, "--valid-speakers")
    if valid_fraction > 0:
        return by_fraction(corpus.train, valid_fraction, "--valid-fraction")
    if corpus.valid:
        return ValidationSplit(list(corpus.train), list(corpus.valid), {"kind": "folder"})
    recorded = prepared_speakers(corpus.root)
    if recorded is not None:
        return by_speakers(corpus.train, recorded, MANIFEST_NAME)
    speakers = {speaker_of(pair.name) for pair in corpus.train}
    if all(speaker in speakers for speaker in VOICEBANK_VALID_SPEAKERS):
        return by_speakers(corpus.train, VOICEBANK_VALID_SPEAKERS, "VoiceBank+DEMAND's default")
    return by_fraction(corpus.train, DEFAULT_VALID_FRACTION, "the default for corpora without speakers p226/p287")


def legacy_test_split(corpus: Corpus) -> ValidationSplit:
    """The split of runs that started before validation splits: all of train, validated on test."""
    return ValidationSplit(list(corpus.train), list(corpus.test), {"kind": "test"})
