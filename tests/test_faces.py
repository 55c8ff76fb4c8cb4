"""Face pipeline: detection on drawn faces, the drop reasons, the framing's geometry."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from agelab.data import faces
from agelab.config import CROP_FRACTION
from agelab.data.faces import FaceCrop, FaceCropper, crop_square, eye_angle, framing, sharpness

IRIS = (30, 30, 220)  # RGB: a blue the tests can find again in a crop (dark enough for the detectors)


def draw_face(size: int = 200, face: int = 80, centre=None, tilt: float = 0.0, blur: float = 0.0,
              background: int = 90, seed: int = 0) -> np.ndarray:
    """A cartoon face the frontal Haar cascade finds (checked for faces 40-200 px wide, tilts up to 25°).

    ``face``: width of the skin oval (the detector's box comes out ~1.25x that); ``tilt``: degrees
    counter-clockwise about the face centre.
    """
    img = np.full((size, size, 3), background, np.uint8)
    cx, cy = centre or (size / 2, size / 2)

    def oval(dx, dy, ax, ay, colour):
        cv2.ellipse(img, (int(cx + dx * face), int(cy + dy * face)), (max(1, int(ax * face)), max(1, int(ay * face))),
                    0, 0, 360, colour, -1, cv2.LINE_AA)

    oval(0, -0.12, 0.55, 0.62, (40, 30, 25))  # hair
    oval(0, 0.05, 0.48, 0.62, (190, 160, 140))  # skin
    for side in (-1, 1):
        oval(side * 0.2, -0.16, 0.13, 0.03, (50, 40, 35))  # brow
        oval(side * 0.2, -0.06, 0.11, 0.05, (235, 235, 235))  # eye white
        oval(side * 0.2, -0.06, 0.05, 0.05, IRIS)
    oval(0, 0.12, 0.06, 0.03, (150, 120, 105))  # nose
    oval(0, 0.30, 0.16, 0.04, (120, 60, 60))  # mouth
    if tilt:
        matrix = cv2.getRotationMatrix2D((cx, cy), tilt, 1.0)
        img = cv2.warpAffine(img, matrix, (size, size), borderMode=cv2.BORDER_REPLICATE)
    if blur:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    noise = np.random.default_rng(seed).normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def iris_centres(image: np.ndarray) -> list[tuple[float, float]]:
    """Centroids of the blue iris blobs, left to right."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    mask = ((b > 150) & (r < 100) & (g < 100)).astype(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask)
    blobs = [tuple(centroids[i]) for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 4]
    return sorted(blobs)


def test_the_detector_and_landmark_models_ship_with_their_wheels():
    loaded = faces.models()
    assert {"hog", "points"} <= set(loaded)


@pytest.mark.parametrize("face_px, centre", [(50, (70, 80)), (80, (100, 100)), (120, (110, 95))])
def test_detects_a_drawn_face_where_it_is(face_px, centre):
    image = draw_face(220, face_px, centre)
    found, reason = FaceCropper(output_size=96, min_face_size=40).crops(image)
    assert reason is None and len(found) == 1
    face = found[0]
    assert isinstance(face, FaceCrop) and face.score > 0
    x1, y1, x2, y2 = face.box
    assert all(isinstance(v, int) for v in face.box)
    assert abs((x1 + x2) / 2 - centre[0]) < 0.15 * face_px and abs((y1 + y2) / 2 - centre[1]) < 0.25 * face_px
    assert 0.8 * face_px < x2 - x1 < 1.6 * face_px
    assert face.crop.shape == (96, 96, 3) and face.crop.dtype == np.uint8


def test_no_face_in_a_plain_or_noisy_image():
    rng = np.random.default_rng(0)
    cropper = FaceCropper()
    for image in (np.full((160, 160, 3), 120, np.uint8), rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)):
        assert cropper.crops(image) == ([], "no_face")
        assert cropper.largest(image) == (None, "no_face")


