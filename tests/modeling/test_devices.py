"""What the run trains on, and the fail-fast check for a run that must have a GPU (tested on the CPU)."""

import pytest

from cardio_kedro.modeling import devices


def test_accelerators_are_the_devices_that_are_not_the_cpu():
    assert devices.accelerators(["cpu:0"]) == []
    assert devices.accelerators(["gpu:0", "gpu:1"]) == ["gpu:0", "gpu:1"]
    assert devices.accelerators(["/device:CPU:0", "tpu:0"]) == ["tpu:0"]


def test_the_problem_names_the_backend_the_devices_and_the_way_out():
    assert devices.accelerator_problem(["gpu:0"]) is None
    problem = devices.accelerator_problem(["cpu:0"])
    assert "cpu:0" in problem and "make run-gpu" in problem


def test_this_cpu_machine_sees_no_accelerator_and_says_which_backend():
    assert devices.accelerator_problem() is not None  # the test machines have no GPU
    assert devices.device_summary().startswith("backend ") and "cpu:0" in devices.device_summary()


@pytest.mark.kedro_session
def test_require_accelerator_stops_before_any_data_and_logs_the_device(tiny_project, monkeypatch):
    from cardio_kedro.config import ParameterError
    from cardio_kedro.hooks import preflight
    from tests.helpers import data_written, run_pipeline

    lines = []
    monkeypatch.setattr(preflight.logger, "info", lambda msg, *args: lines.append(msg % args))
    with pytest.raises(ParameterError, match=r"'model_training.require_accelerator' is true .* no GPU or TPU") as err:
        run_pipeline(tiny_project, "training", runtime_params={"model_training": {"require_accelerator": True}})
    assert "--params=model_training.require_accelerator=false" in str(err.value)
    assert any(line.startswith("Training on backend") and "cpu:0" in line for line in lines), lines
    assert not data_written(tiny_project)  # nothing was decoded
