"""Nodes of the data_processing pipeline: metadata, image files, decoding, splits, rebalancing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from cardio_kedro.cohort import layouts
from cardio_kedro.cohort.findings import (
    TargetFindings,
    label_matrix,
    parse_target_findings,
    stratified_patient_split,
    target_columns,
)
from cardio_kedro.cohort.imaging import check_file
from cardio_kedro.cohort.nih import NIH_FINDINGS, NO_FINDING, OTHER_FINDING
from cardio_kedro.cohort.sampling import balanced_weights, rebalance_binary
from cardio_kedro.cohort.storage import image_loader
from cardio_kedro.common.errors import UserDatasetError, UserValueError
from cardio_kedro.common.parallel import imap_progress
from cardio_kedro.config import CohortParams, DataProcessingParams, RebalanceParams, SplitParams, as_params
from cardio_kedro.datasets import CohortFolder, DecodedChunk, PixelCache

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
EXAMPLES_PER_REASON = 10
CHUNK_BYTES = 64 * 2**20  # decoded pixels handed to the cache per save (bounds the main process's memory)


def _layout_cohort(folder: CohortFolder, config: CohortParams, workers: int | None) -> layouts.Cohort:
    """The cohort folder read in its layout (``cohort.layout``)."""
    if config.layout == "nih":
        return folder.nih()
    files, read = folder.files(), folder.read_csv
    headers = partial(folder.dicom_headers, workers=workers)
    readers = {
        "chexpert": lambda: layouts.chexpert(read, files, config.uncertain, config.include_lateral),
        "mimic_cxr_jpg": lambda: layouts.mimic_cxr_jpg(
            read, files, config.mimic_labeler, config.uncertain, config.include_lateral
        ),
        "padchest": lambda: layouts.padchest(read, files, config.include_lateral),
        "vindr": lambda: layouts.vindr(read, files, headers, config.vindr_consensus),
        "csv": lambda: layouts.csv_table(read, files, config.table),
        "dicom": lambda: layouts.dicom_folder(read, files, headers(files), config.table),
    }
    return readers[config.layout]()


def read_cohort(
    folder: CohortFolder, params: dict[str, Any], workers: int | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict, pd.DataFrame, dict]:
    """Read the cohort folder in its layout (``cohort.layout``) into the NIH-form label table, the
    image files by key, the data set's official split lists, the rows the layout left out (with the
    reason) and the label policy that made the labels (``cardio_kedro.cohort.layouts``).

    A file the layout needs and the folder lacks stops the run, naming the file and the layout.
    """
    config = as_params(CohortParams, params)
    try:
        cohort = _layout_cohort(folder, config, workers)
    except FileNotFoundError as exc:
        raise UserDatasetError(
            f"No {exc.args[0]}: the cohort.layout '{config.layout}' reads it. Is cohort_dir ({folder.root}) the "
            "data set's folder, and cohort.layout the right one (docs/data.md)?"
        ) from None
    if cohort.table.empty:
        raise UserDatasetError(f"The cohort at {folder.root} (layout {config.layout}) has no image rows")
    logger.info(
        "Cohort (%s layout): %d images of %d patients, %d image files found%s",
        config.layout,
        len(cohort.table),
        cohort.table["Patient ID"].nunique(),
        len(cohort.images),
        f"; official split {len(cohort.official_split['train_val'])} train_val / {len(cohort.official_split['test'])}"
        " test"
        if cohort.official_split
        else "",
    )
    left_out = cohort.left_out if cohort.left_out is not None else layouts.left_out_rows([], [], [])
    policy = {"layout": config.layout, **(cohort.label_policy or {})}
    return cohort.table, cohort.images, cohort.official_split, left_out.reset_index(drop=True), policy


def _ages(raw_age: pd.Series, max_age: float) -> tuple[pd.Series, pd.Series]:
    """Ages as numbers (``058Y`` -> 58) and the flag of implausible ones (above ``max_age`` or below 0)."""
    age = pd.to_numeric(raw_age.astype(str).str.extract(r"(\d+)")[0], errors="coerce")
    implausible = ((age > max_age) | (age < 0)).fillna(False).astype(bool)
    return age.where(~implausible).astype("float64"), implausible


def _label_counts(labels: pd.Series) -> tuple[pd.Series, list[str]]:
    """Images per label, and the labels that are neither an NIH finding, ``No Finding`` nor ``Other Finding``."""
    counts = labels.str.split("|").explode().str.strip().value_counts()
    unknown = sorted(set(counts.index) - set(NIH_FINDINGS) - {NO_FINDING, OTHER_FINDING})
    if unknown:
        logger.warning("Unknown finding label(s) %s: kept in 'labels', never a target", unknown)
    return counts, unknown


def clean_metadata(
    labels: pd.DataFrame,
    cohort_left_out: pd.DataFrame,
    label_policy: dict,
    target_findings: TargetFindings,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Type the NIH columns, derive the targets and flag implausible ages.

    One finding: the binary ``target``. Several (``target_findings``, see ``cardio_kedro.cohort.findings``):
    one 0/1 ``target.<finding>`` column each, and ``target`` is 1 when the image has any of them.
    Age rule: an age above ``max_plausible_age`` (NIH has a few, e.g. 148 or 412) or below 0 is set
    to missing and flagged ``age_implausible``; the image is kept, since age is not a model input.
    Returns the clean table, a label report (counts per finding, unknown labels, the label policy) and every
    row left out so far with its reason: the layout's (``cohort_left_out``) and this node's (a view that
    ``views`` filters out, an uncertain label on a target finding, a duplicated row).
    """
    config = as_params(DataProcessingParams, params)
    findings = parse_target_findings(target_findings)
    age, implausible = _ages(labels["Patient Age"], config.max_plausible_age)
    finding_labels = labels["Finding Labels"].astype(str).str.strip()
    counts, unknown = _label_counts(finding_labels)
    targets = label_matrix(finding_labels, findings)
    clean = pd.DataFrame(
        {
            "image_index": labels["Image Index"].astype(str).str.strip(),
            "patient_id": labels["Patient ID"].astype("int64"),
            "follow_up": pd.to_numeric(labels["Follow-up #"], errors="coerce").fillna(0).astype("int64"),
            "age": age,
            "age_implausible": implausible,
            "sex": labels["Patient Gender"].astype(str).str.strip().str.upper().str[:1],
            "view": labels["View Position"].astype(str).str.strip().str.upper(),
            "labels": finding_labels,
            "target": targets.max(axis=1).astype("int8"),
            **({} if len(findings) == 1 else targets),
        }
    )
    target_finding = "|".join(findings)
    clean, uncertain, unsure_rows = _leave_out_uncertain(clean, labels, findings)
    duplicated = clean["image_index"].duplicated()
    duplicate_rows = _duplicate_rows(clean, duplicated)
    if duplicated.any():
        clean = clean[~duplicated].reset_index(drop=True)
    clean, view_filter, filtered = _keep_views(clean, config.views)
    view_rows = layouts.left_out_rows(filtered["image_index"], "view_filter", "view " + filtered["view"])
    left_out = pd.concat([cohort_left_out, unsure_rows, duplicate_rows, view_rows], ignore_index=True)
    report = {
        "target_finding": target_finding,
        "rows": int(len(labels)),
        "duplicated_rows": int(duplicated.sum()),
        "implausible_ages": int(implausible.sum()),
        "implausible_age_rule": f"ages > {config.max_plausible_age:g} or < 0 set to missing, image kept",
        "finding_counts": {str(k): int(v) for k, v in counts.items()},
        "unknown_labels": unknown,
        "uncertain_left_out": uncertain,
        "target_positive_images": int(clean["target"].sum()),
        **({} if len(findings) == 1 else {"positive_images_by_finding": _positives(clean, findings)}),
        "view_filter": view_filter,
        "label_policy": label_policy,
        "left_out_by_layout": {str(k): int(v) for k, v in cohort_left_out["reason"].value_counts().items()},
    }
    logger.info(
        "Metadata: %d images, %d patients, %d %s; %d implausible ages",
        len(clean),
        clean["patient_id"].nunique(),
        report["target_positive_images"],
        target_finding,
        report["implausible_ages"],
    )
    return clean, report, left_out