def test_small_faces_are_dropped_as_too_small():
    image = draw_face(200, 80)
    assert FaceCropper(min_face_size=32).largest(image)[1] is None
    # the box is ~100 px: a search for faces of 150 px and more does not find it, or drops it
    face, reason = FaceCropper(min_face_size=150).largest(image)
    assert face is None and reason in ("no_face", "too_small")


def test_blurred_faces_are_dropped_as_too_blurry():
    sharp, blurred = draw_face(200, 80), draw_face(200, 80, blur=2.5)
    cropper = FaceCropper(min_sharpness=100.0)
    face, reason = cropper.largest(sharp)
    assert face is not None and reason is None
    gray = cv2.cvtColor(sharp, cv2.COLOR_RGB2GRAY)
    gray_blurred = cv2.cvtColor(blurred, cv2.COLOR_RGB2GRAY)
    assert sharpness(gray, face.box) > 3 * sharpness(gray_blurred, face.box)
    assert cropper.largest(blurred) == (None, "too_blurry")
    assert FaceCropper(min_sharpness=0.0).largest(blurred)[0] is not None  # it is found, only too blurry


def test_framing_puts_the_eyes_at_one_place_whatever_the_face_size_and_tilt():
    cropper = FaceCropper(output_size=128)
    view = 128 * CROP_FRACTION
    for size, face_px, tilt in ((220, 80, 0), (400, 180, 12), (300, 120, -10)):
        face = cropper.largest(draw_face(size, face_px, tilt=tilt))[0]
        assert eye_angle(face.eyes) == pytest.approx(-tilt, abs=4.0)
        (clx, cly), (crx, cry) = iris_centres(face.crop)
        assert abs(cly - cry) < 0.03 * 128  # level
        # the eyes' midpoint: on the centre line, eye_line of the view from its top
        assert (clx + crx) / 2 == pytest.approx(64, abs=0.03 * 128)
        assert (cly + cry) / 2 == pytest.approx(64 - view / 2 + 0.36 * view, abs=0.03 * 128)


def test_framing_geometry():
    centre, side, angle = framing(((40.0, 50.0), (60.0, 50.0)), (50.0, 65.0), eye_distance=0.4, eye_line=0.3)
    assert angle == 0.0 and side == pytest.approx(20 / 0.4 / CROP_FRACTION)
    assert centre == pytest.approx((50.0, 50.0 + 0.2 * 50))  # (0.5 - 0.3) of the 50 px view below the eyes
    # a turned head (eyes close together) is sized by its eye-to-nose distance
    _, turned, _ = framing(((45.0, 50.0), (55.0, 50.0)), (50.0, 65.0), eye_distance=0.4, eye_line=0.3)
    assert turned == pytest.approx(15 / faces.NOSE_RATIO / 0.4 / CROP_FRACTION)
    # tilted 90 degrees: the centre lies along the face's own vertical
    centre, _, angle = framing(((50.0, 40.0), (50.0, 60.0)), (35.0, 50.0), eye_distance=0.4, eye_line=0.3)
    assert angle == 90.0 and centre == pytest.approx((40.0, 50.0))


def test_a_tight_face_crop_is_found_through_padding():
    image = draw_face(240, 120)
    tight = image[55:185, 60:180]  # the face alone, edge to edge
    assert FaceCropper(output_size=64).largest(tight)[0] is not None


def test_rotation_helper_levels_a_tilted_eye_pair():
    image = np.full((200, 200, 3), 255, np.uint8)
    left, right = (70.0, 110.0), (130.0, 80.0)  # right eye higher: the line slopes up
    for (x, y) in (left, right):
        cv2.circle(image, (int(x), int(y)), 5, IRIS, -1)
    angle = eye_angle((left, right))
    assert angle == pytest.approx(math.degrees(math.atan2(-30, 60)))
    crop = crop_square(image, (100, 95), 120, angle, 120)
    (lx, ly), (rx, ry) = iris_centres(crop)
    assert abs(ly - ry) < 1.0
    assert rx - lx == pytest.approx(math.hypot(60, 30), abs=1.5)  # distances survive at scale 1
    assert (lx + rx) / 2 == pytest.approx(59.5, abs=1.0) and (ly + ry) / 2 == pytest.approx(59.5, abs=1.0)
    unrotated = iris_centres(crop_square(image, (100, 95), 120, 0.0, 120))
    assert unrotated[0][1] - unrotated[1][1] == pytest.approx(30, abs=1.0)


