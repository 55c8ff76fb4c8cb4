"""Hostile files: every decode is sized from the header and bounded before it happens, and models and
checkpoints are checked before anything is allocated. Each file is small on disk; what it claims is not."""

from __future__ import annotations

import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from agelab.checkpoint import read_checkpoint
from agelab.data import images
from agelab.errors import ConfigError
from agelab.inference import OnnxBackend

from test_bench_infer import checkpoint  # noqa: F401 - the fixture: an untrained model saved as agelab.train does

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ image files


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, depth: int, colour_type: int) -> bytes:
    """A PNG that claims ``width`` x ``height``: its IHDR and a few compressed rows of zeros."""
    rows = zlib.compress(b"\0" * 4096)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def radiance_hdr_named_jpg(d: Path) -> Path:
    """A Radiance HDR (which Pillow cannot read) of 18000 x 18000 named .jpg: OpenCV would decode it
    to 3.9 GB of floats."""
    p = d / "sunset.jpg"
    runs = bytes([128 + 127, 128]) * 141 + bytes([128 + 93, 128])  # 18000 pixels of one component
    line = b"\x02\x02" + struct.pack(">H", 18000) + runs * 4
    p.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 18000 +X 18000\n" + line * 10)
    return p


def png_claiming(name: str, side: int, depth: int, colour_type: int):
    """A maker of a PNG whose header alone (a few bytes on disk) claims ``side`` x ``side`` pixels."""
    def make(d: Path) -> Path:
        (d / name).write_bytes(png_header(side, side, depth, colour_type))
        return d / name
    return make


def sparse_3gb_jpg(d: Path) -> Path:
    """A small valid JPEG at the start of 3 GB (sparse: nothing on disk)."""
    p = d / "huge.jpg"
    Image.new("RGB", (16, 16)).save(p)
    with p.open("r+b") as f:
        f.truncate(3 << 30)
    return p


def _jpeg_claiming(d: Path, name: str, side: int, progressive: bool) -> Path:
    """A small JPEG whose frame header (SOF) is rewritten to claim ``side`` x ``side``."""
    p = d / name
    Image.new("RGB", (16, 16), (90, 120, 150)).save(p, quality=90, progressive=progressive)
    data = bytearray(p.read_bytes())
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)  # height, width
    p.write_bytes(bytes(data))
    return p


def progressive_jpeg_144mp(d: Path) -> Path:
    """A progressive JPEG keeps every DCT coefficient whatever size it is decoded at: 432 MB here."""
    return _jpeg_claiming(d, "progressive.jpg", 12000, progressive=True)


def gif_65535(d: Path) -> Path:
    """A GIF whose screen is 65535 x 2000: 393 MB decoded, and a canvas besides."""
    p = d / "wide.gif"
    Image.new("P", (16, 16)).save(p)
    data = bytearray(p.read_bytes())
    data[6:10] = struct.pack("<HH", 65535, 2000)  # the logical screen: 131 MP
    p.write_bytes(bytes(data))
    return p


def pfm_named_png(d: Path) -> Path:
    """A PFM (32-bit floats; OpenCV decodes it through a float copy), a format not sized here."""
    p = d / "float.png"
    assert cv2.imwrite(str(d / "float.pfm"), np.zeros((8, 8, 3), np.float32))
    p.write_bytes((d / "float.pfm").read_bytes())
    return p


HOSTILE_IMAGES = {  # case: (maker, status)
    "radiance_hdr_18000_named_jpg": (radiance_hdr_named_jpg, "unreadable"),
    "png_16bit_rgba_11500": (png_claiming("deep.png", 11500, 16, 6), "too_large"),  # 1.06 GB decoded
    "sparse_3gb_jpg": (sparse_3gb_jpg, "too_large"),
    "png_decompression_bomb_20000": (png_claiming("bomb.png", 20000, 8, 2), "too_large"),  # Pillow: a bomb
    "png_rgba_10000": (png_claiming("poster.png", 10000, 8, 6), "too_large"),  # 400 MB decoded
    "progressive_jpeg_12000": (progressive_jpeg_144mp, "too_large"),
    "gif_65535x2000": (gif_65535, "too_large"),
    "pfm_named_png": (pfm_named_png, "unreadable"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_IMAGES))
def test_a_hostile_image_is_refused_without_decoding(case, tmp_path, monkeypatch):
    maker, status = HOSTILE_IMAGES[case]
    path = maker(tmp_path)
    assert path.stat().st_blocks * 512 < 1 << 20  # small on disk, whatever it claims
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    monkeypatch.setattr(np, "fromfile", lambda *a: pytest.fail("read whole"))
    assert images.load_image(path) == (None, status, 1.0)


