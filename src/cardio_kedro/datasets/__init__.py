"""Custom Kedro datasets of the project."""

from .cohort_dataset import CohortDataset
from .figure_dataset import FigureDataset
from .image_folder_dataset import ImageFolderDataset, PngFolderDataset
from .inference_model_dataset import InferenceModelDataset
from .keras_model_dataset import KerasModelDataset
from .pixel_cache_dataset import CacheRequest, PixelCache, PixelCacheDataset

__all__ = [
    "CacheRequest",
    "CohortDataset",
    "FigureDataset",
    "ImageFolderDataset",
    "InferenceModelDataset",
    "KerasModelDataset",
    "PixelCache",
    "PixelCacheDataset",
    "PngFolderDataset",
]
