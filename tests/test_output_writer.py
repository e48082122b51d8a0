"""``bsrnn.output``: the one writer of user-facing files. Complete or not at all, never through a
symbolic link, never over an input, over an existing file only when asked."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bsrnn.audio import AudioFileError, write_audio
from bsrnn.errors import UserError
from bsrnn.metrics import FileScore, write_csv
from bsrnn.output import InputFiles, check_destinations, check_output_folder, write_bytes, write_file


def entries(folder: Path) -> list[str]:
    """Every name in ``folder``, hidden temporaries included."""
    return sorted(os.listdir(folder))


def disk_full(temporary: Path) -> None:
    """A write that gets half its data out, then finds the disk full."""
    temporary.write_bytes(b"half")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(temporary))


# ------------------------------------------------------------------------ commit protocol
def test_the_destination_appears_only_once_the_file_is_complete(tmp_path: Path) -> None:
    destination = tmp_path / "out.txt"
    seen: list[Path] = []

    def write(temporary: Path) -> None:
        assert not destination.exists()  # nothing under the final name while writing
        seen.append(temporary)
        temporary.write_bytes(b"complete")

    write_file(destination, write, overwrite=False)
    (temporary,) = seen
    assert temporary.parent == tmp_path and temporary.name.startswith(".") and temporary != destination
    assert destination.read_bytes() == b"complete" and entries(tmp_path) == ["out.txt"]


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    destination = tmp_path / "scores.csv"
    destination.write_bytes(b"the old, complete file")
    with pytest.raises(OSError) as raised:
        write_file(destination, disk_full, overwrite=True)
    assert raised.value.errno == errno.ENOSPC
    assert destination.read_bytes() == b"the old, complete file" and entries(tmp_path) == ["scores.csv"]


def test_a_failed_fsync_keeps_the_old_csv_never_a_0_byte_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    destination = tmp_path / "scores.csv"
    destination.write_bytes(b"old")

    def full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_csv([FileScore("a.wav", 3.0, 4.0, 3.0, 3.5, 10.0, 0.9, 12.0, 1.0, "")], destination,
                  overwrite=True)
    assert destination.read_bytes() == b"old" and entries(tmp_path) == ["scores.csv"]


def test_a_full_disk_while_replacing_audio_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reproduction: the old WAV was truncated first, and a shorter valid-looking one was left."""
    destination = tmp_path / "a.wav"
    soundfile.write(destination, np.full(16000, 0.25, dtype=np.float32), 16000)
    before = destination.read_bytes()
    real_write = soundfile.write

    def write_half_then_fail(file: str, data: np.ndarray, *args: object, **kwargs: object) -> None:
        real_write(file, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), file)

    monkeypatch.setattr(soundfile, "write", write_half_then_fail)
    with pytest.raises(AudioFileError, match=r"a\.wav: expected a place to write WAV audio.*No space left"):
        write_audio(destination, np.zeros(16000, dtype=np.float32), 16000, overwrite=True)
    assert destination.read_bytes() == before and entries(tmp_path) == ["a.wav"]