def test_a_file_larger_than_the_budget_is_refused_from_its_size_alone(tmp_path, monkeypatch):
    path = sparse_3gb_jpg(tmp_path)
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("opened"))
    assert images.load_image(path) == (None, "too_large", 1.0)


def test_the_same_jpeg_header_is_decoded_reduced_when_baseline(tmp_path):
    baseline = _jpeg_claiming(tmp_path, "baseline.jpg", 12000, progressive=False)
    # 1/4 size: 3000 x 3000 x 3 bytes, within the budget (a progressive one is not: see above)
    assert images._plan(baseline, 4000) == images.Decode(cv2.IMREAD_REDUCED_COLOR_4, (12000, 12000))


def _png(d: Path, name: str, array: np.ndarray) -> Path:
    assert cv2.imwrite(str(d / name), array)
    return d / name


def _la(d: Path, name: str, array: np.ndarray) -> Path:  # gray + alpha (OpenCV writes no 2-channel PNG)
    Image.fromarray(array, "LA").save(d / name)
    return d / name


def _tiff_16bit_rgba(d: Path) -> Path:
    return _png(d, "deep.tif", np.zeros((20, 30, 4), np.uint16))


def _jpeg(d: Path, name: str, size: tuple[int, int], progressive: bool = False) -> Path:
    Image.new("RGB", size, (90, 120, 150)).save(d / name, quality=90, progressive=progressive)
    return d / name


# file maker, max_side, bytes the decode is counted at: output (pixels x channels kept x bytes a
# sample) plus what the decoder holds besides it.
DECODE_BYTES = {
    "png_8bit_rgb": (lambda d: _png(d, "a.png", np.zeros((20, 30, 3), np.uint8)), None, 30 * 20 * 3),
    "png_16bit_rgb_decoded_to_8": (lambda d: _png(d, "a.png", np.zeros((20, 30, 3), np.uint16)), None, 30 * 20 * 3),
    "png_8bit_rgba": (lambda d: _png(d, "a.png", np.zeros((20, 30, 4), np.uint8)), None, 30 * 20 * 4),
    "png_16bit_rgba": (lambda d: _png(d, "a.png", np.zeros((20, 30, 4), np.uint16)), None, 30 * 20 * 4 * 2),
    "png_gray_alpha": (lambda d: _la(d, "a.png", np.zeros((20, 30, 2), np.uint8)), None, 30 * 20 * 4),
    # one strip of 20 rows, read as RGBA at 16 bits, besides the output
    "tiff_16bit_rgba": (_tiff_16bit_rgba, None, 30 * 20 * 4 * 2 + 30 * 20 * 4 * 2),
    "jpeg_baseline": (lambda d: _jpeg(d, "a.jpg", (32, 32)), None, 32 * 32 * 3),
    "jpeg_reduced_4": (lambda d: _jpeg(d, "a.jpg", (800, 320)), 200, 200 * 80 * 3),
    # 4:2:0: 32 x 32 luma and two 16 x 16 chroma samples, 2 bytes each, whatever the output size
    "jpeg_progressive": (lambda d: _jpeg(d, "a.jpg", (32, 32), True), None, 32 * 32 * 3 + 2 * (32 * 32 + 2 * 16 * 16)),
    "jpeg_progressive_reduced_4": (lambda d: _jpeg(d, "a.jpg", (800, 320), True), 200,
                                   200 * 80 * 3 + 2 * (800 * 320 + 2 * 400 * 160)),
}


@pytest.mark.parametrize("case", sorted(DECODE_BYTES))
def test_the_decode_is_counted_in_bytes_from_the_header(case, tmp_path, monkeypatch):
    maker, max_side, counted = DECODE_BYTES[case]
    path = maker(tmp_path)
    assert path.stat().st_size < counted
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", counted)
    image, status, _ = images.load_image(path, max_side)
    assert status is None and image.dtype == np.uint8 and image.shape[2] == 3
    monkeypatch.setattr(images, "MAX_DECODE_BYTES", counted - 1)
    assert images.load_image(path, max_side) == (None, "too_large", 1.0)


# ------------------------------------------------------------------------------ normal images, right pixels


def _pattern(h: int, w: int, channels: int, top: int) -> np.ndarray:
    y, x, c = np.mgrid[:h, :w, :channels]
    return ((x * 7 + y * 13 + c * 61) % (top + 1)).astype(np.uint16 if top > 255 else np.uint8)


