"""Faces out of photos: read, detect, filter (size, blur), align (eyes level) and crop.

One code path for both ends of the lab: ``prepare`` builds the training cache with it and
``predict`` crops the faces of a new photo with it, so a model sees the same kind of crop in both.

Detection uses the Haar cascades shipped inside opencv-python-headless (``cv2.data.haarcascades``):
nothing is downloaded. A crop is the face box enlarged ``enlarge`` times around its centre
(conf/faces/default.yaml: 1.3714, so the centre 0.875 the model is tested on shows 1.2x the box),
made square, rotated about that centre so the eyes lie level, padded by replicating the border where
it leaves the photo and resized to ``output_size``.

Drop reasons (the strings are counted by ``prepare``):

* ``unreadable``: the file is missing, empty or not an image (``agelab.data.images``);
* ``too_large``: the image is too big to decode in bounded memory (``agelab.data.images``);
* ``no_face``: the detector found no face (inside the given box, when there is one);
* ``too_small``: the largest face is narrower than ``min_face_size`` pixels;
* ``too_blurry``: the largest face's sharpness is below ``min_sharpness``.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agelab.data.images import to_rgb8
from agelab.errors import ConfigError

FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"
SHARPNESS_SIDE = 96  # the face is resized to this before measuring blur, so the measure ignores resolution
MAX_TILT = 35.0  # degrees; an eye pair tilted more than this is taken as a false eye detection
NO_FACE, TOO_SMALL, TOO_BLURRY = "no_face", "too_small", "too_blurry"

Box = tuple[int, int, int, int]
Eyes = tuple[tuple[float, float], tuple[float, float]]

_CASCADES: dict[str, cv2.CascadeClassifier] = {}  # loaded once per process
log = logging.getLogger(__name__)


def cascade(name: str) -> cv2.CascadeClassifier:
    """A Haar cascade from the opencv wheel's data folder (loaded once per process)."""
    if name not in _CASCADES:
        path = Path(cv2.data.haarcascades) / name
        classifier = cv2.CascadeClassifier(str(path))
        if classifier.empty():
            raise FileNotFoundError(f"{path}: Haar cascade missing or unreadable (reinstall opencv-python-headless)")
        _CASCADES[name] = classifier
    return _CASCADES[name]


@dataclass
class FaceCrop:
    box: Box  # (x1, y1, x2, y2) of the face in the original image; x2, y2 exclusive
    crop: np.ndarray  # uint8 RGB, output_size x output_size x 3
    eyes: Eyes | None  # ((x, y) of the eye on the image's left, (x, y) of the other), original image; None: not aligned
    score: float  # detector confidence (Haar level weight); 1.0 for a given box


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


# ---------------------------------------------------------------------------------------- cropper


