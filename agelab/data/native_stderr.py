"""What native decoders write straight to the process's stderr, captured so it can be told with the
file it is about. libjpeg reports a damaged JPEG it still decodes ("Corrupt JPEG data: 122 extraneous
bytes before marker 0xd9") on file descriptor 2, where neither Python nor the log sees it and no
file name is attached: among half a million images that line cannot be traced back."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

STDERR_FD = 2
_sink: tuple[int, object] | None = None  # (pid, file): one capture file per process, reused


def _capture_file():
    global _sink
    if _sink is None or _sink[0] != os.getpid():
        _sink = (os.getpid(), tempfile.TemporaryFile())
    return _sink[1]


@contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Collects the lines native code writes to fd 2 inside the block (the list is filled on exit).

    Only the main thread swaps fd 2 (it is the whole process's: two threads swapping it would leave
    it pointing at the wrong file); elsewhere, or when no capture file can be had, the block runs
    without capture and the lines reach stderr as before."""
    lines: list[str] = []
    saved = None
    if threading.current_thread() is threading.main_thread():
        try:
            sink = _capture_file()
            if sys.stderr is not None:
                sys.stderr.flush()
            saved = os.dup(STDERR_FD)
        except (OSError, ValueError):  # no temporary folder, or no usable fd 2
            saved = None
    if saved is None:
        yield lines
        return
    try:
        os.dup2(sink.fileno(), STDERR_FD)
        try:
            yield lines
        finally:
            os.dup2(saved, STDERR_FD)
    finally:
        os.close(saved)
    sink.seek(0)
    text = sink.read().decode(errors="replace")
    sink.seek(0)
    sink.truncate()
    lines += [line.strip() for line in text.splitlines() if line.strip()]
