"""Kedro's advice after a failed run, as its runner really logs it, replaced by advice that does not mix runs."""

import io
import logging

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from cardio_kedro.common.log_filters import install_resume_advice


def _double(x: int) -> int:
    return 2 * x


def _fail(y: int) -> int:
    raise RuntimeError("reporting crashed")


def test_kedros_from_nodes_advice_is_replaced(monkeypatch):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [handler])
    install_resume_advice()
    install_resume_advice()  # once per handler
    assert len(handler.filters) == 1
    pipeline = Pipeline([node(_double, inputs="x", outputs="y", name="train_model"),
                         node(_fail, inputs="y", outputs="z", name="build_report")])  # fmt: skip
    with pytest.raises(RuntimeError, match="reporting crashed"):
        SequentialRunner().run(pipeline, DataCatalog(datasets={"x": MemoryDataset(1)}))
    logged = stream.getvalue()
    assert "1 nodes did not run. Run the same command again from the start" in logged
    assert "--from-nodes would load the newest saved inputs" in logged
    assert '--from-nodes "' not in logged and "You can resume" not in logged
