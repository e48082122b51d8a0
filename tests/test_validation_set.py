"""The validation set is fixed for the life of a run: crops, seed and utterances."""

from __future__ import annotations

from pathlib import Path

import pytest

from bsrnn.checkpoint import LoadedCheckpoint
from bsrnn.config import Config
from bsrnn.data import demo_corpus
from bsrnn.data.layout import Corpus
from bsrnn.errors import UserError
from bsrnn.training.trainer import validation_record


def _checkpoint(record: dict | None, config: Config) -> LoadedCheckpoint:
    payload = {"config": config.to_dict()}
    if record is not None:
        payload["validation"] = record
    return LoadedCheckpoint(Path("run/checkpoint_last.pt"), "last", payload, "0" * 64)


def test_a_resume_with_another_cut_len_keeps_the_runs_validation_crops() -> None:
    corpus = demo_corpus(seed=0, num_train=4, num_test=3)
    run = Config(cut_len=8000, seed=3)
    recorded = validation_record(corpus, run, None)
    resumed = validation_record(corpus, run.replace(cut_len=16000), _checkpoint(recorded, run))
    assert resumed == recorded and resumed["cut_len"] == 8000


def test_an_old_checkpoint_without_a_record_keeps_its_configs_crops() -> None:
    corpus = demo_corpus(seed=0, num_train=4, num_test=3)
    old = Config(cut_len=8000)
    assert validation_record(corpus, old.replace(cut_len=4000), _checkpoint(None, old))["cut_len"] == 8000


def test_a_resume_whose_validation_utterances_differ_is_refused() -> None:
    corpus = demo_corpus(seed=0, num_train=4, num_test=3)
    run = Config(cut_len=8000)
    recorded = validation_record(corpus, run, None)
    fewer = Corpus(train=corpus.train, test=corpus.test[:2])
    with pytest.raises(UserError, match="validation set changed"):
        validation_record(fewer, run, _checkpoint(recorded, run))
