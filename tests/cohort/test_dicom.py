"""DICOM decoding on real pixels: NIH PNGs written as the DICOMs a PACS sends, decoded back.

Every variant carries the display pipeline that makes its stored values the PNG's grey levels
again (a rescale, a window or a VOI LUT, MONOCHROME1's inversion); after decoding, the pixels must
equal the PNG's within one grey level (rounding of the window arithmetic) and a model must give
the same probability within 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEG2000Lossless, RLELossless, SecondaryCaptureImageStorage, generate_uid

from cardio_kedro.cohort.imaging import (
    ImageError,
    decode_bytes,
    decode_dataset,
    decode_dicom,
    is_dicom_path,
    load_gray,
    read_dataset,
    read_header,
    resize_gray,
    try_load_gray,
)

PIXEL_TOLERANCE = 1  # grey levels: the window arithmetic in float64, rounded once
PROBABILITY_TOLERANCE = 1e-4
SIDE = 256  # the shared 1024 px PNGs shrunk once, so that encoding stays fast


def _dicom(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 8, **header) -> Dataset:
    """A DX-like dataset holding ``pixels`` (first axis frames where 3-D) and the given header elements."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.PatientID, ds.ViewPosition, ds.PatientSex, ds.PatientAge = "DX", "P042", "PA", "F", "061Y"
    ds.StudyDate = "20261205"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits_stored)
    for key, value in header.items():
        setattr(ds, key, value)
    return ds


def _save(ds: Dataset, path: Path, syntax=None) -> Path:
    if syntax is not None:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def real_gray(shared_nih) -> np.ndarray:
    """A real NIH radiograph (gray, 8-bit), as the PNG path decodes it, at ``SIDE`` px."""
    png = sorted((shared_nih / "sample").glob("images_*/images/*.png"))[0]
    return load_gray(png, SIDE)[0]


