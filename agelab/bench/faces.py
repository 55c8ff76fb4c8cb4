"""``python -m agelab.bench faces``: the face pipeline on real photos: faces found, eye error, speed.

For a folder of loose photos with labelled eye centres (``labels.csv`` with ``left_eye_x,
left_eye_y, right_eye_x, right_eye_y``, as in All-Age-Faces) and a folder of tight face chips
(UTKFace), prints the share of photos where a face is found, the mean distance between the eye
centres the pipeline finds and the labelled ones (as a share of the labelled eye distance), and
photos per second on one core (detection, landmarks and crop; decoding excluded). Every photo of
these folders holds one face, so a photo where none is found is a miss.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from agelab.bench import DefaultsHelp
from agelab.data.faces import NO_FACE, FaceCropper
from agelab.data.images import read_image
from agelab.errors import ConfigError
from agelab.inference.backends import default_face_settings

REAL = Path("../shared/realfaces")
EYES = ["left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y"]


def bench_folder(cropper: FaceCropper, paths: list[Path], eyes: np.ndarray | None = None) -> dict[str, float]:
    """Shares found and kept (past the size and blur filters), eye error (mean and 95th percentile, share
    of the eye distance, kept faces) and photos/s on one core."""
    found, kept, errors, seconds = 0, 0, [], 0.0
    for i, path in enumerate(paths):
        image, reason = read_image(path)
        if image is None:
            raise ConfigError(f"{path}: {reason}")
        start = time.perf_counter()
        face, reason = cropper.largest(image)
        seconds += time.perf_counter() - start
        found += reason != NO_FACE
        if face is None:
            continue
        kept += 1
        if eyes is not None:
            left, right = eyes[i, :2], eyes[i, 2:]
            distance = math.dist(left, right)
            errors.append((math.dist(face.eyes[0], left) + math.dist(face.eyes[1], right)) / 2 / distance)
    return {"photos": len(paths), "found": found / len(paths), "kept": kept / len(paths), "per_s": len(paths) / seconds,
            "eye_error": float(np.mean(errors)) if errors else float("nan"),
            "eye_error_p95": float(np.percentile(errors, 95)) if errors else float("nan")}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(prog="python -m agelab.bench faces", description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelp)
    parser.add_argument("--photos", type=Path, default=REAL / "aaf_photos",
                        help="folder with labels.csv (path + labelled eye centres) and the photos it names")
    parser.add_argument("--chips", type=Path, default=REAL / "utkface" / "UTKFace", help="folder of face chips")
    parser.add_argument("--limit", type=int, default=2000,
                        help="at most this many photos of each folder, spread evenly over it (0: all)")
    args = parser.parse_args(argv)
    table = args.photos / "labels.csv"
    if not table.is_file() or not args.chips.is_dir():
        raise ConfigError(f"bench faces needs {table} and the folder {args.chips} (--photos, --chips)")
    labels = pd.read_csv(table)
    chips = sorted(p for p in args.chips.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))

    def spread(n: int) -> np.ndarray:
        return np.linspace(0, n - 1, min(n, args.limit) if args.limit else n).round().astype(int)

    labels = labels.iloc[spread(len(labels))]
    chips = [chips[i] for i in spread(len(chips))]
    cropper = FaceCropper(**default_face_settings(112))  # conf/faces/default.yaml, stored at 128 px
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one core
    try:
        cropper.largest(np.zeros((8, 8, 3), np.uint8))  # loads the models outside the timing
        results = {"photos": bench_folder(cropper, [args.photos / p for p in labels["path"]], labels[EYES].to_numpy()),
                   "chips": bench_folder(cropper, chips)}
    finally:
        cv2.setNumThreads(threads)
    print("bench faces: detection, landmarks and crop on one core (conf/faces/default.yaml)")
    for name, folder in (("photos", args.photos), ("chips", args.chips)):
        r = results[name]
        eyes = (f", eye error {100 * r['eye_error']:.1f} % of the eye distance (95th percentile "
                f"{100 * r['eye_error_p95']:.1f} %)") if name == "photos" else ""
        print(f"  {folder}: {r['photos']} photos, face found in {100 * r['found']:.1f} % (kept "
              f"{100 * r['kept']:.1f} %: the rest too small or blurry){eyes}, {r['per_s']:.1f} photos/s")
    return results
