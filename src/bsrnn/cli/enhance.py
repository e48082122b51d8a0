"""``bsrnn enhance CHECKPOINT_OR_RUN_DIR INPUT... --out DIR``: enhance audio files.

Files of any format libsndfile reads (WAV, FLAC, OGG, ...), any length (processed in chunks),
any sample rate (resampled to 16 kHz and back), mono or multi-channel (each channel enhanced).
Each output keeps its input's file name and format in ``--out``: ``x.flac`` gives ``x.flac``,
16-bit PCM where the format stores PCM, else the input's own encoding (an Ogg Vorbis stays
Vorbis). ``--pcs`` adds perceptual contrast stretching after the network
(``bsrnn.pcs.perceptual_contrast_stretch``); names and formats are the same. ``--stream`` feeds
each file to a causal model one hop (8 ms) at a time, through the streaming path a real-time
system would use (a causal ``.onnx`` model: its streaming step, in ONNX Runtime); the output equals
the offline one within float32 rounding.

The command is a thin layer over ``bsrnn.inference.Enhancer``: one loading, one enhancement path
for files and arrays, the same refusals.

An input that cannot be enhanced (unreadable, truncated, no samples, shorter than 32 ms,
NaN/inf samples, a format libsndfile cannot write back) is never turned into an output. Given alone, it stops the command with its
reason; among several inputs it is skipped, the others are enhanced, and the command ends
by naming every skipped file and exits 2. Every input's header is checked before the model is
loaded, so most such problems show in a second.

Outputs are written through ``bsrnn.output``: every destination is checked before the first
file is enhanced (an existing output is refused without ``--overwrite``; an input, or a symbolic
link, never replaced), and each file appears under its name only once it is complete.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from bsrnn.cli.main import inform, quiet
from bsrnn.output import add_overwrite_argument

log = logging.getLogger(__name__)

PRECISION_CHOICES = ("fp32", "bf16", "int8")
"""``bsrnn.enhancement.PRECISIONS``, written out so that parsing this command's flags does not
import torch; tests/test_precision.py checks that the two agree."""


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision``, shared by ``enhance`` and ``evaluate``: they run the generator alike."""
    parser.add_argument("--precision", choices=PRECISION_CHOICES, default="fp32",
                        help="arithmetic of the generator: fp32 (default), bf16 (bfloat16 autocast; "
                             "a GPU or a CPU with AVX512-BF16/AMX), int8 (dynamic quantization of the "
                             "LSTMs and Linears; CPU only). The STFT and the output stay float32")


def add_pcs_argument(parser: argparse.ArgumentParser) -> None:
    """``--pcs``, shared by ``enhance`` and ``evaluate``: both enhance through ``enhance_waveform``."""
    parser.add_argument("--pcs", action="store_true",
                        help="perceptual contrast stretching of the enhanced spectrum (Chao et al., Interspeech "
                             "2022): magnitudes raised per frequency by the SII band importance, phase kept, "
                             "then scaled back to the enhanced peak level. Off by default")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``, shared by ``enhance`` and ``evaluate`` (``bsrnn.enhancement.inference_device``)."""
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N or auto (default auto, as for train: cuda if available, else "
                             "cpu; cpu for --precision int8, which has CPU kernels only)")


LOAD_CHOICES = ("auto", "best", "last")
"""``bsrnn.checkpoint.WHICH_CHOICES``, written out so that parsing flags does not import torch."""


def add_load_argument(parser: argparse.ArgumentParser) -> None:
    """``--load``, shared by every command that uses a run's weights (``enhance``, ``evaluate``,
    ``ckpt export``): one rule, ``bsrnn.enhancement.choose_checkpoint``, for which file they take."""
    parser.add_argument("--load", choices=LOAD_CHOICES, default="auto",
                        help="which checkpoint of a run directory: auto (default) takes checkpoint_best.pt if it "
                             "verifies, else checkpoint_last.pt (the weights that validated best, as enhance, "
                             "evaluate and ckpt export all do); best or last takes exactly that file. Ignored "
                             "for a checkpoint file or a bundle")


PCS_ON = "Perceptual contrast stretching (--pcs) of the enhanced spectra: on"
"""What ``enhance`` and ``evaluate`` print with ``--pcs`` (nothing without it)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT_OR_RUN_DIR_OR_BUNDLE",
                        help="checkpoint file, run directory, or model bundle (.safetensors) or ONNX model (.onnx) "
                             "from `bsrnn ckpt export`")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                        help="audio files (WAV, FLAC, OGG, ...) or folders of them")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    add_load_argument(parser)
    add_device_argument(parser)
    add_precision_argument(parser)
    add_pcs_argument(parser)
    parser.add_argument("--stream", action="store_true",
                        help="process each file hop by hop (128 samples) through the streaming path, as a "
                             "real-time system would: causal models only (`bsrnn train --causal`; a checkpoint, "
                             "bundle or .onnx model), 40 ms latency; the output equals the offline output within "
                             "float32 rounding")
    add_overwrite_argument(parser, "files in --out")


