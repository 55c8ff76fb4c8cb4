"""What native decoders write straight to the process's stderr, captured so it can be told with the
file it is about. libjpeg reports a damaged JPEG it still decodes ("Corrupt JPEG data: 122 extraneous
bytes before marker 0xd9") on file descriptor 2, where neither Python nor the log sees it and no
file name is attached: among half a million images that line cannot be traced back."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import contextmanager
from typing import Iterator

STDERR_FD = 2


@contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Collects the lines native code writes to fd 2 inside the block (the list is filled on exit)."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(STDERR_FD)
    except (OSError, ValueError):  # no usable fd 2 (a closed or replaced stderr): nothing to capture
        yield lines
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), STDERR_FD)
        try:
            yield lines
        finally:
            os.dup2(saved, STDERR_FD)
            os.close(saved)
            sink.seek(0)
            lines += [line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip()]