def test_a_short_audio_write_that_reports_no_error_is_caught_by_reading_it_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = soundfile.write
    monkeypatch.setattr(soundfile, "write", lambda file, data, *args, **kwargs:
                        real_write(file, data[:100], *args, **kwargs))
    with pytest.raises(AudioFileError, match="100 of 16000 frames were written"):
        write_audio(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    assert entries(tmp_path) == []


def test_a_killed_writer_leaves_no_truncated_file_under_the_final_name(tmp_path: Path) -> None:
    """SIGKILL mid-write: nothing under the final name (at most a hidden temporary), the old file intact."""
    destination = tmp_path / "a.wav"
    destination.write_bytes(b"old")
    child = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from bsrnn.output import write_file

        def write(temporary):
            temporary.write_bytes(b"half of a new file")
            os.kill(os.getpid(), signal.SIGKILL)

        write_file(Path({str(destination)!r}), write, overwrite=True)
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == -9, done.stderr
    assert destination.read_bytes() == b"old"
    assert all(name == "a.wav" or (name.startswith(".a.wav.") and name.endswith(".partial"))
               for name in entries(tmp_path))


def test_rerunning_a_killed_command_removes_the_temporary_it_left_and_nothing_else(tmp_path: Path) -> None:
    """A SIGKILLed writer leaves a hidden temporary; the next command that writes that file
    removes it when it checks its destinations. A live writer's temporary, another file's
    temporary and a user's own hidden file stay."""
    destination = tmp_path / "a.wav"
    child = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from bsrnn.output import write_file

        def write(temporary):
            temporary.write_bytes(b"half of a new file")
            os.kill(os.getpid(), signal.SIGKILL)

        write_file(Path({str(destination)!r}), write, overwrite=False)
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -9, done.stderr
    (left,) = entries(tmp_path)
    dead_pid = left.split(".")[3]
    live = f".a.wav.{os.getpid()}.0123abcd.partial"  # this process is writing it
    other = f".b.wav.{dead_pid}.0123abcd.partial"  # a file this command does not write
    mine = ".a.wav.notes.partial"  # not a temporary's name: the user's
    for name in (live, other, mine):
        (tmp_path / name).write_bytes(b"keep")
    check_destinations([destination, tmp_path / "c.wav"], overwrite=False, flag="--out")
    assert entries(tmp_path) == sorted([live, other, mine])


def test_checking_destinations_without_leftovers_does_not_load_torch(tmp_path: Path) -> None:
    """`bsrnn score` forks its helpers only while torch is not loaded: the tidy-up must not load it."""
    child = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from bsrnn.output import check_destinations
        check_destinations([Path({str(tmp_path / "scores.csv")!r})], overwrite=False, flag="--csv")
        print("torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"


# ------------------------------------------------------------------------ refusals
def test_an_existing_destination_is_refused_without_overwrite_and_replaced_with_it(tmp_path: Path) -> None:
    destination = tmp_path / "scores.csv"
    destination.write_bytes(b"old")
    with pytest.raises(UserError, match=r"--csv: expected no file where outputs go, found 1 that exist already: "
                                        r".*scores\.csv\. Fix: pass --overwrite to replace it"):
        write_bytes(destination, b"new", overwrite=False, flag="--csv")
    assert destination.read_bytes() == b"old" and entries(tmp_path) == ["scores.csv"]
    write_bytes(destination, b"new", overwrite=True, flag="--csv")
    assert destination.read_bytes() == b"new" and entries(tmp_path) == ["scores.csv"]


def test_a_symbolic_link_at_the_destination_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "precious.wav"
    target.write_bytes(b"precious")
    link = tmp_path / "curves.png"
    link.symlink_to(target)
    for overwrite in (False, True):
        with pytest.raises(UserError, match=r"found 1 symbolic link\(s\) where outputs would go: .*curves\.png -> "
                                            r".*precious\.wav\. bsrnn never writes through a link"):
            write_bytes(link, b"new", overwrite=overwrite, flag="--out")
    assert target.read_bytes() == b"precious" and link.is_symlink()
    assert entries(tmp_path) == ["curves.png", "precious.wav"]


def test_an_input_is_never_replaced_whatever_name_reaches_it(tmp_path: Path) -> None:
    source = tmp_path / "in" / "a.wav"
    source.parent.mkdir()
    source.write_bytes(b"input")
    out = tmp_path / "out"
    out.mkdir()
    os.link(source, out / "a.wav")  # a hard link: another name, the same file
    inputs = InputFiles([source])
    with pytest.raises(UserError, match=r"output\(s\) that are inputs \(the same file\): .*out/a\.wav \(= .*in/a\.wav\)"):
        check_destinations([out / "b.wav", out / "a.wav"], overwrite=True, flag="--out", inputs=inputs)
    with pytest.raises(UserError, match="that are inputs"):
        write_bytes(out / "a.wav", b"new", overwrite=True, flag="--out", inputs=inputs)
    assert source.read_bytes() == b"input" and entries(out) == ["a.wav"]


def test_every_destination_is_checked_and_named_before_anything_is_written(tmp_path: Path) -> None:
    for name in "abcdefg":
        (tmp_path / f"{name}.wav").write_bytes(b"old")
    destinations = [tmp_path / f"{name}.wav" for name in "abcdefgh"]
    with pytest.raises(UserError, match=r"found 7 that exist already: .*a\.wav, .*e\.wav \(7 in all\)\. "
                                        r"Fix: pass --overwrite to replace them, or choose another --out"):
        check_destinations(destinations, overwrite=False, flag="--out")
    check_destinations(destinations, overwrite=True, flag="--out")


def test_a_folder_where_a_file_should_go_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.wav").mkdir()
    with pytest.raises(UserError, match=r"found 1 folder\(s\) or special file\(s\): .*a\.wav"):
        check_destinations([tmp_path / "a.wav"], overwrite=True, flag="--out")


def test_an_output_folder_that_is_an_input_folder_by_another_path_is_refused(tmp_path: Path) -> None:
    inputs = tmp_path / "noisy"
    inputs.mkdir()
    (inputs / "a.wav").write_bytes(b"input")
    alias = tmp_path / "alias"
    alias.symlink_to(inputs, target_is_directory=True)
    with pytest.raises(UserError, match=r"--out .*alias is an input folder: outputs would overwrite the inputs"):
        check_output_folder(alias, [inputs / "a.wav"], "--out")
    check_output_folder(tmp_path / "elsewhere", [inputs / "a.wav"], "--out")
