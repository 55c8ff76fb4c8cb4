"""Face pipeline: detection on drawn faces, the drop reasons, exact crop geometry, alignment, image reading."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from agelab.data import faces
from agelab.data.faces import FaceCrop, FaceCropper, crop_square, eye_angle, read_image, sharpness

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


# -------------------------------------------------------------------------------------- reading


def test_read_image_handles_the_odd_formats(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)  # red block top-left
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    image, reason = read_image(tmp_path / "plain.png")
    assert reason is None and image.shape == (40, 60, 3) and tuple(image[0, 0]) == (255, 0, 0)

    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.png")
    image, _ = read_image(tmp_path / "gray.png")
    assert image.shape == (40, 60, 3) and tuple(image[0, 0]) == (255, 255, 255)

    rgba = np.dstack([rgb, np.full((40, 60), 255, np.uint8)])
    rgba[20:, :, 3] = 0  # the lower half transparent
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    image, _ = read_image(tmp_path / "alpha.png")
    assert image.shape == (40, 60, 3) and tuple(image[0, 0]) == (255, 0, 0) and tuple(image[30, 30]) == (255, 255, 255)

    deep = np.full((40, 60), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    image, _ = read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8 and image[0, 0, 0] == 40000 >> 8

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    image, _ = read_image(tmp_path / "cmyk.jpg")
    assert image.shape == (40, 60, 3) and image[2, 2, 0] > 200 and image[2, 2, 2] < 60

    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif.tobytes(), quality=95)
    image, _ = read_image(tmp_path / "turned.jpg")
    assert image.shape == (60, 40, 3) and image[2, 37, 0] > 200  # the red block is now top-right


# EXIF orientation -> the stored pixels turned as they are meant to be seen (numpy's own operations).
UPRIGHT = {1: lambda a: a, 2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
           8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_photos_with_transparency_are_turned_upright_like_the_others(tmp_path, orientation):
    # OpenCV turns a photo by its EXIF orientation, but not a PNG or WebP it decodes with its alpha
    # channel (its TIFF decoder does turn those: they must not be turned twice).
    rgb = np.random.default_rng(orientation).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((30, 50), 255, np.uint8)])
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "rgb.png", exif=exif.tobytes())
    for name in ("rgba.png", "rgba.webp", "rgba.tiff"):
        Image.fromarray(rgba, "RGBA").save(tmp_path / name, exif=exif.tobytes(), lossless=True)
    expected = UPRIGHT[orientation](rgb)
    for name in ("rgb.png", "rgba.png", "rgba.webp", "rgba.tiff"):
        image, reason = read_image(tmp_path / name)
        assert reason is None
        np.testing.assert_array_equal(image, expected, err_msg=name)


def test_the_header_probe_decodes_no_opaque_png(tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "opaque.png")
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: pytest.fail("decoded"))
    assert faces._probe(tmp_path / "opaque.png") == ((60, 40), "PNG", False, 1)


def test_a_png_with_its_exif_after_the_pixels_is_turned_too(tmp_path):
    import struct

    rgba = np.dstack([np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8),
                      np.full((30, 50), 255, np.uint8)])
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgba, "RGBA").save(tmp_path / "before.png", exif=exif.tobytes())
    data, chunks, i = (tmp_path / "before.png").read_bytes(), [], 8
    while i < len(data):  # the PNG's chunks: length, type, data, CRC
        end = i + 12 + struct.unpack(">I", data[i:i + 4])[0]
        chunks.append(data[i:end])
        i = end
    exif_chunk = [c for c in chunks if c[4:8] == b"eXIf"]
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    assert exif_chunk and rest[-1][4:8] == b"IEND"
    (tmp_path / "after.png").write_bytes(data[:8] + b"".join(rest[:-1] + exif_chunk + rest[-1:]))
    image, _ = read_image(tmp_path / "after.png")
    np.testing.assert_array_equal(image, np.rot90(rgba[..., :3], -1))


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


def test_read_image_refuses_bad_files_without_raising(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "folder.jpg").mkdir()
    ok = tmp_path / "ok.jpg"
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(ok)
    (tmp_path / "cut.jpg").write_bytes(ok.read_bytes()[:20])
    for name in ("empty.jpg", "text.jpg", "folder.jpg", "missing.jpg", "cut.jpg"):
        assert read_image(tmp_path / name) == (None, "unreadable"), name


def test_a_damaged_jpeg_that_still_decodes_is_told_with_its_file_name(tmp_path, caplog, capfd):
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    damaged = bytearray(data.tobytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 40] = bytes(40)  # zeros inside the entropy-coded data
    (tmp_path / "damaged.jpg").write_bytes(bytes(damaged))
    with caplog.at_level("WARNING", logger="agelab.data.faces"):
        image, reason = read_image(tmp_path / "damaged.jpg")
    assert reason is None and image.shape == (64, 64, 3)  # kept: libjpeg filled in what it lost
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"{tmp_path / 'damaged.jpg'}: Corrupt JPEG data: ")
    os.write(2, b"after\n")  # the process's stderr is back
    assert capfd.readouterr().err == "after\n"


def test_decoding_never_depends_on_capturing_the_decoder_s_messages(tmp_path, monkeypatch):
    import tempfile
    import threading

    from agelab.data import native_stderr

    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "ok.jpg")
    monkeypatch.setattr(native_stderr, "_sink", None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_such_folder"))
    assert read_image(tmp_path / "ok.jpg")[1] is None  # no capture file: decoded without capture
    monkeypatch.undo()
    before = os.fstat(2)
    found = []
    threads = [threading.Thread(target=lambda: found.append(read_image(tmp_path / "ok.jpg")[1])) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert found == [None] * 4 and os.fstat(2).st_ino == before.st_ino  # fd 2 left as it was


def test_large_images_are_downscaled_or_refused(tmp_path, monkeypatch):
    big = np.random.default_rng(0).integers(0, 256, (300, 800, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.jpg")
    Image.fromarray(big).save(tmp_path / "big.png")
    image, reason = read_image(tmp_path / "big.jpg", max_side=200)  # decoded at 1/4 size directly
    assert reason is None and image.shape == (75, 200, 3)
    image, _, scale = faces.load_image(tmp_path / "big.png", max_side=300)
    assert image.shape == (112, 300, 3) and scale == pytest.approx(300 / 800)
    monkeypatch.setattr(faces, "MAX_DECODE_PIXELS", 100_000)
    assert read_image(tmp_path / "big.png", max_side=300) == (None, "too_large")  # PNG: no reduced decoding
    assert read_image(tmp_path / "big.jpg", max_side=200)[1] is None  # 1/16 of the pixels: within the limit
