"""multilabel_reporting on an in-memory DataCatalog with SequentialRunner (starter style): per-finding
metrics at each finding's own threshold, localization per finding, figures, the report."""

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset

from cardio_kedro.datasets import FigureDataset
from cardio_kedro.modeling import build_model, calibrate
from cardio_kedro.pipelines.multilabel_reporting import create_pipeline
from cardio_kedro.pipelines.multilabel_reporting.nodes import build_multilabel_report
from cardio_kedro.pipelines.multilabel_reporting.pipeline import FIGURES
from tests.helpers import TINY_MODEL, base_params, tiny_params, write_toy_cache

FINDINGS = ["Cardiomegaly", "Effusion", "Mass"]  # NIH order
THRESHOLDS = [0.2, 0.4, 0.6]


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    rng = np.random.default_rng(1)
    images, rows = [], []
    for i in range(60):
        has = rng.random(3) < 0.4
        has[i % 3] = True if i < 6 else has[i % 3]  # every finding has positives
        img = rng.integers(20, 60, (32, 32)).astype(np.uint8)
        rows.append(
            {
                "target": int(has.any()),
                **{f"target.{f}": int(h) for f, h in zip(FINDINGS, has)},
                "sex": "MF"[i % 2],
                "view": ("PA", "AP")[i % 3 == 0],
                "age": 40 + i % 30,
            }
        )
        images.append(img)
    table, dataset = write_toy_cache(tmp_path_factory.mktemp("multi_report"), images, rows)
    model = calibrate(build_model(32, **TINY_MODEL, findings=FINDINGS), [1.0] * 3, [0.0] * 3, THRESHOLDS, FINDINGS)
    folder = tmp_path_factory.mktemp("multi_plots")  # figures saved as PNGs, as the catalog's FigureDataset does
    kept = {f"{n}_plot": FigureDataset(str(folder / f"{n}.png")) for n in FIGURES}
    kept |= {n: JSONDataset(filepath=str(folder / f"{n}.json")) for n in ("finding_metrics", "finding_localization")}
    kept["finding_test_predictions"] = CSVDataset(filepath=str(folder / "finding_test_predictions.csv"))
    catalog = DataCatalog(datasets=kept)  # what the nodes consume inside the pipeline: kept on disk
    catalog["classifier"] = MemoryDataset(model, copy_mode="assign")
    catalog["pixel_cache"] = MemoryDataset(dataset.load(), copy_mode="assign")
    catalog["test_split"] = table
    threshold = {"validation_separated": False, "method": "youden"}
    catalog["calibration"] = {
        "findings": FINDINGS,
        "by_finding": {
            f: {"method": "platt", "threshold": {"value": t, **threshold}} for f, t in zip(FINDINGS, THRESHOLDS)
        },
    }
    boxed = table.loc[table["target.Effusion"] == 1, "image_index"].head(3)
    catalog["cohort_boxes"] = pd.DataFrame(
        [{"image_index": name, "finding": "Effusion", "x": 4, "y": 4, "w": 10, "h": 12} for name in boxed]
    )
    labels = table[[f"target.{f}" for f in FINDINGS]].apply(
        lambda r: "|".join(f for f in FINDINGS if r[f"target.{f}"]) or "No Finding", axis=1
    )
    catalog["clean_metadata"] = table.assign(labels=labels)
    catalog["training_history"] = pd.DataFrame(
        {"epoch": [1, 2], "phase": ["head", "fine_tune"], "loss": [0.7, 0.6], "val_loss": [0.7, 0.65]}
        | {"val_auc": [0.55, 0.6], "best": [False, True]}
        | {f"val_auc.{f}": [0.5, 0.6] for f in FINDINGS}
    )
    catalog["data_quality_report"] = {
        "usable_images": 60,
        "usable_patients": 60,
        "usable_positive_images": int(table["target"].sum()),
        "dropped_by_reason": {},
    }
    catalog["params:reporting"] = base_params("reporting", n_bootstrap=20, heatmaps_per_group=2)
    catalog["params:image_size"] = 32
    catalog["params:phantoms"] = base_params("phantoms", drawn_findings=["Cardiomegaly", "Effusion"])
    catalog["params:model_training"] = tiny_params(view_loss_weight=0.0)
    catalog["params:cohort_dir"] = None
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    return catalog, outputs, table


def test_each_finding_is_scored_at_its_own_threshold(reported):
    catalog, outputs, table = reported
    predictions = catalog.load("finding_test_predictions")
    assert len(predictions) == len(table)
    metrics = catalog.load("finding_metrics")
    assert metrics["findings"] == FINDINGS
    for finding, threshold in zip(FINDINGS, THRESHOLDS):
        entry = metrics["by_finding"][finding]
        labels = predictions[f"probability.{finding}"] >= threshold
        positives = predictions[f"target.{finding}"] == 1
        assert entry["threshold"] == threshold
        assert entry["sensitivity"] == pytest.approx((labels & positives).sum() / positives.sum())
    headline = outputs["finding_headline_metrics"].load()
    assert headline["test_auc.Effusion"]["value"] == metrics["by_finding"]["Effusion"]["roc_auc"]["auc"]


def test_localization_uses_each_findings_own_boxes(reported):
    catalog, _, _ = reported
    localization = catalog.load("finding_localization")
    assert localization["Effusion"]["n_images"] == 3
    assert 0 <= localization["Effusion"]["attention_mass_in_box"] <= 1
    assert localization["Mass"]["n_images"] == 0 and "no Mass boxes" in localization["Mass"]["note"]


def test_every_figure_and_a_report_that_names_the_drawn_findings(reported):
    catalog, outputs, _ = reported
    for name in FIGURES:
        assert catalog.load(f"{name}_plot").startswith(b"\x89PNG"), name
    report = outputs["multilabel_report"].load()
    assert report.count('<img src="data:image/png;base64,') == len(FIGURES)
    assert "Its images draw\nCardiomegaly, Effusion" in report and "Mass (not drawn)" in report
    args = [catalog.load(n) for n in ("finding_metrics", "calibration", "finding_localization")]
    args += [catalog.load("data_quality_report"), catalog.load("training_history"), 32]
    given = build_multilabel_report(*args, base_params("phantoms"), tiny_params(view_loss_weight=0.0), "/data/nih")
    assert "offline phantom cohort" not in given and "(not drawn)" not in given  # a cohort of the user's own
