"""Issue 18: a built-in benchmark whose generation was interrupted (``adlib data synth`` killed) is
refused by every loader with the command that remakes it, instead of being used half-made."""

from __future__ import annotations

import pytest

from adlib.data import DataError, get_dataset, list_categories
from adlib.data.synth import _MARKER, MANIFEST, generate_benchmark


@pytest.fixture()
def root(tmp_path):
    generate_benchmark(
        tmp_path, seed=3, categories=["wood"], n_train=2, n_test_good=1, n_per_defect=1, size=32, progress=False
    )
    return tmp_path


@pytest.mark.parametrize("dataset", ["synth", "synth-weak"])
def test_an_interrupted_generation_is_refused_with_the_fix(root, dataset):
    assert len(get_dataset(dataset, "wood", "test", root=root)) > 0
    folder = root / dataset
    (folder / _MARKER).write_text("generation in progress\n")  # what a killed generation leaves
    with pytest.raises(DataError, match="unfinished generation") as e:
        get_dataset(dataset, "wood", "test", root=root)
    assert f"adlib data synth --out {root}" in str(e.value) and str(folder) in str(e.value)
    (folder / _MARKER).unlink()
    (folder / MANIFEST).unlink()  # killed before its manifest, written last
    with pytest.raises(DataError, match="no manifest.json"):
        list_categories(dataset, root)
    # the command it names repairs it
    generate_benchmark(
        root, seed=3, categories=["wood"], n_train=2, n_test_good=1, n_per_defect=1, size=32, progress=False
    )
    assert len(get_dataset(dataset, "wood", "test", root=root)) > 0
