"""CIFAR-10 / CIFAR-100 read from tiny pickles written in the official python layout, and the
``outliers`` (outlier exposure) protocol that draws CIFAR-100 images into a training set."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from adlib.data import DataError, ImageTransform, get_dataset, list_categories
from adlib.data.cifar import CifarDataset, image_array
from adlib.protocols import apply_protocol, check_method_accepts, check_protocol, few_shot, outlier_exposure
from adlib.results import Job, ResultsStore

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RAW = ImageTransform(resize=None, crop=None, normalize=False)
LABELS = [i % 10 for i in range(20)]  # each batch file: 2 images of every class, in label order


def planar(rows: np.ndarray) -> np.ndarray:
    """``N x 32 x 32 x 3`` RGB images -> the official ``N x 3072`` channel-planar rows."""
    return np.ascontiguousarray(rows.transpose(0, 3, 1, 2)).reshape(len(rows), -1)


def images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(folder: Path, labels: list[int] = LABELS) -> dict[str, np.ndarray]:
    """Every batch file with ``labels`` (and random pixels); returns the RGB images per file."""
    out = {}
    n = len(labels)
    dump(folder / "batches.meta", {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072})
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        rgb = images(k, n)
        dump(
            folder / name,
            {
                b"batch_label": name.encode(),
                b"labels": list(labels),
                b"data": planar(rgb),
                b"filenames": [f"{i}.png".encode() for i in range(n)],
            },
        )
        out[name] = rgb
    return out


def write_cifar100(folder: Path, n_train: int = 40) -> None:
    dump(
        folder / "meta",
        {
            b"fine_label_names": [f"c{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"s{i}".encode() for i in range(20)],
        },
    )
    for name, n, seed in (("train", n_train, 100), ("test", 8, 101)):
        dump(
            folder / name,
            {
                b"data": planar(images(seed, n)),
                b"fine_labels": [i % 100 for i in range(n)],
                b"coarse_labels": [i % 20 for i in range(n)],
                b"filenames": [b"x.png"] * n,
            },
        )


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("cifar_data")
    rgb = write_cifar10(r / "cifar-10-batches-py")
    write_cifar100(r / "cifar-100-python")
    return SimpleNamespace(path=r, rgb=rgb)


def test_categories_sizes_labels_and_paths(root):
    assert list_categories("cifar10", root.path) == CLASSES
    assert list_categories("cifar100", root.path) == ["all"]
    train = get_dataset("cifar10", "cat", "train", root=root.path, transform=RAW)
    test = get_dataset("cifar10", "cat", "test", root=root.path, transform=RAW)
    assert isinstance(train, CifarDataset) and len(train) == 5 * 2 and train.labels.tolist() == [0] * 10
    assert set(train.defect_types) == {"good"}
    assert len(test) == 20 and test.labels.tolist() == [int(y != 3) for y in LABELS]
    assert test.summary() == {"good": 2, **{c: 2 for c in CLASSES if c != "cat"}}
    folder = root.path / "cifar-10-batches-py"
    assert [str(r.image_path) for r in test.records][:2] == [f"{folder / 'test_batch'}#0", f"{folder / 'test_batch'}#1"]
    assert [str(r.image_path) for r in train.records][:3] == [
        f"{folder / 'data_batch_1'}#3",
        f"{folder / 'data_batch_1'}#13",
        f"{folder / 'data_batch_2'}#3",
    ]
    s = test[1]
    assert s.label == 1 and s.defect_type == "automobile" and s.path == f"{folder / 'test_batch'}#1"
    assert len(get_dataset("cifar10", "dog", "test", root=folder)) == 20  # the dataset folder itself as root
    oe = get_dataset("cifar100", "all", "train", root=root.path)
    assert len(oe) == 40 and set(oe.labels.tolist()) == {1} and set(oe.defect_types) == {"outlier"}


def test_pixels_round_trip_channel_planar(root):
    test = get_dataset("cifar10", "cat", "test", root=root.path, transform=RAW)
    train = get_dataset("cifar10", "dog", "train", root=root.path, transform=RAW)
    ref = root.rgb["test_batch"]
    for i in (0, 5):
        x = test[i].image
        assert x.shape == (3, 32, 32)
        assert torch.equal((x * 255).round().to(torch.uint8), torch.from_numpy(ref[i]).permute(2, 0, 1))
    # one pixel by hand: row 2, column 7 of image 15 of data_batch_2 (its second dog: rows 5, 15)
    rec = train.records[3]
    assert str(rec.image_path).endswith("data_batch_2#15")
    r, g, b = root.rgb["data_batch_2"][15, 2, 7]
    assert len({int(r), int(g), int(b), *root.rgb["data_batch_2"][15, 7, 2].tolist()}) > 1  # a transposition would show
    assert (train[3].image[:, 2, 7] * 255).round().tolist() == [r, g, b]
    assert image_array(rec.file, 15)[2, 7].tolist() == [r, g, b]
    # and it is the planar layout: red at offset 2*32+7, green 1024 further, blue 2048
    with open(rec.file, "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][15]
    assert [raw[2 * 32 + 7], raw[1024 + 2 * 32 + 7], raw[2048 + 2 * 32 + 7]] == [r, g, b]


def test_transform_resize_and_zero_masks(root):
    tf = ImageTransform(resize=64, crop=56, normalize=True)
    ds = get_dataset("cifar10", "cat", "test", root=root.path, transform=tf)
    for i in range(len(ds)):
        s = ds[i]
        assert s.image.shape == (3, 56, 56) and s.mask.shape == (1, 56, 56) and float(s.mask.abs().sum()) == 0.0
    batch = torch.utils.data.default_collate([ds[3], ds[4]])
    assert (
        batch.image.shape == (2, 3, 56, 56)
        and batch.label.tolist() == [0, 1]
        and list(batch.defect_type) == ["good", "deer"]
    )
    # the same pixels as the 32 px image resized by the transform like any image file
    tf64 = ImageTransform(resize=64, crop=None, normalize=False)
    x = get_dataset("cifar10", "cat", "test", root=root.path, transform=tf64)[7].image
    assert x.shape == (3, 64, 64) and torch.equal(x, tf64.image(Image.fromarray(root.rgb["test_batch"][7])))


def test_shots_keeps_the_dataset_class(root):
    train = get_dataset("cifar10", "cat", "train", root=root.path, transform=RAW)
    sub = few_shot(train, 4, seed=2)
    assert isinstance(sub, CifarDataset) and len(sub) == 4 and sub.transform == train.transform
    assert {str(r.image_path) for r in sub.records} <= {str(r.image_path) for r in train.records}
    i = [str(r.image_path) for r in train.records].index(str(sub.records[0].image_path))
    assert torch.equal(sub[0].image, train[i].image)
    assert type(dataclasses.replace(train, records=train.records[:2])) is CifarDataset


def test_outlier_protocol_adds_as_many_labelled_outliers_as_normal_images(root):
    train = get_dataset("cifar10", "cat", "train", root=root.path, transform=RAW)
    test = get_dataset("cifar10", "cat", "test", root=root.path, transform=RAW)
    tr, te, d = apply_protocol({"outliers": "cifar100"}, train, test, seed=0)
    assert te is test and len(tr) == 20 and tr.labels.tolist() == [0] * 10 + [1] * 10
    assert tr.records[:10] == train.records and len(train) == 10  # input untouched
    assert d["outliers"] == "cifar100" and d["n_outliers"] == 10 and "cifar-100-python/train" in d["outlier_source"]
    paths = [str(r.image_path) for r in tr.records[10:]]
    assert len(set(paths)) == 10 and all(
        "cifar-100-python" in p and p.split("/")[-1].startswith("train#") for p in paths
    )
    s = tr[15]
    assert s.label == 1 and s.defect_type == "outlier" and float(s.mask.sum()) == 0.0 and s.image.shape == (3, 32, 32)
    # seeded: same seed same pick, other seeds other picks
    same = apply_protocol({"outliers": "cifar100"}, train, test, seed=0)[0]
    assert [str(r.image_path) for r in same.records] == [str(r.image_path) for r in tr.records]
    picks = {
        tuple(str(r.image_path) for r in apply_protocol({"outliers": "cifar100"}, train, test, seed=s)[0].records[10:])
        for s in range(4)
    }
    assert len(picks) == 4
    assert (
        apply_protocol({"outliers": "cifar100"}, train, test, seed=1)[2]["outlier_rows_sha1"] != d["outlier_rows_sha1"]
    )
    # after shots: as many outliers as shots
    tr4, _, d4 = apply_protocol({"shots": 4, "outliers": "cifar100"}, train, test, seed=0)
    assert tr4.labels.tolist() == [0] * 4 + [1] * 4 and d4["n_outliers"] == 4 and len(d4["train_files"]) == 4
    assert {str(r.image_path) for r in tr4.records[4:]} < set(paths)  # nested: same seed, fewer outliers
    # more normal images than CIFAR-100 has: DataError
    big = dataclasses.replace(train, records=train.records * 5)
    with pytest.raises(DataError, match="50 outliers asked for .* only 40 images"):
        outlier_exposure(big, "cifar100", seed=0)


def test_outlier_protocol_rules(root, tmp_path):
    assert check_protocol({"outliers": "cifar100"}) == {"outliers": "cifar100"}
    assert check_protocol({"outliers": None}) == {}
    with pytest.raises(ValueError, match="outliers must be one of"):
        check_protocol({"outliers": "imagenet"})
    with pytest.raises(ValueError, match="outliers cannot be combined with contamination"):
        check_protocol({"outliers": "cifar100", "contamination": 0.1})
    with pytest.raises(ValueError, match="outliers cannot be combined with real_anomalies"):
        check_protocol({"outliers": "cifar100", "real_anomalies": 1})
    check_method_accepts({"outliers": "cifar100"}, SimpleNamespace(name="adtr", uses_training_labels=True))
    with pytest.raises(ValueError, match="'dummy' does not read training labels"):
        check_method_accepts({"outliers": "cifar100"}, SimpleNamespace(name="dummy"))
    # the protocol is part of the run's key (its own folder in the results store, beside the plain run)
    job = Job.make("adtr", "cifar10", "cat", seed=2, protocol={"outliers": "cifar100"})
    plain = Job.make("adtr", "cifar10", "cat", seed=2)
    assert job.key()["protocol"] == {"outliers": "cifar100"}
    store = ResultsStore(tmp_path)
    assert store.run_dir(job) != store.run_dir(plain) and store.run_dir(job).parent == store.run_dir(plain).parent
    assert store.run_dir(job).name.startswith("s2-")
    # no CIFAR-100 beside the training data: DataError naming what was looked for
    lone = tmp_path / "lone"
    write_cifar10(lone / "cifar10")
    train = get_dataset("cifar10", "cat", "train", root=lone, transform=RAW)
    with pytest.raises(DataError, match="cifar-100-python, cifar100, CIFAR100"):
        apply_protocol({"outliers": "cifar100"}, train, train, seed=0)


def test_missing_or_corrupt_files_and_unknown_class(tmp_path):
    folder = tmp_path / "cifar10"
    write_cifar10(folder)
    with pytest.raises(DataError, match="'kitten'") as e:
        get_dataset("cifar10", "kitten", "train", root=tmp_path)
    assert "available: airplane, automobile" in str(e.value)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=f"CIFAR file missing: {folder / 'data_batch_3'}"):
        get_dataset("cifar10", "cat", "train", root=tmp_path)
    assert len(get_dataset("cifar10", "cat", "test", root=tmp_path)) == 20
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00(truncated")
    with pytest.raises(DataError, match=f"cannot read CIFAR file {folder / 'test_batch'}"):
        get_dataset("cifar10", "cat", "test", root=tmp_path)
    dump(folder / "test_batch", {b"labels": [3, 5], b"data": np.zeros((2, 100), np.uint8)})
    with pytest.raises(DataError, match="test_batch: expected uint8 data N x 3072"):
        get_dataset("cifar10", "cat", "test", root=tmp_path)
    (folder / "batches.meta").unlink()
    with pytest.raises(DataError, match="batches.meta"):
        list_categories("cifar10", tmp_path)
    # a class without images (only cats and dogs here): DataError naming it
    write_cifar10(tmp_path / "two" / "cifar10", labels=[3, 5] * 3)
    with pytest.raises(DataError, match="no train images of class 'bird'"):
        get_dataset("cifar10", "bird", "train", root=tmp_path / "two")
    assert len(get_dataset("cifar10", "cat", "train", root=tmp_path / "two")) == 15


def test_data_info_shows_cifar(root, capsys):
    from adlib.cli import main
    from adlib.data.info import describe_root

    found = describe_root(root.path)
    assert set(found) == {"cifar10", "cifar100"}
    t = found["cifar10"].set_index("category")
    assert list(t.index) == CLASSES and set(t["train_good"]) == {10} and set(t["test_good"]) == {2}
    assert t.loc["cat", "test_anomalous"] == 18 and t.loc["cat", "defect_types"].startswith(
        "airplane (2), automobile (2), bird (2), deer (2)"
    )
    assert found["cifar100"].iloc[0]["test_anomalous"] == 8
    assert main(["data", "info", str(root.path)]) == 0
    out = capsys.readouterr().out
    assert "== cifar10" in out and "== cifar100" in out and "airplane" in out
