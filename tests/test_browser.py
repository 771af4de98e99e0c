"""The user's surfaces in a real browser: kedro viz and the MLflow UI (headless Chromium)."""

import base64
import json
import os
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, free_port, run_pipeline, serve

pytestmark = [pytest.mark.kedro_session, pytest.mark.server, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = "Chromium is not installed (apt-get install chromium); .ci/run installs it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_kedro_viz_shows_the_three_pipelines(trained_project, browser):
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "kedro"),
        "viz",
        "run",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-browser",
    ]
    with serve(command, trained_project, f"http://127.0.0.1:{port}/api/main", {"KEDRO_DISABLE_TELEMETRY": "true"}):
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
        page.get_by_text("train_model", exact=True).first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        nodes = (
            "clean_metadata",
            "decode_images",
            "split_by_patient",
            "train_model",
            "evaluation_metrics",
            "build_report",
        )
        for node in nodes:
            assert node in body, node
        for dataset in (
            "cohort_folder",
            "pixel_cache",
            "train_balanced",
            "classifier",
            "roc_plot",
            "evaluation_report",
        ):
            assert dataset in body, dataset
        assert page.locator("svg g.pipeline-node").count() >= 19  # the flowchart is drawn, not only listed
        graph = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/main", timeout=30).read())
        assert graph["layers"] == [
            "raw",
            "intermediate",
            "feature",
            "primary",
            "model_input",
            "models",
            "model_output",
            "reporting",
        ]
        registered = {p["name"] for p in graph["pipelines"]}
        assert {"phantom_cohort", "data_processing", "model_training", "reporting", "inference", "demo"} <= registered
        assert {"multilabel", "multilabel_reporting", "cross_validation", "external_validation"} <= registered
        external = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pipelines/external_validation", timeout=30).read()
        )
        drawn = " ".join(n["name"] for n in external["nodes"])
        for name in ("score_external_cohort", "fit_site_recalibration", "report", "cohort_folder"):
            assert name in drawn, name
        assert "external" in external["modular_pipelines"]  # every node and dataset of it, one group
        folds = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/pipelines/cross_validation", timeout=30).read()
        )
        groups = set(folds["modular_pipelines"])
        n_folds = len([g for g in groups if g.startswith("cross_validation.fold_")])
        assert "cross_validation" in groups and n_folds == 5, sorted(groups)  # conf/base: 5 folds, a group each
        assert "train_fold_model" in " ".join(n["name"] for n in folds["nodes"])
        roc = next(n for n in graph["nodes"] if n["name"] == "roc_plot")
        details = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/nodes/{roc['id']}", timeout=30).read()
        )
        assert details["preview_type"] == "ImagePreview" and base64.b64decode(details["preview"]).startswith(b"\x89PNG")
        page.get_by_text("__default__").first.click()
        menu = page.inner_text("body")
        for pipeline in ("data_processing", "model_training", "reporting"):
            assert pipeline in menu, pipeline
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "kedro-viz.png"))
        # the cross_validation pipeline: its folds drawn as groups that fold away
        page.goto(f"http://127.0.0.1:{port}/?pid=cross_validation&expandAllPipelines=true", wait_until="networkidle")
        page.get_by_text("cross_validation.fold_1").first.wait_for(timeout=60_000)
        shown = page.inner_text("body")  # the sidebar's tree: cross_validation > cross_validation.fold_k > its node
        assert all(f"cross_validation.fold_{k}" in shown for k in range(1, 6)), shown[:1500]
        assert shown.count("train_fold_model") >= 5
        page.screenshot(path=str(ARTIFACTS / "kedro-viz-cross-validation.png"))
        page.close()


def _scroll_until(page, text: str, tries: int = 15) -> str:
    """Scroll a page that renders lazily until ``text`` shows; returns the body text."""
    body = page.inner_text("body")
    page.mouse.move(900, 600)  # over the scrollable chart area
    for _ in range(tries):
        if text in body:
            break
        page.mouse.wheel(0, 1500)
        page.wait_for_timeout(700)
        body = page.inner_text("body")
    return body


