"""Operating thresholds (the tie rule, separated splits, targets) and net benefit by hand."""

import numpy as np
import pytest

from cardio_kedro.evaluation.decision import choose_threshold, net_benefit


def test_youden_takes_the_middle_of_the_tied_interval():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.85, 0.5, 0.8, 0.9])
    t = choose_threshold(y, p, "youden", 0.9, 0.9)
    # J = 2/3 for every t in (0.2, 0.5]: calls 0.5, 0.8, 0.85, 0.9 positive; the middle is 0.35
    assert t["value"] == pytest.approx(0.35) and t["tied_interval"] == [0.2, 0.5]
    assert not t["validation_separated"]
    assert t["validation_sensitivity"] == 1.0 and t["validation_specificity"] == pytest.approx(2 / 3)


def test_a_separated_split_puts_the_threshold_between_the_classes_and_says_so():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.0003, 0.01, 0.02, 0.6, 0.9])
    t = choose_threshold(y, p, "youden", 0.9, 0.9)
    assert t["validation_separated"] and t["tied_interval"] == [0.02, 0.6]
    assert t["value"] == pytest.approx(0.31)  # not 0.0003, not 0.6: the middle of the gap


def test_target_sensitivity_and_target_ppv():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    sens = choose_threshold(y, p, "sensitivity", 0.75, 0.9)
    assert sens["tied_interval"] == [0.6, 0.7] and sens["validation_specificity"] == 1.0
    ppv = choose_threshold(y, p, "ppv", 0.9, 0.8)  # most sensitive cut with PPV >= 0.8: 0.4 and up
    assert ppv["tied_interval"] == [0.3, 0.4] and ppv["validation_sensitivity"] == 1.0
    with pytest.raises(ValueError, match="one of"):
        choose_threshold(y, p, "best", 0.9, 0.9)


def test_net_benefit_by_hand():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.3, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    curve = net_benefit(y, p, np.array([0.2, 0.5])).set_index("threshold")
    # t=0.2: TP 2, FP 1 -> 2/10 - 1/10 * 0.25 = 0.175; treat all: 0.2 - 0.8 * 0.25 = 0.0
    assert curve.loc[0.2, "model"] == pytest.approx(0.175) and curve.loc[0.2, "treat_all"] == pytest.approx(0.0)
    # t=0.5: TP 1, FP 1 -> 0.1 - 0.1 * 1 = 0.0; treat all: 0.2 - 0.8 = -0.6
    assert curve.loc[0.5, "model"] == pytest.approx(0.0) and curve.loc[0.5, "treat_all"] == pytest.approx(-0.6)
    assert (curve["treat_none"] == 0).all()
