"""The recalibrated classifier's dataset: a run without recalibration saves nothing, on a fresh project too."""

import warnings

from kedro.io import Version

from cardio_kedro.datasets import RecalibratedClassifierDataset
from cardio_kedro.modeling import build_model
from tests.helpers import TINY_MODEL


def test_no_recalibration_on_a_fresh_project_saves_nothing_and_raises_nothing(tmp_path):
    dataset = RecalibratedClassifierDataset(filepath=str(tmp_path / "r.keras"), version=Version(None, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even Kedro's save/load version warning
        dataset.save({"model": None, "tags": {}})
    assert not dataset.exists() and not any(tmp_path.iterdir())


def test_a_recalibrated_model_is_saved_and_stays_the_latest_after_a_run_without_one(tmp_path):
    model = build_model(32, **TINY_MODEL)
    first = RecalibratedClassifierDataset(filepath=str(tmp_path / "r.keras"), version=Version(None, None))
    first.save({"model": model, "tags": {"site": "b"}})
    (version,) = [p.name for p in (tmp_path / "r.keras").iterdir()]
    later = RecalibratedClassifierDataset(filepath=str(tmp_path / "r.keras"), version=Version(None, None))
    later.save({"model": None, "tags": {}})
    assert [p.name for p in (tmp_path / "r.keras").iterdir()] == [version]
    assert later.load().count_params() == model.count_params()
