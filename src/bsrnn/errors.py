"""Errors a user can fix, shared by the speech code and the command line.

Every message says what was expected, what was found and how to fix it. The command line maps
``UserError`` (and the checkpoint engine's errors) to exit status 2 with the message on stderr
and no traceback; ``RunFailedError`` exits 1 with its message; anything else is a bug or an
environment failure and exits 1 with a traceback.
"""

from __future__ import annotations


class RunFailedError(Exception):
    """A run stopped for a reason the message explains (e.g. diverged): exit 1, no traceback."""


class UserError(Exception):
    """Bad usage, config or input: exit status 2, message only."""


class ConfigError(UserError):
    """One or more config fields are invalid; the message names every field."""


class DataError(UserError):
    """The dataset is missing, inconsistent or unreadable; the message names the files."""
