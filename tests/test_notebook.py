"""notebooks/01_explore_cohort.ipynb runs top to bottom on a trained project."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.kedro_session

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_explore_cohort.ipynb"


def test_explore_notebook_executes(trained_project):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(trained_project)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # label distribution, example images, heat map
    text = "".join(o.get("text", "") for o in outputs)
    assert "patients" in text
