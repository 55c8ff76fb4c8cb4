"""Records -> packed face cache: read each image, crop its face (agelab.data.faces), pack the crops.

Work is split into shards of ``shard_size`` records, cropped in parallel over CPU cores. Each
finished shard is written atomically (temporary file, then ``os.replace``), so a run killed half
way leaves only whole shards and the next run crops only the missing ones. The shards are then
packed into the cache folder (``images.npy`` + ``records.csv``, agelab.data.cache) with
``dropped.json`` (reason -> count), ``dropped_faces.csv`` (path and reason of each image dropped
here) and ``manifest.json``, whose ``key`` hashes what decides the crops: the image paths, the
given face boxes and the cropper settings. A second run with the same key reuses the cache at
once; another key rebuilds it.

Labels are not part of the key: on reuse the returned records are the caller's current rows
(re-written to records.csv when they changed), so fixing a label never forces a re-crop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from agelab.data.cache import IMAGES, RECORDS, TEXT_COLUMNS, cache_exists, open_images, save_cache_parts, written_whole
from agelab.data.faces import FaceCropper
from agelab.data.images import load_image
from agelab.data.names import printable
from agelab.data.readers.base import DROP_COLUMNS
from agelab.data.workers import die_with_parent, pool_size
from agelab.errors import DataError

log = logging.getLogger(__name__)

BOX_COLUMNS = ("box_x1", "box_y1", "box_x2", "box_y2")
FACE_COLUMNS = ("face_x1", "face_y1", "face_x2", "face_y2")  # the face the crop was made from, original pixels
MANIFEST, DROPPED, SHARDS = "manifest.json", "dropped.json", "shards"
FACE_DROPS = "dropped_faces.csv"
FORMAT_VERSION = 2  # bump when the crop code changes what it makes, so old caches are rebuilt
ERROR = "error"  # an image that made the cropper fail (logged; counted, never silently lost)


@dataclass
class PrepareResult:
    images: np.ndarray  # (N, S, S, 3) uint8 RGB, memory-mapped from the cache
    records: pd.DataFrame  # kept rows, index = image row 0..N-1, input columns + source_index + face columns
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    folder: Path | None = None
    reused: bool = False  # True when the cache was already built for these inputs
    drops: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=DROP_COLUMNS))  # path, reason

    @property
    def kept(self) -> int:
        return len(self.records)


# ------------------------------------------------------------------------------------- inputs


def _boxes(records: pd.DataFrame) -> list[tuple[float, float, float, float] | None]:
    if not set(BOX_COLUMNS) <= set(records.columns):
        return [None] * len(records)
    values = records[list(BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    return [tuple(row) if np.isfinite(row).all() else None for row in values]


def cache_key(records: pd.DataFrame, cropper: FaceCropper) -> str:
    """Hash of what decides the crops: image paths and boxes in order, cropper settings, format version."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"version": FORMAT_VERSION, "cropper": cropper.settings()}, sort_keys=True).encode())
    digest.update("\n".join(map(str, records["path"])).encode("utf-8", "surrogateescape"))
    if set(BOX_COLUMNS) <= set(records.columns):
        boxes = records[list(BOX_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        digest.update(np.ascontiguousarray(boxes).tobytes())
    return digest.hexdigest()


def _labels_hash(records: pd.DataFrame) -> str:
    return hashlib.sha256(records.to_csv(index=False).encode("utf-8", "surrogateescape")).hexdigest()


# ------------------------------------------------------------------------------ cropping shards


def crop_one(cropper: FaceCropper, path: str, box) -> tuple[np.ndarray | None, str | None, dict]:
    """(crop, None, face info) or (None, reason, {}) for one record."""
    image, reason, scale = load_image(path, cropper.max_image_side)
    if image is None:
        return None, reason, {}
    if box is not None and scale != 1.0:
        box = tuple(v * scale for v in box)
    face, reason = cropper.largest(image, box)
    if face is None:
        return None, reason, {}
    info = {name: v / scale for name, v in zip(FACE_COLUMNS, face.box)}
    info["detect_score"] = face.score
    return face.crop, None, info


def crop_shard(cropper: FaceCropper, paths: list[str], boxes: list, out_path: str) -> dict:
    """Crop one shard's records and write them to ``out_path`` atomically; returns its counts. In a
    worker process, what was logged meanwhile travels back with them (as notes on the error when the
    shard fails)."""
    try:
        counts = _write_shard(cropper, paths, boxes, out_path)
    except BaseException as exc:
        for record in _held_records():
            exc.add_note(f"{record.levelname}: {record.getMessage()}")
        raise
    return {**counts, "log": _held_records()}


def _write_shard(cropper: FaceCropper, paths: list[str], boxes: list, out_path: str) -> dict:
    size = cropper.output_size
    crops, kept, reasons, infos = [], [], [], []
    for i, (path, box) in enumerate(zip(paths, boxes)):
        try:
            crop, reason, info = crop_one(cropper, path, box)
        except Exception as exc:  # noqa: BLE001 - one odd image must not end a long run; it is counted
            log.warning("%s: cropping failed (%s: %s)", path, type(exc).__name__, exc)
            crop, reason, info = None, ERROR, {}
        reasons.append(reason or "")
        if crop is not None:
            crops.append(crop)
            kept.append(i)
            infos.append([info[c] for c in FACE_COLUMNS] + [info["detect_score"]])
    images = np.stack(crops) if crops else np.empty((0, size, size, 3), np.uint8)
    info_array = np.asarray(infos, np.float64).reshape(-1, len(FACE_COLUMNS) + 1)
    with written_whole(out_path) as tmp, open(tmp, "wb") as f:
        np.savez(f, images=images, kept=np.asarray(kept, np.int64), reasons=np.asarray(reasons, dtype=str),
                 info=info_array)
    return {"shard": out_path, "count": len(paths), "kept": len(kept)}


class _HeldRecords(logging.Handler):
    """In a worker process: keeps agelab's log records, which the parent logs with its own handlers
    (a spawned worker has none: its warnings would reach neither the log file nor the format)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = record.getMessage(), None, None, None  # picklable
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        records, self.records = self.records, []
        return records


_HELD: _HeldRecords | None = None  # set in worker processes only


def _worker_init() -> None:
    global _HELD
    die_with_parent()
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    _HELD = _HeldRecords()
    logging.getLogger("agelab").addHandler(_HELD)
    logging.getLogger("agelab").setLevel(logging.INFO)


def _held_records() -> list[logging.LogRecord]:
    return _HELD.take() if _HELD is not None else []


def _log_held(result: dict) -> dict:
    for record in result.get("log", ()):
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)
    return result


def _shard_name(index: int) -> str:
    return f"shard_{index:06d}.npz"


def _run_shards(tasks: list[tuple], workers: int, total: int, done: int, progress: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("cropping faces"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        job = bar.add_task("crop", total=total, completed=done)
        if workers <= 1:
            for task in tasks:
                bar.advance(job, crop_shard(*task)["count"])
            return
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init) as pool:
            futures = [pool.submit(crop_shard, *task) for task in tasks]
            try:
                for future in as_completed(futures):
                    bar.advance(job, _log_held(future.result())["count"])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


# ------------------------------------------------------------------------------------- packing


def _read_shards(shard_dir: Path, n_shards: int):
    for index in range(n_shards):
        with np.load(shard_dir / _shard_name(index)) as shard:
            yield {k: shard[k] for k in ("kept", "reasons", "info")}


def _result_records(records: pd.DataFrame, source_index: np.ndarray, info: np.ndarray) -> pd.DataFrame:
    """Kept input rows (index 0..N-1) with ``source_index`` and the face columns."""
    out = records.iloc[source_index].reset_index(drop=True)
    out["source_index"] = source_index
    for j, name in enumerate(FACE_COLUMNS):
        out[name] = np.round(info[:, j]).astype(np.int64)
    out["detect_score"] = np.round(info[:, len(FACE_COLUMNS)], 4)
    return out


def _write_json(path: Path, data: dict) -> None:
    with written_whole(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def write_drops(path: Path, drops: pd.DataFrame) -> None:
    """The dropped images as a CSV (path, reason), written atomically."""
    with written_whole(path) as tmp:
        drops[DROP_COLUMNS].to_csv(tmp, index=False)


def _read_face_drops(folder: Path, records: pd.DataFrame, source_index: np.ndarray) -> pd.DataFrame:
    """The cache's dropped_faces.csv (path, reason)."""
    try:
        return pd.read_csv(folder / FACE_DROPS, dtype=str, keep_default_na=False)
    except (OSError, ValueError):  # a cache from before the file: the dropped images are known, their reasons not
        lost = np.setdiff1d(np.arange(len(records)), source_index)
        return pd.DataFrame({"path": [printable(p) for p in records["path"].iloc[lost]], "reason": "unknown"})


def _load_existing(folder: Path, key: str, records: pd.DataFrame) -> PrepareResult | None:
    """The finished cache for ``key``, with the caller's current labels; None if absent or stale."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        dropped = Counter(json.loads((folder / DROPPED).read_text()))
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key or not cache_exists(folder):
        return None
    images = open_images(folder / IMAGES)
    stored = pd.read_csv(folder / RECORDS, dtype=TEXT_COLUMNS, encoding_errors="surrogateescape")
    if len(stored) != len(images) or "source_index" not in stored:
        return None
    labels = _labels_hash(records)
    info = stored[[*FACE_COLUMNS, "detect_score"]].to_numpy(np.float64)
    result = _result_records(records, stored["source_index"].to_numpy(np.int64), info)
    if manifest.get("labels") != labels:  # same crops, new labels: refresh the table only
        log.info("labels changed since %s was built: updating its records.csv", folder)
        with written_whole(folder / RECORDS) as tmp:
            result.to_csv(tmp, index=False, errors="surrogateescape")
        _write_json(folder / MANIFEST, {**manifest, "labels": labels})
    face_drops = _read_face_drops(folder, records, result["source_index"].to_numpy())
    return PrepareResult(images, result, dropped, folder, reused=True, drops=face_drops)


# ----------------------------------------------------------------------------------------- main


def prepare_cache(records: pd.DataFrame, cache_dir: str | Path, cropper: FaceCropper, workers: int | None = None,
                  shard_size: int = 512, progress: bool = True) -> PrepareResult:
    """Crop every record's face into ``cache_dir`` (reused when already built for the same inputs).

    ``records`` needs a ``path`` column (absolute image paths) and may carry ``box_x1..box_y2``
    (the dataset's face box, original pixels). ``workers``: processes (None: every core, 1: this
    process only). Returns the cache (kept faces, their records and the drop counts by reason).
    """
    if "path" not in records:
        raise DataError(f"records to prepare need a 'path' column, found {list(records.columns)}")
    if len(records) == 0:
        raise DataError("no records to prepare: the dataset reader kept no rows")
    if shard_size <= 0:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    folder = Path(cache_dir)
    key = cache_key(records, cropper)
    existing = _load_existing(folder, key, records)
    if existing is not None:
        log.info("face cache %s is up to date (%d faces)", folder, existing.kept)
        return existing

    start = time.perf_counter()
    shard_dir = folder / SHARDS / key[:16]
    shard_dir.mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in records["path"]]
    boxes = _boxes(records)
    n_shards = math.ceil(len(records) / shard_size)
    tasks, done = [], 0
    for index in range(n_shards):
        lo, hi = index * shard_size, min((index + 1) * shard_size, len(records))
        if (shard_dir / _shard_name(index)).is_file():
            done += hi - lo
        else:
            tasks.append((cropper, paths[lo:hi], boxes[lo:hi], str(shard_dir / _shard_name(index))))
    if done:
        log.info("resuming: %d of %d shards already cropped in %s", n_shards - len(tasks), n_shards, shard_dir)
    workers = pool_size(min(workers or len(os.sched_getaffinity(0)), max(len(tasks), 1)))
    _run_shards(tasks, workers, len(records), done, progress)

    # Pack: the face table first (small), then the images streamed shard by shard.
    source_index, infos, dropped, drops = [], [], Counter(), []
    for index, shard in enumerate(_read_shards(shard_dir, n_shards)):
        source_index.append(shard["kept"] + index * shard_size)
        infos.append(shard["info"])
        dropped.update(r for r in shard["reasons"].tolist() if r)
        drops += [(printable(paths[index * shard_size + i]), r) for i, r in enumerate(shard["reasons"].tolist()) if r]
    source_index = np.concatenate(source_index)
    info = np.concatenate(infos)
    if len(source_index) == 0:
        raise DataError(f"no face kept out of {len(records)} images (dropped: {dict(dropped)}); "
                        f"check the image paths and the faces settings")
    result = _result_records(records, source_index, info)

    def parts():
        for index in range(n_shards):
            with np.load(shard_dir / _shard_name(index)) as shard:
                yield shard["images"]

    size = cropper.output_size
    save_cache_parts(folder, parts(), len(result), (size, size, 3), result)
    _write_json(folder / DROPPED, dict(sorted(dropped.items())))
    drops = pd.DataFrame(drops, columns=DROP_COLUMNS)
    write_drops(folder / FACE_DROPS, drops)
    elapsed = time.perf_counter() - start
    _write_json(folder / MANIFEST, {"key": key, "labels": _labels_hash(records), "records": len(records),
                                    "kept": len(result), "cropper": cropper.settings(),
                                    "format_version": FORMAT_VERSION, "seconds": round(elapsed, 1)})
    shutil.rmtree(folder / SHARDS, ignore_errors=True)  # the manifest is written: the shards are spent
    cropped = len(records) - done
    # (kept and dropped are printed once, by whoever asked: the prepare table, the training data report)
    log.info("face cache %s: cropped %d images in %.1f s (%.0f/s, %d workers)",
             folder, cropped, elapsed, cropped / max(elapsed, 1e-9), workers)
    return PrepareResult(open_images(folder / IMAGES), result, dropped, folder, reused=False, drops=drops)


def drop_summary(dropped) -> str:
    """The drop counts by reason in one line, e.g. "bad_age 2, too_blurry 1" ("" when none)."""
    return ", ".join(f"{reason} {n}" for reason, n in sorted(dict(dropped).items()))