def _on_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    colour, alpha = colour.astype(np.int64), alpha.astype(np.int64)[..., None]
    return (255 - ((255 - colour) * alpha + 127) // 255).astype(np.uint8)


def _to8(a: np.ndarray) -> np.ndarray:  # the high byte, as OpenCV decodes an opaque 16-bit file
    return (a >> 8).astype(np.uint8)


BGR_TO_RGB = (2, 1, 0)
NORMAL = {  # case: (array as written (BGR for OpenCV), the RGB pixels load_image gives)
    "png_8bit_rgb": (_pattern(40, 50, 3, 255), lambda a: a[..., BGR_TO_RGB]),
    "png_16bit_rgb": (_pattern(40, 50, 3, 65535), lambda a: _to8(a)[..., BGR_TO_RGB]),
    "png_8bit_rgba": (_pattern(40, 50, 4, 255), lambda a: _on_white(a[..., :3], a[..., 3])[..., BGR_TO_RGB]),
    "png_16bit_rgba": (_pattern(40, 50, 4, 65535),
                       lambda a: _on_white(_to8(a[..., :3]), _to8(a[..., 3]))[..., BGR_TO_RGB]),
    "png_gray": (_pattern(40, 50, 1, 255)[..., 0], lambda a: np.dstack([a] * 3)),
    "png_gray_alpha": (_pattern(40, 50, 2, 255), lambda a: np.repeat(_on_white(a[..., :1], a[..., 1]), 3, axis=2)),
}


@pytest.mark.parametrize("case", sorted(NORMAL))
def test_normal_images_decode_to_the_right_pixels_band_by_band(case, tmp_path, monkeypatch):
    array, expected = NORMAL[case]
    path = (_la if case == "png_gray_alpha" else _png)(tmp_path, "photo.png", array)
    monkeypatch.setattr(images, "BAND_PIXELS", 7 * 50)  # 7 rows a band: 6 bands, the last one short
    image, status, scale = images.load_image(path)
    assert status is None and scale == 1.0
    np.testing.assert_array_equal(image, expected(array))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif", ".bmp", ".gif", ".ppm", ".pgm", ".jp2", ".mpo"])
def test_every_format_sized_here_still_decodes(suffix, tmp_path):
    rgb = np.zeros((24, 32, 3), np.uint8)
    rgb[:, :16] = (220, 30, 30)
    picture = Image.fromarray(rgb).convert("L" if suffix == ".pgm" else "RGB")
    two_pictures = {"save_all": True, "append_images": [picture]} if suffix == ".mpo" else {}
    picture.save(tmp_path / f"photo{suffix}", **two_pictures)
    image, status, _ = images.load_image(tmp_path / f"photo{suffix}")
    assert status is None and image.shape == (24, 32, 3)
    away_from_the_edge = np.r_[0:12, 20:32]  # lossy formats blur the edge between the two blocks
    expected = np.asarray(picture.convert("RGB")).astype(int)
    assert np.abs(image[:, away_from_the_edge] - expected[:, away_from_the_edge]).max() <= 8


def test_other_number_types_are_stretched_over_the_whole_image_not_per_band(monkeypatch):
    monkeypatch.setattr(images, "BAND_PIXELS", 4 * 10)
    depth = np.repeat(np.linspace(-2.0, 3.0, 41, dtype=np.float32)[:, None], 10, axis=1)  # 41 rows, 11 bands
    rgb = images.to_rgb8(depth, bgr=False)
    assert rgb.shape == (41, 10, 3) and (rgb == rgb[..., :1]).all()
    np.testing.assert_array_equal(rgb[:, 0, 0], np.round(np.linspace(0, 255, 41)).astype(np.uint8))


def test_an_8bit_jpeg_decodes_to_its_pixels(tmp_path):
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :32] = (200, 40, 30)
    Image.fromarray(rgb).save(tmp_path / "photo.jpg", quality=100, subsampling=0)
    image, status, _ = images.load_image(tmp_path / "photo.jpg")
    assert status is None and image.shape == (48, 64, 3)
    assert np.abs(image.astype(int) - rgb).max() <= 3  # JPEG rounding only


# ------------------------------------------------------------------------------ models and checkpoints


def _onnx(d: Path, dims: list) -> Path:
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["input"], ["age"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("age", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = d / "model.onnx"
    onnx.save(model, path)
    return path


def _zip_bomb(d: Path) -> Path:
    path = d / "bomb.ckpt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", bytes(64 << 20))
    return path


def _stored_member_claiming_2gb(d: Path) -> Path:
    path = d / "liar.ckpt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", bytes(100))
    data = bytearray(path.read_bytes())
    entry = data.index(b"PK\x01\x02")  # the central directory's entry: uncompressed size at +24
    data[entry + 24:entry + 28] = struct.pack("<I", 0x7FFFFFFF)
    path.write_bytes(bytes(data))
    return path