def _duplicate_rows(clean: pd.DataFrame, duplicated: pd.Series) -> pd.DataFrame:
    """The second (third, ...) rows of an image, each with the patient its first row names; a warning says how many,
    and names the images filed under two patients (the first row is kept: check the table)."""
    first = clean.drop_duplicates("image_index").set_index("image_index")["patient_id"]
    rows = clean[duplicated]
    other = rows["patient_id"].to_numpy() != rows["image_index"].map(first).to_numpy()
    details = [
        f"a second row of this image, under patient {p} (the first row's patient {first[k]} is kept)"
        if o
        else "a second row of this image in the label table"
        for k, p, o in zip(rows["image_index"], rows["patient_id"], other)
    ]
    if duplicated.any():
        example = rows["image_index"][other].iloc[0] if other.any() else ""
        under_two = f"; {int(other.sum())} under another patient than its first row, e.g. {example}" if example else ""
        logger.warning("Dropping %d duplicated image row(s)%s: check the label table", len(rows), under_two)
    return layouts.left_out_rows(rows["image_index"], "duplicate_row", details)


def _leave_out_uncertain(
    clean: pd.DataFrame, labels: pd.DataFrame, findings: tuple[str, ...]
) -> tuple[pd.DataFrame, int, pd.DataFrame]:
    """Leave out the images labelled uncertain on a target finding (``cohort.uncertain``: ``ignore``)."""
    if layouts.UNCERTAIN_COLUMN not in labels:
        return clean, 0, layouts.left_out_rows([], [], [])
    unsure = label_matrix(labels[layouts.UNCERTAIN_COLUMN].astype(str), findings).max(axis=1).astype(bool).to_numpy()
    if unsure.any():
        logger.info("Leaving out %d image(s) labelled uncertain on %s", int(unsure.sum()), "|".join(findings))
    detail = "uncertain: " + labels.loc[unsure, layouts.UNCERTAIN_COLUMN].astype(str)
    rows = layouts.left_out_rows(clean.loc[unsure, "image_index"], "uncertain_label", detail)
    return clean[~unsure].reset_index(drop=True), int(unsure.sum()), rows


