"""``bsrnn train``: train or resume a run.

Precedence: defaults < the recipe's values (``--recipe``, ``reference`` unless given) < the
checkpoint's config (on resume) < ``--config FILE`` < flags. Every flag defaults to "not given",
so the command knows exactly which fields the user set; a recipe's values never count as set, so
on resume the checkpoint's own values win over them.

Every config field is a flag, generated from the ``Config`` dataclass (its type and its help,
with the default), so ``--help`` cannot drift from the config: a new field is a new flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

# Fields with a hand-written flag below (choices, a const, a negative form).
_SPECIAL = {"data_dir", "demo", "resume_from_checkpoint", "load_checkpoint_type", "monitor", "amp", "async_save",
            "device"}
# List fields whose flag also takes comma-separated values.
_COMMA_LISTS = {"valid_speakers"}

DESCRIPTION = """\
Train a BSRNN generator against a MetricGAN discriminator, or resume a run.

Which checkpoint a resume takes, and what happens when there is none:
  (no --resume)          a fresh run; refused if --run-dir already holds checkpoints
  --resume / --resume auto
                         continue --run-dir if it holds a checkpoint, else start fresh and say
                         so: the same command line for every requeue of a cluster job
  --resume --load best|last, --resume DIR
                         exactly that checkpoint, or "Checkpoint not found" (exit 2) listing
                         the paths tried: a mistyped run directory never starts a fresh run

Precedence: defaults < --recipe's values < the checkpoint's config (on resume) < --config FILE
< flags. A resume keeps the run's recipe; another --recipe needs --allow-recipe-change.
"""


def _base_type(annotation: Any) -> Any:
    """``int`` for ``int | None``, the annotation itself otherwise."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return annotation


def _with_default(help_text: str, default: Any) -> str:
    if default is None or "default" in help_text:
        return help_text
    shown = " ".join(str(value) for value in default) if isinstance(default, list) else default
    return f"{help_text} (default: {shown})"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bsrnn.config import Config

    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    defaults = Config().to_dict()
    hints = typing.get_type_hints(Config)
    helps = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(Config)}
    add = parser.add_argument
    add("--config", metavar="FILE", help="TOML file with config fields (flags override it)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-dir", metavar="DIR", help=helps["data_dir"])
    source.add_argument("--demo", action="store_true", default=None, help=helps["demo"])
    add("--resume", nargs="?", const="auto", metavar="DIR|auto",
        help="resume from DIR's checkpoint; alone or 'auto': from --run-dir if it holds one, else start fresh "
             "(see above)")
    add("--load", choices=["auto", "best", "last"], help=_with_default(helps["load_checkpoint_type"], "auto"))
    add("--monitor", choices=["val_loss", "pesq"], help=_with_default(helps["monitor"], defaults["monitor"]))
    add("--device", help=_with_default(helps["device"], defaults["device"]))
    add("--amp", choices=["off", "bf16"], help=_with_default(helps["amp"], defaults["amp"]))
    add("--sync-save", dest="async_save", action="store_false", default=None,
        help="write checkpoints in the training thread (default: in a background thread)")
    for field in dataclasses.fields(Config):
        if field.name in _SPECIAL or not field.metadata.get("help"):
            continue
        flag = "--" + (field.metadata.get("flag") or field.name).replace("_", "-")
        kind = _base_type(hints[field.name])
        help_text = _with_default(helps[field.name], defaults[field.name])
        if kind is bool:
            add(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            add(flag, type=item, nargs=len(defaults[field.name]) or "+", metavar=field.metadata.get("metavar") or "X",
                help=help_text)
        elif field.metadata.get("choices"):
            add(flag, choices=field.metadata["choices"], help=help_text)
        else:
            add(flag, type=kind, metavar=field.metadata.get("metavar") or ("N" if kind is int else "X"), help=help_text)


def config_table() -> str:
    """The README's table of config fields (TOML key, flag, default, meaning), from the dataclass.

    ``tests/test_docs.py`` checks that README.md holds exactly this table; ``make docs`` rewrites it.
    """
    from bsrnn.config import Config

    defaults = Config().to_dict()
    rows = ["| TOML key | flag | default | meaning |", "| --- | --- | --- | --- |"]
    for field in dataclasses.fields(Config):
        if not field.metadata.get("help"):
            continue
        flag = "--sync-save (sets false)" if field.name == "async_save" else (
            "--" + (field.metadata.get("flag") or field.name).replace("_", "-"))
        default = defaults[field.name]
        shown = "unset" if default is None else f"`{default}`"
        meaning = field.metadata["help"].replace("|", "/")
        rows.append(f"| `{field.name}` | `{flag}` | {shown} | {meaning} |")
    return "\n".join(rows) + "\n"


def explicit_values(args: argparse.Namespace) -> dict[str, Any]:
    """Config fields given on the command line (flags left at None were not given)."""
    from bsrnn.config import FLAG_NAMES, field_names

    known = set(field_names())
    renamed = {flag: name for name, flag in FLAG_NAMES.items()}
    values = {}
    for key, value in vars(args).items():
        field = renamed.get(key, key)
        if field in known and value is not None:
            if field in _COMMA_LISTS:  # --valid-speakers p226,p287 or p226 p287
                value = [item for given in value for item in given.split(",") if item]
            values[field] = value
    return values


def given_values(args: argparse.Namespace) -> dict[str, Any]:
    """The fields the user set: the ``--config`` file's, then the flags', which win."""
    from bsrnn.config import read_toml

    file_values = read_toml(args.config) if args.config else {}
    return {**file_values, **explicit_values(args)}


def config_of(values: dict[str, Any], source: str = "command line") -> Any:
    """The config for the given values: their recipe's values first (``reference`` unless
    ``recipe`` is given), the given values over them."""
    from bsrnn.config import config_from_dict, recipe_values
    from bsrnn.recipes import DEFAULT_RECIPE

    recipe = values.get("recipe", DEFAULT_RECIPE)
    preset = recipe_values(recipe) if isinstance(recipe, str) else {}
    return config_from_dict({**preset, **values}, source=source)


def run(args: argparse.Namespace) -> int:
    from bsrnn.training import train

    values = given_values(args)
    config = config_of(values, source=f"{args.config} + flags" if args.config else "command line")
    result = train(config, explicit=set(values))
    return result.exit_code
