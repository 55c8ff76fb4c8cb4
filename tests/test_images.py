"""Image reading: odd formats, EXIF orientation, transparency, broken and oversized files."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from agelab.data import images
from agelab.data.images import read_image


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
    assert images._plan(tmp_path / "opaque.png", 4000) == images.Decode(cv2.IMREAD_COLOR, (60, 40), 1)


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
    with caplog.at_level("WARNING", logger="agelab.data.images"):
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
    image, _, scale = images.load_image(tmp_path / "big.png", max_side=300)
    assert image.shape == (112, 300, 3) and scale == pytest.approx(300 / 800)
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", 300_000)  # big.png: 720 000 bytes decoded
    assert read_image(tmp_path / "big.png", max_side=300) == (None, "too_large")  # PNG: no reduced decoding
    assert (tmp_path / "big.jpg").stat().st_size < 300_000
    assert read_image(tmp_path / "big.jpg", max_side=200)[1] is None  # 1/16 of the pixels: 45 000 bytes
