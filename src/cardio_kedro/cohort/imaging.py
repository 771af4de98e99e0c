"""Image decoding: the one code path from an image file to the model's uint8 grayscale input."""

from __future__ import annotations

import copy
import io
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

logger = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
JPEG_SIGNATURE = b"\xff\xd8\xff"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what a cohort folder holds
DICOM_SUFFIXES = (".dcm", ".dicom")  # also scored by the inference pipeline; files without a suffix are sniffed
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
    """``check_image_file`` that never raises: the file's size and mtime, or the ``ImageError`` that says why not.

    A DICOM file is checked when it is decoded (its header says what it holds).
    """
    try:
        if not is_dicom_path(path):
            check_image_file(path)
    except ImageError as exc:
        return -1, -1, exc
    stat = os.stat(path)
    return stat.st_size, stat.st_mtime_ns, None


def to_gray8(image: np.ndarray) -> np.ndarray:
    """Convert a decoded image (8/16-bit, gray, BGR or BGRA) to 8-bit grayscale.

    A 16-bit PNG keeps its top 8 used bits: the bit depth is the one its brightest pixel needs (at
    least 8), so a 12-bit radiograph in a 16-bit PNG (PadChest's) keeps its contrast instead of
    becoming 16 grey levels.
    """
    if image.dtype == np.uint16:
        used_bits = max(8, int(image.max()).bit_length())
        image = (image >> (used_bits - 8)).astype(np.uint8)
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
    """Decode encoded PNG, JPEG or DICOM bytes to a ``size`` x ``size`` uint8 grayscale array.

    The header is checked first (``check_image_bytes``): a decompression bomb is refused before
    any pixel is allocated.
    """
    if is_dicom_bytes(data):
        return resize_gray(decode_dicom(data).pixels, size)
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
        if is_dicom_path(path):
            pixels, shape = load_dicom(path, size)
        else:
            pixels, shape = load_gray(path, size)
        return pixels, shape, None
    except ImageError as exc:
        return None, (0, 0), exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data-quality entry
        return None, (0, 0), ImageError("corrupt", f"{path}: {exc}")


