"""`kedro run --pipelines=external_validation` end to end: a phantom site with another seed and prevalence, scored
by a cross-validated model (its nested fold runs checked too), where recalibration must restore calibration in the
large; and a model trained on the real NIH sample validated on the real thumbnails."""

import json
import os
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from cardio_kedro.config import ParameterError
from cardio_kedro.evaluation.calibration import apply_recalibration
from cardio_kedro.modeling import ensemble_members, load_model, operating_threshold
from cardio_kedro.pipelines.external_validation.pipeline import FIGURES as EXTERNAL_FIGURES
from tests.helpers import make_phantom_cohort, make_tiny_project, run_pipeline

pytestmark = pytest.mark.kedro_session

# Calibration in the large after recalibration, on the patients it was not fitted on: observed / expected
# within 20% of 1 (the evaluation part holds about 30 positives, whose Poisson spread alone is +-18%).
OE_TOLERANCE = (0.8, 1.25)


def _trained(folder: Path, pipeline: str, runtime_params: dict | None = None) -> Path:
    project = make_tiny_project(folder)
    here = os.getcwd()
    os.chdir(project)
    try:
        run_pipeline(project, pipeline, runtime_params=runtime_params)
    finally:
        os.chdir(here)
    return project


def _validate(project: Path, **external) -> dict:
    """One external_validation run in ``project``; its metrics."""
    model_uri = external.pop("model_uri", None)
    runtime = {"external": external} | ({"model_uri": model_uri} if model_uri else {})
    here = os.getcwd()
    os.chdir(project)
    try:
        run_pipeline(project, "external_validation", runtime_params=runtime)
    finally:
        os.chdir(here)
    return json.loads(_newest(project, "08_reporting/external_validation_metrics.json").read_text())


def _newest(project: Path, pattern: str) -> Path:
    return sorted(project.glob(f"data/{pattern}/*/*"))[-1]


def _client(project: Path) -> MlflowClient:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture(scope="module")
def phantom_project(tmp_path_factory) -> Path:
    """A tiny model cross-validated on phantoms (3 folds), each fold model and the final model an ensemble of two
    networks (cross_validation.members): its internal figures are out of fold."""
    kfold = {"cross_validation": {"n_folds": 3, "members": 2}}  # --params shape the fold groups too
    return _trained(tmp_path_factory.mktemp("external"), "cross_validation", kfold)


def _check_mlflow(project: Path, external: dict, after: float) -> None:
    """The run names the model it scored; the recalibrated model is a new, tagged version."""
    client = _client(project)
    experiment = client.get_experiment_by_name("Cardiomegaly")
    (training,) = client.search_runs([experiment.experiment_id], "tags.pipeline_names LIKE '%cross_validation%'")
    folds = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{training.info.run_id}'")
    assert sorted(r.data.tags["mlflow.runName"] for r in folds) == ["fold 1", "fold 2", "fold 3"]  # nested runs
    assert all("cv_fold_auc" in r.data.metrics for r in folds)
    assert all(client.get_metric_history(r.info.run_id, "val_auc") for r in folds)  # each fold model's epochs
    (run,) = client.search_runs([experiment.experiment_id], "tags.pipeline_names LIKE '%external_validation%'")
    tags = run.data.tags
    assert tags["external.registered_model"] == "Cardiomegaly-classifier" and tags["external.model_version"] == "1"
    assert tags["external.training_run_id"] == training.info.run_id and tags["external.cohort"] == "site_b"
    assert tags["registered_recalibrated_model"] == "Cardiomegaly-classifier/2"
    assert run.data.metrics["external_auc"] == pytest.approx(external["roc_auc"]["auc"])
    assert run.data.metrics["external_recalibration_after_observed_expected"] == pytest.approx(after)
    version = client.get_model_version("Cardiomegaly-classifier", "2")
    assert version.tags["recalibrated_for"] == "site_b" and version.tags["recalibration"] == "intercept"
    assert version.tags["recalibrated_from"] == "Cardiomegaly-classifier/1"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"external_validation_report", "external_validation_metrics", "external_predictions"} <= artifacts


