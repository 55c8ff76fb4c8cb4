"""What to predict on: one photo, one video, or every photo in a folder tree.

A folder is searched recursively, in sorted order. Files with a photo or video extension are
predicted; any other file is listed with status ``unsupported`` (so nothing is skipped silently). Symbolic
links are followed only while they stay inside the folder: a link (to a file or a folder) that
resolves outside it is listed as ``link_outside`` and not read; a link back to a folder already
searched is ignored (no loops); a link that never ends in a file (dangling, or looping on itself)
is listed and found unreadable; so is a folder that cannot be listed, and anything that is neither a
folder nor a regular file (a FIFO, a socket, a device: listed, never opened).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agelab.data.images import UNREADABLE

PHOTO, VIDEO = "photo", "video"
UNSUPPORTED, LINK_OUTSIDE = "unsupported", "link_outside"

# What OpenCV decodes (agelab.data.images.read_image), and what cv2.VideoCapture opens through FFmpeg.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".gif",
                              ".pbm", ".pgm", ".ppm", ".pnm", ".jp2"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"})


@dataclass(frozen=True)
class MediaItem:
    path: Path  # as the user would name it: the folder given joined with the path inside it
    kind: str  # PHOTO, VIDEO, or a status that says why it is not read (UNSUPPORTED, LINK_OUTSIDE, UNREADABLE)
    relative: Path  # inside the folder given (the file's name for a single file): where its outputs go


def kind_of(path: Path) -> str:
    """PHOTO or VIDEO by the extension, else UNSUPPORTED; UNREADABLE for what is there but is no regular file
    (a FIFO, a socket, a device), which is never opened: reading a FIFO waits for a writer forever."""
    if path.exists() and not path.is_file():
        return UNREADABLE
    suffix = path.suffix.lower()
    return PHOTO if suffix in IMAGE_EXTENSIONS else VIDEO if suffix in VIDEO_EXTENSIONS else UNSUPPORTED


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def collect_all(input_paths: list[str | Path]) -> list[MediaItem]:
    """The items of several photos, videos or folders (a shell glob's ``photos/*.jpg``). Each item's
    ``relative`` (where its annotated copy goes) is its path below the folder that holds all the inputs,
    so files of the same name in two folders stay apart."""
    if len(input_paths) == 1:
        return collect(input_paths[0])
    inputs = [Path(p) for p in input_paths]
    absolute = [Path(os.path.abspath(p)) for p in inputs]  # ".." folded away: every copy stays below the base
    base = Path(os.path.commonpath([p.parent for p in absolute]))
    items, seen = [], set()
    for path, full in zip(inputs, absolute):
        prefix = full.parent.relative_to(base)
        for item in collect(path):
            real = os.path.abspath(item.path)  # (not resolve(): two links to one photo are two files, as in a folder)
            if real in seen:  # a file given twice (itself and inside its folder): predicted once
                continue
            seen.add(real)
            inside = Path(full.name) / item.relative if path.is_dir() else item.relative
            items.append(MediaItem(item.path, item.kind, prefix / inside))
    return items


def collect(input_path: str | Path) -> list[MediaItem]:
    """The items of a photo, a video or a folder (recursively); raises FileNotFoundError if absent."""
    path = Path(input_path)
    if not path.exists() and not path.is_symlink():  # a dangling link is listed (and found unreadable)
        raise FileNotFoundError(path)
    if not path.is_dir():
        return [MediaItem(path, kind_of(path), Path(path.name))]
    root = path.resolve()
    items: list[MediaItem] = []
    visited = {root}

    def walk(folder: Path, shown: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:  # (no permission): listed, so its photos are not lost silently
            items.append(MediaItem(shown, UNREADABLE, shown.relative_to(path)))
            return
        for entry in entries:
            here, real = shown / entry.name, Path(entry.path)
            if entry.is_symlink():
                try:
                    target = real.resolve()
                except (OSError, RuntimeError):  # a link that loops on itself: listed, found unreadable
                    items.append(MediaItem(here, kind_of(here), here.relative_to(path)))
                    continue
                if not _inside(target, root):
                    items.append(MediaItem(here, LINK_OUTSIDE, here.relative_to(path)))
                    continue
                real = target
            if real.is_dir():
                resolved = real.resolve()
                if resolved not in visited:
                    visited.add(resolved)
                    walk(real, here)
            else:  # a file, a dangling link (found unreadable), a FIFO or a device (unreadable: kind_of)
                items.append(MediaItem(here, kind_of(here), here.relative_to(path)))

    walk(root, path)
    return items
