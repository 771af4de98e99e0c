"""ImageNet weights: a network that accepts connections and never answers gives up in time, with the way out."""

import socket
import time
from contextlib import contextmanager

import pytest

from cardio_kedro.modeling import pretrained


@contextmanager
def silent_server():
    """A TCP port that accepts connections (the kernel's backlog) and never answers a byte."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/vgg16_notop.h5"


@pytest.fixture
def silent_vgg16_url(monkeypatch, tmp_path):
    from keras.src.applications import vgg16

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # an empty cache
    with silent_server() as url:
        monkeypatch.setattr(vgg16, "WEIGHTS_PATH_NO_TOP", url)
        yield url


def test_a_silent_server_times_out_and_retries_then_says_what_to_do(silent_vgg16_url):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"in 2 attempt\(s\) of up to 0.5 s") as err:
        pretrained.fetch_imagenet_weights("vgg16", timeout=0.5, retries=2)
    assert time.perf_counter() - start < 10
    assert "make weights BACKBONE=vgg16" in str(err.value) and "null (random initialisation)" in str(err.value)


def test_the_cached_file_is_the_one_printed(silent_vgg16_url, tmp_path):
    cache = tmp_path / "keras" / "models"
    cache.mkdir(parents=True)
    assert pretrained.cached_weights("vgg16") is None
    (cache / "vgg16_weights_tf_dim_ordering_tf_kernels.h5").write_bytes(b"with top")  # not headless
    (cache / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"headless")
    (cache / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5").write_bytes(b"other")
    assert pretrained.cached_weights("vgg16").name == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert pretrained.cached_weights("mobilenetv3small").name.startswith("weights_mobilenet_v3_small")


@pytest.mark.kedro_session
@pytest.mark.server
def test_imagenet_weights_are_checked_before_any_data(tiny_project, silent_vgg16_url, monkeypatch):
    from cardio_kedro.config import ParameterError
    from tests.helpers import data_written, run_pipeline

    monkeypatch.setattr(pretrained, "TIMEOUT_S", 0.5)
    monkeypatch.setattr(pretrained, "RETRIES", 2)
    model = {"backbone_weights": "imagenet", "backbone_width": 1.0, "backbone_batchnorm": False}
    with pytest.raises(ParameterError, match="'model_training.model.backbone_weights' = 'imagenet'"):
        run_pipeline(tiny_project, "training", runtime_params={"model_training": {"model": model}})
    assert not data_written(tiny_project)  # nothing was decoded


def test_a_trained_backbone_exports_and_loads_into_a_new_model(tmp_path):
    import numpy as np

    from cardio_kedro.modeling import build_model
    from cardio_kedro.modeling.pretrained import backbone_spec, export_backbone
    from tests.helpers import TINY_MODEL

    trained = build_model(32, **{**TINY_MODEL, "backbone_batchnorm": True})
    trained.save(tmp_path / "trained.keras")
    out = export_backbone(tmp_path / "trained.keras", tmp_path / "phantom.weights.h5", "vgg16", 32,
                          TINY_MODEL["backbone_width"], True)  # fmt: skip
    again = build_model(32, **{**TINY_MODEL, "backbone_batchnorm": True, "backbone_weights": str(out)})
    fresh = build_model(32, **{**TINY_MODEL, "backbone_batchnorm": True})
    name = "block1_conv1"
    source = trained.get_layer("backbone").get_layer(name).get_weights()[0]
    np.testing.assert_array_equal(again.get_layer("backbone").get_layer(name).get_weights()[0], source)
    assert not np.array_equal(fresh.get_layer("backbone").get_layer(name).get_weights()[0], source)
    with pytest.raises(ValueError, match="weights.h5"):
        export_backbone(tmp_path / "trained.keras", tmp_path / "phantom.h5", "vgg16", 32, 0.125, True)
    # what is not given is read from the model: the same file
    inferred = export_backbone(tmp_path / "trained.keras", tmp_path / "inferred.weights.h5")
    read = build_model(32, **{**TINY_MODEL, "backbone_batchnorm": True, "backbone_weights": str(inferred)})
    np.testing.assert_array_equal(read.get_layer("backbone").get_layer(name).get_weights()[0], source)
    assert backbone_spec(trained) == {
        "backbone": "vgg16", "image_size": 32, "width": TINY_MODEL["backbone_width"], "batchnorm": True,
    }  # fmt: skip
    plain = build_model(32, **{**TINY_MODEL, "backbone_batchnorm": False})
    assert backbone_spec(plain)["batchnorm"] is False
