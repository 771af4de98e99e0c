"""kedro-mlflow's ``MlflowArtifactDataset`` around a dataset that keeps its Kedro version too."""

from __future__ import annotations

from typing import Any

from kedro.io import Version
from kedro_mlflow.io.artifacts import MlflowArtifactDataset


class VersionedMlflowArtifactDataset(MlflowArtifactDataset):
    """Logs each save of the wrapped dataset to the MLflow run *and* keeps the catalog version.

    Declare it with ``versioned: true`` at the top of the entry, not in ``dataset``::

        "{name}_plot":
          type: cardio_kedro.datasets.VersionedMlflowArtifactDataset
          versioned: true
          artifact_path: "{name}_plot"
          dataset: {type: cardio_kedro.datasets.FigureDataset, filepath: data/08_reporting/plots/{name}.png}

    ``MlflowArtifactDataset`` builds its inner dataset from ``dataset`` alone, so ``versioned: true``
    written there gives the inner dataset a save version of its own, which the catalog refuses
    (every dataset of a run shares the run's save version). Here the catalog hands the run's
    ``Version`` to the wrapper and the wrapper passes it on, so the file lands in
    ``<filepath>/<run version>/`` like every other versioned dataset and ``--load-versions`` works.
    """

    def __new__(
        cls,
        dataset: str | dict,
        version: Version | None = None,
        run_id: str | None = None,
        artifact_path: str | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        instance = MlflowArtifactDataset.__new__(
            MlflowArtifactDataset,
            dataset=dataset,
            run_id=run_id,
            artifact_path=artifact_path,
            credentials=credentials,
            metadata=metadata,
        )
        instance._version = version
        return instance
