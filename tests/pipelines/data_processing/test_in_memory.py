"""data_processing on an in-memory DataCatalog with SequentialRunner (starter style): seconds, no session."""

from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from cardio_kedro.datasets import CohortFolder, PixelCacheDataset
from cardio_kedro.pipelines.data_processing import create_pipeline
from cardio_kedro.pipelines.data_processing.nodes import check_disjoint_patients
from tests.helpers import base_params


def _catalog(cohort_dir, cache_dir) -> DataCatalog:
    cache = PixelCacheDataset(str(cache_dir), image_size=32)
    catalog = DataCatalog(datasets={"existing_pixel_cache": cache, "pixel_cache": cache})
    catalog["cohort_folder"] = CohortFolder(str(cohort_dir))
    catalog["cohort_storage"] = {}  # a local cohort
    params = base_params("data_processing", workers=1)
    catalog["params:cohort"] = base_params("cohort")
    catalog["params:data_processing"] = params
    catalog["params:data_processing.workers"] = 1
    catalog["params:data_processing.split"] = params["split"]
    catalog["params:data_processing.rebalance"] = params["rebalance"]
    catalog["params:target_findings"] = "Cardiomegaly"
    catalog["params:image_size"] = 32
    return catalog


def test_the_whole_pipeline_in_memory(phantom_cohort_dir, tmp_path):
    outputs = SequentialRunner().run(create_pipeline(), _catalog(phantom_cohort_dir, tmp_path / "cache"))
    train, validation, test = (outputs[name].load() for name in ("train_balanced", "validation_balanced", "test_split"))
    check_disjoint_patients(train, validation, test)
    assert (train["target"] == 0).sum() == 3 * train["target"].sum()
    prevalence = outputs["rebalancing"].load()["prevalence"]
    assert prevalence["trained"] == train["target"].mean() and prevalence["natural"] < prevalence["trained"]
    report = outputs["data_quality_report"].load()
    assert report["usable_images"] > 60 and report["dropped_rows"] == 0
    assert (tmp_path / "cache" / "32px" / "pixels.u8").stat().st_size == report["usable_images"] * 32 * 32


def test_a_slice_from_the_split_on(phantom_cohort_dir, tmp_path):
    catalog = _catalog(phantom_cohort_dir, tmp_path / "cache")
    full = SequentialRunner().run(create_pipeline().to_nodes("select_decoded_images"), catalog)
    catalog["model_input_table"] = full["model_input_table"].load()
    again = SequentialRunner().run(create_pipeline().from_nodes("split_by_patient"), catalog)
    assert set(again) == {"test_split", "train_balanced", "validation_balanced", "rebalancing"}