def _truncated(checkpoint: Path) -> Path:
    """The real checkpoint cut in half (its zip directory, at the end, is gone)."""
    data = checkpoint.read_bytes()
    checkpoint.write_bytes(data[:len(data) // 2])
    return checkpoint


HOSTILE_MODELS = {  # case: (file maker (folder, the test's request), loader, the one-line error after the file's name)
    "onnx_input_40000": (lambda d, r: _onnx(d, ["batch", 3, 40000, 40000]), OnnxBackend,
                         "the model's input is ['batch', 3, 40000, 40000]; "
                         "expected (N, 3, S, S) with S from 8 to 1024"),
    "onnx_input_4": (lambda d, r: _onnx(d, [1, 3, 4, 4]), OnnxBackend,
                     "the model's input is [1, 3, 4, 4]; expected (N, 3, S, S) with S from 8 to 1024"),
    "onnx_not_square": (lambda d, r: _onnx(d, [1, 3, 64, 96]), OnnxBackend,
                        "the model's input is [1, 3, 64, 96]; expected (N, 3, S, S) with S from 8 to 1024"),
    "onnx_4_channels": (lambda d, r: _onnx(d, [1, 4, 64, 64]), OnnxBackend,
                        "the model's input is [1, 4, 64, 64]; expected (N, 3, S, S) with S from 8 to 1024"),
    "onnx_3d_input": (lambda d, r: _onnx(d, [1, 3, 64]), OnnxBackend,
                      "the model's input is [1, 3, 64]; expected (N, 3, S, S) with S from 8 to 1024"),
    "onnx_symbolic_side": (lambda d, r: _onnx(d, ["batch", 3, "h", "w"]), OnnxBackend,
                           "the input size is not fixed in the model (['batch', 3, 'h', 'w']); "
                           "give input_size=<pixels>, from 8 to 1024"),
    "ckpt_zip_bomb": (lambda d, r: _zip_bomb(d), read_checkpoint,
                      "not a checkpoint as torch.save writes it (its zip members unpack to 67108864 bytes, "
                      "more than the file's {size})"),
    "ckpt_stored_member_claiming_2gb": (lambda d, r: _stored_member_claiming_2gb(d), read_checkpoint,
                                        "not a checkpoint as torch.save writes it (its zip members unpack to "
                                        "2147483647 bytes, more than the file's {size})"),
    "ckpt_truncated": (lambda d, r: _truncated(r.getfixturevalue("checkpoint")), read_checkpoint,
                       "the checkpoint is truncated or damaged (its zip directory cannot be read: "
                       "File is not a zip file)"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_MODELS))
def test_a_hostile_model_or_checkpoint_is_refused_in_one_line_before_loading(case, tmp_path, request, monkeypatch):
    import onnxruntime

    maker, loader, message = HOSTILE_MODELS[case]
    path = maker(tmp_path, request)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load"))
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", lambda *a, **k: pytest.fail("run"))
    with pytest.raises(ConfigError) as refused:
        loader(path)
    assert str(refused.value) == f"{path}: " + message.format(size=path.stat().st_size)


def test_the_lab_s_own_checkpoint_and_onnx_export_pass_the_checks(tmp_path, checkpoint):
    from agelab.checkpoint import load_module
    from agelab.exporting.formats import export_onnx

    assert set(read_checkpoint(checkpoint)) >= {"state_dict"}
    module, _ = load_module(checkpoint)
    backend = OnnxBackend(export_onnx(module, tmp_path / "model.onnx", 64))
    assert backend.input_size == 64


def test_a_symbolic_input_takes_the_size_given_within_the_same_range(tmp_path):
    from agelab.inference.onnx_session import image_side

    path = _onnx(tmp_path, ["batch", 3, "h", "w"])
    assert OnnxBackend(path, input_size=96).input_size == 96
    with pytest.raises(ConfigError, match=r"^input_size=40000 for .*model.onnx: expected \(N, 3, S, S\) with S from"):
        OnnxBackend(path, input_size=40000)
    assert image_side(path, ["batch", 3, 1024, 1024]) == 1024 and image_side(path, [1, 3, 16, 16]) == 16


@pytest.mark.parametrize("model", ["onnx", "ckpt"])
def test_predict_ends_in_one_line_and_exit_2(model, tmp_path, checkpoint):
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 64)).save(photo)
    path = _onnx(tmp_path, ["batch", 3, 40000, 40000]) if model == "onnx" else _truncated(checkpoint)
    result = subprocess.run([sys.executable, "-m", "agelab.predict", f"{model}={path}", str(photo),
                             f"paths.root_dir={tmp_path}", f"out_dir={tmp_path / 'out'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path}: ") and "Traceback" not in result.stderr
    assert ("40000" in last) if model == "onnx" else ("truncated or damaged" in last)


def test_a_model_s_crop_settings_cannot_ask_for_huge_crops():
    """An ONNX file's agelab.cropper metadata sets the crop side: 40000 would make each crop 4.8 GB."""
    from agelab.data.faces import FaceCropper

    with pytest.raises(ConfigError, match="^output_size must be an integer from 1 to 2048, got 40000$"):
        FaceCropper(output_size=40000)
    assert FaceCropper(output_size=2048).output_size == 2048
