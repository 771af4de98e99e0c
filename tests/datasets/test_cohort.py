"""Cohort datasets: both NIH CSV flavours, nested and flat image folders, clear errors, atomic writes."""

import pandas as pd
import pytest
from kedro.io import DatasetError

from cardio_kedro.datasets import BoxListDataset, ImageFileIndexDataset, LabelTableDataset, OfficialSplitDataset
from cardio_kedro.datasets.cohort import read_label_table

HEADER_2020 = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
ROWS = [
    "00000001_000.png,Cardiomegaly|Emphysema,0,1,57,M,PA,2682,2749,0.143,0.143",
    "00000002_000.png,No Finding,0,2,081Y,F,AP,2500,2048,0.171,0.171",
]


def test_reads_the_2020_revision_and_the_kaggle_file(tmp_path):
    v2020 = tmp_path / "v2020.csv"
    v2020.write_text("\n".join([HEADER_2020, *ROWS]) + "\n")
    kaggle = tmp_path / "kaggle.csv"
    kaggle.write_text("\n".join([HEADER_2020 + ",", *[r + "," for r in ROWS]]) + "\n")
    a, b = read_label_table(v2020), read_label_table(kaggle)
    pd.testing.assert_frame_equal(a, b)
    assert a.loc[0, "Finding Labels"] == "Cardiomegaly|Emphysema"
    assert a.loc[1, "Patient Age"] == "081Y"
    assert a.shape == (2, 11)


def test_missing_required_column_is_named(tmp_path):
    bad = tmp_path / "Data_Entry_2017.csv"
    bad.write_text("Image Index,Finding Labels,Patient ID\nx.png,No Finding,1\n")
    with pytest.raises(DatasetError, match="Follow-up #"):
        read_label_table(bad)


@pytest.mark.parametrize(("patient_id", "shown"), [("", "blank"), ("12a", "'12a'")])
def test_a_row_without_an_integer_patient_id_names_file_line_and_column(tmp_path, patient_id, shown):
    bad = tmp_path / "Data_Entry_2017.csv"
    broken = ROWS[1].replace(",0,2,", f",0,{patient_id},")
    bad.write_text("\n".join([HEADER_2020, ROWS[0], broken]) + "\n")
    with pytest.raises(DatasetError) as err:
        LabelTableDataset(str(bad)).load()
    message = str(err.value)
    assert str(bad) in message and "line 3" in message and "'Patient ID'" in message
    assert shown in message and "00000002_000.png" in message and "integer patient id" in message


def test_missing_cohort_says_what_to_do(tmp_path):
    with pytest.raises(DatasetError) as err:
        LabelTableDataset(str(tmp_path / "nowhere" / "Data_Entry_2017.csv")).load()
    message = str(err.value)
    assert "folder does not exist" in message and "cohort_dir" in message
    assert "kedro run --pipelines=phantom_cohort" in message and "\n" not in message


def test_finds_images_in_nested_and_flat_folders_and_optional_files(tmp_path):
    root = tmp_path / "cohort"
    (root / "images_001" / "images").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "images_001" / "images" / "a.png").write_bytes(b"x")
    (root / "images" / "b.PNG").write_bytes(b"x")
    (root / "images" / "notes.txt").write_text("not an image")
    files = ImageFileIndexDataset(str(root)).load()
    assert dict(zip(files["image_index"], files["path"])) == {
        "a.png": str(root / "images_001" / "images" / "a.png"),
        "b.PNG": str(root / "images" / "b.PNG"),
    }
    assert OfficialSplitDataset(str(root)).load() == {}
    assert BoxListDataset(str(root / "BBox_List_2017.csv")).load().empty
    (root / "train_val_list.txt").write_text("a.png\n")
    (root / "test_list.txt").write_text("b.PNG\n")
    assert OfficialSplitDataset(str(root)).load() == {"train_val": ["a.png"], "test": ["b.PNG"]}


