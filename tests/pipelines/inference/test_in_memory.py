"""inference on an in-memory DataCatalog with SequentialRunner: scores, errors as rows, overlays."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from cardio_kedro.evaluation.calibration import apply_calibration
from cardio_kedro.modeling import build_model, calibrate, operating_threshold
from cardio_kedro.pipelines.inference import create_pipeline
from cardio_kedro.pipelines.inference.nodes import overlay_names
from tests.helpers import TINY_MODEL, base_params


def test_a_folder_is_scored_with_errors_as_rows(toy_cache, tmp_path):
    folder = tmp_path / "incoming"
    (folder / "ward").mkdir(parents=True)
    for path in toy_cache["train"]["path"].iloc[:3]:
        shutil.copy(path, folder / "ward")
    (folder / "notes.png").write_text("not an image")
    files = sorted(p for p in folder.rglob("*.png"))
    model = calibrate(build_model(32, **TINY_MODEL), 1.5, -1.0, 0.4)
    catalog = DataCatalog()
    catalog["inference_images"] = pd.DataFrame(
        {"file": [str(p.relative_to(folder)) for p in files], "path": [str(p) for p in files]}
    )
    info = {"model": model, "threshold": operating_threshold(model), "version": "v1", "source": "memory"}
    catalog["inference_model"] = MemoryDataset(info, copy_mode="assign")
    catalog["params:inference"] = base_params("inference", workers=1, batch_size=2, heatmaps=True)
    catalog["inference_storage"] = {}  # a local folder
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    table = outputs["inference_predictions"].load().set_index("file")
    assert table.loc["notes.png", "error"].startswith("not_an_image") and np.isnan(
        table.loc["notes.png", "probability"]
    )
    scored = table[table["error"].isna()]
    expected = model.predict(toy_cache["cache"].images(toy_cache["train"]["path"].iloc[:3])[..., None], verbose=0)
    np.testing.assert_allclose(np.sort(scored["probability"]), np.sort(expected.reshape(-1)), rtol=1e-5)
    assert (scored["label"] == (scored["probability"] >= 0.4)).all() and set(scored["model_version"]) == {"v1"}
    assert str(table["label"].dtype) == "Int64" and table["label"].isna().sum() == 1  # 0/1, empty when unscored
    np.testing.assert_allclose(scored["probability"], apply_calibration(scored["score"], 1.5, -1.0), rtol=1e-4)
    overlays = outputs["inference_heatmaps"].load()
    assert sorted(overlays) == sorted(f"ward/{p.name}" for p in files if p.parent.name == "ward")
    assert all(png.startswith(b"\x89PNG") for png in overlays.values())


def test_a_model_without_its_own_threshold_is_refused_unless_one_is_given(toy_cache):
    from cardio_kedro.pipelines.inference.nodes import score_images

    path = toy_cache["train"]["path"].iloc[0]
    images = pd.DataFrame({"file": ["a.png"], "path": [path]})
    raw = build_model(32, **TINY_MODEL)  # an uncalibrated network: no threshold saved with it
    info = {"model": raw, "threshold": operating_threshold(raw), "version": "v7", "source": "somewhere"}
    params = base_params("inference", workers=1)
    with pytest.raises(ValueError, match="v7 .*has no threshold of its own.*inference.threshold"):
        score_images(images, info, params, {})
    table, _ = score_images(images, info, {**params, "threshold": 0.25}, {})
    assert table["threshold"].tolist() == [0.25] and table["label"].tolist() == [int(table["probability"][0] >= 0.25)]


def test_overlay_names_stay_unique_when_stems_collide():
    names = overlay_names(["a.jpg", "a.png", "b.jpeg", "ward/a.dcm", "ward/c.png", "scan"])
    assert names == {
        "a.jpg": "a.jpg.png",
        "a.png": "a.png.png",
        "b.jpeg": "b.png",
        "ward/a.dcm": "ward/a.png",
        "ward/c.png": "ward/c.png",
        "scan": "scan.png",
    }
    assert len(set(names.values())) == len(names)


def test_a_multi_label_model_gives_a_probability_label_and_overlay_per_finding(toy_cache, tmp_path):
    from cardio_kedro.pipelines.inference.nodes import score_images

    findings = ("Cardiomegaly", "Effusion", "Mass")
    model = calibrate(build_model(32, **TINY_MODEL, findings=findings), [1.0] * 3, [0.0] * 3, [0.0, 1.0, 0.5], findings)
    paths = toy_cache["train"]["path"].iloc[:4].tolist()
    images = pd.DataFrame({"file": [f"{i}.png" for i in range(4)], "path": paths})
    info = {"model": model, "threshold": operating_threshold(model), "version": "v3", "source": "memory"}
    table, overlays = score_images(images, info, base_params("inference", workers=1, batch_size=3, heatmaps=True), {})
    expected = model.predict(toy_cache["cache"].images(paths)[..., None], verbose=0)
    for j, finding in enumerate(findings):
        np.testing.assert_allclose(table[f"probability.{finding}"], expected[:, j], rtol=1e-5)
        assert str(table[f"label.{finding}"].dtype) == "Int64"
    # each finding at its own threshold: 0 calls everything positive, 1 nothing
    assert table["label.Cardiomegaly"].tolist() == [1] * 4 and table["label.Effusion"].tolist() == [0] * 4
    assert table["threshold.Mass"].tolist() == [0.5] * 4 and "probability" not in table
    assert sorted(overlays) == sorted(f"{i}.{f}.png" for i in range(4) for f in findings)
    assert len(set(overlays.values())) == len(overlays)  # one map per finding, not one map copied


def test_what_the_quality_guard_flags_gets_no_label(shared_nih, tmp_path):
    """Real films pass; the same films rotated or inverted, a photograph, a blank image and a DICOM
    whose header says lateral are flagged, get no label, and their probability only with score_flagged."""
    import cv2
    import matplotlib

    from cardio_kedro.cohort.imaging import load_gray
    from cardio_kedro.cohort.quality import fit_quality_guard
    from cardio_kedro.pipelines.inference.nodes import score_images

    films = sorted((shared_nih / "thumbs" / "images").glob("*.png"))
    pixels = np.stack([load_gray(p, 32)[0] for p in films[:600]])
    guard, _ = fit_quality_guard(pixels[:400], pixels[400:], 0.01, 0.35, 32, 2.0, 0.5)
    model = calibrate(build_model(32, **TINY_MODEL), 1.0, 0.0, 0.5, quality_guard=guard.to_config())
    film = cv2.imread(str(films[700]), cv2.IMREAD_GRAYSCALE)
    photo = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"), cv2.IMREAD_GRAYSCALE)
    written = {"film.png": film, "rotated.png": np.rot90(film), "inverted.png": 255 - film, "photo.png": photo,
               "blank.png": np.full((64, 64), 40, np.uint8), "tiny.png": film[:20, :20]}  # fmt: skip
    for name, image in written.items():
        cv2.imwrite(str(tmp_path / name), np.ascontiguousarray(image))
    # the same frontal pixels in a DICOM whose header says lateral (ViewPosition LL), and one that says PA
    from tests.cohort.test_dicom import _dicom, _save

    for name, view in (("lateral.dcm", "LL"), ("frontal.dcm", "PA")):
        _save(_dicom(film, ViewPosition=view), tmp_path / name)
        written[name] = film
    images = pd.DataFrame({"file": list(written), "path": [str(tmp_path / n) for n in written]})
    info = {"model": model, "threshold": operating_threshold(model), "version": "v2", "source": "memory"}
    params = base_params("inference", workers=1)
    table = score_images(images, info, params, {})[0].set_index("file")
    expected = ["ok", "rotated", "inverted", "not_frontal_cxr", "blank", "too_small", "lateral", "ok"]
    assert table["quality"].tolist() == expected
    flagged = table.drop(index=["film.png", "frontal.dcm"])
    assert flagged["label"].isna().all() and flagged["probability"].isna().all()
    assert table.loc["film.png", "label"] in (0, 1)
    shown = score_images(images, info, {**params, "score_flagged": True}, {})[0].set_index("file")
    assert shown["probability"].notna().all() and shown.drop(index=["film.png", "frontal.dcm"])["label"].isna().all()
