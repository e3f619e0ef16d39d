"""Issue 18: nothing runs from a data file, and no path read from a dataset's own index file leads
outside the dataset (VisA's split CSV, DAGM's ``Labels.txt``); duplicated index rows are refused.
The bad files are built here, not committed."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from test_data_cifar import write_cifar10
from test_data_layouts import make_dagm, make_visa, write_image

from adlib.data import DataError, get_dataset
from adlib.data.cifar import read_batch


class _Payload:
    """Unpickling this object calls ``os.system`` (the classic pickle payload)."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_a_tampered_cifar_batch_is_refused_and_runs_nothing(tmp_path):
    folder = tmp_path / "cifar10"
    write_cifar10(folder)
    sentinel = tmp_path / "pwned"
    for bad in (
        {b"labels": [0], b"data": _Payload(sentinel)},  # payload inside the dict
        _Payload(sentinel),  # payload as the whole file
    ):
        with open(folder / "test_batch", "wb") as f:
            pickle.dump(bad, f, protocol=2)
        with pytest.raises(DataError, match="refused global posix.system|refused global os.system") as e:
            read_batch(folder / "test_batch")
        assert str(folder / "test_batch") in str(e.value)
        assert not sentinel.exists()
    # pickles of another protocol with numpy arrays and lists still read (numpy 2 re-pickle)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"labels": [1, 2], b"data": np.zeros((2, 3072), np.uint8)}, f, protocol=pickle.HIGHEST_PROTOCOL)
    pixels, labels = read_batch(folder / "test_batch")
    assert pixels.shape == (2, 3, 32, 32) and labels.tolist() == [1, 2]


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_visa_rows_cannot_leave_the_dataset(tmp_path, how):
    root = make_visa(tmp_path / "visa", objects=("candle",))
    outside = write_image(tmp_path / "secret" / "x.JPG")
    csv = root / "split_csv" / "1cls.csv"
    if how == "dotdot":
        rel = "../secret/x.JPG"
    elif how == "absolute":
        rel = str(outside)
    else:
        (root / "candle" / "link").symlink_to(outside.parent, target_is_directory=True)
        rel = "candle/link/x.JPG"
    csv.write_text(csv.read_text() + f"candle,test,normal,{rel},\n")
    with pytest.raises(DataError, match="points outside the dataset folder") as e:
        get_dataset("visa", "candle", "test", root=tmp_path)
    assert str(csv) in str(e.value) and "line" in str(e.value) and rel in str(e.value)


def test_visa_duplicate_rows_are_refused(tmp_path):
    root = make_visa(tmp_path / "visa", objects=("candle",))
    csv = root / "split_csv" / "1cls.csv"
    lines = csv.read_text().splitlines()
    row = next(r for r in lines if ",test," in r)
    csv.write_text("\n".join(lines + [row]) + "\n")
    with pytest.raises(DataError, match="listed twice") as e:
        get_dataset("visa", "candle", "test", root=tmp_path)
    assert f"line {len(lines) + 1}" in str(e.value) and f"also on line {lines.index(row) + 1}" in str(e.value)


def test_dagm_rows_cannot_leave_the_dataset_nor_repeat(tmp_path):
    root = make_dagm(tmp_path / "dagm", classes=("Class1",))
    labels = root / "Class1" / "Test" / "Label" / "Labels.txt"
    text = labels.read_text()
    write_image(tmp_path / "secret.PNG")
    labels.write_text(text.replace("0002.PNG", "../../../../secret.PNG", 1))
    with pytest.raises(DataError, match="points outside the dataset folder") as e:
        get_dataset("dagm", "Class1", "test", root=tmp_path)
    assert str(labels) in str(e.value)
    # a defect's label file that climbs out
    labels.write_text(text.replace("0003_label.PNG", "../../../secret.PNG"))
    with pytest.raises(DataError, match="points outside the dataset folder"):
        get_dataset("dagm", "Class1", "test", root=tmp_path)
    rows = text.splitlines()
    labels.write_text("\n".join(rows + [rows[-1]]) + "\n")
    with pytest.raises(DataError, match="listed twice"):
        get_dataset("dagm", "Class1", "test", root=tmp_path)
    labels.write_text(text)
    assert len(get_dataset("dagm", "Class1", "test", root=tmp_path)) > 0
