"""The report's figures drawn from what they show."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from cardio_kedro.evaluation import plots  # noqa: E402


def _history(loss_offset: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [1, 2, 3],
            "loss": [0.7 + loss_offset, 0.6 + loss_offset, 0.5 + loss_offset],
            "val_loss": [0.8, 0.7, 0.65],
            "auc": [0.6, 0.7, 0.8],
            "val_auc": [0.55, 0.65, 0.7],
            "phase": ["head", "fine_tune", "fine_tune"],
            "best": [False, False, True],
        }
    )


def test_training_curves_draw_each_member_of_an_ensemble():
    single = plots.training_curves(_history(0.0))
    ensemble = plots.training_curves(
        pd.concat(
            [_history(0.0).assign(member=m) for m in range(1)] + [_history(0.1 * m).assign(member=m) for m in (1, 2)]
        )
    )
    try:
        drawn = [line for line in single.axes[0].get_lines() if len(line.get_xdata()) == 3]  # not the best epoch
        assert len(drawn) == 2  # train and validation loss
        lines = [line for line in ensemble.axes[0].get_lines() if len(line.get_xdata()) == 3]
        assert len(lines) == 6  # train and validation loss of three members
        losses = sorted(round(float(line.get_ydata()[0]), 3) for line in lines)
        assert losses == [0.7, 0.8, 0.8, 0.8, 0.8, 0.9]  # each member's own curve (validation: 0.8 for all)
        labels = [t.get_text() for t in ensemble.axes[0].get_legend().get_texts()]
        assert "train loss (member 1)" in labels and "members 2-3" in labels
    finally:
        plt.close(single)
        plt.close(ensemble)


def test_reliability_bins_give_each_bin_its_rate_count_and_an_interval_that_narrows_with_images():
    import numpy as np

    rng = np.random.default_rng(0)
    p = np.concatenate([np.full(1000, 0.05), [0.65]])  # a crowded bin and a bin of one image
    y = np.concatenate([rng.random(1000) < 0.05, [True]]).astype(int)
    bins = plots.reliability_bins(y, p, 10)
    assert list(bins["n"]) == [1000, 1]
    crowded, single = bins.iloc[0], bins.iloc[1]
    assert crowded["observed"] == y[:1000].mean() and single["observed"] == 1.0
    assert crowded["low"] < crowded["observed"] < crowded["high"] and crowded["high"] - crowded["low"] < 0.04
    assert single["high"] == 1.0 and single["low"] < 0.25  # one positive film says little
    figure = plots.calibration(y, p, p, {n: {"ece": {"value": 0.0}, "brier": {"value": 0.0}} for n in
                                         ("raw_score", "calibrated")}, 10)  # fmt: skip
    bars = figure.axes[0].containers[0].lines[2][0].get_segments()
    spans = sorted(seg[1][1] - seg[0][1] for seg in bars)
    assert len(spans) == 2 and spans[0] < 0.04 and spans[1] > 0.75
    plt.close(figure)
