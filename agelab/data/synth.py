"""Procedural faces with known ages: the built-in dataset that lets the lab run with no download.

Each face is drawn from a seed and its index alone, so any sample can be re-made anywhere.
Age is carried by the cues a real model uses:

* proportions: a baby's cranium is large and its eyes sit low in the head with big irises;
  the lower face, nose and jaw grow until about 18;
* skin: forehead lines, crow's feet, nasolabial folds and under-eye bags deepen from the
  thirties on; age spots appear after 55; eyelids droop and cheeks sag (jowls) with age;
* hair: sparse on babies, greys from about 35 (at a per-person pace) and the hairline recedes
  on some people.

Nuisance that carries no age: skin tone, hair colour, gender, in-plane rotation, yaw-like
shift of the features, scale, position, lighting gradient and gain, background, blur, noise.

Label noise: the stored ``age`` is the true age plus Gaussian noise of ``label_noise`` years
(default 1.5), rounded and clipped to 0..100; the clean value is kept as ``true_age``.
"""

from __future__ import annotations

import argparse
import math
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from agelab.data.workers import die_with_parent, pool_size
from agelab.groups import age_to_group

MAX_AGE = 100
SKIN_TONES = np.array(  # BGR, light to dark
    [(196, 214, 245), (170, 196, 236), (140, 170, 214), (105, 140, 190), (75, 105, 150), (50, 72, 105)],
    dtype=np.float32,
)
HAIR_COLOURS = np.array(  # BGR: black, dark brown, brown, blond, red
    [(25, 25, 30), (30, 45, 70), (45, 75, 115), (110, 170, 215), (40, 70, 160)], dtype=np.float32
)
GREY = np.array((200, 200, 205), dtype=np.float32)


@dataclass(frozen=True)
class SynthSpec:
    """What to generate: ``count`` faces of ``size`` x ``size`` pixels from ``seed``."""

    count: int
    size: int = 128
    seed: int = 0
    label_noise: float = 1.5


def _ellipse(img, center, axes, angle, colour, thickness=-1):
    cv2.ellipse(
        img,
        (int(round(center[0] * 16)), int(round(center[1] * 16))),
        (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16)))),
        angle, 0, 360, tuple(float(c) for c in colour), thickness, cv2.LINE_AA, shift=4,
    )


def _line(img, p0, p1, colour, thickness):
    cv2.line(
        img,
        (int(round(p0[0] * 16)), int(round(p0[1] * 16))),
        (int(round(p1[0] * 16)), int(round(p1[1] * 16))),
        tuple(float(c) for c in colour), max(1, int(round(thickness))), cv2.LINE_AA, shift=4,
    )


def _curve(img, pts, colour, thickness):
    pts = np.round(np.asarray(pts) * 16).astype(np.int32)
    cv2.polylines(img, [pts], False, tuple(float(c) for c in colour), max(1, int(round(thickness))), cv2.LINE_AA, shift=4)


