"""inference on an in-memory DataCatalog with SequentialRunner: scores, errors as rows, overlays."""

import shutil

import numpy as np
import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from cardio_kedro.modeling import build_model
from cardio_kedro.pipelines.inference import create_pipeline
from tests.helpers import TINY_MODEL, base_params


def test_a_folder_is_scored_with_errors_as_rows(toy_cache, tmp_path):
    folder = tmp_path / "incoming"
    (folder / "ward").mkdir(parents=True)
    for path in toy_cache["train"]["path"].iloc[:3]:
        shutil.copy(path, folder / "ward")
    (folder / "notes.png").write_text("not an image")
    files = sorted(p for p in folder.rglob("*.png"))
    model = build_model(32, **TINY_MODEL)
    catalog = DataCatalog()
    catalog["inference_images"] = pd.DataFrame(
        {"file": [str(p.relative_to(folder)) for p in files], "path": [str(p) for p in files]}
    )
    info = {"model": model, "threshold": 0.5, "version": "v1", "source": "memory"}
    catalog["inference_model"] = MemoryDataset(info, copy_mode="assign")
    catalog["params:inference"] = base_params("inference", workers=1, batch_size=2, heatmaps=True)
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    table = outputs["inference_predictions"].load().set_index("file")
    assert table.loc["notes.png", "error"].startswith("not_an_image") and np.isnan(
        table.loc["notes.png", "probability"]
    )
    scored = table[table["error"].isna()]
    expected = model.predict(toy_cache["cache"].images(toy_cache["train"]["path"].iloc[:3])[..., None], verbose=0)
    np.testing.assert_allclose(np.sort(scored["probability"]), np.sort(expected.reshape(-1)), rtol=1e-5)
    assert (scored["label"] == (scored["probability"] >= 0.5)).all() and set(scored["model_version"]) == {"v1"}
    overlays = outputs["inference_heatmaps"].load()
    assert sorted(overlays) == sorted(f"ward/{p.name}" for p in files if p.parent.name == "ward")
    assert all(png.startswith(b"\x89PNG") for png in overlays.values())
