"""Undersampling negatives: the rebalanced train/validation splits and the 3:1 comparison test set."""

from __future__ import annotations

import numpy as np
import pandas as pd


def undersample(
    frame: pd.DataFrame, neg_per_pos: float, rng: np.random.Generator, match: str | None = None
) -> pd.DataFrame:
    """All positives (``target == 1``) and ``neg_per_pos`` negatives per positive, shuffled.

    With ``match`` (a column such as ``sex``), the negatives are drawn to match the positives' mix
    of that column; a group that runs short is filled from the other negatives. When there are not
    enough negatives, all are kept.
    """
    pos = frame[frame["target"] == 1]
    neg = frame[frame["target"] == 0]
    wanted = int(round(neg_per_pos * len(pos)))
    if wanted >= len(neg):
        chosen = neg
    elif match is None:
        chosen = neg.iloc[rng.permutation(len(neg))[:wanted]]
    else:
        chosen = _matched(pos, neg, wanted, rng, match)
    out = pd.concat([pos, chosen])
    return out.iloc[rng.permutation(len(out))].reset_index(drop=True)


def _matched(pos: pd.DataFrame, neg: pd.DataFrame, wanted: int, rng: np.random.Generator, column: str) -> pd.DataFrame:
    mix = pos[column].value_counts(normalize=True)
    picked = []
    for value, group in neg.groupby(column):
        n = int(round(wanted * mix.get(value, 0.0)))
        picked.append(group.iloc[rng.permutation(len(group))[: min(n, len(group))]])
    chosen = pd.concat(picked)
    short = wanted - len(chosen)
    if short > 0:  # one group ran out: fill from the remaining negatives
        rest = neg.drop(chosen.index)
        chosen = pd.concat([chosen, rest.iloc[rng.permutation(len(rest))[:short]]])
    return chosen.iloc[:wanted]


def balanced_weights(target: pd.Series) -> dict[str, float]:
    """Loss weights of negatives (``"0"``) and positives (``"1"``) that give both classes equal weight."""
    n, pos = len(target), int(target.sum())
    return {"0": n / (2.0 * (n - pos)), "1": n / (2.0 * pos)}


def rebalance_binary(
    train: pd.DataFrame, validation: pd.DataFrame, strategy: str, neg_per_pos: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """One finding's train and validation rebalanced: ``undersample`` (``neg_per_pos`` negatives per
    positive, matched on sex) or ``class_weight`` (every image, equal class weights). Returns both
    and the rebalancing record (strategy, class weights, the ``natural`` and ``trained`` prevalence)."""
    if strategy == "undersample":
        out = (
            undersample(train, neg_per_pos, rng, match="sex"),
            undersample(validation, neg_per_pos, rng, match="sex"),
        )
        weights = {"0": 1.0, "1": 1.0}
    else:
        out = (train.iloc[rng.permutation(len(train))].reset_index(drop=True), validation)
        weights = balanced_weights(train["target"])
    natural = float(train["target"].mean())
    trained = 0.5 if strategy == "class_weight" else float(out[0]["target"].mean())
    return (
        out[0],
        out[1],
        {"strategy": strategy, "class_weight": weights, "prevalence": {"natural": natural, "trained": trained}},
    )
