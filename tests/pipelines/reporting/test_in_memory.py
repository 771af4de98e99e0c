"""reporting on an in-memory DataCatalog with SequentialRunner (starter style): metrics, figures, report."""

import html

import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import CSVDataset

from cardio_kedro.datasets import FigureDataset
from cardio_kedro.evaluation.report import FIGURE_CAPTIONS
from cardio_kedro.modeling import build_model, calibrate
from cardio_kedro.pipelines.reporting import create_pipeline
from cardio_kedro.pipelines.reporting.pipeline import REPORT_FIGURES
from tests.helpers import TINY_MODEL, base_params, tiny_params


@pytest.fixture(scope="module")
def reported(toy_cache, tmp_path_factory):
    train, validation = toy_cache["train"], toy_cache["validation"]
    test = pd.concat([validation, train.iloc[:16]], ignore_index=True)
    folder = tmp_path_factory.mktemp("plots")
    kept = {f"{name}_plot": FigureDataset(str(folder / f"{name}.png")) for name in REPORT_FIGURES}
    for name in ("evaluation_metrics", "attention_localization", "decision_curve"):  # consumed inside: kept
        kept[name] = (
            JSONDataset(filepath=str(folder / f"{name}.json"))
            if name != "decision_curve"
            else CSVDataset(filepath=str(folder / "decision_curve.csv"))
        )
    catalog = DataCatalog(datasets=kept)
    catalog["classifier"] = MemoryDataset(calibrate(build_model(32, **TINY_MODEL), 1.0, -0.5, 0.3), copy_mode="assign")
    catalog["calibration"] = {
        "method": "platt",
        "shrinkage": 10.0,
        "prevalence": {"natural": 0.2, "trained": 1 / 3},
        "prior_shift_offset": -0.69,
        "slope": 1.0,
        "intercept": -0.5,
        "threshold": {"value": 0.3, "method": "youden", "tied_interval": [0.28, 0.32], "validation_separated": True},
    }
    catalog["pixel_cache"] = MemoryDataset(toy_cache["cache"], copy_mode="assign")
    for name, frame in (("train", train), ("validation", validation), ("test", test)):
        catalog[f"{name}_split"] = frame
    catalog["train_balanced"], catalog["validation_balanced"] = train, validation
    catalog["clean_metadata"] = pd.concat([train, test]).assign(labels=lambda f: f["target"].map({1: "Cardiomegaly"}))
    box = {"image_index": test.loc[test["target"] == 1, "image_index"].iloc[0], "finding": "Cardiomegaly"}
    catalog["cohort_boxes"] = pd.DataFrame([{**box, "x": 2, "y": 8, "w": 12, "h": 16}])
    catalog["training_history"] = pd.DataFrame(
        {"epoch": [1, 2], "phase": ["head", "fine_tune"], "loss": [0.7, 0.6], "auc": [0.5, 0.6]}
        | {"val_loss": [0.7, 0.65], "val_auc": [0.55, 0.6], "best": [False, True]}
    )
    catalog["data_quality_report"] = {
        "usable_images": 112,
        "usable_patients": 112,
        "usable_positive_images": 37,
        "dropped_by_reason": {"missing": {"count": 1}},
    }
    catalog["params:reporting"] = base_params("reporting", n_bootstrap=20, heatmaps_per_group=2, examples_per_class=2)
    catalog["params:target_findings"] = "Cardiomegaly"
    catalog["params:image_size"] = 32
    catalog["params:model_training"] = tiny_params()
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    return catalog, outputs


def test_metrics_and_headline_metrics(reported):
    catalog, outputs = reported
    metrics = catalog.load("evaluation_metrics")
    assert metrics["test"]["n_images"] == 48 and metrics["threshold"]["value"] == 0.3  # the model's own threshold
    assert set(metrics["test"]["calibration"]) == {"raw_score", "calibrated"} and "baseline" in metrics
    assert len(catalog.load("decision_curve")) == 99
    headline = outputs["evaluation_headline_metrics"].load()
    assert headline["test_auc"]["value"] == metrics["test"]["roc_auc"]["auc"]
    localization = catalog.load("attention_localization")
    assert localization["n_images"] == 1 and 0 <= localization["attention_mass_in_box"] <= 1
    (view,) = localization["by_view"]  # the one boxed image's view, with its own scores
    assert localization["by_view"][view]["attention_mass_in_box"] == localization["attention_mass_in_box"]


def test_every_figure_and_one_self_contained_report(reported):
    catalog, outputs = reported
    for name in REPORT_FIGURES:
        assert catalog.load(f"{name}_plot").startswith(b"\x89PNG"), name
    report = outputs["evaluation_report"].load()
    assert report.count('<img alt="') == len(REPORT_FIGURES) and "Model card" in report
    assert "dropped rows: missing: 1" in report and "pointing game" in report
    assert "The validation split is perfectly separated" in report and "a uniform map scores" in report
    assert "reference model" in report
    for name in REPORT_FIGURES:  # every figure under its caption in words
        assert f"<figcaption>{html.escape(FIGURE_CAPTIONS[name])}</figcaption>" in report, name
    views = sorted(catalog.load("evaluation_metrics")["by_view"])
    for view in views:  # a metrics row and a calibration row per view
        assert f"<td>test, {view} films</td>" in report and f"<td>calibrated, {view} films</td>" in report


def test_report_escapes_what_it_shows(reported):
    catalog, _ = reported
    from cardio_kedro.pipelines.reporting.nodes import build_report

    html = build_report(
        catalog.load("evaluation_metrics"),
        catalog.load("calibration"),
        {"n_images": 0, "note": "<script>alert(1)</script>"},
        catalog.load("data_quality_report"),
        catalog.load("training_history"),
        "Cardiomegaly",
        32,
        tiny_params(),
    )
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_report_says_which_views_it_kept(reported):
    catalog, _ = reported
    from cardio_kedro.pipelines.reporting.nodes import build_report

    quality = catalog.load("data_quality_report")
    assert "Views kept" not in catalog.load("evaluation_report")  # views: all
    quality["view_filter"] = {"views": ["PA"], "removed_images": 1234, "removed_by_view": {"AP": 1200, "LL": 34}}
    args = (catalog.load("attention_localization"), quality, catalog.load("training_history"), "Cardiomegaly", 32)
    html = build_report(catalog.load("evaluation_metrics"), catalog.load("calibration"), *args, tiny_params())
    assert "Views kept: PA\n(1,234 images of other views left out: AP 1,200, LL 34)." in html


def test_report_says_which_label_policy_made_the_labels_and_what_was_left_out(reported):
    catalog, _ = reported
    from cardio_kedro.pipelines.reporting.nodes import build_report

    quality = catalog.load("data_quality_report")
    quality["label_policy"] = {"layout": "chexpert", "uncertain": {"Atelectasis": "uones", "Cardiomegaly": "ignore"}}
    quality["dropped_by_reason"] = {"view_lateral": {"count": 32387}, "uncertain_label": {"count": 6704}}
    args = (catalog.load("attention_localization"), quality, catalog.load("training_history"), "Cardiomegaly", 32)
    html = build_report(catalog.load("evaluation_metrics"), catalog.load("calibration"), *args, tiny_params())
    assert "dropped rows: view_lateral: 32387, uncertain_label: 6704." in html
    policy = "Labels as the chexpert layout reads them; uncertain (-1) labels: Atelectasis uones, Cardiomegaly ignore"
    assert policy in html
