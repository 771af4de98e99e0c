"""Custom Kedro datasets of the project."""

from .cohort_dataset import CohortDataset
from .keras_model_dataset import KerasModelDataset
from .pixel_cache_dataset import CacheRequest, PixelCache, PixelCacheDataset

__all__ = ["CacheRequest", "CohortDataset", "KerasModelDataset", "PixelCache", "PixelCacheDataset"]
