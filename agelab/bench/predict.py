"""``python -m agelab.bench predict``: the whole predict path per photo on one core, stage by stage.

Runs ``agelab.inference.run.predict_photo`` (what ``agelab.predict`` does for each photo) over a folder
of real photos and times its stages: decoding, the face search (detection, at every face size down
to ``faces.min_face_size``), landmarks and crop (with the size and blur filters), the model, and
writing the row. Prints photos/s on one core, the time per photo and each stage's share, and the
share of photos where a face was found. The model's weights do not change its speed: without
``--onnx`` an untrained SMLF-Net small is exported to a temporary fp32 ONNX file.
"""

from __future__ import annotations

import argparse
import csv
import io
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import cv2

from agelab.bench import DefaultsHelp
from agelab.errors import ConfigError

REAL = Path("../shared/realfaces")
STAGES = ("decode", "face search", "landmarks and crop", "model", "write")


@contextmanager
def timed(owner, name: str, seconds: dict, stage: str):
    """``owner.name`` (a function or method) adds its run time to ``seconds[stage]`` while inside."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            seconds[stage] += time.perf_counter() - start

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, original)


def untrained_onnx(folder: Path) -> Path:
    from agelab.exporting.formats import export_onnx
    from agelab.heads.dex import DexHead
    from agelab.models.smlf import SMLFNetSmall
    from agelab.module import AgeModule

    model = SMLFNetSmall(input_size=64, width=0.5, se_reduction=4)
    module = AgeModule(model=model, head=DexHead(in_features=model.out_features, max_age=100), optimizer=None, channels_last=False)
    return export_onnx(module.eval(), folder / "model.onnx", 64)


def bench(onnx: Path, photos: list[Path]) -> dict:
    """Seconds per stage over ``photos``, photos with a face, and the total."""
    from agelab.inference import AgePredictor, OnnxBackend, make_cropper
    from agelab.inference import run as predict_run
    from agelab.inference.results import COLUMNS

    backend = OnnxBackend(onnx, threads=1)
    predictor = AgePredictor(backend, make_cropper(backend.face_settings))
    predict_run.predict_photo(predictor, photos[0], "", None)  # models loaded outside the timing
    seconds, found, total = defaultdict(float), 0, 0.0
    table = csv.DictWriter(io.StringIO(), fieldnames=COLUMNS)
    with (timed(predict_run, "load_image", seconds, "decode"),
          timed(predictor.cropper, "_search", seconds, "face search"),
          timed(backend, "run", seconds, "model")):
        for path in photos:
            start = time.perf_counter()
            rows, status = predict_run.predict_photo(predictor, path, str(path), None)
            written = time.perf_counter()
            table.writerows(rows)
            seconds["write"] += time.perf_counter() - written
            total += time.perf_counter() - start
            found += status == "ok"
    seconds["landmarks and crop"] = total - sum(seconds[s] for s in STAGES if s != "landmarks and crop")
    return {"photos": len(photos), "found": found / len(photos), "seconds": total,
            "stages": {s: seconds[s] for s in STAGES}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m agelab.bench predict", description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelp)
    parser.add_argument("--photos", type=Path, default=REAL / "aaf_photos", help="a folder of photos (searched recursively)")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many photos, spread evenly (0: all)")
    parser.add_argument("--onnx", type=Path, default=None,
                        help="the model (e.g. an export's model.int8.onnx; default: an untrained smlf_small, fp32)")
    args = parser.parse_args(argv)
    photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        raise ConfigError(f"bench predict: no photos in {args.photos} (--photos)")
    if args.limit and len(photos) > args.limit:
        photos = [photos[round(i * (len(photos) - 1) / (args.limit - 1))] for i in range(args.limit)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # one core
    try:
        with tempfile.TemporaryDirectory() as folder:
            result = bench(args.onnx or untrained_onnx(Path(folder)), photos)
    finally:
        cv2.setNumThreads(threads)
    per_photo = 1000 * result["seconds"] / result["photos"]
    print(f"bench predict: {result['photos']} photos of {args.photos} on one core, face found in "
          f"{100 * result['found']:.1f} %")
    print(f"  {result['photos'] / result['seconds']:.1f} photos/s, {per_photo:.1f} ms per photo:")
    for stage, spent in result["stages"].items():
        print(f"    {stage:<20} {1000 * spent / result['photos']:6.2f} ms  {100 * spent / result['seconds']:5.1f} %")
    return result
