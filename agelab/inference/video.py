"""Ages on a video: every n-th frame through the predictor, faces tracked and their ages smoothed.

The annotated video holds the processed frames only, at fps / every (the same duration).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from agelab.data.names import printable
from agelab.errors import ConfigError, require_int
from agelab.groups import GROUP_NAMES, age_to_group
from agelab.inference.drawing import age_label, annotate
from agelab.inference.results import face_row, status_row
from agelab.inference.smoothing import FaceTracker

CODECS = {"mp4v": ".mp4", "MJPG": ".avi"}  # what opencv-python-headless writes without extra libraries
DEFAULT_FPS = 25.0


@dataclass
class VideoOptions:
    every: int = 1  # process every n-th frame
    max_frames: int | None = None  # stop after this many processed frames
    codec: str = "mp4v"
    smoothing: dict = field(default_factory=lambda: {"alpha": 0.3, "min_iou": 0.3, "max_missed": 5})

    def __post_init__(self):
        require_int("video.every", self.every, 1)
        require_int("video.max_frames", self.max_frames, 1, allow_none=True)
        if self.codec not in CODECS:
            raise ConfigError(f"video.codec must be one of {', '.join(CODECS)}, got {self.codec!r}")
        FaceTracker(**self.smoothing)  # checks the smoothing values now, before any video is read


def annotated_video_path(out_file: Path, codec: str) -> Path:
    return out_file.with_name(out_file.name + CODECS[codec]) if out_file.suffix.lower() != CODECS[codec] else out_file


def predict_video(predictor, path: Path, shown: str, out_file: Path | None, options: VideoOptions) -> tuple[list[dict], str]:
    """(rows, file status) for one video; writes the annotated video to ``out_file`` when given."""
    capture = cv2.VideoCapture(os.fsencode(path))  # (bytes: a str name that is not UTF-8 crashes OpenCV)
    if not capture.isOpened():
        return [status_row(shown, "unreadable")], "unreadable"
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if fps and math.isfinite(fps) and fps > 0 else DEFAULT_FPS
    tracker = FaceTracker(**options.smoothing)
    group_head = predictor.task == "group"
    rows: list[dict] = []
    writer = None
    index, processed, reasons = -1, 0, set()
    try:
        while options.max_frames is None or processed < options.max_frames:
            if not capture.grab():
                break
            index += 1
            if index % options.every:
                continue
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                break
            processed += 1
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            faces, reason = predictor.faces(rgb)
            if reason:
                reasons.add(reason)
            tracks = tracker.update([f.box for f in faces], [f.age for f in faces], [f.std for f in faces])
            labels = []
            for i, (face, track) in enumerate(zip(faces, tracks)):
                group = face.group_name if group_head else GROUP_NAMES[age_to_group(track.age)]
                rows.append(face_row(shown, i, face, face.box, frame=index, track=track.id, age=track.age,
                                     std=track.std, group_name=group))
                labels.append(age_label(track.age, track.std, group if group_head else None, track.id))
            if out_file is not None:
                if writer is None:
                    out_file.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(os.fsencode(out_file), cv2.VideoWriter_fourcc(*options.codec),
                                             fps / options.every, (frame.shape[1], frame.shape[0]))
                    if not writer.isOpened():
                        raise ConfigError(f"video.codec={options.codec}: OpenCV cannot write {printable(out_file)} "
                                          f"(try {' or '.join(c for c in CODECS if c != options.codec)})")
                drawn = annotate(rgb, [f.box for f in faces], labels) if faces else rgb
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if processed == 0:
        return [status_row(shown, "unreadable")], "unreadable"
    if not rows:  # the most telling reason: a face that was found but filtered beats no face at all
        reason = next((r for r in ("too_blurry", "too_small") if r in reasons), "no_face")
        return [status_row(shown, reason)], reason
    return rows, "ok"
