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
