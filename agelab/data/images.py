"""Images from files, as uint8 RGB, without ever raising for a bad file.

Grayscale, alpha (composited on white), 16-bit, CMYK JPEG and EXIF orientation are handled; a large
JPEG is decoded at reduced size. Every decode is sized from the file's header first and refused when
it would take more than MAX_DECODE_BYTES; a file whose header the lab cannot size is never decoded.
A file that cannot be read gives a reason instead of an image: ``unreadable`` (missing, empty, not an
image of a format sized here, broken) or ``too_large``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from math import ceil
from pathlib import Path

import cv2
import numpy as np

from agelab.data.native_stderr import native_stderr

# The most memory one decode may take: the decoder's output (pixels x channels kept x bytes per sample,
# at the reduced size a large JPEG is decoded at) plus what the decoder holds besides it. OpenCV hands
# Python a copy of its output and the file's bytes are in memory during the decode, so a file at the
# limit peaks near three times this: 256 MiB keeps any one file under 1 GB (measured: 823 MiB at most),
# and still decodes an 89 MP 8-bit photo (67 MP with transparency, 33 MP at 16 bits), an 80 MP
# progressive JPEG, and any baseline JPEG Pillow opens (up to 179 MP) at the reduced size it needs.
MAX_DECODE_BYTES = 256 << 20
UNREADABLE, TOO_LARGE = "unreadable", "too_large"

log = logging.getLogger(__name__)


EXIF_ORIENTATION = 0x0112  # the EXIF tag
# Formats whose OpenCV decoder skips the EXIF orientation when it keeps the alpha channel
# (IMREAD_UNCHANGED); its TIFF decoder turns the image itself.
TURNED_BY_US = ("PNG", "WEBP")
# The formats sized here, as Pillow opens them (a multi-picture JPEG opens as "MPO"): Pillow reads their
# headers as OpenCV's decoders do. Only these are decoded; others OpenCV reads (Radiance HDR, PFM, AVIF,
# OpenEXR...) are refused unread.
SIZED = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "PPM", "JPEG2000")
REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
           8: cv2.IMREAD_REDUCED_COLOR_8}
BAND_PIXELS = 1 << 20  # to_rgb8 converts about this many pixels at a time


@dataclass(frozen=True)
class Decode:
    """How a file is decoded, decided from its header: OpenCV's flags (a large JPEG's reduced size
    among them), the file's (width, height) and the EXIF orientation still to apply."""

    flags: int
    size: tuple[int, int]
    orientation: int = 1


def _orientation(im) -> int:
    """The EXIF orientation of an open Pillow image (1: upright). For a PNG, Pillow may have to decode
    it to find an EXIF chunk stored after the pixels: asked only of transparent photos within the
    budget, which OpenCV does not turn itself."""
    try:
        return int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels as stored
        return 1


def _sample_bytes(path: Path, im) -> int:
    """Bytes per sample as the file stores them (what IMREAD_UNCHANGED keeps): a PNG's bit depth from
    its IHDR, a TIFF's BitsPerSample, 16 bits for JPEG 2000 (Pillow does not say), else Pillow's mode."""
    if im.format == "PNG":
        with path.open("rb") as file:
            bits = file.read(25)[24]  # the IHDR chunk comes first; its bit depth is byte 24 of the file
    elif im.format == "TIFF":
        bits = max(im.tag_v2.get(258, (8,)))  # BitsPerSample, one value per sample
    elif im.format == "JPEG2000":
        bits = 16
    else:
        bits = 16 if im.mode.startswith("I;16") else 32 if im.mode in ("I", "F") else 8
    return next(n for n in (1, 2, 4, 8) if 8 * n >= bits)


def _decoder_bytes(im, sample: int) -> int | None:
    """What OpenCV's decoder holds besides its output, in bytes, or None for a file not sized here (a
    PFM, which Pillow reads as PNM and OpenCV decodes through a float copy). A progressive JPEG keeps every DCT coefficient (2 bytes a sample at
    full size, however reduced its output), JPEG 2000 decodes to 32-bit planes, TIFF reads a strip or
    tile at a time (as RGBA at most), GIF keeps colour indices and a canvas (measured under 4 bytes a
    pixel); PNG, WebP, BMP and PNM decode row by row into the output."""
    width, height = im.size
    if im.format in ("JPEG", "MPO"):
        if not im.info.get("progressive"):
            return 0
        h_max, v_max = max(c[1] for c in im.layer), max(c[2] for c in im.layer)  # (id, h, v, table)
        return 2 * sum(ceil(width * h / h_max) * ceil(height * v / v_max) for _, h, v, _ in im.layer)
    if im.format == "JPEG2000":
        planes = 4 if im.mode in ("P", "PA") else len(im.getbands())  # a palette is expanded to colours
        return 4 * planes * width * height
    if im.format == "TIFF":
        tags = im.tag_v2  # TileLength or RowsPerStrip, TileWidth
        rows, cols = min(height, tags.get(323) or tags.get(278) or height), min(width, tags.get(322) or width)
        return rows * cols * max(4, len(im.getbands())) * sample
    if im.format == "GIF":
        return 4 * width * height
    if im.format in ("PNG", "WEBP", "BMP") or (im.format == "PPM" and im.mode != "F"):
        return 0
    return None


def _reduction(im, max_side: int | None) -> int:
    """1, 2, 4 or 8: what a JPEG larger than ``max_side`` is reduced by while it is decoded (libjpeg
    scales its DCT blocks); other formats are decoded at full size."""
    side = max(im.size)
    if im.format not in ("JPEG", "MPO") or not max_side or side <= max_side:
        return 1
    return next((f for f in (2, 4) if side / f <= max_side), 8)