def test_failed_image_save_leaves_the_cohort_as_it_was(tmp_path):
    def images():
        yield "images_001/images/a.png", b"new"
        raise RuntimeError("renderer crashed")

    root = tmp_path / "phantom"
    (root / "images_001" / "images").mkdir(parents=True)
    (root / "images_001" / "images" / "a.png").write_bytes(b"old")
    with pytest.raises(DatasetError, match="renderer crashed"):
        ImageFileIndexDataset(str(root)).save(images())
    assert (root / "images_001" / "images" / "a.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["phantom"]  # no temporary folder left


def test_phantom_cohort_round_trip(phantom_cohort_dir):
    labels = LabelTableDataset(str(phantom_cohort_dir / "Data_Entry_2017.csv")).load()
    files = ImageFileIndexDataset(str(phantom_cohort_dir)).load()
    assert len(labels) == len(files) > 60
    assert set(labels["Image Index"]) == set(files["image_index"])
    assert (phantom_cohort_dir / "images_001" / "images").is_dir()
    boxes = BoxListDataset(str(phantom_cohort_dir / "BBox_List_2017.csv")).load()
    assert set(boxes["finding"]) == {"Cardiomegaly"}
    assert set(boxes["image_index"]) == set(
        labels.loc[labels["Finding Labels"].str.contains("Cardiomegaly"), "Image Index"]
    )


READ_AND_MEASURE = (
    "import sys, time\n"
    "from cardio_kedro.common.errors import UserError\n"
    "from cardio_kedro.datasets.cohort import read_label_table\n"
    "start = time.perf_counter()\n"
    "try:\n"
    "    read_label_table(sys.argv[1])\n"
    "    print('read')\n"
    "except UserError as exc:\n"
    "    print('refused:', exc)\n"
    "print(time.perf_counter() - start)\n"
    "status = open('/proc/self/status').read().split('VmHWM:')[1]\n"  # this process's own peak (ru_maxrss
    "print(int(status.split()[0]) // 1024)\n"  # starts from the parent's at fork)
)


def _read_in_a_process(path) -> tuple[str, float, int]:
    """The outcome of reading ``path`` in a fresh process, its seconds and its peak memory (MiB)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", READ_AND_MEASURE, str(path)], capture_output=True, text=True,
                         check=True, timeout=600).stdout.splitlines()  # fmt: skip
    return "\n".join(out[:-2]), float(out[-2]), int(out[-1])


def _write_junk(fh, n_bytes: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, 4 * 2**20, dtype=np.uint8).tobytes()  # random bytes: newlines, commas, NULs
    for _ in range(n_bytes // len(block)):
        fh.write(block)


@pytest.mark.parametrize("good_rows", [2, 120_000])
def test_a_label_table_that_goes_on_as_junk_is_refused_early_in_bounded_memory(tmp_path, good_rows):
    """A valid header, some good rows, then 1.5 GB of junk: refused where the junk starts, in seconds and
    a few hundred MiB (the whole file read at once took 5.9 GB and 70 s for 2 GB, and ended in a KeyError)."""
    table = tmp_path / "Data_Entry_2017.csv"
    with table.open("wb") as fh:
        fh.write((HEADER_2020 + "\n").encode())
        for i in range(good_rows):
            fh.write(f"{i:08d}_000.png,No Finding,0,{i + 1},57,M,PA,2682,2749,0.143,0.143\n".encode())
        _write_junk(fh, 1536 * 2**20)
    outcome, seconds, peak_mib = _read_in_a_process(table)
    print(f"{good_rows} good rows + 1.5 GB of junk: {outcome[:160]!r}; {seconds:.1f} s, peak {peak_mib} MiB")
    assert outcome.startswith("refused:") and str(table) in outcome
    assert "label table" in outcome and "KeyError" not in outcome
    line = int(outcome.split(" line ")[1].split(":")[0].split(" ")[0]) if " line " in outcome else None
    assert line is not None and line >= good_rows + 2  # where the junk starts, not before
    assert seconds < 30 and peak_mib < 800


def test_a_few_bad_rows_among_many_are_named_by_line(tmp_path):
    table = tmp_path / "Data_Entry_2017.csv"
    rows = [f"{i:08d}_000.png,No Finding,0,{i + 1},57,M,PA,2682,2749,0.143,0.143" for i in range(60_000)]
    rows[55_000] = rows[55_000].replace(",55001,", ",x55001,")
    table.write_text("\n".join([HEADER_2020, *rows]) + "\n")
    with pytest.raises(DatasetError, match=r"line 55002 .*column 'Patient ID': 'x55001'.*\(1 row\(s\) like this\)"):
        read_label_table(table)