def test_a_given_box_narrows_the_search():
    image = draw_face(240, 80, (80, 100))
    cropper = FaceCropper()
    assert cropper.largest(image, (40, 55, 125, 145))[0] is not None  # the dataset's box around the face
    assert cropper.largest(image, (150, 150, 230, 230)) == (None, "no_face")  # a box elsewhere


def test_huge_arrays_are_downscaled_and_boxes_come_back_in_original_pixels():
    image = cv2.resize(draw_face(200, 80), (800, 800), interpolation=cv2.INTER_LINEAR)
    small = FaceCropper(output_size=64, max_image_side=200).largest(image)[0]
    full = FaceCropper(output_size=64).largest(image)[0]
    assert small is not None and full is not None
    assert np.abs(np.subtract(small.box, full.box)).max() < 40  # ~400 px box, found at a quarter scale
    assert max(small.box) > 400


def test_large_photos_are_searched_at_detect_side_and_cropped_from_every_pixel(monkeypatch):
    photo = cv2.resize(draw_face(300, 120), (2400, 2400), interpolation=cv2.INTER_CUBIC)  # a ~1200 px face
    searched = []
    detect = faces._detect

    def spy(image, scale):
        searched.append((image.shape[:2], round(scale, 4)))
        return detect(image, scale)

    monkeypatch.setattr(faces, "_detect", spy)
    fast = FaceCropper(output_size=64, detect_side=1280).largest(photo)[0]
    full = FaceCropper(output_size=64, min_face_size=80).largest(photo)[0]  # (the default: full size)
    assert searched == [((2400, 2400), round(1280 / 2400, 4)), ((2400, 2400), 1.0)]
    assert fast is not None and full is not None
    assert faces._overlap(fast.box, full.box) > 0.9 and max(fast.box) > 1500  # in the photo's pixels
    side = lambda box: box[2] - box[0]  # noqa: E731
    distance = math.dist(*full.eyes)  # the eyes, which place the crop, agree to a tenth of their distance
    assert all(math.dist(a, b) < 0.1 * distance for a, b in zip(fast.eyes, full.eyes))
    # the same face at a size min_face_size (in the photo's pixels) refuses, whatever the search scale
    assert FaceCropper(output_size=64, min_face_size=side(fast.box) + 50, detect_side=1280).largest(photo) == \
        (None, "too_small")
    assert FaceCropper(detect_side=0) == FaceCropper()  # 0 and null both mean full size


def test_the_cropper_pickles_by_its_settings():
    cropper = FaceCropper(output_size=64, eye_distance=0.3, min_face_size=40)
    faces.models()
    clone = pickle.loads(pickle.dumps(cropper))
    assert clone == cropper and clone.settings()["eye_distance"] == 0.3
    image = draw_face(200, 80)
    np.testing.assert_array_equal(clone.largest(image)[0].crop, cropper.largest(image)[0].crop)


def test_face_settings_out_of_range_are_refused():
    from agelab.errors import ConfigError

    for setting, value in (("min_face_size", -5), ("min_sharpness", -1.0), ("max_image_side", 0),
                           ("min_face_size", "abc"), ("eye_distance", None), ("eye_line", 1.5), ("detect_side", 32),
                           ("min_face_size", 2.5)):
        with pytest.raises(ConfigError, match=f"^{setting} must be .*, got {value!r}$"):
            FaceCropper(**{setting: value})


def test_settings_of_the_earlier_face_pipeline_are_one_clear_error():
    from agelab.errors import ConfigError
    from agelab.inference.predictor import make_cropper

    earlier = {"output_size": 128, "enlarge": 1.3714, "detect": True, "align": True, "min_face_size": 32}
    with pytest.raises(ConfigError, match="earlier face pipeline .*retrain"):
        make_cropper(earlier)
    assert make_cropper(FaceCropper().settings()) == FaceCropper()