def test_a_shifted_site_is_reported_recalibrated_and_registered(phantom_project, tmp_path):
    site = make_phantom_cohort(tmp_path / "site_b", n_patients=300, prevalence=0.1, seed=11)
    metrics = _validate(phantom_project, cohort_dir=str(site), recalibrate="intercept", name="site_b")

    cohort, external = metrics["cohort"], metrics["external"]
    labels = pd.read_csv(site / "Data_Entry_2017.csv")
    assert cohort["n_images"] == len(labels) and cohort["n_patients"] == labels["Patient ID"].nunique()
    assert sum(cohort["quality"].values()) == cohort["n_images"]
    assert external["n_images"] == cohort["quality"].get("ok", 0)  # flagged films are not counted
    assert 0 <= external["roc_auc"]["ci_low"] <= external["roc_auc"]["auc"] <= external["roc_auc"]["ci_high"] <= 1
    assert metrics["internal"]["where"] == "internal out of fold" and metrics["internal"]["auc"] is not None
    assert metrics["baseline"]["roc_auc"]["auc"] is not None
    assert metrics["baseline"]["paired_difference"]["model_auc"] == pytest.approx(external["roc_auc"]["auc"])

    # the model was trained at 35% prevalence; this site has 10%: it over-predicts, and the intercept
    # update fitted on half the patients brings the other half back to observed = expected
    recalibration = metrics["recalibration"]
    before = recalibration["before"]["in_the_large"]["observed_expected"]["value"]
    after = recalibration["after"]["in_the_large"]["observed_expected"]["value"]
    assert not OE_TOLERANCE[0] <= before <= OE_TOLERANCE[1], before
    assert OE_TOLERANCE[0] <= after <= OE_TOLERANCE[1], after
    assert recalibration["slope"] == 1.0 and recalibration["intercept"] < 0
    assert abs(recalibration["after"]["calibration_intercept"]["value"]) < abs(
        recalibration["before"]["calibration_intercept"]["value"]
    )

    # the registered model is the ensemble the fold models were: two networks averaged
    assert [
        m.name
        for m in ensemble_members(load_model(_newest(phantom_project, "06_models/cross_validation/classifier.keras")))
    ] == [
        "member_0",
        "member_1",
    ]
    cv_report = _newest(phantom_project, "08_reporting/cross_validation_report.html").read_text()
    assert "an ensemble of 2 networks" in cv_report

    # the recalibrated classifier is the update of the scored one, image by image
    predictions = pd.read_parquet(_newest(phantom_project, "07_model_output/external_predictions.parquet"))
    evaluation = predictions[predictions["part"] == "evaluation"]
    assert set(predictions["part"]) == {"update", "evaluation"}
    assert not set(evaluation["patient_id"]) & set(predictions.loc[predictions["part"] == "update", "patient_id"])
    model = load_model(_newest(phantom_project, "06_models/recalibrated_classifier.keras"))
    from cardio_kedro.datasets import PixelCacheDataset

    cache = PixelCacheDataset(str(phantom_project / "data/04_feature/external_pixel_cache"), 32).load()
    pixels = cache.images(evaluation["path"].head(32))[..., None]
    np.testing.assert_allclose(
        model.predict(pixels, verbose=0).reshape(-1),
        apply_recalibration(evaluation["probability"].head(32).to_numpy(), recalibration["intercept"], 1.0),
        rtol=1e-4,
    )
    assert operating_threshold(model) == pytest.approx(recalibration["threshold"])

    _check_mlflow(phantom_project, external, after)

    report = _newest(phantom_project, "08_reporting/external_validation_report.html").read_text()
    assert report.count("data:image/png;base64,") == len(EXTERNAL_FIGURES)
    assert "external validation on site_b" in report and "over-predicts" in report

    # without model_uri the next run scores the trained model again, not the site's recalibrated version;
    # with it, the recalibrated version, whose level now matches this site
    again = _validate(phantom_project, cohort_dir=str(site))
    assert again["model"]["registered_version"] == "1" and again["recalibration"] is None
    recalibrated = _validate(phantom_project, cohort_dir=str(site), model_uri="models:/Cardiomegaly-classifier/2")
    assert recalibrated["model"]["registered_version"] == "2"
    oe = recalibrated["external"]["calibration"]["in_the_large"]["observed_expected"]["value"]
    assert OE_TOLERANCE[0] <= oe <= OE_TOLERANCE[1]


