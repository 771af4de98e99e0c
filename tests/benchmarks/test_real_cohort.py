"""benchmarks/real_cohort.py: the seed spread it prints for a configuration."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("real_cohort", ROOT / "benchmarks" / "real_cohort.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_seed_spread_counts_the_seeds_that_beat_and_the_lowest_bound():
    runs = [
        {"auc": 0.78, "difference": 0.11, "difference_ci": (0.05, 0.19), "beats": True},
        {"auc": 0.70, "difference": 0.03, "difference_ci": (-0.04, 0.12), "beats": False},
        {"auc": 0.81, "difference": 0.14, "difference_ci": (0.06, 0.22), "beats": True},
    ]
    line = _benchmark().seed_spread("aligned", runs)
    assert line.startswith("aligned: beats the baseline at 2 of 3 seeds")
    assert "OOF AUC 0.700-0.810" in line and "difference +0.030 to +0.140" in line
    assert line.endswith("lowest lower bound -0.040")
