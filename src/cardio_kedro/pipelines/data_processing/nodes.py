"""Nodes of the data_processing pipeline: metadata, image files, pixel cache, splits, rebalancing."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from cardio_kedro.datasets.pixel_cache_dataset import CacheRequest
from cardio_kedro.imaging import ImageError, check_image_file
from cardio_kedro.parallel import imap_progress
from cardio_kedro.phantoms import NIH_FINDINGS

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
EXAMPLES_PER_REASON = 10


def clean_metadata(cohort: dict, target_finding: str, params: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    """Type the NIH columns, derive the binary ``target`` and flag implausible ages.

    Age rule: an age above ``max_plausible_age`` (NIH has a few, e.g. 148 or 412) or below 0 is set
    to missing and flagged ``age_implausible``; the image is kept, since age is not a model input.
    Returns the clean table and a label report (counts per finding, unknown labels).
    """
    if target_finding not in NIH_FINDINGS:
        raise ValueError(f"target_finding '{target_finding}' is not an NIH finding; use one of {list(NIH_FINDINGS)}")
    raw = cohort["metadata"]
    age = pd.to_numeric(raw["Patient Age"].astype(str).str.extract(r"(\d+)")[0], errors="coerce")
    max_age = float(params.get("max_plausible_age", 100))
    implausible = (age > max_age) | (age < 0)
    labels = raw["Finding Labels"].astype(str).str.strip()
    label_sets = labels.str.split("|")
    known = set(NIH_FINDINGS) | {"No Finding"}
    all_labels = label_sets.explode().str.strip()
    counts = all_labels.value_counts()
    unknown = sorted(set(counts.index) - known)
    if unknown:
        logger.warning("Unknown finding label(s) %s: kept in 'labels', never a target", unknown)
    clean = pd.DataFrame(
        {
            "image_index": raw["Image Index"].astype(str).str.strip(),
            "patient_id": pd.to_numeric(raw["Patient ID"], errors="raise").astype("int64"),
            "follow_up": pd.to_numeric(raw["Follow-up #"], errors="coerce").fillna(0).astype("int64"),
            "age": age.where(~implausible).astype("float64"),
            "age_implausible": implausible.fillna(False).astype(bool),
            "sex": raw["Patient Gender"].astype(str).str.strip().str.upper().str[:1],
            "view": raw["View Position"].astype(str).str.strip().str.upper(),
            "labels": labels,
            "target": label_sets.apply(lambda s: target_finding in [x.strip() for x in s]).astype("int8"),
        }
    )
    duplicated = clean["image_index"].duplicated()
    if duplicated.any():
        logger.warning("Dropping %d duplicated image rows", int(duplicated.sum()))
        clean = clean[~duplicated].reset_index(drop=True)
    report = {
        "target_finding": target_finding,
        "rows": int(len(raw)),
        "duplicated_rows": int(duplicated.sum()),
        "implausible_ages": int(implausible.sum()),
        "implausible_age_rule": f"ages > {max_age:g} or < 0 set to missing, image kept",
        "finding_counts": {str(k): int(v) for k, v in counts.items()},
        "unknown_labels": unknown,
        "target_positive_images": int(clean["target"].sum()),
    }
    logger.info(
        "Metadata: %d images, %d patients, %d %s; %d implausible ages",
        len(clean),
        clean["patient_id"].nunique(),
        report["target_positive_images"],
        target_finding,
        report["implausible_ages"],
    )
    return clean, report


def _check(path: str) -> str:
    try:
        check_image_file(path)
        return ""
    except ImageError as exc:
        return f"{exc.reason}|{exc}"


def resolve_image_files(
    metadata: pd.DataFrame, cohort: dict, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find each row's image file and check its structure (signature, IHDR, IEND, size).

    Returns the rows with a ``path`` column and a table of dropped rows with the reason
    (``missing``, ``not_an_image``, ``truncated``, ``corrupt``, ``too_large``).
    """
    paths = metadata["image_index"].map(cohort["files"])
    found = paths.notna()
    dropped = [
        pd.DataFrame({"image_index": metadata.loc[~found, "image_index"], "reason": "missing", "detail": "no file"})
    ]
    candidates = metadata[found].assign(path=paths[found])
    errors = list(
        imap_progress(
            _check,
            candidates["path"].tolist(),
            total=len(candidates),
            what="Checking image files",
            workers=params.get("workers"),
            chunksize=256,
        )
    )
    bad = np.array([bool(e) for e in errors], dtype=bool)
    if bad.any():
        reasons = [e.split("|", 1) for e in errors if e]
        dropped.append(
            pd.DataFrame(
                {
                    "image_index": candidates.loc[bad, "image_index"].to_numpy(),
                    "reason": [r for r, _ in reasons],
                    "detail": [d for _, d in reasons],
                }
            )
        )
    resolved = candidates[~bad].reset_index(drop=True)
    return resolved, pd.concat(dropped, ignore_index=True)


