"""Images from files, as uint8 RGB, without ever raising for a bad file.

Grayscale, alpha (composited on white), 16-bit, CMYK JPEG and EXIF orientation are handled; a large
JPEG is decoded at reduced size so memory stays bounded. A file that cannot be read gives a reason
instead of an image: ``unreadable`` (missing, empty, not an image, broken) or ``too_large``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import cv2
import numpy as np

from agelab.data.native_stderr import native_stderr

MAX_DECODE_PIXELS = 1 << 27  # 134 MP: a larger image that cannot be decoded at reduced size is refused
UNREADABLE, TOO_LARGE = "unreadable", "too_large"

log = logging.getLogger(__name__)


EXIF_ORIENTATION = 0x0112  # the EXIF tag
# Formats whose OpenCV decoder skips the EXIF orientation when it keeps the alpha channel
# (IMREAD_UNCHANGED); its TIFF decoder turns the image itself.
TURNED_BY_US = ("PNG", "WEBP")


def _orientation(im) -> int:
    """The EXIF orientation of an open Pillow image (1: upright). For a PNG, Pillow may have to decode
    it to find an EXIF chunk stored after the pixels: asked only of transparent photos, which OpenCV
    does not turn itself."""
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels as stored
        return 1


def _probe(path: Path) -> tuple[tuple[int, int] | None, str | None, bool, int]:
    """(width, height) from the header without decoding, the format, whether it has transparency,
    and its EXIF orientation (1: upright)."""
    from PIL import Image  # Pillow reads headers lazily; OpenCV has no header-only call

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
                turn = alpha and im.format in TURNED_BY_US and im.size[0] * im.size[1] <= MAX_DECODE_PIXELS
                return im.size, im.format, alpha, _orientation(im) if turn else 1
    except Image.DecompressionBombError:
        return (1 << 20, 1 << 20), None, False, 1  # absurdly large: refused below
    except Exception:  # noqa: BLE001 - unknown to Pillow; OpenCV may still read it
        return None, None, False, 1


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """The image as it is meant to be seen, for EXIF orientation 2..8 (what OpenCV does itself,
    except when it decodes with IMREAD_UNCHANGED, as for photos with transparency)."""
    if orientation in (5, 7):  # mirrored across a diagonal
        image = np.swapaxes(image, 0, 1)
        return np.ascontiguousarray(image[::-1, ::-1] if orientation == 7 else image)
    turns = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_CLOCKWISE, 8: cv2.ROTATE_90_COUNTERCLOCKWISE}
    if orientation in turns:
        return cv2.rotate(image, turns[orientation])
    if orientation in (2, 4):
        return cv2.flip(image, 1 if orientation == 2 else 0)
    return image


def to_rgb8(image: np.ndarray, bgr: bool = True) -> np.ndarray:
    """Any decoded array (gray, colour, colour + alpha, gray + alpha; 8 or 16 bit) as uint8 RGB.

    ``bgr``: colour channels in OpenCV's order (as decoded) rather than RGB. Alpha is composited on white.
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 2:  # gray + alpha
        image = np.dstack([image[..., 0]] * 3 + [image[..., 1]])
    if image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = np.clip(image[..., :3].astype(np.float32) * alpha + 255.0 * (1 - alpha) + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image[..., ::-1] if bgr else image)


def load_image(path: str | Path, max_side: int | None = 4000) -> tuple[np.ndarray | None, str | None, float]:
    """(RGB uint8 image or None, drop reason or None, scale of the returned image to the file's pixels).

    Images whose longer side exceeds ``max_side`` come back downscaled to it; JPEGs are decoded at
    1/2, 1/4 or 1/8 size directly, so memory stays bounded however large the file. Never raises
    for a bad file.
    """
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None, UNREADABLE, 1.0
        size, fmt, alpha, orientation = _probe(path)
        flags, reduce = cv2.IMREAD_COLOR, 1
        if alpha:
            flags = cv2.IMREAD_UNCHANGED  # keeps the alpha channel so it can be composited
        elif size and max_side and max(size) > max_side and fmt in ("JPEG", "MPO"):
            reduce = next((f for f in (2, 4, 8) if max(size) / f <= max_side), 8)
            flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[reduce]
        if size and size[0] * size[1] / reduce**2 > MAX_DECODE_PIXELS:
            return None, TOO_LARGE, 1.0
        data = np.fromfile(path, np.uint8)
        with native_stderr() as messages:
            image = cv2.imdecode(data, flags)
        if messages:  # decoded, but the decoder found damage: say which file
            log.warning("%s: %s", path, "; ".join(messages))
        if image is None or image.size == 0:
            return None, UNREADABLE, 1.0
        image = to_rgb8(image)
        if alpha:
            image = upright(image, orientation)
        original_side = max(size) if size else max(image.shape[:2]) * reduce
        if max_side and max(image.shape[:2]) > max_side:
            f = max_side / max(image.shape[:2])
            image = cv2.resize(image, (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f))),
                               interpolation=cv2.INTER_AREA)
        return image, None, max(image.shape[:2]) / original_side
    except Exception:  # noqa: BLE001 - whatever a broken file makes a decoder raise, it is "unreadable"
        return None, UNREADABLE, 1.0


def read_image(path: str | Path, max_side: int | None = 4000) -> tuple[np.ndarray | None, str | None]:
    """(RGB uint8 image, None) or (None, reason): "unreadable" or "too_large". Never raises for a bad file.

    Handles grayscale, alpha (composited on white), 16-bit, CMYK JPEG and EXIF orientation;
    images larger than ``max_side`` come back downscaled to it.
    """
    image, reason, _ = load_image(path, max_side)
    return image, reason
