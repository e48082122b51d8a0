"""``bsrnn train``: train or resume a run (SPEC sections 2 and 5).

Precedence: defaults < the checkpoint's config (on resume) < ``--config FILE`` < flags. Every
flag defaults to "not given", so the command knows exactly which fields the user set.
"""

from __future__ import annotations

import argparse
from typing import Any

# flag -> config field, for flags whose names differ from the field.
_RENAMED = {"run_dir": "save_model_dir", "resume": "resume_from_checkpoint", "load": "load_checkpoint_type"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bsrnn.config import field_help

    helps = field_help()
    add = parser.add_argument
    add("--config", metavar="FILE", help="TOML file with config fields (flags override it)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", metavar="DIR", help=helps["data_dir"])
    source.add_argument("--demo", action="store_true", default=None, help=helps["demo"])
    add("--run-dir", metavar="DIR", help=helps["save_model_dir"] + " (config: save_model_dir)")
    for name, kind, metavar in (
        ("epochs", int, "N"), ("batch_size", int, "N"), ("init_lr", float, "LR"), ("decay_epoch", int, "N"),
        ("cut_len", int, "SAMPLES"), ("num_channel", int, "N"), ("num_layer", int, "L"), ("ndf", int, "N"),
        ("seed", int, "S"), ("save_every_steps", int, "N"), ("max_steps", int, "N"), ("workers", int, "N"),
        ("log_interval", int, "N"), ("pesq_workers", int, "N"), ("gan_start_epoch", int, "EPOCH"),
    ):
        add(f"--{name.replace('_', '-')}", type=kind, metavar=metavar, help=helps[name])
    add("--monitor", choices=["val_loss", "pesq"], help=helps["monitor"])
    add("--device", help=helps["device"] + " (default auto)")
    add("--resume", nargs="?", const="auto", metavar="DIR|auto",
        help="resume from DIR's checkpoint; alone or 'auto': from --run-dir if it holds one, else start fresh")
    add("--load", choices=["auto", "best", "last"], help=helps["load_checkpoint_type"] + " (default auto)")
    add("--amp", choices=["off", "bf16"], help=helps["amp"] + " (default off)")
    add("--compile", action=argparse.BooleanOptionalAction, default=None, help=helps["compile"])
    add("--cache-audio", action=argparse.BooleanOptionalAction, default=None, help=helps["cache_audio"])
    add("--sync-save", dest="async_save", action="store_false", default=None,
        help="write checkpoints in the training thread (default: in a background thread)")


def explicit_values(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields given on the command line (flags left at None were not given)."""
    from bsrnn.config import field_names

    known = set(field_names())
    values = {}
    for key, value in vars(args).items():
        field = _RENAMED.get(key, key)
        if field in known and value is not None:
            values[field] = value
    return values


def run(args: argparse.Namespace) -> int:
    from bsrnn.config import config_from_dict, read_toml
    from bsrnn.training import train

    file_values = read_toml(args.config) if args.config else {}
    flag_values = explicit_values(args)
    values = {**file_values, **flag_values}
    config = config_from_dict(values, source="command line" if not file_values else f"{args.config} + flags")
    result = train(config, explicit=set(values))
    return result.exit_code
