"""cardio-kedro: chest-X-ray classifiers as Kedro pipelines."""

__version__ = "0.1.0"
