"""phantom_cohort on a DataCatalog with SequentialRunner: images on disk, tables in memory."""

from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from cardio_kedro.cohort.nih import REQUIRED_LABEL_COLUMNS
from cardio_kedro.datasets import ImageFileIndexDataset
from cardio_kedro.pipelines.phantom_cohort import create_pipeline
from tests.helpers import phantom_params


def test_generates_images_boxes_and_labels(tmp_path):
    catalog = DataCatalog(datasets={"cohort_images": ImageFileIndexDataset(str(tmp_path / "cohort"))})
    catalog["params:phantoms"] = phantom_params(n_patients=12, native_size=32, images_per_folder=8)
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    labels, boxes = outputs["cohort_labels"].load(), outputs["cohort_boxes"].load()
    files = catalog.load("cohort_images")
    assert sorted(files["image_index"]) == sorted(labels["Image Index"])
    assert (tmp_path / "cohort" / "images_002" / "images").is_dir()  # 8 images per folder
    positives = labels.loc[labels["Finding Labels"].str.contains("Cardiomegaly"), "Image Index"]
    assert sorted(boxes["Image Index"]) == sorted(positives)
    assert tuple(labels.columns[:7]) == REQUIRED_LABEL_COLUMNS
