"""Promotion: an external validation may make the scored model @champion only when every gate passes."""

import pytest

from cardio_kedro.pipelines.external_validation.nodes import promotion_decision
from tests.helpers import base_params


def _external(**overrides):
    return base_params("external", cohort_dir="/data/site_b", **overrides)


def _metrics(ci_low=0.85, oe=1.05, beats=True, version="3"):
    return {
        "model": {"registered_name": "Cardiomegaly-classifier", "registered_version": version},
        "external": {"roc_auc": {"auc": 0.9, "ci_low": ci_low, "ci_high": 0.95},
                     "calibration": {"in_the_large": {"observed_expected": {"value": oe}}}},
        "baseline": {"paired_difference": {"ci_low": 0.02 if beats else -0.01}, "model_beats_baseline": beats},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("figures", "promote", "failed"),
    [
        ({}, True, []),
        ({"ci_low": 0.79}, False, ["auc_lower_bound"]),
        ({"oe": 1.3}, False, ["observed_expected"]),
        ({"oe": 0.7, "beats": False}, False, ["observed_expected", "beats_baseline"]),
    ],
)
def test_promotion_needs_every_gate(figures, promote, failed):
    decision = promotion_decision(_metrics(**figures), _external(promote=True))
    assert decision["promote"] is promote and decision["gates_passed"] is promote
    assert [c["gate"] for c in decision["checks"] if not c["passed"]] == failed
    assert decision["reason"].startswith("every gate passed" if promote else "failed: " + ", ".join(failed))


def test_promotion_only_when_asked_and_only_a_registered_version():
    assert promotion_decision(_metrics(), _external(promote=False))["reason"] == "external.promote is false"
    unregistered = promotion_decision(_metrics(version=None), _external(promote=True))
    assert not unregistered["promote"] and "no registered version" in unregistered["reason"]
