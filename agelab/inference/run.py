"""A whole prediction: every item of the input through the predictor, outputs written, files counted.

No single file can stop the batch: an unreadable or unsupported file, a photo without a face, or
a file that makes a decoder fail is a row with its status (``error`` for the last, logged).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2

from agelab.data.images import load_image
from agelab.data.names import printable
from agelab.errors import AgelabError
from agelab.inference.drawing import age_label, annotate
from agelab.inference.media import PHOTO, VIDEO, collect_all
from agelab.inference.results import Report, face_row, status_row
from agelab.inference.video import VideoOptions, annotated_video_path, predict_video

log = logging.getLogger(__name__)
WRITABLE = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}  # kept as they are; others become .jpg
ANNOTATED = "annotated"


def write_image(path: Path, image_rgb) -> Path:
    """Writes through imencode so any path (unicode included) works; returns the path written."""
    if path.suffix.lower() not in WRITABLE:
        path = path.with_name(path.name + ".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path}")
    data.tofile(str(path))
    return path


def predict_photo(predictor, path: Path, shown: str, out_file: Path | None) -> tuple[list[dict], str]:
    image, reason, scale = load_image(path, predictor.cropper.max_image_side)
    if image is None:
        return [status_row(shown, reason)], reason
    faces, reason = predictor.faces(image)
    if not faces:
        return [status_row(shown, reason)], reason
    rows = []
    for i, face in enumerate(faces):  # boxes back to the file's pixels when it was read downscaled
        box = face.box if scale == 1.0 else tuple(int(round(v / scale)) for v in face.box)
        rows.append(face_row(shown, i, face, box))
    if out_file is not None:
        group_head = predictor.task == "group"
        labels = [age_label(f.age, f.std, f.group_name if group_head else None) for f in faces]
        write_image(out_file, annotate(image, [f.box for f in faces], labels))
    return rows, "ok"


def one_file(shown: str, work, *args) -> tuple[list[dict], str]:
    """``work(*args)`` -> (rows, status) for one file; a failure of that file is an ``error`` row (logged),
    not the end of the batch. A wrong setting (AgelabError), wrong for every file, still ends it."""
    try:
        return work(*args)
    except AgelabError:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad file must not end the batch
        log.warning("%s: %s: %s", shown, type(exc).__name__, exc)
        return [status_row(shown, "error")], "error"


def predict_input(predictor, input_path: str | Path | list, out_dir: str | Path, annotate_outputs: bool = True,
                  video: VideoOptions | None = None, progress=None) -> Report:
    """Predict on a photo, a video or a folder (or a list of them); writes annotated files under ``out_dir/annotated``
    (mirroring the folder) and results.csv (each file's rows as soon as it is done) / results.json / summary.json in
    ``out_dir``. A file is named in them, the log and ``progress`` by its printable name (agelab.data.names)."""
    video = video or VideoOptions()
    out_dir = Path(out_dir)
    items = collect_all(input_path if isinstance(input_path, list) else [input_path])
    with Report(out_dir) as report:
        for item in items:
            shown = printable(item.path)
            target = out_dir / ANNOTATED / item.relative if annotate_outputs else None
            if item.kind == PHOTO:
                rows, status = one_file(shown, predict_photo, predictor, item.path, shown, target)
            elif item.kind == VIDEO:
                target = annotated_video_path(target, video.codec) if target is not None else None
                rows, status = one_file(shown, predict_video, predictor, item.path, shown, target, video)
            else:
                rows, status = [status_row(shown, item.kind)], item.kind
            report.add(shown, rows, status)
            if progress is not None:
                progress(shown, status, len(rows) if status == "ok" else 0)
    if annotate_outputs and (out_dir / ANNOTATED).is_dir():
        report.outputs["annotated"] = out_dir / ANNOTATED
    return report
