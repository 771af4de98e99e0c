"""A cohort in object storage for real: the NIH sample uploaded to an S3-compatible server on 127.0.0.1
(moto's standalone server, as s3fs's own tests use), data_processing run from ``s3://...`` with the
credentials in conf/local/credentials.yml, and the pixel cache equal byte for byte to the one built
from the local copy.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
import fsspec
import numpy as np
import pandas as pd
import pytest

from cardio_kedro.cohort import storage
from cardio_kedro.datasets import ImageFileIndexDataset, LabelTableDataset
from tests.helpers import free_port, make_tiny_project, run_pipeline, serve

BUCKET = "cohorts"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with serve(command, tmp_path_factory.mktemp("moto"), f"{url}/moto-api/"):
        yield url


def _credentials(endpoint: str) -> dict:
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }


def _upload(folder: Path, endpoint: str, prefix: str) -> int:
    client = boto3.client("s3", endpoint_url=endpoint, **KEYS)
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    for path in files:
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")
    return len(files)


def _cache(project: Path) -> tuple[bytes, pd.DataFrame]:
    folder = project / "data" / "04_feature" / "pixel_cache" / "32px"
    index = pd.read_parquet(next(folder.glob("*.parquet")))
    return (folder / "pixels.u8").read_bytes(), index


@pytest.mark.kedro_session
@pytest.mark.server
def test_data_processing_from_s3_builds_the_same_pixel_cache_as_the_local_copy(shared_nih, s3_endpoint, tmp_path):
    sample = shared_nih / "sample"
    assert _upload(sample, s3_endpoint, "nih") == 201  # the label table and 200 PNGs
    remote = make_tiny_project(tmp_path / "remote")
    local = make_tiny_project(tmp_path / "local")
    (remote / "conf" / "local" / "credentials.yml").write_text(
        "cohort:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in _credentials(s3_endpoint).items())
    )
    run_pipeline(remote, "data_processing", runtime_params={"cohort_dir": f"s3://{BUCKET}/nih"})
    run_pipeline(local, "data_processing", runtime_params={"cohort_dir": str(sample)})
    (remote_pixels, remote_index), (local_pixels, local_index) = _cache(remote), _cache(local)
    assert len(local_pixels) == 200 * 32 * 32
    assert remote_pixels == local_pixels  # byte for byte
    names = [Path(s).name for s in remote_index["source"]]
    assert names == [Path(s).name for s in local_index["source"]]
    assert remote_index["source"].str.startswith(f"s3://{BUCKET}/nih/").all()
    shapes = ["src_height", "src_width"]
    assert np.array_equal(remote_index[shapes].to_numpy(), local_index[shapes].to_numpy())
    for project in (remote, local):
        (report_file,) = [p for p in (project / "data").rglob("data_quality_report.json") if p.is_file()]
        report = json.loads(report_file.read_text())
        assert report["dropped_rows"] == 0


@pytest.mark.server
def test_a_bad_object_becomes_a_quality_entry_not_a_crash(s3_endpoint):
    options = _credentials(s3_endpoint)
    fs = fsspec.filesystem("s3", **options)
    boto3.client("s3", endpoint_url=s3_endpoint, **KEYS).create_bucket(Bucket=f"{BUCKET}-bad")
    fs.pipe(f"{BUCKET}-bad/x/images/truncated.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    fs.pipe(f"{BUCKET}-bad/x/images/text.png", b"hello")
    pixels, _, error = storage.try_load_gray_url(f"s3://{BUCKET}-bad/x/images/text.png", 32, options)
    assert pixels is None and error.reason == "not_an_image" and "text.png" in error.detail
    _, _, error = storage.try_load_gray_url(f"s3://{BUCKET}-bad/x/images/truncated.png", 32, options)
    assert error.reason in ("truncated", "corrupt")
    _, _, error = storage.try_load_gray_url(f"s3://{BUCKET}-bad/x/images/gone.png", 32, options)
    assert error.reason == "missing"


def test_memory_urls_list_and_read_like_a_folder():
    fs = fsspec.filesystem("memory")
    header = b"Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n"
    fs.pipe("/cohort/Data_Entry_2017.csv", header + b"a.png,No Finding,0,1,50,M,PA\n")
    fs.pipe("/cohort/images_001/images/a.png", b"\x89PNG fake")
    fs.pipe("/cohort/images_001/images/.hidden.png", b"x")
    index = ImageFileIndexDataset("memory://cohort").load()
    assert index["image_index"].tolist() == ["a.png"]
    assert index["path"].tolist() == ["memory:///cohort/images_001/images/a.png"] and index["nbytes"].tolist() == [9]
    table = LabelTableDataset("memory://cohort/Data_Entry_2017.csv").load()
    assert table["Patient ID"].tolist() == ["1"]
    assert storage.is_remote("s3://b/k") and storage.is_remote("memory://x") and not storage.is_remote("data/x")
    assert storage.join("s3://b/", "/k") == "s3://b/k"


def test_an_inference_folder_in_a_store_lists_relative_names_and_decodes():
    import cv2

    from cardio_kedro.datasets import CohortStorageDataset, ImageFolderDataset

    fs = fsspec.filesystem("memory")
    png = cv2.imencode(".png", np.full((40, 30), 200, np.uint8))[1].tobytes()
    fs.pipe("/batch/ward_a/x.png", png)
    fs.pipe("/batch/y.jpg.txt", b"not scored")
    images = ImageFolderDataset("memory://batch").load()
    assert images["file"].tolist() == ["ward_a/x.png"]
    assert images["path"].tolist() == ["memory:///batch/ward_a/x.png"]
    pixels, shape, error = storage.try_load_gray_url(images["path"].iloc[0], 16)
    assert error is None and shape == (40, 30) and pixels.shape == (16, 16) and int(pixels.mean()) == 200
    assert CohortStorageDataset("memory://batch", credentials={"k": "v"}).load() == {"k": "v"}
    assert CohortStorageDataset("data/local", credentials={"k": "v"}).load() == {}  # a local folder needs none