class FaceCropper:
    """Detect, filter, align and crop faces; picklable (cascades are loaded lazily in each process)."""

    def __init__(self, output_size: int = 128, enlarge: float = 1.2, detect: bool = True, align: bool = True,
                 min_face_size: int = 32, min_sharpness: float = 20.0, scale_factor: float = 1.1,
                 min_neighbors: int = 5, max_image_side: int = 4000, detect_side: int | None = None):
        def need(name, value, ok: bool, wanted: str):
            if not ok:
                raise ConfigError(f"{name} must be {wanted}, got {value!r}")

        def number(value, whole: bool = False) -> bool:
            return not isinstance(value, bool) and isinstance(value, numbers.Integral if whole else numbers.Real)

        need("output_size", output_size, number(output_size, True) and output_size > 0, "a positive integer")
        need("enlarge", enlarge, number(enlarge) and enlarge > 0, "a positive number")
        need("scale_factor", scale_factor, number(scale_factor) and scale_factor > 1, "a number above 1")
        for name, value, whole in (("min_face_size", min_face_size, True), ("min_sharpness", min_sharpness, False),
                                   ("min_neighbors", min_neighbors, True)):
            need(name, value, number(value, whole) and value >= 0, f"{'an integer' if whole else 'a number'} >= 0")
        need("max_image_side", max_image_side, number(max_image_side, True) and max_image_side > 0, "a positive integer")
        need("detect_side", detect_side, detect_side is None or (number(detect_side, True) and (detect_side == 0 or detect_side >= 64)),
             "0 or null (full size) or an integer >= 64")
        need("detect", detect, detect in (True, False), "true or false")  # (1 and 0 too)
        need("align", align, align in (True, False), "true or false")
        if (detect or align) and not hasattr(cv2, "CascadeClassifier"):  # the installed OpenCV cannot detect
            raise ConfigError(f"OpenCV {cv2.__version__} has no CascadeClassifier (the face and eye detector; "
                              "OpenCV 5 dropped it): pip install 'opencv-python-headless>=4.9,<5'")
        self.output_size, self.enlarge = int(output_size), float(enlarge)
        self.detect, self.align = bool(detect), bool(align)
        self.min_face_size, self.min_sharpness = int(min_face_size), float(min_sharpness)
        self.scale_factor, self.min_neighbors = float(scale_factor), int(min_neighbors)
        self.max_image_side = int(max_image_side)
        self.detect_side = int(detect_side) if detect_side else None  # None: search at full size

    def settings(self) -> dict:
        """The constructor arguments: what decides the crops (cache keys and run params are made of it).
        ``detect_side`` only when set, so the caches and stored settings made before it keep their keys."""
        names = ("output_size", "enlarge", "detect", "align", "min_face_size", "min_sharpness", "scale_factor",
                 "min_neighbors", "max_image_side", "detect_side")
        return {k: getattr(self, k) for k in names if not (k == "detect_side" and self.detect_side is None)}

    def __repr__(self) -> str:
        return f"FaceCropper({', '.join(f'{k}={v!r}' for k, v in self.settings().items())})"

    def __eq__(self, other) -> bool:
        return isinstance(other, FaceCropper) and self.settings() == other.settings()

    def __hash__(self) -> int:
        return hash(tuple(self.settings().items()))

    # -- detection

    def _detect(self, gray: np.ndarray, box: Box | None) -> list[tuple[Box, float]]:
        """Face boxes with scores, largest first. With a box, only faces found around it that overlap it."""
        h, w = gray.shape[:2]
        ox = oy = 0
        search = gray
        if box is not None:  # search a neighbourhood of the given box (faster, and the box says where)
            bw, bh = box[2] - box[0], box[3] - box[1]
            ox, oy = max(0, int(box[0] - bw / 2)), max(0, int(box[1] - bh / 2))
            search = gray[oy:min(h, int(box[3] + bh / 2) + 1), ox:min(w, int(box[2] + bw / 2) + 1)]
        if search.size == 0:
            return []
        # The detector's time grows with the pixels searched: a large photo is searched at detect_side
        # (boxes scaled back; the crop, eyes and filters use the full image).
        f = max(search.shape[:2]) / self.detect_side if self.detect_side else 1.0
        fx = fy = 1.0
        if f > 1.0:
            full_h, full_w = search.shape[:2]
            search = cv2.resize(search, (max(1, round(full_w / f)), max(1, round(full_h / f))),
                                interpolation=cv2.INTER_AREA)
            fx, fy = full_w / search.shape[1], full_h / search.shape[0]  # (rounding differs per axis)
        # Find faces down to the cascade's 24 px window so small ones are reported as "too_small".
        min_size = max(24, int(self.min_face_size / 2 / max(fx, fy)))
        rects, _, weights = cascade(FACE_CASCADE).detectMultiScale3(
            search, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(min_size, min_size), outputRejectLevels=True)
        found = [((round(x * fx) + ox, round(y * fy) + oy, round((x + rw) * fx) + ox, round((y + rh) * fy) + oy),
                  float(score)) for (x, y, rw, rh), score in zip(np.reshape(rects, (-1, 4)), np.ravel(weights))]
        if box is not None:
            found = [f for f in found if _overlap(f[0], box) >= 0.5]
        return sorted(found, key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))

    def find_eyes(self, gray: np.ndarray, box: Box) -> Eyes | None:
        """The two eye centres in the face box's upper half (image left eye first), or None."""
        x1, y1, x2, y2 = box
        w = x2 - x1
        top, bottom = max(y1 + int(0.1 * (y2 - y1)), 0), min(y1 + int(0.6 * (y2 - y1)), gray.shape[0])
        left, right = max(x1, 0), min(x2, gray.shape[1])
        region = gray[top:bottom, left:right]
        if region.size == 0 or w < 40:  # below ~40 px the eye cascade (20 px window) cannot see eyes
            return None
        rects = cascade(EYE_CASCADE).detectMultiScale(
            region, scaleFactor=1.1, minNeighbors=3, minSize=(max(8, w // 10),) * 2, maxSize=(w // 2,) * 2)
        centres = [(left + x + ew / 2, top + y + eh / 2, ew) for x, y, ew, eh in np.reshape(rects, (-1, 4))]
        mid = (x1 + x2) / 2
        lefts = sorted((c for c in centres if c[0] < mid), key=lambda c: -c[2])
        rights = sorted((c for c in centres if c[0] >= mid), key=lambda c: -c[2])
        for lc in lefts:  # biggest plausible pair: level-ish and a sensible distance apart
            for rc in rights:
                eyes = ((lc[0], lc[1]), (rc[0], rc[1]))
                distance = math.dist(*eyes)
                if 0.2 * w <= distance <= 0.75 * w and abs(eye_angle(eyes)) <= MAX_TILT:
                    return eyes
        return None

    # -- cropping

    def crop_box(self, image: np.ndarray, box: Box, eyes: Eyes | None = None, enlarge: float | None = None) -> np.ndarray:
        """The output crop of one face box: enlarged, square, levelled by the eyes when given."""
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1) * (self.enlarge if enlarge is None else enlarge)
        angle = eye_angle(eyes) if eyes is not None else 0.0
        return crop_square(image, ((x1 + x2) / 2, (y1 + y2) / 2), side, angle, self.output_size)

    def crops(self, image_rgb: np.ndarray, box=None) -> tuple[list[FaceCrop], str | None]:
        """All faces that pass the filters (largest first) and, when there are none, why:
        "no_face", "too_small" or "too_blurry" (the reason of the largest face found).

        ``box`` (x1, y1, x2, y2 in the image): with ``detect`` the faces are searched around it and
        must overlap it; without ``detect`` it is the face. Without ``detect`` and without a box the
        image is an already cropped face (an aligned dataset's chip): it is used whole, squared by
        padding, not enlarged.
        """
        image = np.asarray(image_rgb)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            image = to_rgb8(image, bgr=False)
        if box is not None:
            box = tuple(int(round(float(v))) for v in box)
            if box[2] <= box[0] or box[3] <= box[1]:
                return [], NO_FACE
        back = 1.0  # keeps memory and time bounded for huge arrays; boxes go back to the caller's pixels
        if max(image.shape[:2]) > self.max_image_side:
            back = max(image.shape[:2]) / self.max_image_side
            image = cv2.resize(image, (round(image.shape[1] / back), round(image.shape[0] / back)),
                               interpolation=cv2.INTER_AREA)
            if box is not None:
                box = tuple(int(round(v / back)) for v in box)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self.detect:
            found = self._detect(gray, box)
        else:
            found = [(box if box is not None else (0, 0, image.shape[1], image.shape[0]), 1.0)]
        if not found:
            return [], NO_FACE
        whole = not self.detect and box is None  # an already cropped face: used as it is, not enlarged
        kept, reasons = [], []
        for face_box, score in found:
            if min(face_box[2] - face_box[0], face_box[3] - face_box[1]) < self.min_face_size / back:
                reasons.append(TOO_SMALL)
                continue
            if sharpness(gray, face_box) < self.min_sharpness:
                reasons.append(TOO_BLURRY)
                continue
            eyes = self.find_eyes(gray, face_box) if self.align else None
            crop = self.crop_box(image, face_box, eyes, enlarge=1.0 if whole else None)
            if back != 1.0:
                face_box = tuple(int(round(v * back)) for v in face_box)
                eyes = None if eyes is None else tuple((x * back, y * back) for x, y in eyes)
            kept.append(FaceCrop(box=face_box, crop=crop, eyes=eyes, score=score))
        return kept, (None if kept else reasons[0])

    def largest(self, image_rgb: np.ndarray, box=None) -> tuple[FaceCrop | None, str | None]:
        """The largest face that passes the filters, or (None, reason)."""
        faces, reason = self.crops(image_rgb, box)
        return (faces[0], None) if faces else (None, reason)
