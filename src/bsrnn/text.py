"""Text that names files, made safe to print, log, hash and save.

On Linux a file name is bytes; Python holds a name that is not UTF-8 with its odd bytes as
surrogate escapes (``b"bad\\xfd.wav"`` is ``"bad\\udcfd.wav"``). Such a string cannot be
encoded as UTF-8: printed, logged, written to a CSV, a TOML file or hashed, it raised
``UnicodeEncodeError`` in the middle of a command. Files are still opened by their real names
(``bsrnn.audio.native_path``); only the text shown or stored for them goes through here. The
standard library only, so any layer may use it.
"""

from __future__ import annotations


def printable_name(name: str) -> str:
    """``name`` as UTF-8 text: surrogate escapes spelt out (``"bad\\udcfd"`` becomes the nine
    characters ``bad\\udcfd``); a UTF-8 name comes back unchanged."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")