def collect_audio_files(inputs: list[Path]) -> list[Path]:
    """Input files: files as given, and each folder's audio files (``bsrnn.audio.is_audio_file``:
    any format libsndfile reads, any case of the suffix).

    Names that differ only in case (``a.wav``, ``A.WAV``) are refused with the output-name
    clash: on a case-insensitive file system (macOS, Windows) their outputs would be one file.
    """
    from bsrnn.audio import AUDIO_SUFFIXES, list_audio_files
    from bsrnn.checkpoint.reading import file_kind
    from bsrnn.errors import UserError

    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = list_audio_files(item)
            if not found:
                raise UserError(f"Input folder {item}: expected audio files in it "
                                f"({', '.join(sorted(AUDIO_SUFFIXES))}), found none. "
                                "Fix: pass the folder that holds them, or the files themselves")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        elif item.exists():
            raise UserError(f"Input {item}: expected an audio file or a folder of them, found "
                            f"{file_kind(item.stat().st_mode)}, not a regular file. Fix: save the audio to a "
                            "regular file and pass that")
        else:
            raise UserError(f"Input {item}: expected an audio file or a folder of them, found nothing there. "
                            "Fix: check the path")
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name.lower(), []).append(path)
    clashes = [paths for paths in by_name.values() if len(paths) > 1]
    if clashes:
        shown = "; ".join(" and ".join(str(path) for path in paths) for paths in clashes[:5])
        raise UserError(f"Inputs must have distinct output names in --out, but these share one (ignoring "
                        f"case): {shown}. Fix: enhance them separately, into different --out folders")
    return files


def check_out_dir(out_dir: Path, files: list[Path]) -> None:
    """Refuse an --out that is a file or an input folder (by identity), before any work is done."""
    from bsrnn.output import check_output_folder

    check_output_folder(out_dir, files, "--out")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bsrnn.audio import output_format_like, read_audio, write_audio
    from bsrnn.enhancement import check_input_file, inference_device
    from bsrnn.errors import UserError
    from bsrnn.inference import Enhancer
    from bsrnn.output import InputFiles, check_destinations

    device = inference_device(args.device, args.precision)
    files = collect_audio_files(args.inputs)
    out_dir: Path = args.out
    check_out_dir(out_dir, files)
    inputs = InputFiles([*files, args.checkpoint])
    check_destinations([out_dir / path.name for path in files], overwrite=args.overwrite, flag="--out",
                       inputs=inputs)
    skipped: list[Path] = []

    def skip(path: Path, error: UserError) -> None:
        if len(files) == 1:
            raise error
        log.warning("skipped: %s", error)
        skipped.append(path)

    usable = []
    formats: dict[Path, tuple[str, str]] = {}
    for path in files:
        try:
            formats[path] = output_format_like(check_input_file(path), out_dir / path.name)
            usable.append(path)
        except UserError as error:
            skip(path, error)
    if usable:
        if args.stream and args.pcs:
            raise UserError("--stream with --pcs: perceptual contrast stretching scales the whole signal to the "
                            "network output's peak, which a stream cannot know in advance. Fix: drop one of them")
        enhancer = Enhancer.load(args.checkpoint, args.load, device, args.precision)
        if args.stream:
            enhancer.check_can_stream()  # before any file is read
        inform(args, f"{enhancer.describe()}; on {device}")
        if args.pcs:
            inform(args, PCS_ON)
        if args.stream:
            runtime = " in ONNX Runtime" if enhancer.generator.model is None else ""
            inform(args, f"Streaming hop by hop through the causal model{runtime} ({enhancer.latency_ms:g} ms latency)")
        inform(args, f"Enhancing {len(usable)} file(s)" if len(usable) == len(files) else
               f"Enhancing {len(usable)} of {len(files)} file(s); the others are skipped (see above)")
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(f"--out {out_dir}: expected a folder that can be created, found that it cannot "
                            f"({error.strerror or error}). Fix: choose a writable place") from error
    written = 0
    for path in tqdm(usable, desc="enhance", disable=True if quiet(args) else None):
        container, subtype = formats[path]
        try:
            audio, rate = read_audio(path)
            enhanced = enhancer.enhance(audio, rate, pcs=args.pcs, streaming=args.stream, source=path)
            write_audio(out_dir / path.name, enhanced, rate, subtype=subtype, format=container,
                        overwrite=args.overwrite, flag="--out", inputs=inputs)
        except UserError as error:
            skip(path, error)
            continue
        written += 1
    if usable:
        inform(args, f"Wrote {written} file(s) to {out_dir}")
    if skipped:
        names = ", ".join(str(path) for path in skipped)
        raise UserError(f"skipped {len(skipped)} of {len(files)} input file(s), nothing written for them "
                        f"(reasons above): {names}. Fix: repair or remove them, then enhance just those")
    return 0
