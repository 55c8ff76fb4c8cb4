"""File names as text that every output can hold: a CSV or JSON file, a log line, the console.

A file system may hold names that are not text: Linux names are bytes, and a name written in
another encoding (``caf\\xe9.jpg`` in Latin-1) is not UTF-8. Python opens such a file by a str that
carries the odd bytes as surrogates, which no UTF-8 output accepts. ``printable`` is the one way a
path is written out; the path itself, unchanged, is the one way the file is opened.
"""

from __future__ import annotations

import os
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # control characters and line breaks


def printable(path: str | os.PathLike) -> str:
    """``path`` as one line of UTF-8 text: each byte that is not UTF-8 as ``\\xNN``, a control character
    (a newline) as Python writes it (``\\n``); any other name as it is."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)
