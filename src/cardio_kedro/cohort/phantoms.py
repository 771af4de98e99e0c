"""Synthetic chest radiographs ("phantoms") in the NIH ChestX-ray14 layout.

Each phantom is drawn in a patient coordinate frame (unit square, rotated and shifted per image):
body outline, dark lung fields, spine and mediastinum, heart silhouette, diaphragm domes, ribs and
clavicles, then exposure, gamma and noise. The label follows the clinical definition: Cardiomegaly
when the cardiothoracic ratio (widest heart / widest inner thorax) exceeds 0.5, as a reader measures
it: the reader's ratio differs from the drawn one by a normal error (``reader_sd``), so an image
near the cut-off is labelled positive with probability Phi((ctr - 0.5) / reader_sd), as real readers
disagree near it. That probability is known for every phantom, so calibration can be checked
against the truth. AP films magnify the
heart (the film is farther from the heart) without changing the true ratio, as in real AP films.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import ndtr

from cardio_kedro.cohort.nih import DRAWABLE_FINDINGS

# Share of NIH ChestX-ray14 images with each other finding among Cardiomegaly images and among the
# rest (Data_Entry_2017, 112,120 images): the labels co-occur with Cardiomegaly as NIH's do (Effusion
# on 38% of Cardiomegaly images, 11% of the others).
NIH_RATES_GIVEN_CARDIOMEGALY: dict[str, tuple[float, float]] = {
    "Atelectasis": (0.1333, 0.1023),
    "Consolidation": (0.0609, 0.0411),
    "Edema": (0.0457, 0.0199),
    "Effusion": (0.3829, 0.1121),
    "Emphysema": (0.0159, 0.0226),
    "Fibrosis": (0.0187, 0.0149),
    "Hernia": (0.0025, 0.0020),
    "Infiltration": (0.2115, 0.1766),
    "Mass": (0.0367, 0.0519),
    "Nodule": (0.0389, 0.0569),
    "Pleural_Thickening": (0.0400, 0.0299),
    "Pneumonia": (0.0148, 0.0127),
    "Pneumothorax": (0.0177, 0.0480),
}

CTR_THRESHOLD = 0.5
AP_MAGNIFICATION = 1.12


def sample_cohort(
    n_patients: int,
    prevalence: float,
    mean_follow_ups: float,
    seed: int,
    *,
    ap_fraction: float,
    reader_sd: float,
    ctr_spread: float,
    drawn_findings: Sequence[str],
) -> pd.DataFrame:
    """Draw the per-image metadata of a phantom cohort (no pixels).

    Returns one row per image with the NIH columns plus the drawn anatomy (``ctr``, ``thorax``,
    ``rotation`` ...) that ``render_phantom`` needs, and ``p_cardiomegaly``, the probability that a
    reader labels the image positive. Patients keep their anatomy across follow-ups with a small
    drift, so a follow-up can cross the threshold. ``reader_sd`` 0 labels by the drawn ratio exactly.
    ``ctr_spread`` is the sd of a patient's distance from the 0.5 cut-off (half-normal): the smaller,
    the more patients sit near it. The other findings are labels at NIH's rates given the image's
    Cardiomegaly label; those in ``drawn_findings`` (see ``DRAWABLE_FINDINGS``) are also drawn, each
    with its own geometry (``<finding>_...`` columns, drawn from a stream of their own so that the
    rest of the cohort does not move with them).
    """
    unknown = sorted(set(drawn_findings) - set(DRAWABLE_FINDINGS))
    if unknown or "Cardiomegaly" not in drawn_findings:
        raise ValueError(
            f"drawn_findings must include Cardiomegaly and come from {list(DRAWABLE_FINDINGS)}; "
            f"got {list(drawn_findings)}"
        )
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence}")
    if reader_sd < 0:
        raise ValueError(f"reader_sd must be >= 0, got {reader_sd}")
    rng = np.random.default_rng(seed)
    n_images = 1 + rng.poisson(mean_follow_ups, size=n_patients)
    patient = np.repeat(np.arange(1, n_patients + 1), n_images)
    follow_up = np.concatenate([np.arange(k) for k in n_images])
    n = patient.size

    positive_patient = rng.random(n_patients) < prevalence
    # Margin from the threshold: mostly small, so some cases are hard.
    margin = np.abs(rng.normal(0.0, ctr_spread, n_patients))
    base_ctr = np.where(positive_patient, CTR_THRESHOLD + margin, CTR_THRESHOLD - margin)
    ctr = base_ctr[patient - 1] + rng.normal(0.0, 0.006, n) * (follow_up > 0)
    ctr = np.clip(ctr, 0.34, 0.70)

    sex = np.where(rng.random(n_patients) < 0.56, "M", "F")[patient - 1]
    age0 = rng.integers(18, 88, n_patients)
    age = age0[patient - 1] + follow_up // 3
    view = np.where(rng.random(n) < ap_fraction, "AP", "PA")

    p_cardiomegaly = reader_probability(ctr, reader_sd)
    # one uniform per image, drawn whatever reader_sd is, so the rest of the cohort does not move with it
    read_positive = rng.random(n) < p_cardiomegaly
    labels = []
    others = np.array(list(NIH_RATES_GIVEN_CARDIOMEGALY))
    given = np.array(list(NIH_RATES_GIVEN_CARDIOMEGALY.values()))  # (findings, 2)
    rates = np.where(read_positive[:, None], given[:, 0], given[:, 1])
    has_other = rng.random((n, len(others))) < rates
    for i in range(n):
        found = list(others[has_other[i]])
        if read_positive[i]:
            found.append("Cardiomegaly")
        labels.append("|".join(sorted(found)) if found else "No Finding")

    return pd.DataFrame(
        {
            "Image Index": [f"{p:08d}_{f:03d}.png" for p, f in zip(patient, follow_up)],
            "Finding Labels": labels,
            "Follow-up #": follow_up,
            "Patient ID": patient,
            "Patient Age": age,
            "Patient Gender": sex,
            "View Position": view,
            "ctr": ctr,
            "p_cardiomegaly": p_cardiomegaly,
            **_anatomy(rng, patient, n_patients),
            **_finding_geometry(np.random.default_rng([seed, 1]), has_other, list(others), drawn_findings),
        }
    )


def _finding_geometry(
    rng: np.random.Generator, has: np.ndarray, names: list[str], drawn: Sequence[str]
) -> dict[str, np.ndarray]:
    """Where and how large each drawn finding is, per image (size 0: not drawn on that image).

    Effusion: fluid at one lung base up to ``effusion_height`` of the lung's height, higher laterally
    (the meniscus), blunting the costophrenic angle. Mass and nodule: a round opacity of radius
    ``<finding>_radius`` (patient frame; nodules 0.02-0.035, masses 0.05-0.08, as NIH's boxes are)
    at a place in one lung. Pneumothorax: a lucent rim without lung tissue, ``pneumothorax_gap`` wide
    at the apex and narrowing towards the base, with the collapsed lung's edge as a thin white line.
    """
    n = has.shape[0]
    present = {f: has[:, names.index(f)] & (f in drawn) for f in DRAWABLE_FINDINGS if f != "Cardiomegaly"}
    side = {f: np.where(rng.random(n) < 0.5, -1.0, 1.0) for f in present}
    out = {
        "effusion_side": side["Effusion"],
        "effusion_height": rng.uniform(0.10, 0.22, n) * present["Effusion"],
        "pneumothorax_side": side["Pneumothorax"],
        "pneumothorax_gap": rng.uniform(0.05, 0.10, n) * present["Pneumothorax"],
    }
    for finding, (low, high) in (("Mass", (0.05, 0.08)), ("Nodule", (0.02, 0.035))):
        key = finding.lower()
        out[f"{key}_side"] = side[finding]
        out[f"{key}_radius"] = rng.uniform(low, high, n) * present[finding]
        out[f"{key}_height"] = rng.uniform(0.2, 0.75, n)  # share of the lung's height, apex to dome
        out[f"{key}_lateral"] = rng.uniform(0.35, 0.8, n)  # share of the half-thorax, midline to wall
    return out


def reader_probability(ctr: np.ndarray, reader_sd: float) -> np.ndarray:
    """The probability that a reader whose ratio has a normal error of ``reader_sd`` calls
    Cardiomegaly (reads the ratio above 0.5); a step at 0.5 when ``reader_sd`` is 0."""
    ctr = np.asarray(ctr, np.float64)
    if reader_sd == 0:
        return (ctr > CTR_THRESHOLD).astype(np.float64)
    return ndtr((ctr - CTR_THRESHOLD) / reader_sd)


def _anatomy(rng: np.random.Generator, patient: np.ndarray, n_patients: int) -> dict[str, np.ndarray]:
    """What ``render_phantom`` draws besides the cardiothoracic ratio, per image (``patient``: 1-based index
    of each image's patient; the thorax width is the patient's, with a small drift)."""
    n = patient.size
    thorax = rng.uniform(0.60, 0.74, n_patients)[patient - 1] + rng.normal(0, 0.005, n)
    return {
        "thorax": thorax,
        "heart_height": rng.uniform(0.70, 0.85, n),
        "heart_offset": rng.uniform(0.10, 0.22, n),
        "apex": rng.uniform(0.10, 0.16, n),
        "diaphragm": rng.uniform(0.70, 0.78, n),
        "body": rng.uniform(0.86, 0.98, n),
        "rotation": rng.normal(0.0, 3.0, n),
        "shift_x": rng.normal(0.0, 0.02, n),
        "shift_y": rng.normal(0.0, 0.02, n),
        "exposure": rng.normal(1.0, 0.15, n),
        "heart_density": rng.uniform(0.18, 0.34, n),
        "lung_density": rng.uniform(0.24, 0.36, n),
        "gamma": rng.uniform(0.75, 1.35, n),
        "noise": rng.uniform(0.01, 0.04, n),
        "rib_phase": rng.uniform(0.0, 1.0, n),
        "seed": rng.integers(0, 2**31 - 1, n),
    }


def phantoms_for_labels(labels: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The anatomy of a phantom for every row of a real NIH label table, following the row's labels.

    ``labels`` keeps its columns (patients, follow-ups, ages, views, findings); a row labelled
    Cardiomegaly gets a cardiothoracic ratio above 0.5, any other row one below, each patient with
    its own margin from the threshold (so some patients are hard) and a small drift between its
    images. AP rows are magnified when drawn, as in ``sample_cohort``.
    """
    rng = np.random.default_rng(seed)
    patient = pd.factorize(labels["Patient ID"])[0] + 1
    n_patients = int(patient.max()) if len(patient) else 0
    margin = (
        0.012 + np.abs(rng.normal(0.0, 0.05, n_patients))[patient - 1] + np.abs(rng.normal(0.0, 0.004, len(labels)))
    )
    positive = labels["Finding Labels"].astype(str).str.contains("Cardiomegaly", regex=False).to_numpy()
    ctr = np.where(positive, np.clip(CTR_THRESHOLD + margin, 0.512, 0.70), np.clip(CTR_THRESHOLD - margin, 0.34, 0.488))
    return labels.assign(ctr=ctr, **_anatomy(rng, patient, n_patients))


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    """Smooth step from 0 (x << 0) to 1 (x >> 0) over about ``width``."""
    return 0.5 * (1.0 + np.tanh(x / width))


def heart_box(row: pd.Series | dict, size: int) -> tuple[float, float, float, float]:
    """The heart's axis-aligned bounding box ``(x, y, w, h)`` in pixels of a ``size`` image."""
    cx, cy, half_w, half_h = _heart_geometry(row)
    corners = np.array([[dx, dy] for dx in (-half_w, half_w) for dy in (-half_h, half_h)])
    corners = corners + [cx, cy]
    pts = np.array([_to_image(u, v, row) for u, v in corners])
    x0, y0 = pts.min(axis=0) * size
    x1, y1 = pts.max(axis=0) * size
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def _heart_geometry(row) -> tuple[float, float, float, float]:
    """Heart centre and half-axes in patient coordinates (unit square)."""
    magnify = AP_MAGNIFICATION if row["View Position"] == "AP" else 1.0
    half_w = 0.5 * row["ctr"] * row["thorax"] * magnify
    half_h = half_w * row["heart_height"]
    cx = 0.5 + row["heart_offset"] * half_w
    cy = row["diaphragm"] - 0.55 * half_h
    return cx, cy, half_w, half_h


def _to_image(u: float, v: float, row) -> tuple[float, float]:
    """Map a patient-frame point to image coordinates (inverse of the render transform)."""
    a = np.deg2rad(row["rotation"])
    du, dv = u - 0.5, v - 0.5
    x = np.cos(a) * du + np.sin(a) * dv + 0.5 + row["shift_x"]
    y = -np.sin(a) * du + np.cos(a) * dv + 0.5 + row["shift_y"]
    return x, y


def _lung_frame(row, u: np.ndarray, v: np.ndarray, edge: float) -> dict[str, np.ndarray]:
    """Diaphragm domes and lung fields at patient-frame points ``(u, v)``: ``side`` (-1 image left),
    ``dome`` (the dome's height above each point), ``d_lat`` (distance from the midline), ``lung_w``
    (the lung's half-width at each height) and ``lung`` (0..1 inside a lung field)."""
    half_t, apex, dia = 0.5 * row["thorax"], row["apex"], row["diaphragm"]
    side = np.where(u < 0.5, -1.0, 1.0)
    dome_c = 0.5 + side * 0.55 * half_t
    dome_top = dia - 0.015 * (side < 0)
    dome = dome_top + 0.9 * (u - dome_c) ** 2 / max(half_t, 1e-3)
    d_lat = np.abs(u - 0.5)
    lung_w = half_t * np.sqrt(np.clip((v - apex) / (dia - apex + 0.02), 0.0, 1.0)) ** 0.5
    lung = _soft(lung_w - d_lat, edge) * _soft(d_lat - 0.055, edge) * _soft(dome - v, edge) * _soft(v - apex, edge * 2)
    return {"side": side, "dome": dome, "d_lat": d_lat, "lung_w": lung_w, "lung": lung}


def _finding_signs(row, u: np.ndarray, v: np.ndarray, edge: float, frame: dict) -> dict[str, np.ndarray]:
    """The drawn findings of ``row`` as 0..1 masks in the patient frame (see ``_finding_geometry``)."""
    half_t, apex, dia = 0.5 * row["thorax"], row["apex"], row["diaphragm"]
    side, d_lat, lung = frame["side"], frame["d_lat"], frame["lung"]
    signs = {}
    if row.get("effusion_height", 0) > 0:
        height = row["effusion_height"] * (dia - apex)
        lateral = np.clip(d_lat / half_t, 0.0, 1.0)
        top = frame["dome"] - height * (0.35 + 0.65 * lateral**2)  # the meniscus: higher at the chest wall
        this_side = _soft(side * row["effusion_side"], 0.01)
        signs["Effusion"] = (
            this_side
            * _soft(v - top, edge)
            * _soft(frame["lung_w"] + 0.01 - d_lat, edge)
            * (_soft(d_lat - 0.055, edge) * _soft(frame["dome"] + 0.012 - v, edge))
        )
    if row.get("pneumothorax_gap", 0) > 0:
        depth = np.clip(1.0 - (v - apex) / (dia - apex), 0.15, 1.0)  # widest at the apex
        inner = frame["lung_w"] - row["pneumothorax_gap"] * depth
        this_side = _soft(side * row["pneumothorax_side"], 0.01)
        signs["Pneumothorax"] = this_side * lung * _soft(d_lat - inner, edge)
        signs["pneumothorax_line"] = this_side * lung * np.exp(-(((d_lat - inner) / 0.005) ** 2))
    for finding in ("Mass", "Nodule"):
        key = finding.lower()
        radius = row.get(f"{key}_radius", 0)
        if radius > 0:
            cu = 0.5 + row[f"{key}_side"] * (0.07 + row[f"{key}_lateral"] * (half_t - 0.07 - radius))
            cv = apex + 0.05 + row[f"{key}_height"] * (dia - apex - 0.1)
            dist = np.sqrt((u - cu) ** 2 + (v - cv) ** 2)
            blob = _soft(radius - dist, max(edge, 0.15 * radius))
            if finding == "Mass":  # lobulated: a second, smaller lobe on its edge
                lobe = np.sqrt((u - cu - 0.6 * radius) ** 2 + (v - cv + 0.5 * radius) ** 2)
                blob = np.maximum(blob, _soft(0.6 * radius - lobe, max(edge, 0.15 * radius)))
            signs[finding] = blob
    return signs


def _drawn_findings(row, u: np.ndarray, v: np.ndarray, edge: float, frame: dict, ribs: np.ndarray) -> np.ndarray:
    """The density the other drawn findings add (0 where a row draws none)."""
    signs = _finding_signs(row, u, v, edge, frame)
    out = np.zeros_like(u)
    if "Effusion" in signs:  # fluid is as dense as soft tissue: the lung base turns white
        out += (row["lung_density"] + 0.08) * signs["Effusion"]
    if "Pneumothorax" in signs:  # air without lung tissue: darker, ribs fainter, the lung edge a white line
        rim, line = signs["Pneumothorax"], signs["pneumothorax_line"]
        out += -0.09 * rim - 0.04 * ribs * rim + 0.12 * line
    for finding, density in (("Mass", 0.24), ("Nodule", 0.28)):
        if finding in signs:
            out += density * signs[finding]
    return out


def finding_box(row: pd.Series | dict, finding: str, size: int, grid: int = 160) -> tuple[float, float, float, float]:
    """The axis-aligned box ``(x, y, w, h)`` in pixels of a ``size`` image around a drawn finding
    (where its mask exceeds 0.5), as NIH's box list gives it; the heart's box for Cardiomegaly."""
    if finding == "Cardiomegaly":
        return heart_box(row, size)
    row = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in dict(row).items()}
    axis = (np.arange(grid, dtype=np.float32) + 0.5) / grid
    u, v = np.meshgrid(axis, axis)
    edge = 1.5 / grid
    mask = _finding_signs(row, u, v, edge, _lung_frame(row, u, v, edge)).get(finding)
    if mask is None or not (mask > 0.5).any():
        raise ValueError(f"{row.get('Image Index', 'this phantom')} has no drawn {finding}")
    rows, cols = np.nonzero(mask > 0.5)
    u0, u1, v0, v1 = cols.min() / grid, (cols.max() + 1) / grid, rows.min() / grid, (rows.max() + 1) / grid
    pts = np.array([_to_image(a, b, row) for a in (u0, u1) for b in (v0, v1)])
    x0, y0 = pts.min(axis=0) * size
    x1, y1 = pts.max(axis=0) * size
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)


