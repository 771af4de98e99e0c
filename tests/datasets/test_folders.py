"""Folders walked by the datasets: symbolic links to folders are followed, each folder once."""

import os

from cardio_kedro.datasets import ImageFileIndexDataset, ImageFolderDataset


def _tree(tmp_path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "ward").mkdir(parents=True)
    (elsewhere / "day1").mkdir(parents=True)
    (root / "ward" / "00000001_000.png").write_bytes(b"x")
    (elsewhere / "day1" / "00000002_000.png").write_bytes(b"x")
    os.symlink(elsewhere, root / "linked")  # a folder of images kept elsewhere
    os.symlink(root, root / "ward" / "loop")  # a link back up: must not be walked forever
    os.symlink(elsewhere, root / "again")  # the same folder through a second link: listed once
    return root


def test_image_folder_follows_folder_links_once(tmp_path):
    table = ImageFolderDataset(str(_tree(tmp_path))).load()
    assert sorted(table["file"].str.rsplit("/", n=1).str[-1]) == ["00000001_000.png", "00000002_000.png"]
    assert len(table) == 2


def test_cohort_index_follows_folder_links_once(tmp_path):
    table = ImageFileIndexDataset(str(_tree(tmp_path))).load()
    assert sorted(table["image_index"]) == ["00000001_000.png", "00000002_000.png"]
