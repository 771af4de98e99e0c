"""The phantom generator: labels follow the CTR, determinism, realism bar (no global-statistics shortcut)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from cardio_kedro.cohort.nih import DRAWABLE_FINDINGS
from cardio_kedro.cohort.phantoms import (
    CTR_THRESHOLD,
    finding_box,
    heart_box,
    render_phantom,
    sample_cohort,
)
from tests.helpers import base_params

DRAWING = ("ap_fraction", "reader_sd", "ctr_spread", "drawn_findings")


def _cohort(n_patients, prevalence, mean_follow_ups, seed, **overrides):
    """``sample_cohort`` with conf/base's drawing settings, ``overrides`` on top."""
    drawing = {key: value for key, value in base_params("phantoms").items() if key in DRAWING}
    return sample_cohort(n_patients, prevalence, mean_follow_ups, seed, **{**drawing, **overrides})


def test_labels_follow_the_cardiothoracic_ratio():
    cohort = _cohort(400, prevalence=0.3, mean_follow_ups=0.6, seed=1, reader_sd=0.0)
    positive = cohort["Finding Labels"].str.contains("Cardiomegaly")
    assert (positive == (cohort["ctr"] > CTR_THRESHOLD)).all()
    assert set(cohort["p_cardiomegaly"]) == {0.0, 1.0}
    # CTRs straddle the threshold closely, so some cases are hard
    assert (np.abs(cohort["ctr"] - CTR_THRESHOLD) < 0.02).mean() > 0.1
    assert 0.2 < cohort.groupby("Patient ID")["ctr"].max().gt(CTR_THRESHOLD).mean() < 0.4


def test_reader_error_makes_labels_near_the_cut_off_uncertain_with_a_known_probability():
    exact = _cohort(3000, prevalence=0.3, mean_follow_ups=0.6, seed=3, reader_sd=0.0)
    read = _cohort(3000, prevalence=0.3, mean_follow_ups=0.6, seed=3, reader_sd=0.01)
    assert np.array_equal(exact["ctr"], read["ctr"])  # the anatomy does not move with the reader
    positive = read["Finding Labels"].str.contains("Cardiomegaly").to_numpy()
    p, distance = read["p_cardiomegaly"].to_numpy(), (read["ctr"] - CTR_THRESHOLD).to_numpy()
    assert np.allclose(p[np.abs(distance) < 1e-4], 0.5, atol=0.01)
    assert (p[distance > 0.03] > 0.998).all() and (p[distance < -0.03] < 0.002).all()
    # the labels are drawn at that probability: in each band, positives match its mean probability
    for band in [(-0.01, -0.003), (-0.003, 0.003), (0.003, 0.01)]:
        inside = (distance > band[0]) & (distance <= band[1])
        assert inside.sum() > 80
        assert abs(positive[inside].mean() - p[inside].mean()) < 0.1
    assert (positive != (distance > 0)).sum() > 20  # some images are read across the cut-off
    with pytest.raises(ValueError, match="reader_sd"):
        _cohort(10, 0.3, 0.5, seed=1, reader_sd=-0.01)


def test_follow_ups_other_findings_and_no_finding_present():
    cohort = _cohort(400, prevalence=0.3, mean_follow_ups=0.6, seed=2)
    assert cohort["Follow-up #"].max() >= 2
    assert (cohort.groupby("Patient ID").size() > 1).sum() > 50
    labels = set(cohort["Finding Labels"].str.split("|").explode())
    assert "No Finding" in labels and "Infiltration" in labels and "Effusion" in labels
    assert set(cohort["View Position"]) == {"AP", "PA"}


def test_generation_is_deterministic_per_seed():
    a, b = _cohort(30, 0.3, 0.5, seed=5), _cohort(30, 0.3, 0.5, seed=5)
    assert a.equals(b)
    assert np.array_equal(render_phantom(a.iloc[0], 64), render_phantom(b.iloc[0], 64))
    assert not _cohort(30, 0.3, 0.5, seed=6).equals(a)


def test_ap_views_magnify_the_heart():
    row = _cohort(1, 0.5, 0.0, seed=0).iloc[0].to_dict()
    pa = heart_box({**row, "View Position": "PA"}, 1024)
    ap = heart_box({**row, "View Position": "AP"}, 1024)
    assert ap[2] == pytest.approx(pa[2] * 1.12, rel=0.05)


def test_heart_box_covers_the_bright_heart():
    row = _cohort(1, 0.5, 0.0, seed=4).iloc[0].to_dict()
    row.update({"rotation": 0.0, "noise": 0.0, "exposure": 1.0, "gamma": 1.0})
    img = render_phantom(row, 256).astype(float)
    x, y, w, h = heart_box(row, 256)
    inside = img[int(y + h * 0.3) : int(y + h * 0.6), int(x + w * 0.6) : int(x + w * 0.8)].mean()
    lung = img[int(y - h * 0.6) : int(y - h * 0.3), int(x + w * 0.6) : int(x + w * 0.8)].mean()
    assert inside > lung + 10  # soft-tissue heart is denser (brighter) than the lung above it


