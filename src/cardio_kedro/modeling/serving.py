"""The MLflow pyfunc that serves the classifier over HTTP (`mlflow models serve`).

Input: a DataFrame with an ``image`` column of base64-encoded PNG or JPEG files. Output: one row
per image with ``probability`` (calibrated, at the cohort's natural prevalence) and ``label`` (at the
operating threshold saved with the model); for a multi-label model, ``probability.<finding>`` and
``label.<finding>`` for every finding, each at that finding's own threshold. ``quality`` is the
model's quality guard's verdict (``ok``, or ``rotated``, ``inverted``, ``not_frontal_cxr``, ...,
``cardio_kedro.cohort.quality``): a flagged image has no label and no probability.
An image that cannot be decoded, or whose header claims more than ``MAX_SIDE`` px (checked before
any pixel is decoded), fails the request with a 400 that names the row and the reason; so do an
empty request and one over the limits in ``model_config`` (``inference.service`` when registered).
"""

from __future__ import annotations

import base64
import binascii

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from cardio_kedro.cohort.imaging import (
    ImageError,
    check_image_bytes,
    decode_bytes,
    decode_dicom,
    is_dicom_bytes,
    resize_gray,
)
from cardio_kedro.cohort.quality import PASSING, verdict

MAX_IMAGE_BYTES = 64 * 2**20
# What a logged model needs to be loaded and served (the code it carries imports these), pinned to the
# versions it was trained with. Given to MLflow explicitly: inferring them loads the model in a
# subprocess (about 8 s per logged model) and found only keras, not its backend.
SERVING_PACKAGES = (
    "keras",
    "numpy",
    "pandas",
    "opencv-python-headless",
    "pydicom",
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
)
BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax", "jaxlib"), "torch": ("torch",)}
LIMITS = ("max_images_per_request", "max_request_mib")  # inference.service, saved as the model's model_config


def serving_requirements(backend: str) -> list[str]:
    """``package==version`` for every package a served model needs under Keras ``backend``, as installed.

    A package of the list that is not installed is left out (``tensorflow-cpu`` where ``tensorflow``
    is, ``jaxlib`` where JAX comes as one wheel); MLflow adds its own pin.
    """
    from importlib.metadata import PackageNotFoundError, version

    if backend not in BACKEND_PACKAGES:
        raise ValueError(f"unknown Keras backend {backend!r}: expected one of {sorted(BACKEND_PACKAGES)}")
    pins = []
    for package in (*SERVING_PACKAGES, *BACKEND_PACKAGES[backend]):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, INVALID_PARAMETER_VALUE)


ECHO_CHARS = 12  # of an image's base64 that an error answer may show (MLflow's server quotes the request's table)


def _no_request_echo() -> None:
    """MLflow's scoring server answers a refused request with "Failed to predict data '<the request's table>'"
    (and a schema failure likewise): in this serving process, that table shows at most ``ECHO_CHARS``
    characters of an image and a few rows, never the images a client sent, and schema errors no data."""
    import os

    import pandas as pd

    pd.set_option("display.max_colwidth", ECHO_CHARS)
    pd.set_option("display.max_rows", 4)
    pd.set_option("display.min_rows", 2)
    os.environ.setdefault("MLFLOW_DISABLE_SCHEMA_DETAILS", "true")


class XrayClassifierService(mlflow.pyfunc.PythonModel):
    """Decodes base64 images with the training code path and scores them with the Keras model."""

    def load_context(self, context) -> None:
        from cardio_kedro.modeling import load_model, model_findings, model_quality_guard, operating_threshold

        self.model = load_model(context.artifacts["keras_model"])
        self.guard = model_quality_guard(self.model)
        self.threshold = operating_threshold(self.model)
        self.findings = model_findings(self.model)
        if self.threshold is None:
            raise ValueError("the served model has no threshold of its own: serve a calibrated classifier")
        self.size = int(self.model.inputs[0].shape[1])
        config = getattr(context, "model_config", None) or {}
        missing = [key for key in LIMITS if key not in config]
        if missing:
            raise ValueError(
                f"the service model was logged without its limits {missing} (model_config, from the "
                "inference.service parameters): register it again with a training run, or log it with "
                f"model_config={{{', '.join(f'{k!r}: ...' for k in LIMITS)}}}"
            )
        self.limits = {key: config[key] for key in LIMITS}
        _no_request_echo()

    def _pixels(self, value) -> tuple[np.ndarray, tuple[int, int], str | None]:
        """The image at the model's size, its source ``(height, width)`` and, for a DICOM, its ViewPosition."""
        if not isinstance(value, str) or not value:
            raise ValueError("expected a base64-encoded PNG or JPEG string")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
        if len(data) > MAX_IMAGE_BYTES:
            raise ValueError(f"larger than {MAX_IMAGE_BYTES // 2**20} MiB")
        if is_dicom_bytes(data):
            dicom = decode_dicom(data)
            return resize_gray(dicom.pixels, self.size), dicom.pixels.shape[:2], dicom.header["ViewPosition"] or None
        width, height = check_image_bytes(data)
        return decode_bytes(data, self.size), (height, width), None

    def _check_request(self, model_input: pd.DataFrame) -> None:
        if "image" not in model_input.columns:
            raise _bad_request("the input needs an 'image' column of base64 PNG/JPEG")
        n, most = len(model_input), int(self.limits["max_images_per_request"])
        if n == 0:
            raise _bad_request("the request holds no image: send one or more rows in the 'image' column")
        if n > most:
            raise _bad_request(f"the request holds {n} images, more than max_images_per_request={most}: split it")
        mib = sum(len(v) for v in model_input["image"] if isinstance(v, str)) * 3 / 4 / 2**20
        if mib > float(self.limits["max_request_mib"]):
            raise _bad_request(
                f"the request holds {mib:.1f} MiB of images, more than max_request_mib={self.limits['max_request_mib']}"
            )

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        self._check_request(model_input)
        pixels, shapes, views = [], [], []
        for i, value in enumerate(model_input["image"]):
            try:
                image, shape, view = self._pixels(value)
            except (ValueError, ImageError) as exc:
                raise _bad_request(f"row {i}: {exc}") from None
            pixels.append(image)
            shapes.append(shape)
            views.append(view)
        probability = np.asarray(self.model.predict_on_batch(np.stack(pixels)[..., None])).astype(float)
        out = finding_outputs(probability, self.threshold, self.findings)
        quality = [  # a lateral DICOM by its header, else the guard's verdict on the pixels
            verdict(self.guard, image, shape, view) for image, shape, view in zip(pixels, shapes, views)
        ]
        flagged = np.array([q not in PASSING for q in quality])
        out = out.astype(object)
        out.loc[flagged, :] = None  # no label, no probability for what is not a frontal chest film
        return out.assign(quality=quality)


def finding_outputs(
    probability: np.ndarray, threshold: float | list[float], findings: list[str] | None
) -> pd.DataFrame:
    """``probability`` and ``label`` per image; for a multi-label model (``findings``), one pair of
    columns per finding (``probability.<finding>``, ``label.<finding>``), each at its own threshold."""
    if not findings:
        p = probability.reshape(-1)
        return pd.DataFrame({"probability": p, "label": (p >= threshold).astype(int)})
    p = probability.reshape(len(probability), len(findings))
    columns = {}
    for j, finding in enumerate(findings):
        columns[f"probability.{finding}"] = p[:, j]
        columns[f"label.{finding}"] = (p[:, j] >= threshold[j]).astype(int)
    return pd.DataFrame(columns)
