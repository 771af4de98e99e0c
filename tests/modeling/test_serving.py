"""The HTTP service's pyfunc, without a server: limits and bad input are 400s that name the row and reason."""

import base64
import io
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from cardio_kedro.cohort.quality import QualityGuard
from cardio_kedro.modeling import build_model, calibrate
from cardio_kedro.modeling.serving import XrayClassifierService
from tests.helpers import TINY_MODEL


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    path = tmp_path_factory.mktemp("service") / "classifier.keras"
    calibrate(build_model(32, **TINY_MODEL), 1.0, 0.0, 0.5).save(path)
    svc = XrayClassifierService()
    context = SimpleNamespace(
        artifacts={"keras_model": str(path)}, model_config={"max_images_per_request": 3, "max_request_mib": 0.01}
    )
    svc.load_context(context)
    return svc


def test_a_service_without_its_limits_refuses_to_load(tmp_path):
    path = tmp_path / "classifier.keras"
    calibrate(build_model(32, **TINY_MODEL), 1.0, 0.0, 0.5).save(path)
    for config in (None, {"max_images_per_request": 3}):
        with pytest.raises(ValueError, match=r"without its limits .*max_request_mib.*register it again"):
            XrayClassifierService().load_context(
                SimpleNamespace(artifacts={"keras_model": str(path)}, model_config=config)
            )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _png(side: int) -> bytes:
    return cv2.imencode(".png", np.full((side, side), 128, np.uint8))[1].tobytes()


def _refused(service, images: list[str]) -> str:
    with pytest.raises(MlflowException) as err:
        service.predict(None, pd.DataFrame({"image": images}))
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    return err.value.message


def test_valid_images_get_a_probability_and_a_label(service):
    answer = service.predict(None, pd.DataFrame({"image": [_b64(_png(40)), _b64(_png(20))]}))
    assert list(answer.columns) == ["probability", "label", "quality"] and answer["probability"].between(0, 1).all()
    assert (answer["quality"] == "unchecked").all()  # a model saved without a quality guard


def test_a_saved_quality_guard_flags_images_and_withholds_their_label(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    template = np.cos((xx - 15.5) / 5.0) + 0.02 * yy  # a bright vertical band: the frontal layout, roughly
    template = (template - template.mean()) / template.std()
    guard = QualityGuard(template, 0.5, 16, 2.0, 0.5)
    path = tmp_path / "classifier.keras"
    calibrate(build_model(32, **TINY_MODEL), 1.0, 0.0, 0.5, quality_guard=guard.to_config()).save(path)
    svc = XrayClassifierService()
    svc.load_context(SimpleNamespace(artifacts={"keras_model": str(path)},
                                     model_config={"max_images_per_request": 8, "max_request_mib": 1}))  # fmt: skip
    film = np.clip(128 + 60 * template + rng.normal(0, 5, (32, 32)), 0, 255).astype(np.uint8)
    noise = rng.integers(0, 256, (32, 32)).astype(np.uint8)
    images = {"ok": film, "rotated": np.ascontiguousarray(np.rot90(film)), "inverted": 255 - film,
              "blank": np.full((32, 32), 128, np.uint8), "not_frontal_cxr": noise}  # fmt: skip
    encoded = [_b64(cv2.imencode(".png", img)[1].tobytes()) for img in images.values()]
    # the frontal film again, as a DICOM whose header says it is a lateral one
    from tests.cohort.test_dicom import _dicom

    lateral = io.BytesIO()
    _dicom(film, ViewPosition="LL").save_as(lateral, enforce_file_format=True)
    images["lateral"] = film
    encoded.append(_b64(lateral.getvalue()))
    answer = svc.predict(None, pd.DataFrame({"image": encoded}))
    assert answer["quality"].tolist() == list(images)
    assert answer.loc[0, "label"] in (0, 1) and 0 <= answer.loc[0, "probability"] <= 1
    assert answer.loc[1:, ["probability", "label"]].isna().all().all()  # flagged: nothing to act on
    small = svc.predict(None, pd.DataFrame({"image": [_b64(cv2.imencode(".png", film[:12, :12])[1].tobytes())]}))
    assert small["quality"].tolist() == ["too_small"]


def test_a_header_claiming_too_many_pixels_is_refused_before_decoding(service):
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + ihdr + crc + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    message = _refused(service, [_b64(_png(40)), _b64(bomb)])
    assert message == "row 1: too_large: the image: 30000x30000 exceeds 8192 px"


def test_empty_oversized_and_garbage_requests_say_why(service):
    assert "holds no image" in _refused(service, [])
    assert "4 images, more than max_images_per_request=3" in _refused(service, [_b64(_png(8))] * 4)
    assert "more than max_request_mib=0.01" in _refused(service, [_b64(np.random.bytes(20_000))])
    assert _refused(service, [_b64(b"garbage")]).startswith("row 0: not_an_image")
    assert "base64" in _refused(service, ["%%%"])
