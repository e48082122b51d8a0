"""The data layer: corpora of clean/noisy pairs, their validation, datasets and sampling.

Dependency order inside the package (each module imports only from those before it):
``report`` (problem vocabulary) -> ``sources`` (files or arrays) -> ``layout`` (corpus on disk)
-> ``validate`` (whole-corpus checks) -> ``datasets`` / ``sampler`` -> ``synth`` -> ``demo_corpus``;
``download`` -> ``voicebank`` -> ``prepare`` (``bsrnn data prepare``: a public release's files
to a 16 kHz training folder) use ``layout``'s names only.

Typical use by a trainer::

    corpus = check_data_dir(data_dir)            # or demo_corpus(seed) for --demo
    train_set = TrainSet(corpus.train, cut_len, seed)
    batches = EpochBatches(len(train_set), batch_size, seed, epoch, rank, world, start_batch=k)
    loader = DataLoader(train_set, batch_sampler=batches, num_workers=workers)
"""

from __future__ import annotations

from bsrnn.data.datasets import FixedCrops, TestSet, TrainSet, crop_offset, tile_to_length
from bsrnn.data.demo_corpus import demo_corpus
from bsrnn.data.layout import LAYOUTS, Corpus, find_corpus, write_corpus
from bsrnn.data.report import DataProblem, ProblemReport
from bsrnn.data.sampler import EpochBatches, epoch_order
from bsrnn.data.sources import ArraySource, AudioSource, FileSource, Pair, load_pair
from bsrnn.data.synth import NOISE_KINDS
from bsrnn.data.validate import check_corpus, check_data_dir, validate_corpus

__all__ = [
    "LAYOUTS",
    "NOISE_KINDS",
    "ArraySource",
    "AudioSource",
    "Corpus",
    "DataProblem",
    "EpochBatches",
    "FileSource",
    "FixedCrops",
    "Pair",
    "ProblemReport",
    "TestSet",
    "TrainSet",
    "check_corpus",
    "check_data_dir",
    "crop_offset",
    "demo_corpus",
    "epoch_order",
    "find_corpus",
    "load_pair",
    "tile_to_length",
    "validate_corpus",
    "write_corpus",
]
