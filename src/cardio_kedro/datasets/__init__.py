"""Custom Kedro datasets of the project."""

from .cohort_dataset import CohortDataset
from .pixel_cache_dataset import CacheRequest, PixelCache, PixelCacheDataset

__all__ = ["CacheRequest", "CohortDataset", "PixelCache", "PixelCacheDataset"]
