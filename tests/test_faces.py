"""Face pipeline: detection on drawn faces, the drop reasons, exact crop geometry, alignment."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from agelab.data import faces
from agelab.data.faces import FaceCrop, FaceCropper, crop_square, eye_angle, sharpness

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


def test_haar_cascades_ship_with_opencv():
    for name in (faces.FACE_CASCADE, faces.EYE_CASCADE):
        assert (Path(cv2.data.haarcascades) / name).is_file()
        assert not faces.cascade(name).empty()


@pytest.mark.parametrize("face_px, centre", [(50, (70, 80)), (80, (100, 100)), (120, (110, 95))])
def test_detects_a_drawn_face_where_it_is(face_px, centre):
    image = draw_face(220, face_px, centre)
    found, reason = FaceCropper(output_size=96).crops(image)
    assert reason is None and len(found) == 1
    face = found[0]
    assert isinstance(face, FaceCrop) and face.score > 0
    x1, y1, x2, y2 = face.box
    assert all(isinstance(v, int) for v in face.box)
    assert abs((x1 + x2) / 2 - centre[0]) < 0.15 * face_px and abs((y1 + y2) / 2 - centre[1]) < 0.25 * face_px
    assert 0.9 * face_px < x2 - x1 < 1.6 * face_px
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
    face, reason = FaceCropper(min_face_size=150).largest(image)  # the box is ~100 px
    assert face is None and reason == "too_small"


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


def test_a_known_box_gives_a_known_crop():
    image = np.random.default_rng(1).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    box = (50, 60, 110, 120)  # 60 px; x 1.2 -> a 72 px square from (44, 54)
    exact = FaceCropper(output_size=72, detect=False, align=False, min_sharpness=0).largest(image, box)[0]
    assert exact.box == box and exact.eyes is None and exact.score == 1.0
    np.testing.assert_array_equal(exact.crop, image[54:126, 44:116])
    half = FaceCropper(output_size=36, detect=False, align=False, min_sharpness=0).largest(image, box)[0]
    np.testing.assert_array_equal(half.crop, cv2.resize(image[54:126, 44:116], (36, 36), interpolation=cv2.INTER_AREA))
    # A wide box: the square follows the longer side, centred.
    wide = FaceCropper(output_size=72, detect=False, align=False, min_sharpness=0).largest(image, (40, 70, 100, 110))[0]
    np.testing.assert_array_equal(wide.crop, image[54:126, 34:106])
    other = FaceCropper(output_size=60, enlarge=1.0, detect=False, align=False, min_sharpness=0).largest(image, box)[0]
    np.testing.assert_array_equal(other.crop, image[60:120, 50:110])


def test_crops_leaving_the_image_replicate_the_border():
    image = np.random.default_rng(2).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    crop = FaceCropper(output_size=48, detect=False, align=False, min_sharpness=0).largest(image, (0, 0, 40, 40))[0].crop
    padded = cv2.copyMakeBorder(image, 4, 0, 4, 0, cv2.BORDER_REPLICATE)  # the 48 px square starts at (-4, -4)
    np.testing.assert_array_equal(crop, padded[:48, :48])


def test_without_detection_a_whole_image_is_used_as_it_is():
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    face = FaceCropper(output_size=64, detect=False, align=False, min_sharpness=0).largest(image)[0]
    assert face.box == (0, 0, 64, 64)
    np.testing.assert_array_equal(face.crop, image)  # an aligned chip: not enlarged
    assert FaceCropper(detect=False, min_face_size=100, min_sharpness=0).largest(image) == (None, "too_small")


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


@pytest.mark.parametrize("tilt", [-12, 10])
def test_alignment_finds_the_eyes_and_levels_them(tilt):
    image = draw_face(300, 140, tilt=tilt)
    aligned = FaceCropper(output_size=128).largest(image)[0]
    assert aligned.eyes is not None
    assert eye_angle(aligned.eyes) == pytest.approx(-tilt, abs=3.0)
    (lx, ly), (rx, ry) = iris_centres(aligned.crop)
    assert abs(math.degrees(math.atan2(ry - ly, rx - lx))) < 3.0
    plain = FaceCropper(output_size=128, align=False).largest(image)[0]
    assert plain.eyes is None
    (lx, ly), (rx, ry) = iris_centres(plain.crop)
    assert math.degrees(math.atan2(ry - ly, rx - lx)) == pytest.approx(-tilt, abs=3.0)


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
    detector = faces.cascade(faces.FACE_CASCADE)

    class Spy:
        def detectMultiScale3(self, image, **kwargs):
            searched.append(image.shape[:2])
            return detector.detectMultiScale3(image, **kwargs)

    monkeypatch.setattr(faces, "cascade", lambda name: Spy() if name == faces.FACE_CASCADE else detector)
    fast = FaceCropper(output_size=64, align=False, detect_side=1280).largest(photo)[0]
    full = FaceCropper(output_size=64, align=False).largest(photo)[0]  # (the default: full size)
    assert searched == [(1280, 1280), (2400, 2400)]
    assert fast is not None and full is not None
    assert faces._overlap(fast.box, full.box) > 0.9 and max(fast.box) > 1500  # in the photo's pixels
    side = lambda box: box[2] - box[0]  # noqa: E731
    assert abs(side(fast.box) - side(full.box)) < 0.05 * side(full.box)
    # the same face at a size min_face_size (in the photo's pixels) refuses, whatever the search scale
    assert FaceCropper(output_size=64, min_face_size=side(fast.box) + 50, detect_side=1280).largest(photo) == \
        (None, "too_small")
    for box in (fast.box, FaceCropper(output_size=64, detect_side=1000).largest(photo[:2399, :2387])[0].box):
        assert box[2] <= 2400 and box[3] <= 2400  # scaled back per axis: never past the photo
    # caches and stored settings made before detect_side keep their keys; 0 and null both mean full size
    assert "detect_side" not in FaceCropper(detect_side=0).settings() and FaceCropper(detect_side=0) == FaceCropper()
    assert FaceCropper(detect_side=1280).settings()["detect_side"] == 1280


def test_the_cropper_pickles_by_its_settings():
    cropper = FaceCropper(output_size=64, enlarge=1.3, min_face_size=40)
    faces.cascade(faces.FACE_CASCADE)
    clone = pickle.loads(pickle.dumps(cropper))
    assert clone == cropper and clone.settings()["enlarge"] == 1.3
    image = draw_face(200, 80)
    np.testing.assert_array_equal(clone.largest(image)[0].crop, cropper.largest(image)[0].crop)


def test_face_settings_out_of_range_and_an_opencv_without_detector_are_refused(monkeypatch):
    from agelab.errors import ConfigError

    for setting, value in (("min_face_size", -5), ("min_sharpness", -1.0), ("min_neighbors", -1),
                           ("max_image_side", 0), ("min_face_size", "abc"), ("enlarge", None), ("align", "yes"),
                           ("detect_side", 32), ("min_neighbors", 2.5)):
        with pytest.raises(ConfigError, match=f"^{setting} must be .*, got {value!r}$"):
            FaceCropper(**{setting: value})
    monkeypatch.delattr(cv2, "CascadeClassifier")
    with pytest.raises(ConfigError, match="has no CascadeClassifier .*opencv-python-headless>=4.9,<5"):
        FaceCropper()
    assert FaceCropper(detect=False, align=False).detect is False  # no detector needed