def render_phantom(row: pd.Series | dict, size: int = 1024) -> np.ndarray:
    """Render one phantom radiograph as a ``size`` x ``size`` uint8 image (bright = dense)."""
    row = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in dict(row).items()}
    rng = np.random.default_rng(int(row["seed"]))
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(grid, grid)
    a = np.deg2rad(row["rotation"])
    dx, dy = x - 0.5 - row["shift_x"], y - 0.5 - row["shift_y"]
    u = (np.cos(a) * dx - np.sin(a) * dy + 0.5).astype(np.float32)
    v = (np.sin(a) * dx + np.cos(a) * dy + 0.5).astype(np.float32)
    edge = 1.5 / size + 0.004
    is_ap = row["View Position"] == "AP"

    half_t = 0.5 * row["thorax"]
    apex, dia = row["apex"], row["diaphragm"]
    # Body outline: soft tissue inside a wide rounded trunk, air outside.
    body = _soft(0.5 * row["body"] - np.abs(u - 0.5) * (1 + 0.25 * (v - 0.55) ** 2), edge * 3)
    img = 0.06 + 0.46 * body
    # Shoulders and neck (above the lungs).
    img += 0.08 * body * _soft(apex + 0.02 - v, 0.02)

    # Diaphragm domes (one per side, the right higher) and the lung fields from the apex to them.
    frame = _lung_frame(row, u, v, edge)
    dome, d_lat, lung = frame["dome"], frame["d_lat"], frame["lung"]
    img -= row["lung_density"] * lung * (1.0 + 0.15 * (v - 0.5))

    # Ribs: posterior arcs across each lung, brighter where they cross the lung field.
    ribs = np.zeros_like(u)
    n_ribs = 9
    spacing = (dia - apex) / n_ribs
    for k in range(n_ribs):
        centre = apex + (k + 0.3 + 0.2 * row["rib_phase"]) * spacing
        arc = centre + 0.25 * (d_lat - 0.05) ** 2 / max(half_t, 1e-3) - 0.02 * d_lat
        ribs += np.exp(-(((v - arc) / (0.18 * spacing)) ** 2))
    img += 0.07 * ribs * lung + 0.03 * ribs * _soft(half_t + 0.03 - d_lat, edge) * (1 - lung)
    # Thoracic wall: a bright rim at the lateral lung borders.
    img += 0.06 * np.exp(-(((d_lat - half_t - 0.012) / 0.012) ** 2)) * _soft(dome - v, edge)

    # Clavicles: bright bands sloping from the neck to the shoulders (higher on AP films).
    clav_y = apex + (0.005 if not is_ap else -0.02) + 0.18 * (d_lat - 0.04)
    clav = np.exp(-(((v - clav_y) / 0.011) ** 2)) * _soft(0.30 - d_lat, 0.01) * _soft(d_lat - 0.03, 0.01)
    img += 0.16 * clav
    if is_ap:  # scapulae project over the lung apices on AP films
        scap = _soft(0.05 - np.abs(d_lat - half_t + 0.02) - 0.4 * np.abs(v - apex - 0.13), 0.01)
        img += 0.05 * scap * lung

    # Mediastinum and spine (central, dense), vertebrae as a periodic texture.
    img += 0.22 * _soft(0.06 + 0.015 * (v < 0.3) - d_lat, edge) * _soft(dia + 0.15 - v, 0.02)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (v - row["rib_phase"] * 0.04) / 0.042)
    img += (0.03 + 0.03 * vert) * _soft(0.028 - d_lat, edge)

    # Heart silhouette: soft-tissue ellipse sitting on the left dome (image right).
    hcx, hcy, half_w, half_h = _heart_geometry(row)
    r = ((u - hcx) / half_w) ** 2 + ((v - hcy) / half_h) ** 2
    heart = _soft(1.0 - r, 0.03) * _soft(dome + 0.04 - v, edge)
    img += row["heart_density"] * heart * (lung + 0.3 * (1 - lung))

    # Abdomen below the domes.
    img += 0.14 * _soft(v - dome, edge * 2) * body

    img += _drawn_findings(row, u, v, edge, frame, ribs)

    # Exposure, detector response and noise.
    img = np.clip(img, 0.0, 1.0) ** row["gamma"] * row["exposure"]
    img += 0.03 * (y - 0.5) + rng.standard_normal((size, size), dtype=np.float32) * row["noise"]
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