def load_dicom(path: str, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode a DICOM file (``decode_dicom``) and resize it; returns the pixels and the source ``(height, width)``."""
    image = decode_dicom(path)
    if image.note:
        logger.warning("%s: %s", path, image.note)
    return resize_gray(image.pixels, size), image.pixels.shape


# --- DICOM ---------------------------------------------------------------------------------------
# DICOM decoding: from a radiograph's stored values to the 8-bit grey levels the model reads.
#
# The display pipeline of PS3.3 C.11 in pydicom's own functions, in order:
#
# 1. the pixel data through pydicom's handlers (uncompressed, RLE, JPEG lossless and baseline,
#    JPEG-LS, JPEG 2000 through the ``pylibjpeg`` plugins); of a multi-frame file, the first frame;
# 2. the modality LUT (``RescaleSlope``/``RescaleIntercept`` or a Modality LUT Sequence:
#    ``apply_modality_lut``);
# 3. the VOI LUT the modality chose (a VOI LUT Sequence, or the first ``WindowCenter``/``WindowWidth``
#    pair with its ``VOILUTFunction``: ``apply_voi_lut``), scaled from its output range to 0-255; where
#    the header has none, a robust window from the 0.5th to the 99.5th percentile of the image, so that
#    a few burnt-in bright pixels (text, a marker) do not squash the anatomy into a few grey levels;
# 4. ``MONOCHROME1`` (bone dark) inverted, so that every image reaches the model bone bright.
#
# A file that is not a usable radiograph (no pixel data, a structured report, a segmentation, a
# colour secondary capture) raises ``ImageError`` with the reason; decoding a cohort turns it into a
# data-quality row.

DICM_MAGIC = b"DICM"  # bytes 128-131 of a DICOM Part 10 file
PERCENTILE_WINDOW = (0.5, 99.5)  # the window where the header gives none
# Storage classes that are never a radiograph's pixels (PS3.4 B.5): documents, reports, overlays.
NOT_IMAGE_MODALITIES = {"SR", "SEG", "PR", "KO", "DOC", "RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "ECG", "AU"}
# Modalities whose images are not projection radiographs of the chest (PS3.3 C.7.3.1.1.1): cross-sections,
# ultrasound, nuclear medicine, mammography, angiography and fluoroscopy, dental, photographs. A chest film is CR
# or DX (older systems: RG, DR); a header without a Modality, or OT, is left to the quality guard.
NOT_RADIOGRAPH_MODALITIES = {
    "CT", "MR", "US", "NM", "PT", "MG", "XA", "RF", "IO", "PX", "ES", "OP", "OPT", "OCT", "IVUS", "SM", "XC", "GM",
    "BMD", "DG", "TG", "RTIMAGE", "OPM", "OAM", "LS", "HD",
}  # fmt: skip
HEADER_FIELDS = ("PatientID", "StudyDate", "ViewPosition", "PatientSex", "PatientAge", "SOPInstanceUID", "Modality")
# a few elements every DICOM image has; a file parsed with ``force`` that has none of them is not DICOM
DICOM_IMAGE_ELEMENTS = ("SOPClassUID", "SOPInstanceUID", "Modality", "Rows", "Columns", "PixelData", "StudyDate")


@dataclass(frozen=True)
class DicomImage:
    """A decoded radiograph: 8-bit grey levels (bone bright), header fields, and what was done."""

    pixels: np.ndarray
    header: dict[str, str]
    window: str  # "voi_lut", "window" or "percentile"
    note: str  # empty, or what the user should know (the first of N frames)


def read_dataset(source: str | Path | bytes):
    """Parse a DICOM file or its bytes with pydicom: with ``force``, so that a file without the Part 10 preamble
    and file meta (ACR-NEMA style, as older CR systems and some PACS exports write it) is read too, its transfer
    syntax inferred from how it parsed; a file that is no DICOM at all is named as such."""
    name = "the DICOM data" if isinstance(source, bytes) else str(source)
    try:
        ds = pydicom.dcmread(io.BytesIO(source) if isinstance(source, bytes) else source, force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a data-quality entry
        raise ImageError("corrupt", f"{name}: not a readable DICOM file ({exc})") from None
    if not _has_dicom_elements(ds):
        if getattr(ds, "preamble", None) is not None:  # the DICM magic, then nothing readable
            raise ImageError("corrupt", f"{name}: a DICOM preamble but none of the elements of a DICOM image")
        raise ImageError("not_dicom", f"{name}: not a DICOM file (none of the elements every DICOM image has)")
    _infer_transfer_syntax(ds)
    return ds


def _has_dicom_elements(ds) -> bool:
    """Whether a dataset parsed with ``force`` holds any element every DICOM image has (else it is no DICOM)."""
    return any(element in ds for element in DICOM_IMAGE_ELEMENTS)


def _infer_transfer_syntax(ds) -> None:
    """Give a dataset read without file meta (or without its Transfer Syntax UID) the syntax it parsed with:
    implicit or explicit VR, little or big endian (such files are never compressed)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True  # pydicom's own default for a raw dataset
    syntax = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax


def header_fields(ds) -> dict[str, str]:
    """The cohort columns a DICOM header holds (empty strings where the header has none)."""
    return {field: str(ds.get(field, "") or "").strip() for field in HEADER_FIELDS}


def read_header(source: str | Path | bytes) -> dict[str, str]:
    """A DICOM file's cohort fields (``header_fields``) without its pixels; ``error`` says why none could be read."""
    try:
        data = io.BytesIO(source) if isinstance(source, bytes) else source
        ds = pydicom.dcmread(data, force=True, stop_before_pixels=True)
        if not _has_dicom_elements(ds):
            return {**dict.fromkeys(HEADER_FIELDS, ""), "error": "not a DICOM file"}
        return {**header_fields(ds), "error": ""}
    except Exception as exc:  # noqa: BLE001 - an unreadable file is a data-quality entry
        return {**dict.fromkeys(HEADER_FIELDS, ""), "error": f"not a readable DICOM file ({exc})"}


def _reject_non_radiographs(ds, name: str) -> None:
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in NOT_IMAGE_MODALITIES:
        raise ImageError("not_radiograph", f"{name}: Modality {modality} holds no radiograph")
    if modality in NOT_RADIOGRAPH_MODALITIES:
        raise ImageError(
            "not_radiograph", f"{name}: Modality {modality} is not a projection radiograph (a chest film is CR or DX)"
        )
    if "PixelData" not in ds:
        kinds = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f"{kinds[0]} only" if kinds else "no Pixel Data element"
        raise ImageError("no_pixels", f"{name}: {what}")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("SamplesPerPixel", 1)) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(
            "not_radiograph",
            f"{name}: {photometric} with {ds.get('SamplesPerPixel', 1)} samples per pixel is a colour image "
            "(a secondary capture or a photograph), not a radiograph's grey levels",
        )


