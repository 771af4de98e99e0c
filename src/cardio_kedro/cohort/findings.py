"""What a run learns: one NIH finding (the seed's binary mode) or several (the multi-label mode).

``target_findings`` takes one finding (``Cardiomegaly``), several (a YAML list, or one string with
NIH's own separator: ``Cardiomegaly|Effusion|Edema``, the form that fits ``kedro run --params``) or
``all`` (the 14 NIH findings). Multi-label tables hold one ``target.<finding>`` column per finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from cardio_kedro.cohort.nih import NIH_FINDINGS
from cardio_kedro.common.errors import UserValueError

ALL = "all"
# A ``target_findings`` value in a node's signature: a finding, "A|B", a list of findings or "all".
# Typed Any, not a union: Kedro warns on every run that it cannot validate union-typed parameters.
TargetFindings = Any
TARGET_PREFIX = "target."
SCORE_PREFIX = "score."  # a multi-label model's raw score of one finding
PROBABILITY_PREFIX = "probability."  # and its calibrated probability


def parse_target_findings(value: str | Sequence[str]) -> tuple[str, ...]:
    """The findings ``value`` names, in NIH's order; a clear error for anything else."""
    if isinstance(value, str):
        if value.strip() == ALL:
            return NIH_FINDINGS
        names = [part.strip() for part in value.split("|")]
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        names = [v.strip() for v in value]
    else:
        raise UserValueError(f"target_findings must be a finding, a list of findings or '{ALL}', got {value!r}")
    unknown = [n for n in names if n not in NIH_FINDINGS]
    if unknown or not names:
        raise UserValueError(
            f"target_findings {value!r}: {unknown or 'empty'} not an NIH finding; use one or more of "
            f"{list(NIH_FINDINGS)} (on the command line: --params='target_findings=Cardiomegaly|Effusion'), or '{ALL}'"
        )
    if len(set(names)) != len(names):
        raise UserValueError(f"target_findings {value!r} names a finding twice")
    return tuple(f for f in NIH_FINDINGS if f in names)


def findings_name(value: str | Sequence[str]) -> str:
    """The name of a run's targets (the MLflow experiment, the registered models): the finding itself
    for one, ``all-findings`` for the 14, else the findings joined by ``+``."""
    findings = parse_target_findings(value)
    if findings == NIH_FINDINGS:
        return "all-findings"
    return "+".join(findings)


def target_columns(findings: Sequence[str]) -> list[str]:
    """The label columns of a multi-label table, one per finding."""
    return [TARGET_PREFIX + f for f in findings]


def label_matrix(finding_labels: pd.Series, findings: Sequence[str]) -> pd.DataFrame:
    """One 0/1 ``target.<finding>`` column per finding from NIH's ``Finding Labels`` (``A|B``)."""
    sets = finding_labels.astype(str).str.split("|").apply(lambda parts: {p.strip() for p in parts})
    return pd.DataFrame(
        {TARGET_PREFIX + f: sets.apply(lambda s, f=f: f in s).astype("int8") for f in findings},
        index=finding_labels.index,
    )


def stratified_patient_split(
    patient_labels: pd.DataFrame, fractions: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """Assign patients to splits so that every finding's positive patients are shared out in
    ``fractions`` (iterative stratification, Sechidis et al. 2011, at the patient level).

    ``patient_labels``: one row per patient, one 0/1 column per finding (1: any image of the patient
    has it). Returns each row's split number. The rarest finding is placed first, each of its
    patients going to the split that most lacks that finding (ties: the split that most lacks
    patients, then at random); patients with no finding fill the splits' remaining places.
    """
    y = patient_labels.to_numpy(dtype=bool)
    n, k = y.shape
    share = np.asarray(fractions, np.float64)
    need_label = share[:, None] * y.sum(axis=0)[None, :]  # splits x findings
    need_total = share * n
    assign = np.full(n, -1)
    left = y.copy()
    remaining = left.sum(axis=0)
    while remaining.any():
        finding = int(np.flatnonzero(remaining)[np.argmin(remaining[remaining > 0])])
        rows = np.flatnonzero(left[:, finding])
        for row in rows[rng.permutation(rows.size)]:
            want = need_label[:, finding]
            best = np.flatnonzero(want == want.max())
            if best.size > 1:
                totals = need_total[best]
                best = best[totals == totals.max()]
            split = int(best[rng.integers(best.size)]) if best.size > 1 else int(best[0])
            assign[row] = split
            need_label[split] -= y[row]
            need_total[split] -= 1
            left[row] = False
        remaining = left.sum(axis=0)
    rest = np.flatnonzero(assign < 0)
    rest = rest[rng.permutation(rest.size)]
    counts = np.maximum(np.round(np.maximum(need_total, 0)), 0).astype(int)
    bounds = np.cumsum(counts)
    for i, row in enumerate(rest):
        assign[row] = int(min(np.searchsorted(bounds, i, side="right"), len(share) - 1))
    return assign


def balanced_patient_folds(
    n_images: np.ndarray, n_positive: np.ndarray, n_folds: int, rng: np.random.Generator
) -> np.ndarray:
    """Each patient's fold (0..n_folds-1): positive patients (``n_positive`` > 0) shared out evenly,
    and so are their positive images; the other patients evenly, and so are their images.

    Patients go one round at a time, the largest first (by positive images, then by images; ties
    at random): in each round every fold takes one patient, the fold with the fewest (positive)
    images so far the largest one left. Counts of patients per fold differ by at most one; a
    patient with many follow-up films does not land in the fold that already has the most.
    """
    n_images, n_positive = np.asarray(n_images), np.asarray(n_positive)
    assign = np.full(len(n_images), -1)
    for group, size in ((n_positive > 0, n_positive), (n_positive == 0, n_images)):
        rows = np.flatnonzero(group)
        rows = rows[rng.permutation(rows.size)]
        rows = rows[np.argsort(-size[rows], kind="stable")]
        load = np.zeros(n_folds)
        for start in range(0, rows.size, n_folds):
            batch = rows[start : start + n_folds]
            for row, fold in zip(batch, np.argsort(load + rng.random(n_folds) * 1e-6)[: batch.size]):
                assign[row] = fold
                load[fold] += size[row]
    return assign


def positive_weights(labels: pd.DataFrame) -> dict[str, float]:
    """Per finding, negatives per positive on ``labels`` (``target.<finding>`` columns): the loss
    weight of a positive, so every finding's positives weigh as much as its negatives."""
    weights = {}
    for column in labels.columns:
        pos = int(labels[column].sum())
        if pos == 0:
            raise UserValueError(f"No positive image of {column.removeprefix(TARGET_PREFIX)} in train")
        weights[column.removeprefix(TARGET_PREFIX)] = float((len(labels) - pos) / pos)
    return weights