@pytest.fixture(scope="module")
def drawn_cohort():
    """Phantoms drawing every drawable finding, with their global image statistics."""
    cohort = _cohort(700, prevalence=0.5, mean_follow_ups=0.0, seed=11, drawn_findings=DRAWABLE_FINDINGS)
    feats = []
    for row in cohort.to_dict("records"):
        img = render_phantom(row, 96).astype(np.float32)
        feats.append([img.mean(), img.std(), *np.percentile(img, [5, 25, 50, 75, 95])])
    x = np.array(feats)
    return cohort, (x - x.mean(0)) / x.std(0)


@pytest.mark.parametrize("finding", DRAWABLE_FINDINGS)
def test_no_drawn_finding_is_readable_from_global_image_statistics(drawn_cohort, finding):
    cohort, x = drawn_cohort
    y = cohort["Finding Labels"].str.split("|").apply(lambda labels: finding in labels).to_numpy()
    assert y.sum() >= 20
    p = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=5, method="predict_proba")[:, 1]
    auc = roc_auc_score(y, p)
    assert auc < 0.65, f"global image statistics predict {finding} (AUC {auc:.3f}): phantoms have a shortcut"


def test_drawn_findings_are_visible_inside_their_boxes():
    cohort = _cohort(300, prevalence=0.3, mean_follow_ups=0.0, seed=12, drawn_findings=DRAWABLE_FINDINGS)
    for finding, brighter in (("Effusion", True), ("Mass", True), ("Nodule", True), ("Pneumothorax", False)):
        rows = cohort[cohort["Finding Labels"].str.contains(finding)].head(5).to_dict("records")
        assert rows, finding
        for row in rows:
            row.update({"noise": 0.0, "gamma": 1.0, "exposure": 1.0})
            x, y, w, h = (int(round(c)) for c in finding_box(row, finding, 256))
            with_sign = render_phantom(row, 256).astype(float)[y : y + h, x : x + w]
            key = {"Effusion": "effusion_height", "Pneumothorax": "pneumothorax_gap"}.get(
                finding, f"{finding.lower()}_radius"
            )
            without = render_phantom({**row, key: 0.0}, 256).astype(float)[y : y + h, x : x + w]
            change = with_sign - without
            if brighter:  # an opacity: the box is brighter on average
                assert change.mean() > 8, (finding, change.mean())
            else:  # a lucent rim along the box's lateral side: a good share of it is much darker
                assert np.percentile(change, 10) < -6, (finding, np.percentile(change, 10))
    with pytest.raises(ValueError, match="no drawn Mass"):
        finding_box(cohort[~cohort["Finding Labels"].str.contains("Mass")].iloc[0], "Mass", 256)


def test_other_findings_co_occur_with_cardiomegaly_as_in_nih():
    cohort = _cohort(3000, prevalence=0.3, mean_follow_ups=0.0, seed=13, reader_sd=0.004)
    labels = cohort["Finding Labels"].str.split("|")
    cardio = labels.apply(lambda s: "Cardiomegaly" in s)
    effusion = labels.apply(lambda s: "Effusion" in s)
    assert effusion[cardio].mean() == pytest.approx(0.383, abs=0.04)
    assert effusion[~cardio].mean() == pytest.approx(0.112, abs=0.02)
    # only drawn findings get a geometry: the default cohort draws the heart alone
    assert (cohort["effusion_height"] == 0).all() and (cohort["mass_radius"] == 0).all()
    with pytest.raises(ValueError, match="drawn_findings"):
        _cohort(10, 0.3, 0.0, seed=1, drawn_findings=["Effusion"])


def test_phantoms_follow_each_row_of_a_real_label_table():
    import pandas as pd

    from cardio_kedro.cohort.phantoms import phantoms_for_labels

    labels = pd.DataFrame(
        {
            "Image Index": [f"{i:08d}_000.png" for i in range(6)],
            "Finding Labels": ["Cardiomegaly", "No Finding", "Cardiomegaly|Effusion", "Effusion", "No Finding", "Mass"],
            "Patient ID": [7, 7, 9, 9, 30805, 30805],  # real IDs: sparse and large
            "View Position": ["PA", "PA", "AP", "AP", "PA", "AP"],
        }
    )
    drawn = phantoms_for_labels(labels, seed=3)
    assert list(drawn["ctr"] > CTR_THRESHOLD) == [True, False, True, False, False, False]
    assert (drawn[list(labels.columns)] == labels).all().all()  # the table's own columns are kept as they are
    assert drawn.groupby("Patient ID")["thorax"].std().max() < 0.03  # a patient keeps its thorax
    assert drawn.equals(phantoms_for_labels(labels, seed=3)) and not drawn.equals(phantoms_for_labels(labels, seed=4))
    image = render_phantom(drawn.iloc[2].to_dict(), 64)
    assert image.shape == (64, 64) and image.std() > 0