def request_pixel_cache(resolved: pd.DataFrame, image_size: int, params: dict[str, Any]) -> CacheRequest:
    """Ask the pixel cache to hold every resolved image at ``image_size`` (decoded once, on save)."""
    return CacheRequest(sources=resolved["path"].tolist(), size=int(image_size), workers=params.get("workers"))


def keep_decoded(
    resolved: pd.DataFrame, pixel_cache: dict, image_size: int, file_problems: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the rows whose image is in the pixel cache; add decode failures to the dropped rows."""
    cache = pixel_cache["open"](int(image_size))
    shapes = cache.index.set_index("source")[["src_height", "src_width"]]
    cached = resolved["path"].isin(shapes.index)
    reasons = cache.failures.set_index("source")
    lost = resolved.loc[~cached, ["image_index", "path"]]
    failed = pd.DataFrame(
        {
            "image_index": lost["image_index"].to_numpy(),
            "reason": lost["path"].map(reasons["reason"]).fillna("not_decoded").to_numpy(),
            "detail": lost["path"].map(reasons["detail"]).fillna("").to_numpy(),
        }
    )
    decoded = resolved[cached].join(shapes, on="path").reset_index(drop=True)
    return decoded, pd.concat([file_problems, failed], ignore_index=True)


def build_quality_report(label_report: dict, dropped: pd.DataFrame, decoded: pd.DataFrame) -> dict:
    """Data-quality report: label findings, dropped rows counted per reason with examples."""
    by_reason = {
        str(reason): {
            "count": int(len(group)),
            "examples": group["image_index"].head(EXAMPLES_PER_REASON).tolist(),
            "details": group["detail"].head(3).tolist(),
        }
        for reason, group in dropped.groupby("reason")
    }
    report = {
        **label_report,
        "dropped_rows": int(len(dropped)),
        "dropped_by_reason": by_reason,
        "usable_images": int(len(decoded)),
        "usable_patients": int(decoded["patient_id"].nunique()),
        "usable_positive_images": int(decoded["target"].sum()),
    }
    if len(dropped):
        logger.warning(
            "Data quality: dropped %d row(s): %s",
            len(dropped),
            {k: v["count"] for k, v in by_reason.items()},
        )
    return report


def _allocate(ids: np.ndarray, fractions: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    ids = rng.permutation(np.array(ids))  # a copy: numpy refuses to shuffle read-only views
    edges = np.round(np.cumsum(fractions)[:-1] * len(ids)).astype(int)
    return np.split(ids, edges)


def split_by_patient(
    decoded: pd.DataFrame, cohort: dict, target_finding: str, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split images into train/validation/test so that no patient is in two splits.

    ``method: random`` stratifies patients by whether any of their images is positive;
    ``method: official`` takes NIH's ``test_list.txt`` as test and splits ``train_val_list.txt``
    by patient into train and validation.
    """
    method = params.get("method", "random")
    fractions = params.get("fractions", {"train": 0.7, "validation": 0.1, "test": 0.2})
    frac = np.array([float(fractions[s]) for s in SPLITS])
    if (frac < 0).any() or not np.isclose(frac.sum(), 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    rng = np.random.default_rng(int(params.get("seed", 42)))
    patient_pos = decoded.groupby("patient_id")["target"].max()
    needed = int((frac > 0).sum())
    if int(patient_pos.sum()) < needed:
        raise ValueError(
            f"The cohort has only {int(patient_pos.sum())} patient(s) with {target_finding}; a patient-wise "
            f"split into {needed} non-empty splits needs at least {needed}. Use a larger cohort."
        )
    assign = pd.Series("", index=patient_pos.index)
    if method == "official":
        official = cohort.get("official_split")
        if not official:
            raise ValueError("split.method 'official' needs train_val_list.txt and test_list.txt in the cohort folder")
        test_patients = decoded.loc[decoded["image_index"].isin(set(official["test"])), "patient_id"].unique()
        assign[test_patients] = "test"
        rest = patient_pos[assign == ""]
        val_share = frac[1] / max(frac[0] + frac[1], 1e-9)
        for label in (0, 1):
            ids = rest[rest == label].index.to_numpy()
            train, val = _allocate(ids, [1 - val_share, val_share], rng)
            assign[train], assign[val] = "train", "validation"
    elif method == "random":
        for label in (0, 1):
            ids = patient_pos[patient_pos == label].index.to_numpy()
            for name, part in zip(SPLITS, _allocate(ids, list(frac), rng)):
                assign[part] = name
    else:
        raise ValueError(f"split.method must be 'random' or 'official', got '{method}'")
    split_col = decoded["patient_id"].map(assign)
    frames = tuple(decoded[split_col == name].reset_index(drop=True) for name in SPLITS)
    for name, frame in zip(SPLITS, frames):
        if frame["target"].sum() == 0:
            n_pos = int(patient_pos.sum())
            raise ValueError(
                f"The {name} split has no {target_finding} image: the cohort has only {n_pos} patient(s) "
                f"with {target_finding}. Use a larger cohort or other split fractions."
            )
    check_disjoint_patients(*frames)
    for name, frame in zip(SPLITS, frames):
        logger.info(
            "%s: %d images, %d patients, %d positive (%.1f%%)",
            name,
            len(frame),
            frame["patient_id"].nunique(),
            int(frame["target"].sum()),
            100 * frame["target"].mean(),
        )
    return frames


def check_disjoint_patients(*splits: pd.DataFrame) -> None:
    """Raise if any patient appears in more than one split."""
    seen: dict[int, int] = {}
    for i, frame in enumerate(splits):
        for pid in frame["patient_id"].unique():
            if seen.setdefault(int(pid), i) != i:
                raise AssertionError(f"Patient {pid} is in splits {SPLITS[seen[int(pid)]]} and {SPLITS[i]}")


def _undersample(frame: pd.DataFrame, neg_per_pos: float, rng: np.random.Generator) -> pd.DataFrame:
    """Keep all positives and ``neg_per_pos`` negatives per positive, matching the positives' sex mix."""
    pos = frame[frame["target"] == 1]
    neg = frame[frame["target"] == 0]
    wanted = int(round(neg_per_pos * len(pos)))
    if wanted >= len(neg):
        return frame.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)
    sex_mix = pos["sex"].value_counts(normalize=True)
    picked = []
    for sex, group in neg.groupby("sex"):
        n = int(round(wanted * sex_mix.get(sex, 0.0)))
        picked.append(group.iloc[rng.permutation(len(group))[: min(n, len(group))]])
    chosen = pd.concat(picked)
    short = wanted - len(chosen)
    if short > 0:  # one sex ran out: fill from the remaining negatives
        rest = neg.drop(chosen.index)
        chosen = pd.concat([chosen, rest.iloc[rng.permutation(len(rest))[:short]]])
    out = pd.concat([pos, chosen.iloc[:wanted]])
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def rebalance(
    train: pd.DataFrame, validation: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Rebalance train and validation; the test split is never touched.

    ``strategy: undersample`` keeps ``neg_per_pos`` negatives per positive (3 -> 25% positive),
    drawn to match the positives' sex mix. ``strategy: class_weight`` keeps every image and
    returns class weights inversely proportional to the train class frequencies.
    """
    strategy = params.get("strategy", "undersample")
    rng = np.random.default_rng(int(params.get("seed", 42)))
    if strategy == "undersample":
        ratio = float(params.get("neg_per_pos", 3))
        out = _undersample(train, ratio, rng), _undersample(validation, ratio, rng)
        weights = {"0": 1.0, "1": 1.0}
    elif strategy == "class_weight":
        out = (train.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True), validation)
        n, pos = len(train), int(train["target"].sum())
        weights = {"0": n / (2.0 * (n - pos)), "1": n / (2.0 * pos)}
    else:
        raise ValueError(f"rebalance.strategy must be 'undersample' or 'class_weight', got '{strategy}'")
    for name, frame in zip(("train", "validation"), out):
        logger.info(
            "Rebalanced %s: %d images, %d positive (%.1f%%)",
            name,
            len(frame),
            int(frame["target"].sum()),
            100 * frame["target"].mean(),
        )
    return out[0], out[1], {"strategy": strategy, "class_weight": weights}
