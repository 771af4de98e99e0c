"""Checks before a run touches data: a local backbone weights file must exist and load into the backbone."""

import keras
import pytest

from cardio_kedro.config import ConfigSources, ParameterError
from cardio_kedro.hooks.preflight import check_backbone_weights
from tests.config.test_config import _validate


def test_backbone_weights_file_is_checked_before_any_work(conf, tmp_path):
    def check(path: str):
        params = _validate(conf, runtime_params={"model_training": {"model": {"backbone_weights": path}}})
        check_backbone_weights(params, ConfigSources(conf, "local", runtime_params={"x": 1}))

    with pytest.raises(ParameterError, match=r"backbone_weights' = '/missing/file.h5': no such file"):
        check("/missing/file.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"<html>a proxy error page</html>")
    with pytest.raises(ParameterError, match="not an HDF5"):
        check(str(junk))
    other = tmp_path / "mobilenet.weights.h5"
    inputs = keras.Input((64, 64, 3))
    keras.Model(inputs, keras.layers.Conv2D(3, 3)(inputs)).save_weights(other)
    with pytest.raises(ParameterError, match="does not load into a headless vgg16 at 64 px"):
        check(str(other))
