"""Custom Kedro datasets of the project: they store and load; nodes do the work.

May import: ``common``, ``cohort``, ``modeling``; never a pipeline.
"""

from .cohort import (
    BoxListDataset,
    CohortFolder,
    CohortFolderDataset,
    CohortStorageDataset,
    ImageFileIndexDataset,
    LabelTableDataset,
    OfficialSplitDataset,
)
from .figure_dataset import FigureDataset
from .image_folder_dataset import ImageFolderDataset, PngFolderDataset
from .inference_model_dataset import RECALIBRATED_TAG, InferenceModelDataset
from .keras_model_dataset import KerasModelDataset, RecalibratedClassifierDataset
from .mlflow_artifact_dataset import VersionedMlflowArtifactDataset
from .pixel_cache_dataset import DecodedChunk, PixelCache, PixelCacheDataset

__all__ = [
    "RECALIBRATED_TAG",
    "BoxListDataset",
    "CohortFolder",
    "CohortFolderDataset",
    "CohortStorageDataset",
    "DecodedChunk",
    "FigureDataset",
    "ImageFileIndexDataset",
    "ImageFolderDataset",
    "InferenceModelDataset",
    "KerasModelDataset",
    "LabelTableDataset",
    "OfficialSplitDataset",
    "PixelCache",
    "PixelCacheDataset",
    "PngFolderDataset",
    "RecalibratedClassifierDataset",
    "VersionedMlflowArtifactDataset",
]
