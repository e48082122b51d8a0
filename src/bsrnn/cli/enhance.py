"""``bsrnn enhance CHECKPOINT_OR_RUN_DIR INPUT... --out DIR``: enhance wav files.

Files of any length (processed in chunks), any sample rate (resampled to 16 kHz and back),
mono or multi-channel (each channel enhanced); outputs are same-named wavs in ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint file or run directory")
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="wav files or folders of wavs")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    parser.add_argument("--load", choices=["auto", "best", "last"], default="auto",
                        help="which checkpoint of a run directory (default: auto, as for training)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")


def collect_wavs(inputs: list[Path]) -> list[Path]:
    from bsrnn.errors import UserError

    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(item.glob("*.wav"))
            if not found:
                raise UserError(f"{item} holds no .wav files")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise UserError(f"Input {item} does not exist")
    names = [f.name for f in files]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"Several inputs share the output name(s) {', '.join(duplicates[:5])}; enhance them separately")
    return files


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from bsrnn.audio import read_wav, write_wav
    from bsrnn.enhancement import enhance_audio, load_generator
    from bsrnn.errors import UserError

    files = collect_wavs(args.inputs)
    out_dir: Path = args.out
    if any(f.parent.resolve() == out_dir.resolve() for f in files):
        raise UserError(f"--out {out_dir} is an input folder: outputs would overwrite the inputs")
    generator = load_generator(args.checkpoint, args.load, args.device)
    print(f"Enhancing {len(files)} file(s) with {generator.path} (epoch {generator.epoch})")
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="enhance", disable=None):
        audio, rate = read_wav(path)
        enhanced = enhance_audio(generator.model, audio, rate, args.device)
        write_wav(out_dir / path.name, enhanced, rate)
    print(f"Wrote {len(files)} file(s) to {out_dir}")
    return 0