def _background(rng, s):
    base = rng.uniform(40, 230, size=3).astype(np.float32)
    other = rng.uniform(40, 230, size=3).astype(np.float32)
    t = np.linspace(0, 1, s, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.cos(angle) * t[None, :] + np.sin(angle) * t[:, None]
    ramp = (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    bg = base[None, None] * (1 - ramp[..., None]) + other[None, None] * ramp[..., None]
    blobs = cv2.resize(rng.normal(0, 18, size=(6, 6, 3)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    return bg + blobs


def render_face(age: float, rng: np.random.Generator, size: int) -> tuple[np.ndarray, dict]:
    """Draw one face of the given true age; returns (uint8 HxWx3 RGB image, attributes)."""
    s = size * 2  # draw at twice the size, then area-downsample for anti-aliasing
    img = _background(rng, s)

    growth = math.sqrt(min(age, 18.0) / 18.0)  # 0 at birth, 1 from 18
    old = float(np.clip((age - 28.0) / 60.0, 0.0, 1.0))  # skin ageing from ~28
    male = bool(rng.random() < 0.5)
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.08)
    grey_pace = rng.normal(0, 0.15)
    greyness = float(np.clip((age - 35.0) / 40.0 + grey_pace, 0.0, 1.0)) if age > 30 else 0.0
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * (1 - greyness) + GREY * greyness

    scale = rng.uniform(0.85, 1.08)
    cx = s / 2 + rng.uniform(-0.05, 0.05) * s
    cy = s / 2 + rng.uniform(-0.04, 0.05) * s
    head_w = s * 0.30 * scale  # half-width
    head_h = head_w * (1.05 + 0.25 * growth + 0.04 * old)  # faces lengthen with growth
    yaw = rng.uniform(-0.10, 0.10) * head_w  # shift of the features inside the head

    top = cy - head_h
    # Hair behind the head (long hair for some), then the head itself.
    hair_alpha = 0.25 + 0.75 * min(age / 3.0, 1.0)
    hair_draw = skin * (1 - hair_alpha) + hair * hair_alpha
    if rng.random() < 0.4 and age > 4:
        _ellipse(img, (cx, cy + 0.15 * head_h), (head_w * 1.12, head_h * 1.05), 0, hair_draw)
    # Jowls: the lower face widens and drops with age.
    sag = old * 0.09 * head_h
    _ellipse(img, (cx, cy), (head_w, head_h), 0, skin)
    jaw_w = head_w * (0.70 + 0.12 * growth + 0.12 * old)
    _ellipse(img, (cx + yaw * 0.3, cy + head_h * 0.45 + sag), (jaw_w, head_h * 0.42), 0, skin)
    # Ears.
    ear_y = cy - head_h * (0.05 - 0.1 * (1 - growth))
    for side in (-1, 1):
        _ellipse(img, (cx + side * head_w * 0.98, ear_y), (head_w * 0.12, head_h * 0.17), 0, skin * 0.93)

    # Hair cap with a hairline that recedes on some people.
    recede = old * (0.6 if male and rng.random() < 0.7 else 0.15)
    cap_h = head_h * (0.42 - 0.28 * recede) * (0.6 + 0.4 * growth)
    cap = np.zeros(img.shape[:2], np.uint8)
    _ellipse(cap, (cx, top + cap_h * 0.55), (head_w * 1.03, cap_h), 0, (255,))
    head_mask = np.zeros_like(cap)
    _ellipse(head_mask, (cx, cy), (head_w * 1.03, head_h * 1.02), 0, (255,))
    hair_mask = (cap.astype(np.float32) * head_mask.astype(np.float32) / 255.0 ** 2)[..., None]
    img = img * (1 - hair_mask * hair_alpha) + hair[None, None] * hair_mask * hair_alpha

    line_col = skin * 0.55
    # Forehead lines from the thirties on.
    forehead_y = top + cap_h + (cy - head_h * 0.1 - top - cap_h) * 0.35
    n_lines = int(round(old * 4.5))
    for i in range(n_lines):
        y = forehead_y + i * head_h * 0.05
        w = head_w * (0.45 - 0.04 * i)
        _curve(img, [(cx + yaw - w, y + 2), (cx + yaw, y - 1.5), (cx + yaw + w, y + 2)], skin * (1 - 0.35 * old), 1 + old * 1.5)

    # Eyes: big and low in the head for the young; lids droop with age.
    eye_y = top + head_h * 2 * (0.60 - 0.12 * growth)
    eye_dx = head_w * (0.40 + 0.03 * growth)
    eye_r = head_w * (0.17 - 0.06 * growth)
    iris = np.array(rng.choice([(60, 40, 20), (120, 90, 40), (40, 90, 60), (30, 50, 90)]), np.float32)
    droop = 0.35 * old
    for side in (-1, 1):
        ex = cx + yaw + side * eye_dx
        _ellipse(img, (ex, eye_y), (eye_r, eye_r * (0.62 - 0.05 * growth) * (1 - droop)), 0, (235, 235, 235))
        _ellipse(img, (ex + yaw * 0.15, eye_y), (eye_r * 0.45, eye_r * 0.45 * (1 - droop * 0.5)), 0, iris)
        _ellipse(img, (ex + yaw * 0.15, eye_y), (eye_r * 0.2, eye_r * 0.2), 0, (10, 10, 10))
        # Upper lid, heavier with age.
        _ellipse(img, (ex, eye_y - eye_r * 0.62 * (1 - droop)), (eye_r * 1.05, eye_r * (0.12 + 0.35 * old)), 0, skin * 0.9)
        brow_y = eye_y - eye_r * (1.1 + 0.4 * growth) - head_h * 0.05 * growth + old * eye_r * 0.25
        brow_col = hair * 0.9 if age > 1 else skin * 0.85
        _curve(img, [(ex - eye_r * 1.1, brow_y + 2), (ex, brow_y - 2), (ex + eye_r * 1.1, brow_y + 1)], brow_col, 2 + 2 * growth)
        if age > 32:  # crow's feet
            k = (age - 32) / 68
            for j in (-1, 0, 1):
                _line(img, (ex + side * eye_r * 1.15, eye_y + j * eye_r * 0.15),
                      (ex + side * eye_r * (1.45 + 0.35 * k), eye_y + j * eye_r * (0.35 + 0.2 * k)), line_col, 1 + k * 1.5)
        if age > 42:  # under-eye bags
            k = (age - 42) / 58
            _curve(img, [(ex - eye_r * 0.8, eye_y + eye_r * 0.7), (ex, eye_y + eye_r * (0.9 + 0.4 * k)), (ex + eye_r * 0.8, eye_y + eye_r * 0.7)],
                   skin * (0.8 - 0.15 * k), 1 + 2 * k)

    # Nose grows with the face.
    nose_len = head_h * (0.16 + 0.14 * growth + 0.04 * old)
    nose_x = cx + yaw * 1.2
    nose_y = eye_y + nose_len
    _curve(img, [(nose_x - head_w * 0.03, eye_y + eye_r * 0.3), (nose_x + head_w * 0.02, nose_y - 3), (nose_x - head_w * 0.09, nose_y)], skin * 0.75, 2)
    _ellipse(img, (nose_x, nose_y), (head_w * (0.08 + 0.05 * growth), head_h * 0.03), 0, skin * 0.82)

    # Mouth: wider with growth, thinner lips with age.
    mouth_y = nose_y + head_h * (0.13 + 0.10 * growth) + sag * 0.4
    mouth_w = head_w * (0.22 + 0.16 * growth)
    lip = np.array((95, 95, 175), np.float32) * (1 - 0.25 * old) + skin * 0.25 * old
    _ellipse(img, (nose_x, mouth_y), (mouth_w, head_h * (0.035 - 0.02 * old)), 0, lip)
    _line(img, (nose_x - mouth_w, mouth_y), (nose_x + mouth_w, mouth_y), lip * 0.5, 1.5)
    if age > 25:  # nasolabial folds
        k = min((age - 25) / 50, 1.0)
        for side in (-1, 1):
            _curve(img, [(nose_x + side * head_w * 0.15, nose_y - 2), (nose_x + side * (mouth_w + head_w * 0.12), mouth_y + head_h * 0.06 * k)],
                   skin * (0.85 - 0.25 * k), 1 + 2 * k)
    if male and age > 17 and rng.random() < 0.35:  # beard or stubble
        beard = np.zeros(img.shape[:2], np.uint8)
        _ellipse(beard, (cx + yaw * 0.3, cy + head_h * 0.55 + sag), (jaw_w * 0.95, head_h * 0.38), 0, (255,))
        cv2.rectangle(beard, (0, 0), (s, int(mouth_y - head_h * 0.02)), 0, -1)
        b = (beard.astype(np.float32) / 255.0)[..., None] * rng.uniform(0.3, 0.8)
        img = img * (1 - b) + hair[None, None] * b
    if age > 55:  # age spots
        for _ in range(int((age - 55) / 6)):
            px = cx + rng.uniform(-0.7, 0.7) * head_w
            py = cy + rng.uniform(-0.7, 0.3) * head_h
            _ellipse(img, (px, py), (s * 0.006, s * 0.005), 0, skin * 0.7)

    # Nuisance: rotation, lighting, blur, noise.
    rot = cv2.getRotationMatrix2D((cx, cy), rng.uniform(-15, 15), 1.0)
    img = cv2.warpAffine(img, rot, (s, s), borderMode=cv2.BORDER_REFLECT)
    t = np.linspace(-1, 1, s, dtype=np.float32)
    la = rng.uniform(0, 2 * math.pi)
    light = 1 + rng.uniform(0, 0.35) * (np.cos(la) * t[None, :] + np.sin(la) * t[:, None])
    img = img * light[..., None] * rng.uniform(0.75, 1.2)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    sigma = rng.uniform(0, 1.0)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img = img + rng.normal(0, rng.uniform(0, 7), size=img.shape)
    rgb = np.clip(img, 0, 255).astype(np.uint8)[..., ::-1]
    return np.ascontiguousarray(rgb), {"gender": "m" if male else "f"}


def _draw_age(spec: SynthSpec, index: int) -> tuple[np.random.Generator, float, int]:
    """(the sample's generator, true age, noisy label): the first draws of sample ``index``."""
    rng = np.random.default_rng([spec.seed, index])
    true_age = float(rng.uniform(0, MAX_AGE))
    label = int(np.clip(round(true_age + rng.normal(0, spec.label_noise)), 0, MAX_AGE))
    return rng, true_age, label


def labels(spec: SynthSpec) -> np.ndarray:
    """The age labels of all samples, without drawing the images."""
    return np.array([_draw_age(spec, i)[2] for i in range(spec.count)])


def make_sample(spec: SynthSpec, index: int) -> tuple[np.ndarray, dict]:
    """Sample ``index`` of ``spec``: the same image and record wherever it is made."""
    rng, true_age, label = _draw_age(spec, index)
    image, attrs = render_face(true_age, rng, spec.size)
    record = {"path": f"synth/{spec.seed}/{index:06d}", "age": label, "true_age": round(true_age, 2),
              "group": age_to_group(label), "subject": f"s{spec.seed}_{index}", **attrs}
    return image, record


def _make_range(args: tuple[SynthSpec, int, int]) -> tuple[np.ndarray, list[dict]]:
    spec, start, stop = args
    samples = [make_sample(spec, i) for i in range(start, stop)]
    return np.stack([s[0] for s in samples]), [s[1] for s in samples]


def generate(spec: SynthSpec, workers: int | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """All ``spec.count`` faces as a uint8 (N, H, W, 3) array and their records table.

    Large sets are drawn in parallel over CPU cores; the result does not depend on ``workers``.
    """
    workers = pool_size(workers or min(os.cpu_count() or 1, 16))
    chunk = 500
    ranges = [(spec, a, min(a + chunk, spec.count)) for a in range(0, spec.count, chunk)]
    if workers > 1 and len(ranges) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=die_with_parent) as pool:
            parts = list(pool.map(_make_range, ranges))
    else:
        parts = [_make_range(r) for r in ranges]
    images = np.concatenate([p[0] for p in parts]) if parts else np.empty((0, spec.size, spec.size, 3), np.uint8)
    return images, pd.DataFrame.from_records([rec for p in parts for rec in p[1]])


def contact_sheet(spec: SynthSpec, columns: int = 8) -> np.ndarray:
    """A grid of samples sorted by age, each captioned with its label (RGB uint8)."""
    images, records = generate(spec)
    order = np.argsort(records["age"].to_numpy(), kind="stable")
    rows = math.ceil(len(order) / columns)
    pad = 16
    sheet = np.full((rows * (spec.size + pad), columns * spec.size, 3), 255, np.uint8)
    for k, i in enumerate(order):
        r, c = divmod(k, columns)
        y, x = r * (spec.size + pad), c * spec.size
        sheet[y:y + spec.size, x:x + spec.size] = images[i]
        cv2.putText(sheet, f"age {records['age'][i]}", (x + 4, y + spec.size + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return sheet


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agelab.data.synth",
                                     description="Save a contact sheet of synthetic faces sorted by age.")
    parser.add_argument("--sheet", type=Path, required=True, help="output PNG path")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.count < 1 or args.size < 16:
        parser.error(f"--count must be >= 1 and --size >= 16, got {args.count} and {args.size}")
    if not cv2.haveImageWriter(str(args.sheet)):
        parser.error(f"--sheet {args.sheet}: not an image file name OpenCV can write (.png, .jpg, ...)")
    sheet = contact_sheet(SynthSpec(count=args.count, size=args.size, seed=args.seed))
    args.sheet.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.sheet), sheet[..., ::-1]):
        parser.error(f"--sheet {args.sheet}: could not be written")
    print(f"wrote {args.sheet} ({args.count} faces)")


if __name__ == "__main__":
    main()