def test_mlflow_ui_compares_two_runs(tmp_path, browser, monkeypatch):
    from mlflow.tracking import MlflowClient

    from tests.helpers import make_tiny_project

    project = make_tiny_project(tmp_path)
    monkeypatch.chdir(project)
    run_pipeline(project, "training", runtime_params={"model_training": {"seed": 1}})
    run_pipeline(project, "training", runtime_params={"model_training": {"seed": 2}})
    store = f"sqlite:///{project / 'mlflow.db'}"
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("Cardiomegaly").experiment_id
    run_ids = [r.info.run_id for r in client.search_runs([experiment])]
    assert len(run_ids) == 2
    q = lambda value: urllib.request.quote(json.dumps(value))  # noqa: E731

    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        store,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    base = f"http://127.0.0.1:{port}/#"
    with serve(command, project, f"http://127.0.0.1:{port}/health"):
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{base}/experiments/{experiment}/runs", wait_until="load")
        page.get_by_text("2 matching runs").wait_for(timeout=60_000)
        page.get_by_text("Cardiomegaly-classifier").first.wait_for(timeout=60_000)
        listing = page.inner_text("body")
        assert "Cardiomegaly-classifier" in listing and "v2" in listing, listing[-800:]  # each run registered a version

        page.goto(f"{base}/compare-runs?runs={q(run_ids)}&experiments={q([experiment])}", wait_until="load")
        page.get_by_text("model_training.seed").first.wait_for(timeout=60_000)
        compare = page.inner_text("body")
        assert "Comparing 2 Runs" in compare
        for run_id in run_ids:
            assert run_id in compare

        page.goto(f"{base}/experiments/{experiment}/runs/{run_ids[0]}/model-metrics", wait_until="load")
        page.get_by_text("Model metrics").first.wait_for(timeout=60_000)
        assert "(val_auc)" in _scroll_until(page, "(val_auc)")  # the per-epoch val_auc chart

        page.goto(f"{base}/experiments/{experiment}/runs/{run_ids[0]}/artifacts", wait_until="load")
        page.get_by_text("roc_plot").first.wait_for(timeout=60_000)
        artifacts = page.inner_text("body")
        for name in ("roc_plot", "attention_heatmaps_plot", "evaluation_report", "training_curves_plot"):
            assert name in artifacts, name
        page.goto(f"{base}/experiments/{experiment}/runs/{run_ids[0]}", wait_until="load")
        page.get_by_text("Registered models").first.wait_for(timeout=60_000)
        assert "Cardiomegaly-classifier" in page.inner_text("body")
        page.get_by_text("model_input_table (").first.wait_for(timeout=60_000)  # dataset inputs (hooks/mlflow_live)
        assert "+3" in page.inner_text("body")  # the cohort shown with its digest, the three splits behind "+3"
        page.get_by_text("+3", exact=True).first.click()
        page.get_by_text("test_split").first.wait_for(timeout=60_000)
        datasets = page.inner_text("body")
        for name in ("train_split", "validation_split", "test_split"):
            assert name in datasets, name
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "mlflow-run.png"), full_page=True)
        page.close()


def test_the_multilabel_run_in_the_mlflow_ui(multilabel_project, browser):
    from mlflow.tracking import MlflowClient

    from tests.helpers import MULTI_LABEL_FINDINGS

    store = f"sqlite:///{multilabel_project / 'mlflow.db'}"
    experiment = MlflowClient(store).get_experiment_by_name("+".join(MULTI_LABEL_FINDINGS))
    (run,) = MlflowClient(store).search_runs([experiment.experiment_id], "tags.pipeline_names LIKE '%multilabel%'")
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", store]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    base = f"http://127.0.0.1:{port}/#/experiments/{experiment.experiment_id}/runs/{run.info.run_id}"
    with serve(command, multilabel_project, f"http://127.0.0.1:{port}/health"):
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(base, wait_until="load")
        page.get_by_text("test_auc.Effusion").first.wait_for(timeout=60_000)
        body = page.inner_text("body")
        for finding in MULTI_LABEL_FINDINGS:  # the run's metrics, named per finding
            assert f"test_auc.{finding}" in body, finding
        page.screenshot(path=str(ARTIFACTS / "mlflow-multilabel-run.png"), full_page=True)
        page.goto(f"{base}/model-metrics", wait_until="load")
        page.get_by_text("Model metrics").first.wait_for(timeout=60_000)
        assert "(val_auc.Effusion)" in _scroll_until(page, "(val_auc.Effusion)")  # per epoch, per finding
        page.close()
