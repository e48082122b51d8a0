"""`bsrnn data prepare vbd`: a synthetic 48 kHz VoiceBank+DEMAND release in, training folders out.

The release is made in each test: a few speakers, short files, zipped under the official names
with their top folders. Downloads go to an HTTP server on 127.0.0.1 started here; nothing
leaves the machine.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bsrnn.cli.main import main
from bsrnn.data import prepare as prepare_module
from bsrnn.data.download import DownloadError, download, partial_path
from bsrnn.data.layout import find_corpus
from bsrnn.data.prepare import (
    CHECKSUMS_NAME,
    MANIFEST_NAME,
    PROGRESS_NAME,
    prepare_voicebank,
)
from bsrnn.data.voicebank import MIRROR_ENV, fetch_release, release_sets
from bsrnn.errors import DataError, UserError

TRAIN = {"p226": 3, "p227": 2}
TEST = {"p232": 2}
SECONDS = 0.3
PAIRS = {"train": 5, "test": 2}


def _utterance(rng: np.random.Generator, rate: int, seconds: float) -> np.ndarray:
    """A voiced-sounding tone with harmonics up to the source's Nyquist frequency, plus hiss."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(100, 200)
    voice = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, int(rate / 2 / f0)))
    return 0.2 * voice / np.max(np.abs(voice)) + 0.01 * rng.standard_normal(len(t))


def make_release(root: Path, rate: int = 48000, seconds: float = SECONDS, speakers: int = 28,
                 zipped: bool = True, train: dict[str, int] = TRAIN) -> Path:
    """The release under ``root``: four zips (each with its top folder) or the folders."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for release in release_sets(speakers):
        names = [f"{speaker}_{index:03d}" for speaker, count in (train if release.split == "train" else TEST).items()
                 for index in range(1, count + 1)]
        files = {}
        for name in names:
            seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
            clean = _utterance(np.random.default_rng(seed), rate, seconds)
            audio = clean if release.side == "clean" else clean + 0.05 * rng.standard_normal(len(clean))
            buffer = io.BytesIO()
            soundfile.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
            files[f"{name}.wav"] = buffer.getvalue()
        if zipped:
            with zipfile.ZipFile(root / release.zip_name, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(f"{release.folder}/", b"")
                for file_name, data in files.items():
                    archive.writestr(f"{release.folder}/{file_name}", data)
        else:
            (root / release.folder).mkdir()
            for file_name, data in files.items():
                (root / release.folder / file_name).write_bytes(data)
    return root


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` except the lock and the progress log, by relative path."""
    return {str(path.relative_to(out)): path.read_bytes() for path in sorted(out.rglob("*"))
            if path.is_file() and path.name not in (".lock", PROGRESS_NAME)}


def wav_paths(out: Path) -> list[Path]:
    return sorted(out.glob("*/*/*.wav"))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_release(tmp_path_factory.mktemp("release") / "vbd")