def _plan(path: Path, max_side: int | None) -> Decode | str:
    """How ``path`` is decoded within MAX_DECODE_BYTES, from its size on disk and its header alone
    (Pillow reads headers lazily; OpenCV has no header-only call), or why it is not: UNREADABLE or
    TOO_LARGE."""
    from PIL import Image

    on_disk = path.stat().st_size if path.is_file() else 0
    if on_disk == 0:
        return UNREADABLE
    if on_disk > MAX_DECODE_BYTES:  # its bytes alone would be over: not even read
        return TOO_LARGE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path, formats=SIZED) as im:
                width, height = im.size
                sample = _sample_bytes(path, im)
                working = _decoder_bytes(im, sample)
                if working is None:
                    return UNREADABLE
                alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
                if alpha:  # IMREAD_UNCHANGED keeps the alpha and the file's depth: up to 4 channels
                    flags, reduce, kept = cv2.IMREAD_UNCHANGED, 1, 4 * sample
                else:  # 8-bit BGR, whatever the file's depth
                    reduce = _reduction(im, max_side)
                    flags, kept = REDUCED[reduce], 3
                if ceil(width / reduce) * ceil(height / reduce) * kept + working > MAX_DECODE_BYTES:
                    return TOO_LARGE
                turn = alpha and im.format in TURNED_BY_US
                return Decode(flags, (width, height), _orientation(im) if turn else 1)
    except Image.DecompressionBombError:
        return TOO_LARGE
    except Exception:  # noqa: BLE001 - a header Pillow cannot read is one the lab cannot size: not decoded
        return UNREADABLE


def _decode(path: Path, flags: int) -> np.ndarray | None:
    """OpenCV's decode of the file (None if it fails); damage the decoder reports is logged with the
    file's name. The file's bytes are let go on return."""
    data = np.fromfile(path, np.uint8)
    with native_stderr() as messages:
        image = cv2.imdecode(data, flags)
    if messages:  # decoded, but the decoder found damage: say which file
        log.warning("%s: %s", path, "; ".join(messages))
    return image


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
    """Any decoded array (gray, colour, colour + alpha, gray + alpha; 8 or 16 bit, or any other number
    type, stretched to 0..255) as uint8 RGB.

    ``bgr``: colour channels in OpenCV's order (as decoded) rather than RGB. Alpha is composited on
    white. Converted a band of rows at a time: besides its output it holds one band, not a copy.
    """
    image = image.reshape(*image.shape[:2], -1)
    stretch = (1.0, 0.0)  # scale, shift of a type other than uint8 and uint16
    if image.dtype not in (np.uint8, np.uint16):
        low, high = float(image.min()), float(image.max())
        stretch = (255 / (high - low), -low * 255 / (high - low)) if high > low else (0.0, 0.0)
    rgb = np.empty((*image.shape[:2], 3), np.uint8)
    rows = max(1, BAND_PIXELS // max(1, image.shape[1]))
    for top in range(0, image.shape[0], rows):
        rgb[top:top + rows] = _rgb8_band(image[top:top + rows], stretch, bgr)
    return rgb


def _rgb8_band(band: np.ndarray, stretch: tuple[float, float], bgr: bool) -> np.ndarray:
    if band.dtype == np.uint16:
        band = (band >> 8).astype(np.uint8)  # the high byte, as OpenCV itself decodes 16-bit files to 8
    elif band.dtype != np.uint8:
        band = cv2.convertScaleAbs(band.astype(np.float32), alpha=stretch[0], beta=stretch[1])
        band = band.reshape(*band.shape[:2], -1)
    if band.shape[2] in (2, 4):  # the last channel is alpha: on white, 255 - (255 - colour) * alpha / 255
        colour, alpha = band[..., :-1].astype(np.uint16), band[..., -1:].astype(np.uint16)
        band = (255 - ((255 - colour) * alpha + 127) // 255).astype(np.uint8)
    if band.shape[2] == 1:
        return cv2.cvtColor(band, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(band, cv2.COLOR_BGR2RGB) if bgr else band


def load_image(path: str | Path, max_side: int | None = 4000) -> tuple[np.ndarray | None, str | None, float]:
    """(RGB uint8 image or None, drop reason or None, scale of the returned image to the file's pixels).

    Images whose longer side exceeds ``max_side`` come back downscaled to it; JPEGs are decoded at
    1/2, 1/4 or 1/8 size directly. Never raises for a bad file.
    """
    path = Path(path)
    try:
        plan = _plan(path, max_side)
        if isinstance(plan, str):
            return None, plan, 1.0
        image = _decode(path, plan.flags)
        if image is None or image.size == 0:
            return None, UNREADABLE, 1.0
        image = upright(to_rgb8(image), plan.orientation)
        if max_side and max(image.shape[:2]) > max_side:
            f = max_side / max(image.shape[:2])
            image = cv2.resize(image, (max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f))),
                               interpolation=cv2.INTER_AREA)
        return image, None, max(image.shape[:2]) / max(plan.size)
    except Exception:  # noqa: BLE001 - whatever a broken file makes a decoder raise, it is "unreadable"
        return None, UNREADABLE, 1.0


def read_image(path: str | Path, max_side: int | None = 4000) -> tuple[np.ndarray | None, str | None]:
    """(RGB uint8 image, None) or (None, reason): "unreadable" or "too_large". Never raises for a bad file.

    Handles grayscale, alpha (composited on white), 16-bit, CMYK JPEG and EXIF orientation;
    images larger than ``max_side`` come back downscaled to it.
    """
    image, reason, _ = load_image(path, max_side)
    return image, reason
