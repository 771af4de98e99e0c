"""Batch scoring of a folder and the HTTP service, on a tiny trained project."""

import base64
import json
import os
import re
import shutil
import struct
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError, Version

from tests.helpers import free_port, mlflow_serve_command, run_pipeline, serve

pytestmark = [pytest.mark.kedro_session, pytest.mark.server]


def _latest(project: Path, pattern: str) -> Path:
    return sorted(project.glob(f"data/{pattern}/*/*"))[-1]


def _score(project: Path, images_dir: Path, **params) -> pd.DataFrame:
    run_pipeline(project, "inference", runtime_params={"images_dir": str(images_dir), **params})
    return pd.read_csv(_latest(project, "07_model_output/inference_predictions.csv"))


@pytest.fixture
def scored_folder(trained_project, tmp_path, monkeypatch):
    """A nested folder of test-split phantoms, a JPEG and bad files."""
    monkeypatch.chdir(trained_project)
    test = pd.read_parquet(_latest(trained_project, "05_model_input/test_split.parquet"))
    folder = tmp_path / "incoming"
    (folder / "ward_a" / "day1").mkdir(parents=True)
    picks = test.head(3)
    for path in picks["path"]:
        shutil.copy(path, folder / "ward_a" / "day1" / Path(path).name)
    cv2.imwrite(str(folder / "scan.jpg"), cv2.imread(picks["path"].iloc[0], cv2.IMREAD_GRAYSCALE))
    good = (folder / "ward_a" / "day1" / Path(picks["path"].iloc[0]).name).read_bytes()
    (folder / "truncated.png").write_bytes(good[:300])
    (folder / "notes.png").write_text("not an image")
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    (folder / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + ihdr + b"\x00" * 4 + b"IEND\xaeB`\x82")
    return folder, picks


