"""The validation split: held out of the training data, never the test set, fixed for a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bsrnn.checkpoint import LoadedCheckpoint
from bsrnn.audio import istft, stft
from bsrnn.config import MIN_CUT_LEN, Config
from bsrnn.data import ArraySource, Pair, demo_corpus
from bsrnn.data.datasets import FullUtterances
from bsrnn.data.holdout import by_fraction, hold_out, speaker_of
from bsrnn.data.layout import Corpus
from bsrnn.errors import UserError
from bsrnn.metrics.pesq_pool import PesqPool
from bsrnn.metrics.si_sdr import si_sdr
from bsrnn.models import BSRNN, Discriminator
from bsrnn.training.plan import validation_record, validation_split
from bsrnn.training.steps import VALIDATION_LOOKAHEAD, Networks, finish_validation, validate
from e2e import TINY_DEFAULT_MONITOR, bsrnn, checkpoint


def _pairs(names: list[str]) -> list[Pair]:
    samples = np.zeros(16000, dtype=np.float32)
    return [Pair(name, ArraySource(samples, 16000, name), ArraySource(samples, 16000, name)) for name in names]


def _voicebank_like() -> Corpus:
    names = [f"{speaker}_{i:03d}" for speaker in ("p226", "p227", "p287", "p999") for i in range(1, 4)]
    return Corpus(train=_pairs(names), test=_pairs(["p232_001", "p257_001"]))


def _checkpoint(record: dict | None, config: Config) -> LoadedCheckpoint:
    payload = {"config": config.to_dict()}
    if record is not None:
        payload["validation"] = record
    return LoadedCheckpoint(Path("run/checkpoint_last.pt"), "last", payload, "0" * 64)


def test_voicebank_holds_out_speakers_p226_and_p287_and_never_touches_the_test_split() -> None:
    split = hold_out(_voicebank_like())
    assert {speaker_of(pair.name) for pair in split.valid} == {"p226", "p287"}
    assert {speaker_of(pair.name) for pair in split.train} == {"p227", "p999"}
    assert split.rule["kind"] == "speakers" and "p226, p287" in split.describe()


def test_named_speakers_are_held_out_and_an_absent_speaker_is_refused_by_name() -> None:
    split = hold_out(_voicebank_like(), valid_speakers=["p999"])
    assert [pair.name for pair in split.valid] == ["p999_001", "p999_002", "p999_003"]
    with pytest.raises(UserError, match=r"p111: expected pairs .* speakers present: p226, p227, p287, p999"):
        hold_out(_voicebank_like(), valid_speakers=["p226", "p111"])
    with pytest.raises(UserError, match="expected --valid-speakers or --valid-fraction, found both"):
        hold_out(_voicebank_like(), valid_speakers=["p999"], valid_fraction=0.1)


def test_a_fraction_depends_on_each_name_alone_so_adding_files_moves_no_old_pair() -> None:
    names = [f"utt{i}" for i in range(1000)]
    small = by_fraction(_pairs(names), 0.1)
    large = by_fraction(_pairs(names + [f"new{i}" for i in range(1000)]), 0.1)
    assert 70 <= len(small.valid) <= 130 and len(small.valid) + len(small.train) == 1000
    assert {pair.name for pair in large.valid} & set(names) == {pair.name for pair in small.valid}
    assert [p.name for p in by_fraction(_pairs(names), 0.1).valid] == [p.name for p in small.valid]


def test_without_speakers_the_default_is_five_percent_and_at_least_one_pair() -> None:
    split = hold_out(Corpus(train=_pairs([f"ast_en_{i}" for i in range(847)])))
    assert 25 <= len(split.valid) <= 60
    assert split.rule == {"kind": "fraction", "fraction": 0.05,
                          "source": "the default for corpora without speakers p226/p287"}
    assert len(hold_out(Corpus(train=_pairs(["a", "b", "c"]))).valid) == 1


def test_the_corpus_s_own_valid_split_and_prepared_speakers_come_before_the_defaults(tmp_path: Path) -> None:
    demo = demo_corpus(seed=0, num_train=4, num_test=2, num_valid=3)
    split = hold_out(demo)
    assert split.rule == {"kind": "folder"} and len(split.valid) == 3 and len(split.train) == 4
    corpus = _voicebank_like()
    corpus.root = tmp_path
    (tmp_path / "prepare.json").write_text(json.dumps({"validation": {"speakers": ["p227"]}}))
    assert {speaker_of(pair.name) for pair in hold_out(corpus).valid} == {"p227"}


def test_a_resume_with_another_cut_len_keeps_the_runs_validation_crops() -> None:
    corpus = demo_corpus(seed=0, num_train=4, num_test=3)
    run = Config(cut_len=8000, seed=3)
    split = validation_split(corpus, run, None)
    recorded = validation_record(split, run, None)
    resumed_config = run.replace(cut_len=16000)
    checkpoint = _checkpoint(recorded, run)
    resumed = validation_record(validation_split(corpus, resumed_config, checkpoint), resumed_config, checkpoint)
    assert resumed == recorded and resumed["cut_len"] == 8000


def test_a_run_from_before_validation_splits_keeps_validating_on_its_test_split() -> None:
    corpus = demo_corpus(seed=0, num_train=4, num_test=3)
    old = Config(cut_len=8000)
    legacy_record = {"cut_len": 8000, "seed": 0, "items": 3, "names_sha256": "x"}
    split = validation_split(corpus, old, _checkpoint(legacy_record, old))
    assert split.rule == {"kind": "test"} and split.valid == corpus.test and "TEST split" in split.describe()
    allowed = old.replace(allow_validation_change=True)
    assert validation_split(corpus, allowed, _checkpoint(legacy_record, old)).rule == {"kind": "folder"}
    # No record at all (older still): its config's crops.
    assert validation_record(split, old.replace(cut_len=4000), _checkpoint(None, old))["cut_len"] == 8000


def test_a_resume_whose_validation_utterances_differ_is_refused_unless_allowed() -> None:
    corpus = _voicebank_like()
    run = Config(cut_len=8000)
    recorded = validation_record(validation_split(corpus, run, None), run, None)
    other = run.replace(valid_speakers=["p999"])
    checkpoint = _checkpoint(recorded, run)
    with pytest.raises(UserError, match="validation set changed.*--allow-validation-change"):
        validation_record(validation_split(corpus, other, checkpoint), other, checkpoint)
    allowed = other.replace(allow_validation_change=True)
    switched = validation_record(validation_split(corpus, allowed, checkpoint), allowed, checkpoint)
    assert switched["rule"]["speakers"] == ["p999"] and switched["items"] == 3


def test_a_new_run_validates_on_whole_utterances_and_a_crops_run_keeps_its_crops() -> None:
    corpus = demo_corpus(seed=0, num_train=4, num_test=3)
    run = Config(cut_len=8000)
    assert validation_record(validation_split(corpus, run, None), run, None)["length"] == "full"
    crops_run = run.replace(validation_length="crops")
    recorded = validation_record(validation_split(corpus, crops_run, None), crops_run, None)
    assert recorded["length"] == "crops"
    checkpoint = _checkpoint(recorded, crops_run)
    assert validation_record(validation_split(corpus, run, checkpoint), run, checkpoint)["length"] == "crops"
    # A record from before the length was recorded: the run validated on crops.
    older = {key: value for key, value in recorded.items() if key != "length"}
    checkpoint = _checkpoint(older, crops_run)
    assert validation_record(validation_split(corpus, run, checkpoint), run, checkpoint)["length"] == "crops"


def test_whole_utterances_keep_their_length_and_a_too_short_one_is_tiled_to_the_shortest_input() -> None:
    long, short = np.arange(40000, dtype=np.float32), np.arange(1000, dtype=np.float32)
    pairs = [Pair(name, ArraySource(audio, 16000, name), ArraySource(audio + 1, 16000, name))
             for name, audio in (("long", long), ("short", short))]
    dataset = FullUtterances(pairs, min_len=MIN_CUT_LEN)
    clean, noisy, name = dataset[0]
    assert name == "long" and np.array_equal(clean.numpy(), long) and np.array_equal(noisy.numpy(), long + 1)
    clean, _, _ = dataset[1]
    assert clean.shape == (MIN_CUT_LEN,) and np.array_equal(clean.numpy()[1000:1920], short[:920])


def test_validation_looking_ahead_gives_the_sums_of_one_batch_at_a_time() -> None:
    """The generator runs ahead of the losses (PESQ overlaps); the sums must not depend on it."""
    torch.manual_seed(0)
    nets = Networks(BSRNN(num_channel=4, num_layer=1), Discriminator(ndf=4), None, None)  # type: ignore[arg-type]
    count = VALIDATION_LOOKAHEAD + 2
    utterances = FullUtterances(demo_corpus(seed=0, num_train=1, num_test=count).test, min_len=MIN_CUT_LEN)
    batches = [(clean[None, :length], noisy[None, :length])  # one per length, past the lookahead
               for (clean, noisy, _), length in zip(utterances, range(16000, 16000 + 500 * count, 500))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # beside a PESQ worker on 2 cores, 2 threads spin-wait for each other
    try:
        with PesqPool(workers=1) as pool:
            together = validate(nets, batches, use_gan=True, loss_weights=[0.5, 0.5, 1.0], pesq_pool=pool,
                                device=torch.device("cpu"))
            one_by_one = [validate(nets, [batch], use_gan=True, loss_weights=[0.5, 0.5, 1.0], pesq_pool=pool,
                                   device=torch.device("cpu")) for batch in batches]
    finally:
        torch.set_num_threads(threads)
    assert together["items"] == count and together["pesq_count"] == count and together["si_sdr_count"] == count
    for key in together:
        assert together[key] == pytest.approx(sum(single[key] for single in one_by_one), rel=1e-9)


def test_validation_reports_the_mean_si_sdr_of_the_enhanced_utterances() -> None:
    """val_si_sdr (the VALID line, metrics.jsonl) is SI-SDR of what the generator makes of each utterance."""
    torch.manual_seed(1)
    nets = Networks(BSRNN(num_channel=4, num_layer=1), Discriminator(ndf=4), None, None)  # type: ignore[arg-type]
    utterances = FullUtterances(demo_corpus(seed=0, num_train=1, num_test=2).test, min_len=MIN_CUT_LEN)
    batches = [(clean[None, :16000], noisy[None, :16000]) for clean, noisy, _ in utterances]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # beside a PESQ worker on 2 cores, 2 threads spin-wait for each other
    try:
        with PesqPool(workers=1) as pool:
            values = finish_validation(validate(nets, batches, use_gan=False, loss_weights=[0.5, 0.5, 1.0],
                                                pesq_pool=pool, device=torch.device("cpu")))
    finally:
        torch.set_num_threads(threads)
    nets.generator.eval()
    with torch.no_grad():
        expected = [si_sdr(clean[0].numpy(), istft(nets.generator(stft(noisy)), length=16000)[0].numpy())
                    for clean, noisy in batches]
    assert values["val_si_sdr"] == pytest.approx(np.mean(expected), rel=1e-6)


def test_the_cli_validates_a_new_run_on_whole_utterances_and_its_resume_keeps_them(tmp_path: Path) -> None:
    default = [arg for arg in TINY_DEFAULT_MONITOR if arg not in ("--validation-length", "crops")]
    run = tmp_path / "run"
    first = bsrnn("train", *default, "--epochs", "1", "--run-dir", str(run))
    assert first.returncode == 0, first.stderr
    saved = checkpoint(run)
    assert saved["validation"]["length"] == "full" and saved["config"]["validation_length"] == "full"
    assert 1.0 <= saved["val_pesq"] <= 4.6
    resumed = bsrnn("train", *default, "--epochs", "2", "--validation-length", "crops", "--run-dir", str(run),
                    "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "Validation keeps the run's whole utterances" in resumed.stdout + resumed.stderr
    assert checkpoint(run)["validation"]["length"] == "full"