def _variants(g: np.ndarray) -> dict[str, Dataset]:
    """The same grey levels ``g`` stored as the encodings and display pipelines DICOMs really use."""
    g16 = g.astype(np.int64)
    # 12-bit stored values with a rescale, windowed back onto the PNG's range (LINEAR_EXACT: exact edges)
    stored12 = (g16 * 16 + 8).astype(np.uint16)
    lower, upper = 2.0 * 8 - 1000, 2.0 * (255 * 16 + 8) - 1000
    window12 = dict(
        RescaleSlope=2,
        RescaleIntercept=-1000,
        WindowCenter=(lower + upper) / 2,
        WindowWidth=upper - lower,
        VOILUTFunction="LINEAR_EXACT",
    )
    # 16-bit signed and MONOCHROME1: high stored values are dark
    stored16 = (5000 - 100 * g16).astype(np.int16)
    window16 = dict(WindowCenter=(5000 - 25500 + 5000) / 2, WindowWidth=25500, VOILUTFunction="LINEAR_EXACT")
    # a VOI LUT Sequence (12 bit in, 8 bit out) in place of a window
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 8]
    lut.add_new(0x00283006, "US", (np.arange(4096) // 16).tolist())  # LUT Data, US as most modalities write it
    identity8 = dict(WindowCenter=128, WindowWidth=256)  # LINEAR: [0, 255] onto [0, 255]
    return {
        "MONOCHROME2 8-bit": _dicom(g, **identity8),
        "MONOCHROME1 8-bit": _dicom(255 - g, "MONOCHROME1", **identity8),
        "12-bit rescale + window": _dicom(stored12, bits_stored=12, **window12),
        "16-bit signed MONOCHROME1": _dicom(stored16, "MONOCHROME1", bits_stored=16, **window16),
        "12-bit VOI LUT": _dicom((g16 * 16).astype(np.uint16), bits_stored=12, VOILUTSequence=[lut]),
    }


def test_every_variant_decodes_to_the_png_pixels(tmp_path, real_gray):
    compressed = {"RLE": RLELossless, "JPEG 2000 lossless": JPEG2000Lossless}
    written = {}
    for name, ds in _variants(real_gray).items():
        written[name] = _save(ds, tmp_path / f"{len(written)}.dcm")
        if name in ("12-bit rescale + window", "16-bit signed MONOCHROME1"):
            for kind, syntax in compressed.items():
                again = _variants(real_gray)[name]
                written[f"{name}, {kind}"] = _save(again, tmp_path / f"{len(written)}.dcm", syntax)
    assert len(written) == 9
    for name, path in written.items():
        image = decode_dicom(path)
        diff = np.abs(image.pixels.astype(int) - real_gray.astype(int))
        assert image.pixels.dtype == np.uint8 and image.pixels.shape == real_gray.shape, name
        assert diff.max() <= PIXEL_TOLERANCE, f"{name}: max difference {diff.max()}"
        assert image.window == ("voi_lut" if "LUT" in name else "window"), name
        assert image.header["PatientID"] == "P042" and image.header["ViewPosition"] == "PA"


def test_an_8_bit_voi_lut_maps_every_12_bit_input(tmp_path):
    """pydicom 3.0 indexes an 8-bit VOI LUT with 8-bit indices (inputs above 255 wrap): not here."""
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (4, 1))
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 8]
    lut.add_new(0x00283006, "US", (np.arange(4096) // 16).tolist())
    image = decode_dicom(_save(_dicom(ramp, bits_stored=12, VOILUTSequence=[lut]), tmp_path / "lut.dcm"))
    np.testing.assert_array_equal(image.pixels[0], np.arange(256))


def test_the_same_probability_from_the_model(tmp_path, real_gray):
    from cardio_kedro.modeling import build_model
    from tests.helpers import TINY_MODEL

    model = build_model(32, **TINY_MODEL)
    png = resize_gray(real_gray, 32)
    paths = [_save(ds, tmp_path / f"{i}.dcm") for i, ds in enumerate(_variants(real_gray).values())]
    pixels = [png] + [try_load_gray(str(p), 32)[0] for p in paths]
    probabilities = model.predict(np.stack(pixels)[..., None], verbose=0).ravel()
    assert np.ptp(model.predict(np.stack([png, 255 - png])[..., None], verbose=0)) > 0  # the model can tell
    np.testing.assert_allclose(probabilities[1:], probabilities[0], atol=PROBABILITY_TOLERANCE)


def test_an_inverted_monochrome1_image_reaches_the_model_bone_bright(tmp_path, real_gray):
    raw = _dicom(255 - real_gray, "MONOCHROME1", WindowCenter=128, WindowWidth=256)
    decoded = decode_dicom(_save(raw, tmp_path / "m1.dcm")).pixels
    as_before = 255 - real_gray  # what min-max scaling of the stored values used to give
    assert np.corrcoef(decoded.ravel(), real_gray.ravel())[0, 1] > 0.999
    assert np.corrcoef(decoded.ravel(), as_before.ravel())[0, 1] < -0.999


def test_without_a_window_burnt_in_text_does_not_squash_the_image(tmp_path, real_gray):
    stored = (real_gray.astype(np.uint16) * 4).copy()  # 0..1020 of a 12-bit range
    stored[10:14, 20:80] = 4095  # a burnt-in marker: 240 of 65,536 pixels at full scale
    decoded = decode_dicom(_save(_dicom(stored, bits_stored=12), tmp_path / "marker.dcm"))
    body = np.ones_like(real_gray, bool)
    body[10:14, 20:80] = False
    assert decoded.window == "percentile"
    assert np.unique(decoded.pixels[body]).size > 150  # min-max scaling leaves 64 grey levels here
    assert np.corrcoef(decoded.pixels[body].astype(float), real_gray[body].astype(float))[0, 1] > 0.99


def test_a_multi_frame_file_gives_its_first_frame_and_says_so(tmp_path, real_gray, caplog):
    frames = np.stack([real_gray, 255 - real_gray])
    path = _save(_dicom(frames, WindowCenter=128, WindowWidth=256), tmp_path / "frames.dcm")
    image = decode_dicom(path)
    assert np.abs(image.pixels.astype(int) - real_gray).max() <= PIXEL_TOLERANCE
    assert image.note == "first of 2 frames"
    with caplog.at_level("WARNING", logger="cardio_kedro.cohort.imaging"):
        assert try_load_gray(str(path), 32)[2] is None
    assert f"{path}: first of 2 frames" in caplog.text  # the run's log says which file


def test_a_file_without_an_extension_and_dicom_bytes_are_read(tmp_path, real_gray):
    path = _save(_dicom(real_gray, WindowCenter=128, WindowWidth=256), tmp_path / "1.2.840.99.1")
    (tmp_path / "scan.png").write_bytes(b"not read")
    assert is_dicom_path(path) and not is_dicom_path(tmp_path / "scan.png")
    pixels, shape, error = try_load_gray(str(path), 64)
    assert error is None and shape == real_gray.shape
    np.testing.assert_array_equal(decode_bytes(path.read_bytes(), 64), pixels)  # the HTTP service's path


def _as_radiograph(name: str) -> np.ndarray:
    """A pydicom test file's pixels as the decoder gives them, its Modality (MR) read as DX."""
    ds = read_dataset(get_testdata_file(name))
    ds.Modality = "DX"
    return decode_dataset(ds).pixels


def test_pydicom_test_files_decode_alike_across_transfer_syntaxes():
    reference = _as_radiograph("MR_small.dcm")
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(_as_radiograph(name), reference, err_msg=name)
    assert np.unique(reference).size > 100


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_cross_sections_are_refused_by_their_modality_before_decoding(name, monkeypatch):
    import pydicom.dataset

    decoded = []
    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(lambda ds: decoded.append(1)))
    with pytest.raises(ImageError, match="is not a projection radiograph") as caught:
        decode_dicom(get_testdata_file(name))
    assert caught.value.reason == "not_radiograph" and not decoded  # no pixel was decoded
    assert read_header(get_testdata_file(name))["Modality"] in ("CT", "MR")


@pytest.mark.parametrize(("implicit", "little"), [(True, True), (False, True), (False, False)])
def test_a_file_without_preamble_and_file_meta_decodes_as_the_part_10_file(tmp_path, real_gray, implicit, little):
    from pydicom import dcmwrite

    ds = _dicom(real_gray, bits_stored=8)
    reference = decode_dicom(_save(ds, tmp_path / "part10.dcm")).pixels
    del ds.file_meta
    raw = tmp_path / "acr_nema.dcm"
    dcmwrite(raw, ds, implicit_vr=implicit, little_endian=little, enforce_file_format=False)
    assert raw.read_bytes()[128:132] != b"DICM"  # no preamble, no file meta: as older CR systems write
    np.testing.assert_array_equal(decode_dicom(raw).pixels, reference)
    assert read_header(raw)["PatientID"] == "P042" and read_header(raw)["Modality"] == "DX"


def test_pydicom_files_without_file_meta_are_read_not_called_corrupt():
    for name in ("ExplVR_LitEndNoMeta.dcm", "ExplVR_BigEndNoMeta.dcm"):  # RT plans, read and then refused as such
        with pytest.raises(ImageError, match="Modality RTPLAN holds no radiograph"):
            decode_dicom(get_testdata_file(name))


def test_a_web_page_saved_as_dcm_is_named_not_a_dicom_file(tmp_path):
    page = tmp_path / "study.dcm"
    page.write_text("<!DOCTYPE html><html><head><title>PACS viewer</title></head><body>Log in</body></html>")
    pixels, _, error = try_load_gray(str(page), 32)
    assert pixels is None and error.reason == "not_dicom" and "not a DICOM file" in error.detail
    assert read_header(str(page))["error"] == "not a DICOM file"


@pytest.mark.parametrize(
    ("name", "reason"),
    [("test-SR.dcm", "not_radiograph"), ("rtdose.dcm", "not_radiograph"), ("SC_rgb_small_odd.dcm", "not_radiograph")],
)
def test_files_that_are_not_radiographs_become_data_quality_rows(name, reason):
    pixels, _, error = try_load_gray(get_testdata_file(name), 32)
    assert pixels is None and error.reason == reason and name in error.detail


def test_no_pixel_data_and_a_broken_file_are_rows_never_crashes(tmp_path):
    ds = _dicom(np.zeros((8, 8), np.uint8))
    del ds.PixelData
    _save(ds, tmp_path / "empty.dcm")
    (tmp_path / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 7)
    assert try_load_gray(str(tmp_path / "empty.dcm"), 32)[2].reason == "no_pixels"
    assert try_load_gray(str(tmp_path / "broken.dcm"), 32)[2].reason in ("corrupt", "no_pixels")
    with pytest.raises(ImageError, match="no Pixel Data"):
        decode_dicom(tmp_path / "empty.dcm")


def test_an_oversized_dicom_is_refused_before_decoding(tmp_path):
    ds = _dicom(np.zeros((8, 8), np.uint8))
    ds.Rows = 9000  # the header lies: no 9000-row array is ever allocated
    with pytest.raises(ImageError, match="exceeds"):
        decode_dicom(_save(ds, tmp_path / "bomb.dcm"))


def test_secondary_capture_of_a_report_is_refused(tmp_path):
    report = np.full((64, 64, 3), 255, np.uint8)
    cv2.putText(report, "REPORT", (2, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, generate_uid(), "OT"
    ds.set_pixel_data(report, photometric_interpretation="RGB", bits_stored=8)
    path = _save(ds, tmp_path / "report.dcm")
    assert pydicom.dcmread(path).SamplesPerPixel == 3
    with pytest.raises(ImageError, match="colour image"):
        decode_dicom(path)


def test_a_dicom_in_object_storage_decodes_as_the_local_file(tmp_path, real_gray):
    import fsspec

    from cardio_kedro.cohort.storage import try_load_gray_url

    path = _save(_dicom(real_gray, "MONOCHROME1", WindowCenter=128, WindowWidth=256), tmp_path / "s.dcm")
    fsspec.filesystem("memory").pipe_file("/cohort/1.2.3", path.read_bytes())  # a store's key, no suffix
    remote = try_load_gray_url("memory://cohort/1.2.3", 64)
    local = try_load_gray(str(path), 64)
    assert remote[2] is None and remote[1] == local[1]
    np.testing.assert_array_equal(remote[0], local[0])
