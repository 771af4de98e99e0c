"""Image decoding: the one code path from an image file to the model's uint8 grayscale input."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import cv2
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
JPEG_SIGNATURE = b"\xff\xd8\xff"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what a cohort folder holds
DICOM_SUFFIXES = (".dcm",)  # also scored by the inference pipeline (with pydicom installed)
# Far larger than any radiograph (NIH originals are about 3000 px): refuse decompression bombs.
MAX_SIDE = 8192


class ImageError(ValueError):
    """An image file that cannot be used: ``reason`` is a short machine-readable cause, ``detail`` says more."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail

    def __reduce__(self):  # crosses process boundaries intact (decoding runs in worker processes)
        return ImageError, (self.reason, self.detail)


def _check_png(head: bytes, tail: bytes, name: str) -> tuple[int, int]:
    """Size from a PNG's IHDR chunk; a missing IHDR or IEND, or a side over ``MAX_SIDE``, is an ``ImageError``."""
    if head[12:16] != b"IHDR" or len(head) < 24:
        raise ImageError("corrupt", f"{name}: no IHDR chunk")
    width, height = struct.unpack(">II", head[16:24])
    if tail[-8:] != PNG_END:
        raise ImageError("truncated", f"{name}: PNG has no IEND chunk")
    if max(width, height) > MAX_SIDE:
        raise ImageError("too_large", f"{name}: {width}x{height} exceeds {MAX_SIDE} px")
    return width, height


def _check_jpeg(source, name: str) -> tuple[int, int]:
    """Size from a JPEG header (a path or a file object), read without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(source) as im:  # reads the header only
            width, height = im.size
    except Exception as exc:  # noqa: BLE001 - PIL refuses bombs and broken headers
        raise ImageError("corrupt", f"{name}: {exc}") from None
    if max(width, height) > MAX_SIDE:
        raise ImageError("too_large", f"{name}: {width}x{height} exceeds {MAX_SIDE} px")
    return width, height


def check_image_file(path: str | Path) -> tuple[int, int]:
    """Cheap structural check of a PNG or JPEG file without decoding it.

    Reads the header and the last bytes only: a missing file, a non-image named ``.png``, a
    truncated PNG (no ``IEND`` chunk) and oversized images are rejected with an ``ImageError``.
    Returns ``(width, height)``.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(24)
            fh.seek(max(0, size - 12))
            tail = fh.read(12)
    except FileNotFoundError:
        raise ImageError("missing", str(path)) from None
    except OSError as exc:
        raise ImageError("unreadable", f"{path}: {exc}") from None
    if head.startswith(PNG_SIGNATURE):
        return _check_png(head, tail, str(path))
    if head.startswith(JPEG_SIGNATURE):
        return _check_jpeg(path, str(path))
    raise ImageError("not_an_image", f"{path}: neither PNG nor JPEG")


def check_image_bytes(data: bytes, name: str = "the image") -> tuple[int, int]:
    """``check_image_file`` for encoded bytes held in memory (an HTTP request): the header, never the pixels."""
    if data.startswith(PNG_SIGNATURE):
        return _check_png(data[:24], data[-12:], name)
    if data.startswith(JPEG_SIGNATURE):
        return _check_jpeg(io.BytesIO(data), name)
    raise ImageError("not_an_image", f"{name}: neither PNG nor JPEG")


def check_file(path: str) -> tuple[int, int, ImageError | None]:
    """``check_image_file`` that never raises: the file's size and mtime, or the ``ImageError`` that says why not."""
    try:
        check_image_file(path)
    except ImageError as exc:
        return -1, -1, exc
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, None


def to_gray8(image: np.ndarray) -> np.ndarray:
    """Convert a decoded image (8/16-bit, gray, BGR or BGRA) to 8-bit grayscale."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError("unsupported", f"pixel type {image.dtype}")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def resize_gray(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a grayscale image to ``size`` x ``size`` (area interpolation when shrinking)."""
    if image.shape == (size, size):
        return image
    shrink = image.shape[0] > size or image.shape[1] > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def decode_bytes(data: bytes, size: int) -> np.ndarray:
    """Decode encoded PNG/JPEG bytes to a ``size`` x ``size`` uint8 grayscale array.

    The header is checked first (``check_image_bytes``): a decompression bomb is refused before
    any pixel is allocated.
    """
    check_image_bytes(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError("corrupt", "the image data could not be decoded")
    return resize_gray(to_gray8(image), size)


def load_gray(path: str | Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Check, decode and resize one image file; returns the pixels and the source ``(height, width)``."""
    check_image_file(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError("corrupt", f"{path}: could not be decoded")
    gray = to_gray8(image)
    return resize_gray(gray, size), gray.shape[:2]


def try_load_gray(path: str, size: int) -> tuple[np.ndarray | None, tuple[int, int], ImageError | None]:
    """``load_gray`` that never raises: the pixels and source shape, or the ``ImageError`` that says why not.

    Decoding a cohort or scoring a folder must not stop at one bad file.
    """
    try:
        if path.lower().endswith(DICOM_SUFFIXES):
            pixels, shape = load_dicom(path, size)
        else:
            pixels, shape = load_gray(path, size)
        return pixels, shape, None
    except ImageError as exc:
        return None, (0, 0), exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data-quality entry
        return None, (0, 0), ImageError("corrupt", f"{path}: {exc}")


def load_dicom(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a DICOM file (min-max windowed to 8 bit) and resize it; needs pydicom."""
    try:
        import pydicom
    except ImportError:
        raise ImageError("unsupported", "DICOM needs pydicom (pip install pydicom)") from None
    pixels = pydicom.dcmread(path).pixel_array.astype(np.float32)
    lo, hi = float(pixels.min()), float(pixels.max())
    gray = ((pixels - lo) / max(hi - lo, 1e-6) * 255).astype(np.uint8)
    return resize_gray(gray, size), gray.shape[:2]
