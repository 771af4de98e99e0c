"""model_training on an in-memory DataCatalog with SequentialRunner (starter style)."""

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from cardio_kedro.pipelines.model_training import create_pipeline
from tests.helpers import tiny_params


def test_the_pipeline_trains_and_returns_the_epoch_metrics(toy_cache):
    catalog = DataCatalog(datasets={"classifier": MemoryDataset(copy_mode="assign")})
    catalog["train_balanced"] = toy_cache["train"]
    catalog["validation_balanced"] = toy_cache["validation"]
    catalog["pixel_cache"] = MemoryDataset(toy_cache["cache"], copy_mode="assign")
    catalog["class_weights"] = {"strategy": "undersample", "class_weight": {"0": 1.0, "1": 1.0}}
    catalog["params:model_training"] = tiny_params(fine_tune={"epochs": 1})
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    metrics = outputs["training_metrics"].load()
    assert [m["step"] for m in metrics["val_auc"]] == [1, 2] and len(metrics["loss"]) == 2
    assert catalog.load("classifier").get_layer("attention_map") is not None
