"""Named training recipes: presets of the config's ingredient fields, shipped as TOML files.

A recipe is a file ``<name>.toml`` in this package holding values for some of the fields in
``bsrnn.config.RECIPE_FIELDS`` (a field it leaves out keeps the config's default, which is the
reference's). ``bsrnn train --recipe NAME`` puts those values between the defaults and
everything the user gives: defaults < recipe < the checkpoint's config (on resume) < the
``--config`` file < flags. RECIPES.md says what each recipe contains and what it measured.

This module only finds and reads the files; ``bsrnn.config`` checks their keys and values.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

DEFAULT_RECIPE = "reference"


def recipe_names() -> tuple[str, ...]:
    """The recipes shipped with the package, sorted (``reference`` and ``improved``)."""
    folder = resources.files(__name__)
    return tuple(sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir()
                        if entry.name.endswith(".toml")))


def recipe_text(name: str) -> str:
    """The TOML text of recipe ``name``; ``KeyError`` if no such recipe is shipped."""
    if name not in recipe_names():
        raise KeyError(name)
    return resources.files(__name__).joinpath(f"{name}.toml").read_text(encoding="utf-8")


def read_recipe(name: str) -> dict[str, Any]:
    """The values recipe ``name`` sets, as TOML gives them; ``KeyError`` if it is not shipped."""
    return tomllib.loads(recipe_text(name))