def test_without_a_cohort_the_run_stops_before_any_work(phantom_project):
    here = os.getcwd()
    os.chdir(phantom_project)
    try:
        with pytest.raises(ParameterError, match="--params=external.cohort_dir=DIR"):
            run_pipeline(phantom_project, "external_validation")
    finally:
        os.chdir(here)


def test_the_real_sample_validated_on_the_real_thumbnails(shared_nih, tmp_path_factory):
    """Trained on the 200 real NIH sample films, scored on the 970 real thumbnails (other patients)."""
    project = _trained(tmp_path_factory.mktemp("real_external"), "training", {"cohort_dir": str(shared_nih / "sample")})
    metrics = _validate(project, cohort_dir=str(shared_nih / "thumbs"), recalibrate="intercept")
    cohort, external = metrics["cohort"], metrics["external"]
    assert (cohort["n_images"], cohort["n_patients"], cohort["n_positive"]) == (970, 260, 66)
    assert cohort["name"] == "thumbs" and sum(cohort["quality"].values()) == 970
    assert external["n_images"] >= 0.95 * 970  # the guard passes real frontal films
    assert external["roc_auc"]["ci_low"] is not None and external["pr_auc_ci"]["ci_low"] is not None
    assert set(metrics["subgroups"]["view"]) == {"AP", "PA"} and set(metrics["subgroups"]["sex"]) == {"F", "M"}
    cil = external["calibration"]["in_the_large"]
    assert cil["observed_rate"]["value"] == pytest.approx(external["n_positive"] / external["n_images"])
    assert metrics["internal"]["where"] == "internal test split"
    recalibration = metrics["recalibration"]
    update_rate = recalibration["fitted_on"]["n_positive"] / recalibration["fitted_on"]["n_images"]
    # the intercept update sets the update part's mean prediction to its observed rate
    updated = pd.read_parquet(_newest(project, "07_model_output/external_predictions.parquet"))
    update = updated[(updated["part"] == "update") & (updated["quality"] == "ok")]
    recal = apply_recalibration(update["probability"].to_numpy(), recalibration["intercept"], 1.0)
    assert recal.mean() == pytest.approx(update_rate, abs=1e-6)


def _as_vindr(phantoms: Path, root: Path) -> pd.DataFrame:
    """A phantom cohort in VinDr-CXR's release layout: DICOMs ``train/ID.dicom`` (every other one MONOCHROME1) and
    ``train.csv`` with three readers an image; two of them draw each Cardiomegaly box, the third sees nothing."""
    import cv2
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    labels = pd.read_csv(phantoms / "Data_Entry_2017.csv", dtype=str)
    boxes = pd.read_csv(phantoms / "BBox_List_2017.csv", header=None, skiprows=1, usecols=range(6), dtype=str)
    boxes.columns = ["image_index", "finding", "x", "y", "w", "h"]
    cardio_boxes = boxes[boxes["finding"] == "Cardiomegaly"].set_index("image_index")
    rows = []
    for k, (name, finding) in enumerate(zip(labels["Image Index"], labels["Finding Labels"])):
        image_id = f"{k:032x}"
        pixels = cv2.imread(str(next(phantoms.rglob(name))), cv2.IMREAD_GRAYSCALE)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid(), "DX"
        inverted = k % 2 == 0
        ds.set_pixel_data((255 - pixels) if inverted else pixels, bits_stored=8,
                          photometric_interpretation="MONOCHROME1" if inverted else "MONOCHROME2")  # fmt: skip
        (root / "train").mkdir(parents=True, exist_ok=True)
        ds.save_as(root / "train" / f"{image_id}.dicom", enforce_file_format=True)
        nothing = {"image_id": image_id, "class_name": "No finding", "class_id": "14"} | dict.fromkeys(
            ("x_min", "y_min", "x_max", "y_max"), ""
        )
        if "Cardiomegaly" in finding.split("|") and name in cardio_boxes.index:
            x, y, w, h = (float(v) for v in cardio_boxes.loc[name, ["x", "y", "w", "h"]])
            box = {"image_id": image_id, "class_name": "Cardiomegaly", "class_id": "3", "x_min": x, "y_min": y,
                   "x_max": x + w, "y_max": y + h}  # fmt: skip
            rows += [box | {"rad_id": "R8"}, box | {"rad_id": "R9"}, nothing | {"rad_id": "R10"}]
        else:
            rows += [nothing | {"rad_id": r} for r in ("R8", "R9", "R10")]
    table = pd.DataFrame(rows)
    table.to_csv(root / "train.csv", index=False)
    return table


