"""Image checks and decoding: every PNG flavour to 8-bit gray, every bad file to a clear reason."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from cardio_kedro.cohort.imaging import ImageError, check_image_file, decode_bytes, load_gray


def _png(path, image):
    assert cv2.imwrite(str(path), image)
    return path


def test_8bit_16bit_and_rgba_pngs_become_8bit_gray(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    wide = gray.astype(np.uint16) * 257
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    for name, img in (("g8", gray), ("g16", wide), ("rgba", rgba)):
        out, shape = load_gray(_png(tmp_path / f"{name}.png", img), 32)
        assert out.dtype == np.uint8 and out.shape == (32, 32) and shape == (64, 64)
        assert abs(int(out[0, -1]) - 250) <= 4 and out[0, 0] <= 4, name


def test_jpeg_bytes_decode():
    ok, buf = cv2.imencode(".jpg", np.full((40, 40), 128, np.uint8))
    assert ok
    assert decode_bytes(buf.tobytes(), 16).shape == (16, 16)


def test_missing_truncated_non_image_and_oversized(tmp_path):
    png = _png(tmp_path / "ok.png", np.zeros((20, 20), np.uint8))
    assert check_image_file(png) == (20, 20)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[:-20])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    header = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    )
    huge = tmp_path / "bomb.png"
    huge.write_bytes(header + struct.pack(">I", zlib.crc32(header[12:])) + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    for path, reason in (
        (tmp_path / "absent.png", "missing"),
        (truncated, "truncated"),
        (text, "not_an_image"),
        (huge, "too_large"),
    ):
        with pytest.raises(ImageError) as err:
            check_image_file(path)
        assert err.value.reason == reason
        assert str(path.name) in str(err.value)
