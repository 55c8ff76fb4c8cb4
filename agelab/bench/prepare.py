"""``python -m agelab.bench prepare``: faces prepared per second per core, against decoding alone.

Writes ``--count`` photo-sized JPEGs (a synthetic face on a larger background) to a temporary folder,
then times, side by side in one run: decoding alone (one core), the full prepare step (decode,
detect, landmarks, filter, frame, write the cache) on one worker, and the same on every core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from agelab.bench import DefaultsHelp
from agelab.data.faces import FaceCropper
from agelab.data.images import read_image
from agelab.data.prepare_cache import prepare_cache
from agelab.data.synth import SynthSpec, make_sample
from agelab.errors import ConfigError
from agelab.inference.backends import default_face_settings


def write_photos(folder: Path, count: int, side: int, cropper: FaceCropper, seed: int = 0) -> pd.DataFrame:
    """``count`` JPEGs of ``side`` x ``side`` pixels, each with one synthetic face that ``cropper`` keeps;
    their records. The detector misses many drawn faces, so faces are drawn until ``count`` are
    found: every timed photo then goes through the whole step (detect, landmarks, crop, write), not only
    decode and a failed search."""
    rng = np.random.default_rng(seed)
    spec = SynthSpec(count=50 * count, size=side // 2, seed=seed)
    rows = []
    for i in range(spec.count):
        face, record = make_sample(spec, i)
        photo = np.full((side, side, 3), rng.integers(60, 200, size=3), np.uint8)
        y, x = rng.integers(0, side - spec.size, size=2)
        photo[y:y + spec.size, x:x + spec.size] = face
        path = folder / f"photo_{len(rows):05d}.jpg"
        cv2.imwrite(str(path), photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        if cropper.largest(read_image(path)[0])[0] is None:
            continue  # written and read back first: kept exactly as prepare will see the file
        rows.append({"path": str(path), "age": record["age"], "group": record["group"], "subject": record["subject"]})
        if len(rows) == count:
            return pd.DataFrame(rows)
    raise ConfigError(f"bench prepare: found only {len(rows)} faces in {spec.count} drawn photos of {side} px")


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


MIN_SIDE = 160  # the synthetic face takes half the photo; smaller faces fall below the detector's minimum


def bench_prepare(count: int = 200, side: int = 480, workers: int | None = None) -> dict[str, float]:
    if count < 1 or side < MIN_SIDE or (workers is not None and workers < 1):
        raise ConfigError(f"--count must be >= 1, --side >= {MIN_SIDE} and --workers >= 1 (or left out: all "
                          f"cores), got {count}, {side} and {workers}")
    workers = workers or os.cpu_count() or 1
    cropper = FaceCropper(**default_face_settings(112))  # conf/faces/default.yaml, stored at 128 px
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        records = write_photos(tmp / "photos", count, side, cropper)
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # one core, as each parallel worker has (OpenCV's detector spreads over all cores)
        try:
            start = time.perf_counter()
            for path in records["path"]:
                read_image(path)
            decode = _rate(count, time.perf_counter() - start)
            start = time.perf_counter()
            one = prepare_cache(records, tmp / "cache1", cropper, workers=1, progress=False)
            serial = _rate(count, time.perf_counter() - start)
        finally:
            cv2.setNumThreads(threads)
        start = time.perf_counter()
        prepare_cache(records, tmp / "cacheN", cropper, workers=workers, progress=False)
        parallel = _rate(count, time.perf_counter() - start)
    return {"count": count, "workers": workers, "kept": one.kept, "decode_per_s": decode,
            "prepare_per_s_one_core": serial, "prepare_per_s_all_cores": parallel,
            "prepare_per_s_per_core": parallel / workers, "ratio_prepare_to_decode": serial / decode,
            "parallel_speedup": parallel / serial}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m agelab.bench prepare", description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelp)
    parser.add_argument("--count", type=int, default=200, help="photos to prepare")
    parser.add_argument("--side", type=int, default=480, help="photo width and height in pixels")
    parser.add_argument("--workers", type=int, default=None, help="processes for the parallel run (default: all cores)")
    args = parser.parse_args(argv)
    r = bench_prepare(args.count, args.side, args.workers)
    print(f"bench prepare: {r['count']} photos of {args.side}x{args.side}, one face found in each, {r['kept']} kept "
          "(rates: photos through decode, detect, landmarks, filter, frame, write)")
    workers = f"{r['workers']} worker{'s' if r['workers'] != 1 else ''}"
    print(f"  {'decode only (1 core)':<22}: {r['decode_per_s']:8.1f} photos/s")
    print(f"  {'prepare, 1 worker':<22}: {r['prepare_per_s_one_core']:8.1f} photos/s "
          f"(ratio to decode {r['ratio_prepare_to_decode']:.3f})")
    print(f"  {'prepare, ' + workers:<22}: {r['prepare_per_s_all_cores']:8.1f} photos/s "
          f"({r['prepare_per_s_per_core']:.1f} per core, speed-up {r['parallel_speedup']:.2f}x)")
    return r
