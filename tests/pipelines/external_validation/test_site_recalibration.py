"""Site recalibration on an update part too small to hold both classes says what to do."""

import pandas as pd
import pytest

from cardio_kedro.common.errors import UserValueError
from cardio_kedro.pipelines.external_validation.nodes import fit_site_recalibration
from tests.helpers import base_params


def test_an_update_part_without_positives_says_to_raise_update_fraction():
    predictions = pd.DataFrame(
        {
            "part": ["update"] * 3 + ["evaluation"] * 5,
            "quality": "ok",
            "target": [0, 0, 0, 1, 1, 0, 0, 0],
            "probability": 0.2,
            "patient_id": [1, 2, 3, 4, 5, 6, 7, 8],
        }  # fmt: skip
    )
    params = base_params("external", recalibrate="intercept", update_fraction=0.05)
    with pytest.raises(UserValueError, match=r"needs both classes.*3 films of 3 patients.*update_fraction=0.05"):
        fit_site_recalibration({"model": None}, predictions, {"threshold": 0.2}, params)
