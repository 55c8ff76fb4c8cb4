"""The face cache: packed uint8 crops in one memory-mapped .npy file plus a records table.

Layout of a cache folder: ``images.npy`` (N, H, W, 3) uint8 RGB and ``records.csv`` (one row per
image, in the same order). Files are written under a temporary name and renamed, so a cache
folder is either complete or absent.
"""

from __future__ import annotations

import mmap
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from agelab.errors import DataError

IMAGES, RECORDS = "images.npy", "records.csv"
TEXT_COLUMNS = {"subject": str, "path": object}  # path: a name that is not UTF-8 as Python opens it


@contextmanager
def written_whole(path: str | Path) -> Iterator[Path]:
    """A temporary name to write ``path`` under, renamed onto it when the block ends without error and
    removed when it fails: readers never see half a file. The name carries the process id, so
    parallel jobs writing the same file never write one temporary file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_exists(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / IMAGES).is_file() and (folder / RECORDS).is_file()


def save_cache(folder: str | Path, images: np.ndarray, records: pd.DataFrame) -> Path:
    folder = Path(folder)
    if len(images) != len(records):
        raise ValueError(f"{len(images)} images but {len(records)} records")
    folder.mkdir(parents=True, exist_ok=True)
    # Records renamed last (the outer block): their presence marks a finished cache.
    with written_whole(folder / RECORDS) as tmp_records, written_whole(folder / IMAGES) as tmp_images:
        with open(tmp_images, "wb") as f:  # (np.save given a name would add ".npy" to it)
            np.save(f, np.ascontiguousarray(images, dtype=np.uint8))
        records.to_csv(tmp_records, index=False, errors="surrogateescape")
    return folder


class MappedImages(np.memmap):
    """A cache's images, memory-mapped read-only. Pickled (to a loader worker started by spawn: macOS,
    Windows, a sweep job) it travels as its file and is mapped again there, not as a copy of every
    face; a file rebuilt or removed meanwhile is an error naming it, not other faces."""

    def __reduce__(self):
        if not isinstance(self.base, mmap.mmap):  # a slice or a copy of the map: an array like any other
            return super().__reduce__()
        stat = os.stat(self.filename)
        return map_images_again, (self.filename, self.offset, self.shape, self.dtype.str,
                                  (stat.st_ino, stat.st_size, stat.st_mtime_ns))


def map_images_again(filename: str, offset: int, shape: tuple, dtype: str, identity: tuple) -> MappedImages:
    try:
        stat = os.stat(filename)
    except FileNotFoundError:
        raise DataError(f"{filename}: the face cache was removed while it was in use; run the command again") from None
    if (stat.st_ino, stat.st_size, stat.st_mtime_ns) != tuple(identity):
        raise DataError(f"{filename}: the face cache was rebuilt while it was in use; run the command again")
    return MappedImages(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=tuple(shape))


def open_images(path: str | Path) -> MappedImages:
    """The images of a cache's .npy file, memory-mapped read-only (nothing is read until indexed)."""
    header = np.load(path, mmap_mode="r")  # (numpy reads the .npy header: dtype, shape, where the data starts)
    if not header.flags.c_contiguous:
        return header
    return MappedImages(header.filename, dtype=header.dtype, mode="r", offset=header.offset, shape=header.shape)


def load_cache(folder: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """(memory-mapped images, records); nothing is read into RAM until indexed."""
    folder = Path(folder)
    if not cache_exists(folder):
        raise DataError(f"no face cache in {folder}: expected {IMAGES} and {RECORDS} (run python -m agelab.prepare)")
    images = open_images(folder / IMAGES)
    # Ids like MORPH II's "070081" must stay text (read as numbers they lose their leading zeros).
    records = pd.read_csv(folder / RECORDS, dtype=TEXT_COLUMNS, encoding_errors="surrogateescape")
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(records):
        raise DataError(f"{folder / IMAGES}: shape {images.shape} does not match {len(records)} records")
    return images, records


def save_cache_parts(folder: str | Path, parts, count: int, image_shape: tuple[int, int, int],
                     records: pd.DataFrame) -> Path:
    """Like save_cache, but the images arrive as an iterable of (n_i, H, W, 3) arrays totalling ``count``.

    Only one part is held in memory at a time, so a cache larger than RAM can be packed. The
    temporary names carry the process id, so two processes packing the same folder cannot mix files.
    """
    folder = Path(folder)
    if count != len(records):
        raise ValueError(f"{count} images but {len(records)} records")
    folder.mkdir(parents=True, exist_ok=True)
    with written_whole(folder / RECORDS) as tmp_records, written_whole(folder / IMAGES) as tmp_images:
        out = np.lib.format.open_memmap(tmp_images, mode="w+", dtype=np.uint8, shape=(count, *image_shape))
        filled = 0
        for part in parts:
            if filled + len(part) > count:
                raise ValueError(f"more than {count} images in the parts")
            out[filled:filled + len(part)] = part
            filled += len(part)
        if filled != count:
            raise ValueError(f"{filled} images in the parts, expected {count}")
        out.flush()
        del out
        records.to_csv(tmp_records, index=False, errors="surrogateescape")
    return folder
