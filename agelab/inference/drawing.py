"""Boxes and "age ± spread" labels drawn on a photo or video frame (Pillow: OpenCV's fonts have no ±)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BOX_COLOUR = (40, 220, 90)
TEXT_COLOUR = (0, 0, 0)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled TrueType font: nothing to install


def age_label(age: float, std: float | None = None, group_name: str | None = None, track: int | None = None) -> str:
    """"34 ± 5" for an age head, "25-32" for a group head; "#2 " in front on video."""
    text = group_name if group_name is not None else f"{age:.0f}"
    if group_name is None and std is not None and math.isfinite(std):
        text += f" ± {std:.0f}"
    return text if track is None else f"#{track} {text}"


def annotate(image_rgb: np.ndarray, boxes: list, labels: list[str]) -> np.ndarray:
    """A copy of the RGB image with each box outlined and its label on a filled tab above it
    (inside the box when there is no room above)."""
    h, w = image_rgb.shape[:2]
    picture = Image.fromarray(np.ascontiguousarray(image_rgb))
    draw = ImageDraw.Draw(picture)
    line = max(2, round(max(h, w) / 320))
    for box, label in zip(boxes, labels):
        x1, y1, x2, y2 = (int(v) for v in box)
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=BOX_COLOUR, width=line)
        font = _font(max(11, min(48, round((x2 - x1) / 5))))
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tw, th = right - left + 2 * line, bottom - top + 2 * line
        ty = y1 - th if y1 - th >= 0 else y1
        tx = min(max(0, x1), max(0, w - tw))
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=BOX_COLOUR)
        draw.text((tx + line - left, ty + line - top), label, font=font, fill=TEXT_COLOUR)
    return np.asarray(picture)