@pytest.fixture(scope="module")
def reference(release: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted preparation of ``release``: what every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference") / "out"
    prepare_voicebank(release, out, progress=False)
    return out


# ----------------------------------------------------------------------------- layout, manifest
def test_zips_become_the_split_folders_the_trainer_reads(reference: Path) -> None:
    corpus = find_corpus(reference)
    assert corpus.layout == "split folders"
    assert (len(corpus.train), len(corpus.test)) == (PAIRS["train"], PAIRS["test"])
    assert [pair.name for pair in corpus.test] == ["p232_001", "p232_002"]
    for path in wav_paths(reference):
        info = soundfile.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert info.frames == int(SECONDS * 16000)


def test_the_manifest_matches_what_was_written(release: Path, reference: Path) -> None:
    manifest = json.loads((reference / MANIFEST_NAME).read_text())
    assert manifest["bsrnn_version"]
    assert manifest["dataset"]["doi"] == "10.7488/ds/2117" and manifest["dataset"]["speakers"] == 28
    assert manifest["resampler"]["name"] == "soxr" and manifest["resampler"]["quality"] == "HQ"
    assert manifest["resampler"]["version"]
    sources = {entry["file"]: entry for entry in manifest["sources"]}
    assert set(sources) == {path.name for path in release.glob("*.zip")}
    for name, entry in sources.items():
        data = (release / name).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["md5"] == hashlib.md5(data).hexdigest()
    train, test = manifest["splits"]["train"], manifest["splits"]["test"]
    assert (train["pairs"], test["pairs"]) == (PAIRS["train"], PAIRS["test"])
    assert train["speakers"] == ["p226", "p227"] and test["speakers"] == ["p232"]
    assert manifest["validation"] == {"speakers": ["p226"], "from_split": "train"}
    assert train["frames"] == {"clean": 5 * 4800, "noisy": 5 * 4800}
    assert test["duration_s"] == {"clean": 0.6, "noisy": 0.6}
    assert train["source_rates"] == {"48000": 10} and train["resampled_files"] == 10
    checksums = (reference / CHECKSUMS_NAME).read_text().splitlines()
    assert len(checksums) == manifest["output"]["files"] == 14
    for line in checksums:
        digest, relative = line.split("  ")
        assert hashlib.sha256((reference / relative).read_bytes()).hexdigest() == digest
    checksums_digest = hashlib.sha256((reference / CHECKSUMS_NAME).read_bytes()).hexdigest()
    assert manifest["output"]["checksums_sha256"] == checksums_digest
    assert "time" not in json.dumps(manifest).lower()  # nothing that changes from run to run


def test_unpacked_folders_give_the_same_files_as_the_zips(tmp_path: Path, reference: Path) -> None:
    source = make_release(tmp_path / "vbd", zipped=False)
    prepare_voicebank(source, tmp_path / "out", progress=False)
    assert (tmp_path / "out" / CHECKSUMS_NAME).read_bytes() == (reference / CHECKSUMS_NAME).read_bytes()
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    entry = next(e for e in manifest["sources"] if e["set"] == "clean_testset_wav")
    assert entry["kind"] == "folder" and [f["name"] for f in entry["files"]] == ["p232_001.wav", "p232_002.wav"]
    data = (source / "clean_testset_wav" / "p232_002.wav").read_bytes()
    assert entry["files"][1] == {"name": "p232_002.wav", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


# ----------------------------------------------------------------------------- byte identity, resume
def test_a_second_run_rewrites_nothing_and_a_fresh_one_is_byte_identical(
        release: Path, reference: Path, tmp_path: Path) -> None:
    before = {path: path.stat().st_mtime_ns for path in reference.rglob("*") if path.is_file()}
    again = prepare_voicebank(release, reference, progress=False)
    assert again.written == 0
    assert {path: path.stat().st_mtime_ns for path in reference.rglob("*") if path.is_file()
            and path.name != ".lock"} == {p: t for p, t in before.items() if p.name != ".lock"}
    prepare_voicebank(release, tmp_path / "out", workers=2, progress=False)  # in worker processes too
    assert snapshot(tmp_path / "out") == snapshot(reference)


def test_an_interrupted_run_resumes_and_never_leaves_half_a_file(
        release: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    real_write = prepare_module.write_output
    calls = []

    def crash_on_the_fifth(final: Path, data: bytes) -> None:
        calls.extend([final] if final.suffix == ".wav" else [])
        if len(calls) == 5:  # half the bytes in a temporary beside it, then the power goes
            temporary = prepare_module.temporary_path(final)
            temporary.write_bytes(data[: len(data) // 2])
            raise RuntimeError("power cut")
        real_write(final, data)

    monkeypatch.setattr(prepare_module, "write_output", crash_on_the_fifth)
    with pytest.raises(RuntimeError, match="power cut"):
        prepare_voicebank(release, out, progress=False)
    monkeypatch.setattr(prepare_module, "write_output", real_write)

    assert not (out / MANIFEST_NAME).exists()  # not a finished corpus
    assert len(list(out.glob("*/*/.*.partial"))) == 1
    finished = wav_paths(out)
    assert len(finished) == 4
    for path in finished:  # every file under a final name is whole
        assert path.read_bytes() == (reference / path.relative_to(out)).read_bytes()
    with open(out / PROGRESS_NAME, "ab") as log:  # and a crash mid-append leaves a torn line
        log.write(b'{"path": "train/clean/p2')

    result = prepare_voicebank(release, out, progress=False)
    assert result.written == 14 - 4
    assert not list(out.rglob("*.partial"))
    assert snapshot(out) == snapshot(reference)


def test_a_killed_run_resumes_to_the_same_bytes(release: Path, reference: Path, tmp_path: Path) -> None:
    """SIGKILL after five renames, before the progress log names them: they are checked, not redone."""
    out = tmp_path / "out"
    script = f"""
import os, signal
import bsrnn.data.prepare as prepare
real, count = prepare.write_output, []
def write(final, data):
    real(final, data)
    count.extend([final] if final.suffix == ".wav" else [])
    if len(count) == 5:
        os.kill(os.getpid(), signal.SIGKILL)
prepare.write_output = write
from bsrnn.cli.main import main
main(["data", "prepare", "vbd", {str(release)!r}, "--out", {str(out)!r}, "--workers", "1", "-q"])
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(wav_paths(out)) == 5 and not (out / MANIFEST_NAME).exists()
    written = {path: path.stat().st_mtime_ns for path in wav_paths(out)}
    result = prepare_voicebank(release, out, progress=False)
    assert result.written == 14 - 5
    assert {path: path.stat().st_mtime_ns for path in written} == written  # same bytes: left alone
    assert snapshot(out) == snapshot(reference)


def test_damaged_or_missing_outputs_are_redone(release: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    damaged = out / "train" / "noisy" / "p226_002.wav"
    data = bytearray(damaged.read_bytes())
    data[-10] ^= 0xFF
    damaged.write_bytes(bytes(data))
    (out / "test" / "clean" / "p232_001.wav").unlink()
    result = prepare_voicebank(release, out, progress=False)
    assert result.written == 2
    assert snapshot(out) == snapshot(reference)


def test_a_finished_folder_keeps_neither_the_lock_nor_the_progress_log(reference: Path) -> None:
    assert (reference / MANIFEST_NAME).is_file()
    assert not (reference / ".lock").exists() and not (reference / PROGRESS_NAME).exists()
    assert {path.name for path in reference.iterdir()} == {"train", "test", CHECKSUMS_NAME, MANIFEST_NAME}


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_unfinished_preparation_is_refused_naming_the_command_that_finishes_it(
        reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """What a killed `data prepare` leaves: some wavs, the progress log, no prepare.json."""
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    (out / MANIFEST_NAME).unlink()
    (out / "test" / "noisy" / "p232_002.wav").unlink()
    (out / "test" / "clean" / "p232_002.wav").unlink()
    (out / PROGRESS_NAME).write_text(json.dumps({"fingerprint": {"speakers": 28}}) + "\n")
    args = (["train", "--data-dir", str(out), "--run-dir", str(tmp_path / "run"), "--max-steps", "1",
             "--num-channel", "4", "--num-layer", "1", "--batch-size", "2", "--pesq-workers", "0"]
            if command == "train" else
            ["evaluate", str(tmp_path / "no-run"), "--data-dir", str(out)])
    if command == "evaluate":  # a run to evaluate: the data are checked after its checkpoint is loaded
        from tiny_generator import TINY_CONFIG, tiny_generator

        from bsrnn.checkpoint import CheckpointManager

        with CheckpointManager(tmp_path / "no-run") as manager:
            manager.register("model_state_dict", tiny_generator())
            manager.save(metric=0.5, values={"epoch": 0, "step_in_epoch": 0, "config": TINY_CONFIG})
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and PROGRESS_NAME in err and MANIFEST_NAME in err
    assert f"bsrnn data prepare vbd SOURCE --out {out}" in err


def test_another_release_in_the_same_out_is_refused_naming_the_difference(release: Path, tmp_path: Path) -> None:
    source = tmp_path / "vbd"
    shutil.copytree(release, source)
    out = tmp_path / "out"
    prepare_voicebank(source, out, progress=False)
    with zipfile.ZipFile(source / "noisy_testset_wav.zip", "a") as archive:
        archive.writestr("noisy_testset_wav/notes.txt", b"changed")
    with pytest.raises(UserError, match=r"sources\.noisy_testset_wav\.sha256"):
        prepare_voicebank(source, out, progress=False)


def test_foreign_wavs_in_out_are_refused_by_name(release: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "train" / "clean").mkdir(parents=True)
    (out / "train" / "clean" / "mine.wav").write_bytes(b"x")
    with pytest.raises(DataError, match="train/clean/mine.wav"):
        prepare_voicebank(release, out, progress=False)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_an_out_folder_linked_to_the_unpacked_sources_is_refused_and_the_sources_are_untouched(
        tmp_path: Path) -> None:
    source = make_release(tmp_path / "vbd", zipped=False)
    originals = source / "clean_trainset_28spk_wav"
    before = _files(originals)
    (tmp_path / "out" / "train").mkdir(parents=True)
    (tmp_path / "out" / "train" / "clean").symlink_to(originals)  # the reference recipe's layout, by a link
    with pytest.raises(UserError, match="is an input folder"):
        prepare_voicebank(source, tmp_path / "out", progress=False)
    assert _files(originals) == before


def test_an_output_that_is_a_hard_link_to_its_source_is_replaced_by_name_and_the_source_kept(tmp_path: Path) -> None:
    source = make_release(tmp_path / "vbd", zipped=False)
    original = source / "noisy_testset_wav" / "p232_002.wav"
    before = original.read_bytes()
    (tmp_path / "out" / "test" / "noisy").mkdir(parents=True)
    os.link(original, tmp_path / "out" / "test" / "noisy" / "p232_002.wav")
    prepare_voicebank(source, tmp_path / "out", progress=False)
    assert original.read_bytes() == before
    assert soundfile.info(str(tmp_path / "out" / "test" / "noisy" / "p232_002.wav")).samplerate == 16000


def test_the_progress_log_is_never_appended_through_a_link_planted_under_its_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / PROGRESS_NAME).symlink_to(victim)
    progress = prepare_module.ProgressLog(out)
    progress.add(prepare_module.Record("train/clean/a.wav", "0" * 64, 44, 0, 16000, 0), out)
    with pytest.raises(UserError, match="is a symbolic link"):
        progress.flush()
    assert victim.read_text() == "someone else's file\n"


def test_a_second_preparation_into_the_same_out_is_refused_naming_the_first(release: Path, tmp_path: Path) -> None:
    from bsrnn.checkpoint.lock import RunDirectoryLock

    out = tmp_path / "out"
    with RunDirectoryLock(out):  # what a preparation holds while it runs
        with pytest.raises(UserError, match=f"PID {os.getpid()}"):
            prepare_voicebank(release, out, progress=False)
    assert not list(out.glob("train"))


def test_zip_members_that_differ_only_in_case_are_refused_naming_them(
        release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "vbd"
    shutil.copytree(release, source)
    for side in ("clean", "noisy"):  # a twin on both sides: they pair, so only the case is wrong
        with zipfile.ZipFile(source / f"{side}_testset_wav.zip", "a") as archive:
            archive.writestr(f"{side}_testset_wav/P232_001.wav", archive.read(f"{side}_testset_wav/p232_001.wav"))
    code, err = _cli(capsys, str(source), "--out", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err
    assert "clean_testset_wav.zip: P232_001.wav and p232_001.wav" in err and "only in case" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_conversion_workers_die_with_a_sigkilled_prepare(tmp_path: Path) -> None:
    """`data prepare --workers 2`, SIGKILLed while converting: no helper process survives it."""
    import time

    from e2e import descendants, kill_and_assert_no_survivors

    source = tmp_path / "vbd"
    source.mkdir()
    buffer = io.BytesIO()  # one noise file under every name: a release big enough to be busy a while
    soundfile.write(buffer, 0.1 * np.random.default_rng(0).standard_normal(96000), 48000, format="WAV",
                    subtype="PCM_16")
    for release in release_sets(28):
        with zipfile.ZipFile(source / release.zip_name, "w") as archive:
            for index in range(150 if release.split == "train" else 4):
                archive.writestr(f"{release.folder}/p{226 + index % 2}_{index:03d}.wav", buffer.getvalue())
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "bsrnn", "data", "prepare", "vbd", str(source), "--out",
                                str(out), "--workers", "2", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    helpers: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None:
        helpers = descendants(process.pid)
        if len(helpers) >= 2 and any(out.glob("train/*/*.wav")):  # converting, in workers
            break
        time.sleep(0.01)
    assert process.poll() is None and len(helpers) >= 2, "the preparation ended before it could be killed"
    kill_and_assert_no_survivors(process, helpers)


# ----------------------------------------------------------------------------- source problems, rates
def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["data", "prepare", "vbd", *args])
    return code, capsys.readouterr().err


def test_missing_sets_are_named_in_one_line_with_exit_2(
        release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "vbd"
    shutil.copytree(release, source)
    (source / "noisy_testset_wav.zip").unlink()
    (source / "clean_trainset_28spk_wav.zip").unlink()
    code, err = _cli(capsys, str(source), "--out", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "noisy_testset_wav.zip" in err and "clean_trainset_28spk_wav.zip" in err and "--download" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_unpaired_files_are_all_named_in_one_line_with_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_release(tmp_path / "vbd", zipped=False)
    (source / "noisy_trainset_28spk_wav" / "p226_002.wav").unlink()
    (source / "clean_testset_wav" / "p232_001.wav").unlink()
    shutil.copy(source / "noisy_testset_wav" / "p232_002.wav", source / "noisy_testset_wav" / "p232_009.wav")
    code, err = _cli(capsys, str(source), "--out", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    for name in ("p226_002.wav", "p232_001.wav", "p232_009.wav"):
        assert name in err
    assert "Fix:" in err


def test_an_unreadable_file_is_named_and_the_rest_is_kept(tmp_path: Path) -> None:
    source = make_release(tmp_path / "vbd", zipped=False)
    (source / "clean_testset_wav" / "p232_002.wav").write_bytes(b"RIFF not really")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"clean_testset_wav/p232_002\.wav"):
        prepare_voicebank(source, out, progress=False)
    assert len(wav_paths(out)) == 13 and not (out / MANIFEST_NAME).exists()


@pytest.mark.parametrize("rate", [44100, 16000])
def test_other_source_rates_are_resampled_from_their_own_rate(tmp_path: Path, rate: int) -> None:
    source = make_release(tmp_path / "vbd", rate=rate)
    out = tmp_path / "out"
    prepare_voicebank(source, out, progress=False)
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["splits"]["train"]["source_rates"] == {str(rate): 10}
    assert manifest["splits"]["train"]["resampled_files"] == (0 if rate == 16000 else 10)
    assert soundfile.info(str(out / "test" / "noisy" / "p232_001.wav")).frames == round(SECONDS * 16000)
    if rate == 16000:  # copied, not resampled: the 16-bit samples come out as they went in
        with zipfile.ZipFile(source / "noisy_testset_wav.zip") as archive:
            original, _ = soundfile.read(io.BytesIO(archive.read("noisy_testset_wav/p232_001.wav")), dtype="int16")
        written, _ = soundfile.read(str(out / "test" / "noisy" / "p232_001.wav"), dtype="int16")
        assert np.array_equal(original, written)


def test_the_56_speaker_set_is_chosen_with_speakers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_release(tmp_path / "vbd", speakers=56)
    code, err = _cli(capsys, str(source), "--out", str(tmp_path / "out28"))
    assert code == 2 and "clean_trainset_28spk_wav.zip" in err
    assert main(["data", "prepare", "vbd", str(source), "--out", str(tmp_path / "out"), "--speakers", "56", "-q"]) == 0
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert manifest["dataset"]["speakers"] == 56
    assert {e["file"] for e in manifest["sources"]} >= {"clean_trainset_56spk_wav.zip", "noisy_trainset_56spk_wav.zip"}


# ----------------------------------------------------------------------------- download
class _Server:
    """Serves ``files`` on 127.0.0.1 with ``Range: bytes=N-`` support; records each request's
    path and Range header; can drop the first response of each file halfway."""

    def __init__(self, files: dict[str, bytes], drop_first: bool = False, honour_range: bool = True) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []
        self.dropped: set[str] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append((name, self.headers.get("Range")))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                ranged = self.headers.get("Range")
                if ranged and honour_range:
                    start = int(ranged.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if drop_first and name not in server.dropped:
                    server.dropped.add(name)
                    body = body[: len(body) // 2]  # then the connection closes
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        assert host == "127.0.0.1"
        return f"http://{host}:{port}/datashare/2791"

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the test server go straight to 127.0.0.1, whatever proxy this machine sets."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", MIRROR_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def served(release: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in release.glob("*.zip")}


def test_download_fetches_the_release_and_prepares_it(
        served: dict[str, bytes], reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, out = tmp_path / "downloads", tmp_path / "out"
    with _Server(served) as server:
        code = main(["data", "prepare", "vbd", str(source), "--out", str(out), "--download", "--mirror", server.url])
    assert code == 0, capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in source.iterdir()} == served  # no .partial left
    assert snapshot(out) == snapshot(reference)  # the manifest holds each zip's SHA-256
    assert "Train with: bsrnn train --data-dir" in capsys.readouterr().out


def test_a_second_download_into_the_same_source_is_refused_naming_the_first(
        served: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bsrnn.checkpoint.lock import RunDirectoryLock

    source = tmp_path / "downloads"
    source.mkdir()
    with RunDirectoryLock(source), _Server(served) as server:  # the first download, still running
        code = main(["data", "prepare", "vbd", str(source), "--out", str(tmp_path / "out"), "--download",
                     "--mirror", server.url])
    assert code == 2
    assert f"SOURCE {source}: expected no other process writing there, found one (PID {os.getpid()})" in (
        capsys.readouterr().err)
    assert not [path for path in source.iterdir() if path.suffix in (".zip", ".partial")]


def test_a_download_stopped_halfway_resumes_in_the_next_run_with_a_range_request(
        served: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "clean_testset_wav.zip"
    data, target = served[name], tmp_path / name

    def interrupted(seconds: float) -> None:  # Ctrl-C while waiting to retry the dropped transfer
        raise KeyboardInterrupt

    with _Server(served, drop_first=True) as server:
        monkeypatch.setattr("bsrnn.data.download.time.sleep", interrupted)
        with pytest.raises(KeyboardInterrupt):
            download(f"{server.url}/{name}", target, progress=False)
        assert not target.exists() and partial_path(target).read_bytes() == data[: len(data) // 2]
        download(f"{server.url}/{name}", target, progress=False)  # the next run
    assert server.requests == [(name, None), (name, f"bytes={len(data) // 2}-")]
    assert target.read_bytes() == data and not partial_path(target).exists()


def test_a_download_that_keeps_failing_stops_and_keeps_its_bytes(tmp_path: Path) -> None:
    with _Server({}) as server:
        url = server.url
    target = tmp_path / "clean_testset_wav.zip"  # the server is gone: connection refused
    with pytest.raises(DownloadError, match="run the same command again"):
        download(f"{url}/{target.name}", target, progress=False, retries=2, retry_wait_s=0)


def test_a_dropped_connection_is_resumed_within_one_run(served: dict[str, bytes], tmp_path: Path) -> None:
    with _Server(served, drop_first=True) as server:
        fetched = fetch_release(tmp_path, 28, mirror=server.url, progress=False, retry_wait_s=0)
    assert {path.name: path.read_bytes() for path in fetched} == served
    assert sum(1 for _, ranged in server.requests if ranged) == 4


def test_a_server_that_ignores_ranges_is_read_from_the_start(served: dict[str, bytes], tmp_path: Path) -> None:
    name = "noisy_testset_wav.zip"
    target = tmp_path / name
    partial_path(target).write_bytes(b"stale bytes of another attempt")
    with _Server(served, honour_range=False) as server:
        download(f"{server.url}/{name}", target, progress=False)
    assert target.read_bytes() == served[name]


def test_a_complete_partial_file_is_finished_without_a_body(served: dict[str, bytes], tmp_path: Path) -> None:
    name = "clean_testset_wav.zip"
    target = tmp_path / name
    partial_path(target).write_bytes(served[name])
    with _Server(served) as server:
        download(f"{server.url}/{name}", target, progress=False)
    assert target.read_bytes() == served[name] and not partial_path(target).exists()


def test_a_wrong_mirror_is_a_user_error_naming_the_url(served: dict[str, bytes], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with _Server({}) as server:
        code = main(["data", "prepare", "vbd", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                     "--download", "--mirror", server.url])
    err = capsys.readouterr().err
    assert code == 2 and "404" in err and server.url in err and err.count("\n") == 1
    code, err = _cli(capsys, str(tmp_path), "--out", str(tmp_path / "o"), "--download", "--mirror", "ftp://x")
    assert code == 2 and "http://" in err
    code, err = _cli(capsys, str(tmp_path), "--out", str(tmp_path / "o"), "--mirror", server.url)
    assert code == 2 and "--download" in err


def test_the_help_names_the_mirror_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["data", "prepare", "vbd", "--help"])
    assert f"${MIRROR_ENV}" in capsys.readouterr().out


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_a_prepared_release_trains(tmp_path: Path) -> None:
    from e2e import bsrnn

    source = make_release(tmp_path / "vbd", seconds=0.6)
    out = tmp_path / "out"
    prepared = bsrnn("data", "prepare", "vbd", str(source), "--out", str(out), "--workers", "1")
    assert prepared.returncode == 0, prepared.stderr
    trained = bsrnn("train", "--data-dir", str(out), "--num-channel", "4", "--num-layer", "1", "--batch-size", "2",
                    "--cut-len", "8000", "--epochs", "1", "--max-steps", "1", "--pesq-workers", "1",
                    "--run-dir", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert (tmp_path / "run" / "checkpoint_last.pt").exists()


@pytest.mark.slow
def test_prepare_then_train_on_held_out_speakers_then_evaluate_on_the_test_split(tmp_path: Path) -> None:
    """The README's path from a release to a test score, through the real command line."""
    release = make_release(tmp_path / "release", seconds=1.0, train={"p226": 2, "p227": 8, "p287": 2})
    data, run_dir = tmp_path / "vbd16k", tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def bsrnn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bsrnn", *args], capture_output=True, text=True,
                              env=env, timeout=600, check=False)

    assert bsrnn("data", "prepare", "vbd", str(release), "--out", str(data)).returncode == 0
    assert json.loads((data / "prepare.json").read_text())["validation"]["speakers"] == ["p226", "p287"]
    result = bsrnn("train", "--data-dir", str(data), "--run-dir", str(run_dir), "--epochs", "1",
                   "--num-channel", "4", "--num-layer", "1", "--batch-size", "4", "--cut-len", "8000",
                   "--pesq-workers", "1")
    assert result.returncode == 0, result.stderr
    assert ("Validation: 4 pairs, speakers p226, p287 held out of the training split (prepare.json); "
            "training on 8 pairs") in result.stderr
    result = bsrnn("evaluate", str(run_dir), "--data-dir", str(data), "--csv", str(tmp_path / "test.csv"))
    assert result.returncode == 0, result.stderr
    rows = (tmp_path / "test.csv").read_text().splitlines()
    # Named like `bsrnn score`'s rows for `bsrnn enhance`'s outputs: the file name, suffix included.
    assert [row.split(",")[0] for row in rows] == ["file", "p232_001.wav", "p232_002.wav"]