def test_folder_is_scored_with_the_latest_model_and_its_threshold(trained_project, scored_folder):
    folder, picks = scored_folder
    table = _score(trained_project, folder, inference={"heatmaps": True, "batch_size": 2})
    assert len(table) == 7
    errors = dict(zip(table["file"], table["error"]))
    assert errors["truncated.png"].startswith("truncated") and errors["notes.png"].startswith("not_an_image")
    assert errors["bomb.png"].startswith("too_large")
    ok = table[table["error"].isna()]
    assert len(ok) == 4 and ok["probability"].between(0, 1).all()
    calibration = json.loads(_latest(trained_project, "06_models/calibration.json").read_text())
    threshold = calibration["threshold"]["value"]  # saved with the model of the same run
    assert calibration["threshold"]["chosen_on"] == "validation"
    assert np.allclose(ok["threshold"], threshold)
    assert (ok["label"] == (ok["probability"] >= threshold).astype(int)).all()
    assert set(ok["model_version"]) == {_latest(trained_project, "06_models/classifier.keras").parent.name}
    # same preprocessing code path as training: equal to the reporting pipeline's test predictions
    reported = pd.read_parquet(_latest(trained_project, "07_model_output/test_predictions.parquet"))
    expected = reported.set_index("image_index").loc[picks["image_index"], "probability"].to_numpy()
    by_name = ok.set_index(ok["file"].map(lambda f: Path(f).name)).loc[picks["image_index"]]
    np.testing.assert_allclose(by_name["probability"].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    raw = reported.set_index("image_index").loc[picks["image_index"], "score"].to_numpy()
    np.testing.assert_allclose(by_name["score"].to_numpy(), raw, rtol=1e-5, atol=1e-6)  # the raw score, kept
    overlays = sorted(p.name for p in _latest(trained_project, "07_model_output/inference_heatmaps").rglob("*.png"))
    assert len(overlays) == 4 and "scan.png" in overlays


def test_model_from_the_mlflow_registry_gives_the_same_scores(trained_project, scored_folder):
    folder, _ = scored_folder
    catalog_scores = _score(trained_project, folder)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    registry = _score(trained_project, folder, model_uri="models:/Cardiomegaly-classifier/1")
    assert set(registry["model_version"].dropna()) == {"Cardiomegaly-classifier/1"}
    np.testing.assert_allclose(registry["probability"], catalog_scores["probability"], rtol=1e-5)
    np.testing.assert_array_equal(registry["threshold"], catalog_scores["threshold"])


def test_every_model_uri_form_mlflow_accepts_resolves(trained_project, scored_folder):
    """Aliases, version-less names, latest, runs:/ and models:/m-<id> all score with the same model;
    a name or alias that does not exist fails with the registry's contents, not a bare ValueError."""
    import mlflow
    from mlflow import MlflowClient

    folder, _ = scored_folder
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    mlflow.set_tracking_uri(f"sqlite:///{trained_project / 'mlflow.db'}")
    MlflowClient().set_registered_model_alias("Cardiomegaly-classifier", "champion", "1")
    info = mlflow.models.get_model_info("models:/Cardiomegaly-classifier/1")
    expected = _score(trained_project, folder, model_uri="models:/Cardiomegaly-classifier/1")
    forms = {
        "models:/Cardiomegaly-classifier@champion": "Cardiomegaly-classifier/1",
        "models:/Cardiomegaly-classifier": "Cardiomegaly-classifier/1",
        "models:/Cardiomegaly-classifier/latest": "Cardiomegaly-classifier/1",
        f"models:/{info.model_id}": f"models:/{info.model_id}",
        f"runs:/{info.run_id}/model": f"runs:/{info.run_id}/model",
    }
    for uri, label in forms.items():
        table = _score(trained_project, folder, model_uri=uri)
        assert set(table["model_version"]) == {label}, uri
        np.testing.assert_allclose(table["probability"], expected["probability"], rtol=1e-6, err_msg=uri)
    for uri, message in {
        "models:/Cardiomegaly-classifier@nobody": "alias nobody not found",
        "models:/Cardiomegaly-clasifier/1": "Cardiomegaly-clasifier not found",
        "models:/Cardiomegaly-classifier-service/1": "is not a Keras classifier",
    }.items():
        with pytest.raises(DatasetError, match=message) as err:
            _score(trained_project, folder, model_uri=uri)
        hint = re.search(r"Cardiomegaly-classifier \(latest version 1; [^)]*@champion[^)]*\)", str(err.value))
        assert hint or "Keras" in message  # the registry's contents: the training run's @candidate beside


def test_a_model_version_without_its_own_threshold_is_refused(trained_project, scored_folder, tmp_path, monkeypatch):
    """A newer catalog version that is a bare network (no calibration, no threshold) is not scored with the
    older model's threshold: it is refused, or scored at an explicit inference.threshold."""
    from cardio_kedro.datasets import KerasModelDataset
    from cardio_kedro.modeling import build_model
    from tests.helpers import TINY_MODEL

    project = tmp_path / "copy"
    shutil.copytree(trained_project, project, ignore=shutil.ignore_patterns("mlflow.db"))
    mlflow_yml = project / "conf" / "local" / "mlflow.yml"
    mlflow_yml.write_text(mlflow_yml.read_text().replace(str(trained_project), str(project)))
    monkeypatch.chdir(project)
    bare = KerasModelDataset(
        str(project / "data/06_models/classifier.keras"), version=Version(None, "9999-12-31T00.00.00.000Z")
    )
    bare.save(build_model(32, **TINY_MODEL))
    folder, _ = scored_folder
    with pytest.raises(ValueError, match="9999-12-31T00.00.00.000Z .*has no threshold of its own"):
        run_pipeline(project, "inference", runtime_params={"images_dir": str(folder)})
    table = _score(project, folder, inference={"threshold": 0.3})
    assert set(table["threshold"]) == {0.3} and set(table["model_version"]) == {"9999-12-31T00.00.00.000Z"}


def test_an_empty_or_missing_folder_fails_clearly(trained_project, tmp_path, monkeypatch):
    monkeypatch.chdir(trained_project)
    with pytest.raises(ValueError, match="holds no PNG, JPEG or DICOM"):
        run_pipeline(trained_project, "inference", runtime_params={"images_dir": str(tmp_path)})
    with pytest.raises(DatasetError, match="does not exist"):
        run_pipeline(trained_project, "inference", runtime_params={"images_dir": str(tmp_path / "absent")})


def _post(port: int, images: list[str]) -> tuple[int, dict]:
    body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _png_bomb(side: int) -> bytes:
    """A valid, all-black 8-bit PNG of ``side`` x ``side`` px: a few hundred KB that decode to ``side**2`` bytes."""
    import zlib

    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )
    packer, row = zlib.compressobj(9), b"\x00" * (side + 1)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _peak_rss_mib(session: int) -> float:
    """Sum of the peak resident memory (VmHWM) of every process in the session ``session``."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) != session:
                continue
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0)
    return total / 1024


def _same_answers(served: pd.DataFrame, batch: pd.DataFrame) -> None:
    """Real NIH films, a model trained on phantoms: the same guard judges them in both, and whatever it
    lets through gets the same probability and label (the rest: no probability, no label)."""
    assert served["quality"].tolist() == batch["quality"].tolist()
    ok = (served["quality"] == "ok").to_numpy()
    expected = batch["probability"].where(batch["quality"] == "ok")
    np.testing.assert_allclose(served["probability"].astype(float), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(served.loc[ok, "label"], batch.loc[ok, "label"].astype(int))
    assert served.loc[~ok, ["probability", "label"]].isna().all().all()


def test_http_service_answers_like_the_batch_pipeline(trained_project, shared_nih, tmp_path, monkeypatch):
    monkeypatch.chdir(trained_project)
    sample = sorted((shared_nih / "sample").rglob("*.png"))[:6]
    folder = tmp_path / "nih"
    folder.mkdir()
    for p in sample:
        shutil.copy(p, folder / p.name)
    batch = _score(trained_project, folder).set_index("file").loc[[p.name for p in sample]]

    port = free_port()
    command = mlflow_serve_command("models:/Cardiomegaly-classifier-service/1", port)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{trained_project / 'mlflow.db'}"}
    elsewhere = tmp_path / "elsewhere"  # not the project: the model carries its code (code_paths)
    elsewhere.mkdir()
    with serve(command, elsewhere, f"http://127.0.0.1:{port}/ping", env, timeout=180) as server:
        payload = [base64.b64encode(p.read_bytes()).decode() for p in sample]
        status, answer = _post(port, payload)
        assert status == 200, answer
        _same_answers(pd.DataFrame(answer["predictions"]), batch)
        status, answer = _post(port, [payload[0], base64.b64encode(b"garbage bytes").decode()])
        assert 400 <= status < 500 and "row 1" in answer.get("message", "")
        assert payload[0][:40] not in answer["message"] and len(answer["message"]) < 400, answer  # no echo
        status, answer = _post(port, ["%%% not base64 %%%"])
        assert 400 <= status < 500 and "base64" in answer.get("message", "")
        status, answer = _post(port, [])
        assert status == 400 and "holds no image" in answer["message"] and "Traceback" not in answer["message"]
        status, answer = _post(port, payload[:1] * 65)  # inference.service.max_images_per_request: 64
        assert status == 400 and "max_images_per_request=64" in answer["message"]

        # 30 requests at once: valid images, 30000 px bombs (875 KB, 858 MiB decoded, each) and garbage
        bomb = base64.b64encode(_png_bomb(30000)).decode()
        kinds = ["valid", "bomb", "garbage"] * 10
        bodies = {"valid": [payload[1]], "bomb": [bomb], "garbage": [base64.b64encode(b"garbage").decode()]}
        before = _peak_rss_mib(server.pid)
        with ThreadPoolExecutor(max_workers=30) as pool:
            answers = list(pool.map(lambda kind: _post(port, bodies[kind]), kinds))
        for kind, (status, answer) in zip(kinds, answers):
            if kind == "valid":
                expected = batch["probability"].iloc[1]
                got = answer["predictions"][0]["probability"]
                assert status == 200 and (got == pytest.approx(expected, rel=1e-5) if got is not None else
                                          np.isnan(expected))  # fmt: skip
            else:
                assert status == 400 and "Error: row 0: " in answer["message"], answer
                assert "Traceback" not in answer["message"] and "cv2" not in answer["message"]
                assert "30000x30000 exceeds 8192 px" in answer["message"] if kind == "bomb" else True
        peak = _peak_rss_mib(server.pid)
        print(f"service peak memory: {before:.0f} MiB before the 30 requests, {peak:.0f} MiB after")
        assert peak - before < 300, f"the service's peak memory grew by {peak - before:.0f} MiB"  # one bomb: 858 MiB

    import mlflow

    served_code = Path(
        mlflow.artifacts.download_artifacts(
            "models:/Cardiomegaly-classifier-service/1", tracking_uri=env["MLFLOW_TRACKING_URI"]
        )
    )
    assert (served_code / "code" / "cardio_kedro" / "serving.py").is_file()
    assert (served_code / "serving_input_example.json").is_file()
