"""model_training on an in-memory DataCatalog with SequentialRunner (starter style)."""

from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from cardio_kedro.modeling import model_quality_guard, operating_threshold
from cardio_kedro.pipelines.model_training import create_pipeline
from tests.helpers import NO_REBALANCING, base_params, tiny_params


def test_the_pipeline_trains_calibrates_and_returns_the_epoch_metrics(toy_cache):
    catalog = DataCatalog(datasets={"classifier": MemoryDataset(copy_mode="assign")})
    catalog["train_balanced"] = catalog["train_split"] = toy_cache["train"]
    catalog["validation_balanced"] = catalog["validation_split"] = toy_cache["validation"]
    catalog["pixel_cache"] = MemoryDataset(toy_cache["cache"], copy_mode="assign")
    catalog["rebalancing"] = NO_REBALANCING
    catalog["params:model_training"] = tiny_params(fine_tune={"epochs": 1})
    catalog["params:reporting.calibration_bins"] = base_params("reporting")["calibration_bins"]
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    metrics = outputs["training_metrics"].load()
    assert [m["step"] for m in metrics["val_auc"]] == [1, 2] and len(metrics["loss"]) == 2
    calibration = outputs["calibration"].load()
    classifier = catalog.load("classifier")
    assert operating_threshold(classifier) == calibration["threshold"]["value"]
    assert classifier.get_layer("attention_map") is not None
    guard = model_quality_guard(classifier)  # fitted on the training films, saved in the model
    assert guard is not None and guard.template.shape == (32, 32) and -1 < guard.min_correlation < 1