def _to_gray8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scaled = (values.astype(np.float64) - lo) / max(hi - lo, 1e-6) * 255.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _voi_lut_holder(ds) -> Dataset:
    """The first VOI LUT of ``ds`` alone, with an 8-bit LUT declared 16-bit.

    pydicom 3.0's ``apply_voi_lut`` indexes an 8-bit LUT with an 8-bit index array, so the input
    values above 255 of a 12-bit image wrap around; the same entries read as 16-bit map every input.
    """
    item = copy.deepcopy(ds.VOILUTSequence[0])  # the LUT only, never the pixel data
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    if bits == 8:
        item.LUTDescriptor = [entries, first, 16]
    holder = Dataset()
    holder.VOILUTSequence = [item]
    if getattr(ds, "file_meta", None) is not None and "TransferSyntaxUID" in ds.file_meta:
        holder.file_meta = ds.file_meta  # the endianness of an OW LUT
    else:
        holder.set_original_encoding(*ds.original_encoding[:2])
    return holder


def decode_dataset(ds, name: str = "the DICOM data") -> DicomImage:
    """Decode a parsed DICOM dataset to 8-bit grey levels, bone bright (see the module docstring)."""
    _reject_non_radiographs(ds, name)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if max(rows, columns) > MAX_SIDE:  # before any pixel is decoded: no decompression bombs
        raise ImageError("too_large", f"{name}: {columns}x{rows} exceeds {MAX_SIDE} px")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - a missing handler or broken pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        what = f" ({syntax.name})" if syntax is not None else ""
        raise ImageError("corrupt", f"{name}: the pixel data{what} cannot be decoded: {exc}") from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    note = ""
    if frames > 1:
        stored, note = stored[0], f"first of {frames} frames"
    if stored.ndim != 2:
        raise ImageError("not_radiograph", f"{name}: pixel array of shape {stored.shape} is not one grey image")
    values = apply_modality_lut(stored, ds)
    if "VOILUTSequence" in ds:
        lut_holder = _voi_lut_holder(ds)
        windowed = apply_voi_lut(values.astype(np.int64), lut_holder, index=0, prefer_lut=True)
        entries, first, _ = (int(v) for v in lut_holder.VOILUTSequence[0].LUTDescriptor)
        lut = apply_voi_lut(np.arange(first, first + (entries or 65536)), lut_holder, index=0, prefer_lut=True)
        gray, window = _to_gray8(windowed, float(lut.min()), float(lut.max())), "voi_lut"
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        windowed = apply_voi_lut(values, ds, index=0, prefer_lut=False)
        lo, hi = apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0, prefer_lut=False)
        gray, window = _to_gray8(windowed, float(lo), float(hi)), "window"
    else:
        lo, hi = np.percentile(values, PERCENTILE_WINDOW)
        gray, window = _to_gray8(np.clip(values, lo, hi), float(lo), float(hi)), "percentile"
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        gray = 255 - gray
    return DicomImage(gray, header_fields(ds), window, note)


def decode_dicom(source: str | Path | bytes) -> DicomImage:
    """Read and decode one DICOM file (a path) or its bytes (an HTTP request)."""
    name = "the DICOM data" if isinstance(source, bytes) else str(source)
    return decode_dataset(read_dataset(source), name)


def is_dicom_path(path: str | Path) -> bool:
    """Whether a file is DICOM: a ``.dcm`` name, or any name but PNG/JPEG with the ``DICM`` magic
    (DICOMDIR exports name their files without an extension)."""
    name = str(path).lower()
    if name.endswith(DICOM_SUFFIXES):
        return True
    if name.endswith(IMAGE_SUFFIXES):
        return False
    try:
        with open(path, "rb") as fh:
            return is_dicom_bytes(fh.read(132))
    except OSError:
        return False


def is_dicom_bytes(data: bytes) -> bool:
    """Whether ``data`` is a DICOM Part 10 file (the ``DICM`` magic after the 128-byte preamble)."""
    return data[128:132] == DICM_MAGIC
