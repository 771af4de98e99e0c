"""A learnable toy set in a pixel cache: positives carry a bright block on the left."""

import cv2
import numpy as np
import pandas as pd
import pytest

from cardio_kedro.datasets import CacheRequest, PixelCacheDataset

TINY_MODEL = {
    "backbone": "vgg16",
    "backbone_weights": None,
    "backbone_width": 0.125,
    "attention_units": [8, 1],
    "dense_units": 8,
    "dropout": 0.1,
    "augmentation": None,
}


def tiny_params(**overrides):
    params = {
        "model": dict(TINY_MODEL),
        "seed": 1,
        "batch_size": 16,
        "head": {"epochs": 1, "learning_rate": 1e-3},
        "fine_tune": {"epochs": 2, "learning_rate": 1e-3, "unfreeze_layers": "all"},
        "early_stopping_patience": 5,
        "reduce_lr": {"factor": 0.5, "patience": 5},
        "mixed_precision": "float32",
        "verbose": 0,
    }
    params.update(overrides)
    return params


@pytest.fixture(scope="session")
def toy_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(96):
        target = int(i % 3 == 0)
        img = rng.integers(20, 60, (32, 32)).astype(np.uint8)
        if target:
            img[8:24, 2:14] = 220
        path = root / f"{i}.png"
        cv2.imwrite(str(path), img)
        rows.append(
            {
                "image_index": path.name,
                "patient_id": i,
                "path": str(path),
                "target": target,
                "sex": "MF"[i % 2],
                "view": "PA",
                "age": 50.0,
            }
        )
    table = pd.DataFrame(rows)
    ds = PixelCacheDataset(str(root / "cache"))
    ds.save(CacheRequest(table["path"].tolist(), 32, workers=1))
    return {
        "dataset": ds,
        "train": table.iloc[:64].reset_index(drop=True),
        "validation": table.iloc[64:].reset_index(drop=True),
    }