def test_vindr_cxr_is_a_second_site(phantom_project, tmp_path):
    phantoms = make_phantom_cohort(tmp_path / "phantoms", n_patients=120, prevalence=0.3, seed=21)
    table = _as_vindr(phantoms, tmp_path / "vindr")
    positives = table.loc[table["class_name"] == "Cardiomegaly", "image_id"].nunique()
    metrics = _validate(phantom_project, cohort_dir=str(tmp_path / "vindr"), cohort={"layout": "vindr"}, name="vindr")
    cohort, external = metrics["cohort"], metrics["external"]
    assert cohort["n_images"] == table["image_id"].nunique() and positives >= 10
    # MONOCHROME1 films read through their LUT: the quality guard passes them as it passes the others
    assert cohort["quality"].get("ok", 0) >= 0.9 * cohort["n_images"]
    assert external["n_images"] == cohort["quality"]["ok"] and external["n_positive"] <= positives
    assert external["roc_auc"]["auc"] is not None  # both classes scored
    # each DICOM (MONOCHROME1 or 2) decoded to the phantom's own pixels
    import cv2

    from cardio_kedro.datasets import PixelCacheDataset

    cache = PixelCacheDataset(str(phantom_project / "data/04_feature/external_pixel_cache"), image_size=32).load()
    labels = pd.read_csv(phantoms / "Data_Entry_2017.csv", dtype=str)
    for k in (0, 1, 2, 3):  # even: MONOCHROME1
        dicom = str(tmp_path / "vindr" / "train" / f"{k:032x}.dicom")
        png = cv2.imread(str(next(phantoms.rglob(labels["Image Index"][k]))), cv2.IMREAD_GRAYSCALE)
        decoded = np.asarray(cache.images([dicom])[0], float).ravel()
        expected = cv2.resize(png, (32, 32), interpolation=cv2.INTER_AREA).astype(float).ravel()
        assert np.corrcoef(decoded, expected)[0, 1] > 0.98, k


def test_promotion_to_champion_needs_every_gate_and_the_run_to_finish(phantom_project, tmp_path):
    from cardio_kedro import registry

    site = make_phantom_cohort(tmp_path / "site_c", n_patients=120, prevalence=0.3, seed=13)
    client = _client(phantom_project)
    before = registry.alias_version(client, "Cardiomegaly-classifier", registry.CHAMPION)
    strict = {"auc_lower_bound": 0.999, "observed_expected": [0.8, 1.25], "beats_baseline": True}
    metrics = _validate(phantom_project, cohort_dir=str(site), promote=True, gates=strict)
    decision = json.loads(_newest(phantom_project, "08_reporting/external_promotion.json").read_text())
    assert decision["promote"] is False and decision["reason"].startswith("failed: auc_lower_bound")
    assert registry.alias_version(client, "Cardiomegaly-classifier", registry.CHAMPION) == before

    lenient = {"auc_lower_bound": 0.0, "observed_expected": [0.01, 100.0], "beats_baseline": False}
    metrics = _validate(phantom_project, cohort_dir=str(site), promote=True, gates=lenient)
    decision = json.loads(_newest(phantom_project, "08_reporting/external_promotion.json").read_text())
    scored = metrics["model"]["registered_version"]
    assert decision["promote"] is True and decision["version"] == scored
    assert registry.alias_version(client, "Cardiomegaly-classifier", registry.CHAMPION) == scored
    service = registry.service_version_of(client, "Cardiomegaly-classifier", scored)
    assert registry.alias_version(client, "Cardiomegaly-classifier-service", registry.CHAMPION) == service
    assert (
        "external validation run"
        in client.get_model_version("Cardiomegaly-classifier", scored).tags[registry.PROMOTED_TAG]
    )
    # the next run without model_uri scores the champion and says so
    again = _validate(phantom_project, cohort_dir=str(site))
    assert again["model"]["registered_version"] == scored