def _positives(frame: pd.DataFrame, findings: tuple[str, ...]) -> dict[str, int]:
    return {f: int(frame[col].sum()) for f, col in zip(findings, target_columns(findings))}


def _keep_views(clean: pd.DataFrame, views: str | list[str]) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """The rows of the kept view positions (``all``: every row), what the filter removed by view, and its rows."""
    if views == "all":
        return clean, {"views": "all", "removed_images": 0, "removed_by_view": {}}, clean.iloc[:0]
    keep = clean["view"].isin(views)
    removed = clean.loc[~keep, "view"].value_counts()
    if not keep.any():
        raise UserValueError(
            f"data_processing.views = {views} keeps no image: the cohort's view positions are "
            f"{sorted(clean['view'].unique())}"
        )
    logger.info("Views %s: kept %d images, removed %d (%s)", views, int(keep.sum()), int((~keep).sum()),
                ", ".join(f"{k} {v}" for k, v in removed.items()))  # fmt: skip
    report = {
        "views": list(views),
        "removed_images": int((~keep).sum()),
        "removed_by_view": {str(k): int(v) for k, v in removed.items()},
    }
    return clean[keep].reset_index(drop=True), report, clean[~keep]


def resolve_image_files(
    metadata: pd.DataFrame, image_files: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find each row's image file and check its structure (signature, IHDR, IEND, size).

    Returns the rows with ``path``, ``nbytes`` and ``mtime_ns`` columns, and a table of dropped
    rows with the reason (``missing``, ``not_an_image``, ``truncated``, ``corrupt``, ``too_large``).
    """
    config = as_params(DataProcessingParams, params)
    paths = metadata["image_index"].map(image_files.set_index("image_index")["path"])
    found = paths.notna()
    missing = metadata.loc[~found, "image_index"]
    candidates = metadata[found].assign(path=paths[found].astype(object))
    if "nbytes" in image_files:  # a cohort in object storage: the listing gave sizes and times, and
        # decoding reads each object once and checks it then (no request per image here)
        stamps = image_files.set_index("path")[["nbytes", "mtime_ns"]]
        resolved = candidates.join(stamps, on="path").reset_index(drop=True)
        return resolved, layouts.left_out_rows(missing, "missing", "no file")
    checks = list(
        imap_progress(
            check_file,
            candidates["path"].tolist(),
            total=len(candidates),
            what="Checking image files",
            workers=config.workers,
            chunksize=256,
        )
    )
    nbytes, mtime_ns, errors = (list(column) for column in zip(*checks)) if checks else ([], [], [])
    bad = np.array([e is not None for e in errors], dtype=bool)
    failed = [e for e in errors if e is not None]
    problems = pd.concat(
        [
            layouts.left_out_rows(missing, "missing", "no file"),
            layouts.left_out_rows(
                candidates.loc[bad, "image_index"], [e.reason for e in failed], [e.detail for e in failed]
            ),
        ],
        ignore_index=True,
    )
    resolved = candidates.assign(nbytes=nbytes, mtime_ns=mtime_ns)[~bad].reset_index(drop=True)
    return resolved, problems


def _decode_chunks(
    todo: pd.DataFrame, size: int, workers: int | None, storage_options: dict[str, Any] | None = None
) -> Iterator[DecodedChunk]:
    """Decode ``todo``'s files (or objects of a store) on every core, in chunks of about ``CHUNK_BYTES``."""
    per_chunk = max(64, CHUNK_BYTES // (size * size))
    paths = todo["path"].tolist()
    load = image_loader(paths, size, storage_options)
    decoded = imap_progress(load, paths, len(todo), f"Decoding images to {size}px", workers)
    for start in range(0, len(todo), per_chunk):
        part = todo.iloc[start : start + per_chunk]
        pixels = np.empty((len(part), size, size), np.uint8)  # filled in place: one copy of the chunk in memory
        shapes, kept, failures = [], [], []
        for i, path in enumerate(part["path"]):
            image, shape, error = next(decoded)
            if error is not None:
                failures.append((path, error.reason, error.detail))
                continue
            pixels[len(kept)] = image
            shapes.append(shape)
            kept.append(i)
        yield DecodedChunk(
            size=size,
            sources=part["path"].iloc[kept].tolist(),
            pixels=pixels[: len(kept)],
            src_shapes=np.array(shapes, np.int64).reshape(-1, 2),
            stamps=part[["nbytes", "mtime_ns"]].iloc[kept].to_numpy(np.int64),
            failures=pd.DataFrame(failures, columns=["source", "reason", "detail"]),
        )


def decode_images(
    resolved: pd.DataFrame,
    existing: PixelCache,
    image_size: int,
    params: dict[str, Any],
    storage_options: dict[str, Any],
) -> Iterator[DecodedChunk]:
    """Decode every resolved image not yet in the pixel cache at ``image_size`` px, on every core.

    A generator: each chunk is appended to the cache as soon as it is decoded, so an interrupted
    run keeps its progress. Files already cached from the same size and mtime are not decoded again.
    ``storage_options`` (the catalog's ``cohort_storage``) open a cohort in object storage.
    """
    config = as_params(DataProcessingParams, params)
    if int(image_size) != existing.size:
        raise UserValueError(
            f"image_size is {image_size} in the parameters but the pixel cache entry is for {existing.size} px: "
            "set image_size in conf/<env>/globals.yml (or with --params=image_size=...), not in a parameters file"
        )
    todo = resolved.drop_duplicates("path")
    todo = todo[~existing.is_current(todo["path"], todo["nbytes"], todo["mtime_ns"])]
    logger.info(
        "Pixel cache %s: %d of %d image(s) already decoded, %d to decode",
        existing.folder,
        resolved["path"].nunique() - len(todo),
        resolved["path"].nunique(),
        len(todo),
    )
    if todo.empty:
        yield DecodedChunk.empty(existing.size)
        return
    existing.check_room_for(len(todo))  # before the first image is decoded, not at a full disk
    yield from _decode_chunks(todo, existing.size, config.workers, storage_options)


def select_decoded_images(
    resolved: pd.DataFrame, pixel_cache: PixelCache, file_problems: pd.DataFrame, metadata_left_out: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the rows whose image is in the pixel cache (with its source shape). Every row left out on the way
    is in the dropped table with its reason: the layout's and clean_metadata's (``metadata_left_out``), the
    file checks' and the decoding's failures."""
    shapes = pixel_cache.index.set_index("source")[["src_height", "src_width"]]
    cached = resolved["path"].isin(shapes.index)
    reasons = pixel_cache.failures.set_index("source")
    lost = resolved.loc[~cached]
    failed = layouts.left_out_rows(
        lost["image_index"],
        lost["path"].map(reasons["reason"]).fillna("not_decoded").tolist(),
        lost["path"].map(reasons["detail"]).fillna("").tolist(),
    )
    decoded = resolved[cached].drop(columns=["nbytes", "mtime_ns"]).join(shapes, on="path").reset_index(drop=True)
    dropped = pd.concat([metadata_left_out, file_problems, failed], ignore_index=True)
    return decoded, dropped.astype({"image_index": str, "reason": str, "detail": str})


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
            "Data quality: dropped %d row(s): %s", len(dropped), {k: v["count"] for k, v in by_reason.items()}
        )
    return report


def _allocate(ids: np.ndarray, fractions: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    ids = rng.permutation(np.array(ids))  # a copy: numpy refuses to shuffle read-only views
    edges = np.round(np.cumsum(fractions)[:-1] * len(ids)).astype(int)
    return np.split(ids, edges)


def _random_assignment(patient_pos: pd.Series, fractions: list[float], rng: np.random.Generator) -> pd.Series:
    """Patients to splits at ``fractions``, stratified by whether a patient has any positive image."""
    assign = pd.Series("", index=patient_pos.index)
    for label in (0, 1):
        ids = patient_pos[patient_pos == label].index.to_numpy()
        for name, part in zip(SPLITS, _allocate(ids, fractions, rng)):
            assign[part] = name
    return assign


def _official_assignment(
    decoded: pd.DataFrame, patient_pos: pd.Series, official: dict, fractions: list[float], rng: np.random.Generator
) -> pd.Series:
    """NIH's test list as test; ``train_val_list.txt``'s patients split into train and validation."""
    if not official:
        raise UserValueError(
            "data_processing.split.method 'official' needs the data set's own split, and this cohort has none. "
            "It comes from train_val_list.txt and test_list.txt (nih layout), valid.csv beside train.csv (chexpert) "
            "or mimic-cxr-2.0.0-split.csv (mimic_cxr_jpg); padchest, csv and dicom cohorts have none: "
            "use split.method random"
        )
    assign = pd.Series("", index=patient_pos.index)
    assign[decoded.loc[decoded["image_index"].isin(set(official["test"])), "patient_id"].unique()] = "test"
    rest = patient_pos[assign == ""]
    val_share = fractions[1] / (fractions[0] + fractions[1])
    for label in (0, 1):
        train, val = _allocate(rest[rest == label].index.to_numpy(), [1 - val_share, val_share], rng)
        assign[train], assign[val] = "train", "validation"
    return assign


def split_by_patient(
    decoded: pd.DataFrame, official_split: dict, target_findings: TargetFindings, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split images into train/validation/test so that no patient is in two splits.

    ``method: random`` stratifies patients by whether any of their images is positive; with several
    findings, by every finding at once (iterative stratification, ``stratified_patient_split``), so
    that each split holds its share of each finding's patients.
    ``method: official`` takes NIH's ``test_list.txt`` as test and splits ``train_val_list.txt``
    by patient into train and validation.
    """
    config = as_params(SplitParams, params)
    findings = parse_target_findings(target_findings)
    fractions = [config.fractions.train, config.fractions.validation, config.fractions.test]
    rng = np.random.default_rng(config.seed)
    columns = ["target"] if len(findings) == 1 else target_columns(findings)
    patient_labels = decoded.groupby("patient_id")[columns].max()
    _enough_patients(patient_labels, findings, fractions)
    patient_pos = patient_labels.max(axis=1)
    if config.method == "official":
        assign = _official_assignment(decoded, patient_pos, official_split, fractions, rng)
    elif len(findings) == 1:
        assign = _random_assignment(patient_pos, fractions, rng)
    else:
        codes = stratified_patient_split(patient_labels, fractions, rng)
        assign = pd.Series(np.asarray(SPLITS)[codes], index=patient_labels.index)
    split_of_image = decoded["patient_id"].map(assign)
    frames = tuple(decoded[split_of_image == name].reset_index(drop=True) for name in SPLITS)
    for name, frame in zip(SPLITS, frames):
        for finding, column in zip(findings, columns):
            if frame[column].sum() == 0:
                n_pos = int(patient_labels[column].sum())
                raise UserValueError(
                    f"The {name} split has no {finding} image: the cohort has only {n_pos} patient(s) "
                    f"with {finding}. Use a larger cohort, other split fractions, or leave {finding} out of "
                    "target_findings."
                )
        logger.info(
            "%s: %d images, %d patients, %s",
            name,
            len(frame),
            frame["patient_id"].nunique(),
            ", ".join(f"{int(frame[c].sum())} {f} ({100 * frame[c].mean():.1f}%)" for f, c in zip(findings, columns)),
        )
    check_disjoint_patients(*frames)
    return frames


def _enough_patients(patient_labels: pd.DataFrame, findings: tuple[str, ...], fractions: list[float]) -> None:
    """Refuse findings with fewer positive patients than a patient-wise split needs: one per split
    (whether each split got one is checked after splitting)."""
    need = len(SPLITS)
    few = {f: int(n) for f, n in zip(findings, patient_labels.sum()) if n < need}
    if few:
        listed = ", ".join(f"{f} ({n})" for f, n in few.items())
        raise UserValueError(
            f"Too few patients with {listed}: a patient-wise split into {len(SPLITS)} splits with fractions "
            f"{fractions} needs at least {need} per finding. Use a larger cohort or leave "
            f"{'it' if len(few) == 1 else 'them'} out of target_findings."
        )


def check_disjoint_patients(*splits: pd.DataFrame) -> None:
    """Raise if any patient appears in more than one split."""
    seen: dict[int, int] = {}
    for i, frame in enumerate(splits):
        for pid in frame["patient_id"].unique():
            if seen.setdefault(int(pid), i) != i:
                raise AssertionError(f"Patient {pid} is in splits {SPLITS[seen[int(pid)]]} and {SPLITS[i]}")


def rebalance(
    train: pd.DataFrame, validation: pd.DataFrame, target_findings: TargetFindings, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Rebalance train and validation; the test split is never touched.

    ``strategy: undersample`` keeps ``neg_per_pos`` negatives per positive (3 -> 25% positive),
    drawn to match the positives' sex mix. ``strategy: class_weight`` keeps every image and
    returns class weights inversely proportional to the train class frequencies. Also records the
    prevalence before rebalancing (``natural``) and the one the loss sees (``trained``), which
    calibration needs to read scores at the natural prevalence.

    With several findings, undersampling is ill-defined (an image is positive for one finding and
    negative for another), so only ``class_weight`` is accepted: every finding gets its own pair of
    weights, and ``class_weight``, ``prevalence.natural`` and ``prevalence.trained`` are dicts by finding.
    """
    config = as_params(RebalanceParams, params)
    findings = parse_target_findings(target_findings)
    if len(findings) > 1:
        return _multi_label_weights(train, validation, findings, config)
    train, validation, rebalancing = rebalance_binary(
        train, validation, config.strategy, config.neg_per_pos, np.random.default_rng(config.seed)
    )
    for name, frame in (("train", train), ("validation", validation)):
        logger.info(
            "Rebalanced %s: %d images, %d positive (%.1f%%)",
            name,
            len(frame),
            int(frame["target"].sum()),
            100 * frame["target"].mean(),
        )
    return train, validation, rebalancing


def _multi_label_weights(
    train: pd.DataFrame, validation: pd.DataFrame, findings: tuple[str, ...], config: RebalanceParams
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    shuffled = train.iloc[np.random.default_rng(config.seed).permutation(len(train))].reset_index(drop=True)
    columns = target_columns(findings)
    weights = {f: balanced_weights(train[c]) for f, c in zip(findings, columns)}
    natural = {f: float(train[c].mean()) for f, c in zip(findings, columns)}
    logger.info(
        "Per-finding positive weights (negatives per positive in train): %s",
        ", ".join(f"{f} {w['1'] / w['0']:.1f}" for f, w in weights.items()),
    )
    prevalence = {"natural": natural, "trained": dict.fromkeys(findings, 0.5)}
    return shuffled, validation, {"strategy": "class_weight", "class_weight": weights, "prevalence": prevalence}
