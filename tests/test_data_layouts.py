"""Dataset layouts read from tiny files written in each real layout (MVTec family, VisA, DAGM, DTD).

Every bad input must give a DataError whose message names the offending path or value.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adlib.data import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    ImageTransform,
    Sample,
    dataset_dir,
    get_dataset,
    list_categories,
    validate,
)
from adlib.data import dagm as dagm_layout
from adlib.data import mvtec as mvtec_layout
from adlib.data import visa as visa_layout
from adlib.data.base import binary_mask, list_images
from adlib.data.textures import STAND_IN_DESCRIPTION, texture_source

H, W = 16, 16
RAW = ImageTransform(resize=None, crop=None, normalize=False)


# --------------------------------------------------------------------------------------- writers


def write_image(path: Path, size: tuple[int, int] = (H, W), seed: int = 0, gray: bool = False) -> Path:
    """A small noisy image; the format follows the suffix (.png/.PNG/.jpg/.JPG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = size if gray else (*size, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def write_mask(path: Path, size: tuple[int, int] = (H, W), box=(4, 4, 8, 8), value: int = 255, mode: str = "L") -> Path:
    """A mask with ``value`` inside ``box`` (top, left, bottom, right), 0 elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros(size, dtype=np.uint8)
    t, l, b, r = box
    a[t:b, l:r] = value
    if mode == "P":  # palette mask (indices = values) whose palette maps every index to black
        img = Image.frombytes("P", (size[1], size[0]), a.tobytes())
        img.putpalette([0, 0, 0] * 256)
    else:
        img = Image.fromarray(a)
    img.save(path)
    return path


def make_mvtec(
    root: Path,
    category: str = "bottle",
    n_train: int = 3,
    n_good: int = 2,
    defects: dict[str, int] | None = None,
    mask_suffix: str = "_mask",
) -> Path:
    defects = {"crack": 2, "scratch": 1} if defects is None else defects
    cat = root / category
    for i in range(n_train):
        write_image(cat / "train" / "good" / f"{i:03d}.png", seed=i)
    for i in range(n_good):
        write_image(cat / "test" / "good" / f"{i:03d}.png", seed=10 + i)
    for d, n in defects.items():
        for i in range(n):
            write_image(cat / "test" / d / f"{i:03d}.png", seed=20 + i)
            write_mask(cat / "ground_truth" / d / f"{i:03d}{mask_suffix}.png")
    return root


VISA_OBJECTS = ("candle", "pcb1")


def make_visa(root: Path, objects=VISA_OBJECTS, n_train=3, n_test_normal=2, n_anomaly=2, with_csv=True) -> Path:
    rows = ["object,split,label,image,mask"]
    for obj in objects:
        base = root / obj / "Data"
        for i in range(n_train + n_test_normal):
            rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            write_image(root / rel, seed=i)
            rows.append(f"{obj},{'train' if i < n_train else 'test'},normal,{rel},")
        for i in range(n_anomaly):
            rel = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG"
            mrel = f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
            write_image(root / rel, seed=50 + i)
            # VisA masks hold defect-class ids (1, 2, ...), not 255.
            write_mask(root / mrel, value=i + 1)
            rows.append(f"{obj},test,anomaly,{rel},{mrel}")
        (base / "Images").mkdir(parents=True, exist_ok=True)
        (root / obj / "image_anno.csv").write_text("image,label,mask\n", encoding="utf-8")
    if with_csv:
        (root / "split_csv").mkdir(parents=True, exist_ok=True)
        (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def make_dagm_split(split_dir: Path, normal: list[str], defective: list[str], header: bool = True) -> None:
    """Images + Label/Labels.txt (+ <stem>_label.PNG masks) in the DAGM 2007 layout."""
    lines = ["1"] if header else []
    for k, name in enumerate(sorted(normal + defective)):
        write_image(split_dir / name, seed=k, gray=True)
        if name in defective:
            label = f"{Path(name).stem}_label.PNG"
            write_mask(split_dir / "Label" / label)
            lines.append(f"{Path(name).stem}\t1\t{name}\t0\t{label}")
        else:
            lines.append(f"{Path(name).stem}\t0\t{name}\t0\t0")
    (split_dir / "Label").mkdir(parents=True, exist_ok=True)
    (split_dir / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_dagm(root: Path, classes=("Class1", "Class2", "Class10"), header: bool = True) -> Path:
    for c in classes:
        make_dagm_split(root / c / "Train", ["0001.PNG", "0002.PNG", "0003.PNG"], ["0004.PNG"], header)
        make_dagm_split(root / c / "Test", ["0001.PNG", "0002.PNG"], ["0003.PNG", "0004.PNG"], header)
    return root


def make_textures(folder: Path, classes=("banded", "woven"), n: int = 2, suffix: str = ".jpg") -> Path:
    for ci, c in enumerate(classes):
        for i in range(n):
            write_image(folder / "images" / c / f"{c}_{i:04d}{suffix}", size=(12, 20), seed=ci * 10 + i)
    return folder


def check_sample(s: Sample, size=(H, W)) -> None:
    assert isinstance(s, Sample)
    assert s.image.shape == (3, *size) and s.image.dtype == torch.float32
    assert s.mask.shape == (1, *size) and s.mask.dtype == torch.float32
    assert set(torch.unique(s.mask).tolist()) <= {0.0, 1.0}
    if s.label == 0:
        assert s.defect_type == "good" and s.mask.sum() == 0
    else:
        assert s.label == 1 and s.mask.sum() > 0


# ------------------------------------------------------------------------------ MVTec family


MVTEC_NAMES = ["mvtec", "mpdd", "wfdd", "mad-man", "mad-sys"]


@pytest.mark.parametrize("name", MVTEC_NAMES)
def test_mvtec_family_index_and_samples(tmp_path, name):
    # MPDD-style masks are named <stem>.png; the others <stem>_mask.png.
    suffix = "" if name == "mpdd" else "_mask"
    make_mvtec(tmp_path / DATASETS[name].dirnames[0], "bottle", mask_suffix=suffix)
    make_mvtec(tmp_path / DATASETS[name].dirnames[0], "cable", n_train=1, n_good=1, defects={"bent": 1})

    assert list_categories(name, tmp_path) == ["bottle", "cable"]
    train = get_dataset(name, "bottle", "train", root=tmp_path, transform=RAW)
    assert len(train) == 3 and train.labels.tolist() == [0, 0, 0]
    assert train.summary() == {"good": 3} and train.split == "train" and train.name == name

    test = get_dataset(name, "bottle", "test", root=tmp_path, transform=RAW)
    assert len(test) == 5
    assert test.summary() == {"good": 2, "crack": 2, "scratch": 1}
    assert sorted(test.labels.tolist()) == [0, 0, 1, 1, 1]
    for rec in test.records:
        if rec.label == 0:
            assert rec.mask_path is None
        else:
            assert rec.mask_path.parent.name == rec.defect_type
            assert rec.mask_path.name == f"{rec.image_path.stem}{suffix}.png"
            assert rec.mask_path.parent.parent.name == "ground_truth"
    for i in range(len(test)):
        check_sample(test[i])
    validate(test)


def test_transform_resize_crop_keeps_masks_binary(tmp_path):
    root = make_mvtec(tmp_path / "mvtec", defects={"crack": 1})
    # A one-pixel-wide defect must survive a nearest-neighbour up/down-scaling as 0/1 values.
    write_mask(root / "bottle" / "ground_truth" / "crack" / "000_mask.png", box=(2, 7, 14, 8))
    t = ImageTransform(resize=(24, 20), crop=(18, 14), normalize=False)
    ds = get_dataset("mvtec", "bottle", "test", root=tmp_path, transform=t)
    for i in range(len(ds)):
        s = ds[i]
        check_sample(s, size=(18, 14))
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
    defect = next(ds[i] for i in range(len(ds)) if ds[i].label == 1)
    assert 0 < defect.mask.sum() < defect.mask.numel()

    # Downscaling too: still exactly {0, 1}, and the image is the centre crop of the resized image.
    small = ImageTransform(resize=12, crop=8, normalize=False)
    s = get_dataset("mvtec", "bottle", "test", root=tmp_path, transform=small)[0]
    check_sample(s, size=(8, 8))
    full = ImageTransform(resize=12, crop=None, normalize=False).image(Image.open(s.path))
    assert torch.allclose(s.image, full[:, 2:10, 2:10])


def test_imagenet_normalisation_on_off(tmp_path):
    make_mvtec(tmp_path / "mvtec")
    off = get_dataset("mvtec", "bottle", "train", root=tmp_path, transform=ImageTransform(16, None, False))[0]
    on = get_dataset("mvtec", "bottle", "train", root=tmp_path, transform=ImageTransform(16, None, True))[0]
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert 0.0 <= off.image.min() and off.image.max() <= 1.0
    assert torch.allclose(on.image, (off.image - mean) / std, atol=1e-6)
    assert on.image.min() < 0  # normalised values leave [0, 1]
    assert torch.equal(on.mask, off.mask)


def test_root_argument_env_and_dataset_folder_itself(tmp_path, monkeypatch):
    make_mvtec(tmp_path / "mvtec_anomaly_detection")
    monkeypatch.delenv("ADLIB_DATA", raising=False)
    by_arg = get_dataset("mvtec", "bottle", "test", root=tmp_path)
    monkeypatch.setenv("ADLIB_DATA", str(tmp_path))
    by_env = get_dataset("mvtec", "bottle", "test")
    assert list_categories("mvtec") == ["bottle"]
    monkeypatch.delenv("ADLIB_DATA")
    # The root may be the dataset folder itself, under one of its names or any name.
    itself = get_dataset("mvtec", "bottle", "test", root=tmp_path / "mvtec_anomaly_detection")
    renamed = tmp_path / "elsewhere" / "my_copy"
    renamed.parent.mkdir()
    (tmp_path / "mvtec_anomaly_detection").rename(renamed)
    by_any_name = get_dataset("mvtec", "bottle", "test", root=renamed)
    paths = [r.image_path.relative_to(r.image_path.parents[3]) for r in by_arg.records]
    for ds in (by_env, itself, by_any_name):
        assert [r.image_path.relative_to(r.image_path.parents[3]) for r in ds.records] == paths
    assert dataset_dir("mvtec", renamed) == renamed


def test_folder_of_another_dataset_is_not_taken(tmp_path):
    make_mvtec(tmp_path / "mvtec")
    with pytest.raises(DataError, match="'mpdd' not found") as e:
        get_dataset("mpdd", "bottle", root=tmp_path / "mvtec")
    assert "mpdd" in str(e.value) and str(tmp_path / "mvtec") in str(e.value)


def test_dataloader_default_collate(tmp_path):
    make_mvtec(tmp_path / "mvtec")
    ds = get_dataset("mvtec", "bottle", "test", root=tmp_path, transform=ImageTransform(16, None, True))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)))
    assert isinstance(batch, Sample)
    assert batch.image.shape == (4, 3, H, W) and batch.mask.shape == (4, 1, H, W)
    assert batch.label.dtype == torch.int64 and batch.label.shape == (4,)
    assert list(batch.defect_type) == ["crack", "crack", "good", "good"]  # strings stay a sequence
    assert batch.label.tolist() == [1, 1, 0, 0] and len(batch.path) == 4
    assert batch.mask[2:].sum() == 0 and (batch.mask[:2].flatten(1).sum(1) > 0).all()


# ------------------------------------------------------------------------------------ VisA


def test_visa_index_and_samples(tmp_path):
    make_visa(tmp_path / "VisA_20220922")
    assert list_categories("visa", tmp_path) == list(VISA_OBJECTS)
    root = tmp_path / "VisA_20220922"
    assert visa_layout.looks_like(root) and not visa_layout.looks_like(tmp_path)

    train = get_dataset("visa", "candle", "train", root=tmp_path, transform=RAW)
    assert len(train) == 3 and train.labels.tolist() == [0, 0, 0]
    assert all(r.image_path.parent == root / "candle" / "Data" / "Images" / "Normal" for r in train.records)

    test = get_dataset("visa", "pcb1", "test", root=tmp_path, transform=RAW)
    assert len(test) == 4 and test.summary() == {"good": 2, "anomaly": 2}
    for rec in test.records:
        assert rec.category == "pcb1" and rec.split == "test"
        if rec.label == 1:
            assert rec.defect_type == "anomaly"
            assert rec.mask_path == root / "pcb1" / "Data" / "Masks" / "Anomaly" / f"{rec.image_path.stem}.png"
        else:
            assert rec.mask_path is None and rec.defect_type == "good"
    for i in range(len(test)):
        check_sample(test[i])  # masks store ids 1 and 2: read as 1
    # The root given as the VisA folder itself.
    assert len(get_dataset("visa", "pcb1", "test", root=root)) == 4


def test_visa_skips_anomalous_training_rows(tmp_path, caplog):
    root = make_visa(tmp_path / "visa", objects=("candle",))
    csv = root / "split_csv" / "1cls.csv"
    csv.write_text(
        csv.read_text() + "candle,train,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\n"
    )
    with caplog.at_level(logging.WARNING, logger="adlib.data.visa"):
        train = get_dataset("visa", "candle", "train", root=tmp_path)
    assert len(train) == 3 and train.labels.sum() == 0
    assert "skipped 1 anomalous" in caplog.text


def test_visa_split_csv_missing(tmp_path):
    make_visa(tmp_path / "visa", with_csv=False)
    assert list_categories("visa", tmp_path) == list(VISA_OBJECTS)  # found from the object folders
    with pytest.raises(DataError, match="split CSV missing") as e:
        get_dataset("visa", "candle", "test", root=tmp_path)
    assert str(tmp_path / "visa" / "split_csv" / "1cls.csv") in str(e.value)


def test_visa_bad_csv_rows(tmp_path):
    root = make_visa(tmp_path / "visa", objects=("candle",))
    csv = root / "split_csv" / "1cls.csv"
    good_text = csv.read_text()

    csv.write_text("object,split,image\ncandle,train,x.JPG\n")
    with pytest.raises(DataError, match="lacks column") as e:
        get_dataset("visa", "candle", "test", root=tmp_path)
    assert "label" in str(e.value) and str(csv) in str(e.value)

    csv.write_text(good_text + "candle,test,normal,candle/Data/Images/Normal/9999.JPG,\n")
    with pytest.raises(DataError, match="9999.JPG") as e:
        get_dataset("visa", "candle", "test", root=tmp_path)
    assert "line" in str(e.value)

    csv.write_text(good_text + "candle,test,broken,candle/Data/Images/Normal/0000.JPG,\n")
    with pytest.raises(DataError, match="'broken'"):
        get_dataset("visa", "candle", "test", root=tmp_path)

    (root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png").unlink()
    csv.write_text(good_text)
    with pytest.raises(DataError, match="mask missing for defect image") as e:
        get_dataset("visa", "candle", "test", root=tmp_path)
    assert "001.png" in str(e.value) and "001.JPG" in str(e.value)

    csv.write_text(good_text.replace("candle/Data/Masks/Anomaly/001.png", ""))
    with pytest.raises(DataError, match="mask missing for defect image"):
        get_dataset("visa", "candle", "test", root=tmp_path)


def test_visa_unknown_and_empty_category(tmp_path):
    root = make_visa(tmp_path / "visa", objects=("candle",))
    (root / "fryum" / "Data" / "Images").mkdir(parents=True)  # on disk, but no CSV rows
    with pytest.raises(DataError, match="'capsules'") as e:
        get_dataset("visa", "capsules", "test", root=tmp_path)
    assert "available: candle, fryum" in str(e.value)
    with pytest.raises(DataError, match="empty"):
        get_dataset("visa", "fryum", "test", root=tmp_path)


# ------------------------------------------------------------------------------------ DAGM


@pytest.mark.parametrize("header", [True, False])
def test_dagm_index_and_samples(tmp_path, header):
    make_dagm(tmp_path / "DAGM2007", header=header)
    assert list_categories("dagm", tmp_path) == ["Class1", "Class2", "Class10"]
    train = get_dataset("dagm", "Class2", "train", root=tmp_path, transform=RAW)
    # Only the normal training images: the defective 0004.PNG is never used for training.
    assert [r.image_path.name for r in train.records] == ["0001.PNG", "0002.PNG", "0003.PNG"]
    assert train.labels.tolist() == [0, 0, 0]

    test = get_dataset("dagm", "Class2", "test", root=tmp_path, transform=RAW)
    assert [(r.image_path.name, r.label, r.defect_type) for r in test.records] == [
        ("0001.PNG", 0, "good"),
        ("0002.PNG", 0, "good"),
        ("0003.PNG", 1, "defect"),
        ("0004.PNG", 1, "defect"),
    ]
    label_dir = tmp_path / "DAGM2007" / "Class2" / "Test" / "Label"
    assert [r.mask_path for r in test.records] == [
        None,
        None,
        label_dir / "0003_label.PNG",
        label_dir / "0004_label.PNG",
    ]
    for i in range(len(test)):
        check_sample(test[i])  # grayscale PNGs come out as 3 x H x W


def test_dagm_nested_class_folder_and_unlisted_images(tmp_path, caplog):
    root = tmp_path / "dagm"
    make_dagm_split(root / "Class3" / "Class3" / "Test", ["0001.PNG"], ["0002.PNG"])
    write_image(root / "Class3" / "Class3" / "Test" / "0099.PNG")  # on disk, not in Labels.txt
    assert list_categories("dagm", tmp_path) == ["Class3"]
    with caplog.at_level(logging.WARNING, logger="adlib.data.dagm"):
        ds = get_dataset("dagm", "Class3", "test", root=tmp_path)
    assert len(ds) == 2 and "0099.PNG" in caplog.text


def test_dagm_labels_txt_errors(tmp_path):
    root = make_dagm(tmp_path / "dagm", classes=("Class1",))
    labels = root / "Class1" / "Test" / "Label" / "Labels.txt"
    text = labels.read_text()

    labels.write_text(text.replace("0002.PNG", "0042.PNG"))
    with pytest.raises(DataError, match="0042.PNG") as e:
        get_dataset("dagm", "Class1", "test", root=tmp_path)
    assert str(labels) in str(e.value) and "does not exist" in str(e.value)

    labels.write_text(text.replace("0003_label.PNG", "0033_label.PNG"))
    with pytest.raises(DataError, match="mask missing for defect image") as e:
        get_dataset("dagm", "Class1", "test", root=tmp_path)
    assert "0033_label.PNG" in str(e.value)

    labels.write_text(text + "0005\tyes\t0005.PNG\n")
    with pytest.raises(DataError, match="cannot parse") as e:
        get_dataset("dagm", "Class1", "test", root=tmp_path)
    assert str(labels) in str(e.value) and "line" in str(e.value)

    labels.unlink()
    with pytest.raises(DataError, match="Labels.txt") as e:
        get_dataset("dagm", "Class1", "test", root=tmp_path)
    assert str(labels) in str(e.value)


def test_dagm_missing_split_and_unknown_class(tmp_path):
    root = tmp_path / "dagm"
    make_dagm_split(root / "Class1" / "Train", ["0001.PNG"], [])
    with pytest.raises(DataError, match="split folder missing") as e:
        get_dataset("dagm", "Class1", "test", root=tmp_path)
    assert str(root / "Class1" / "Test") in str(e.value)
    with pytest.raises(DataError, match="available: Class1"):
        get_dataset("dagm", "Class7", "test", root=tmp_path)
    assert dagm_layout.looks_like(root) and not mvtec_layout.looks_like(tmp_path)


# ------------------------------------------------------------------------- bad inputs (shared)


def test_unknown_dataset_name_lists_known():
    with pytest.raises(DataError, match="'mvtek'") as e:
        get_dataset("mvtek", "bottle")
    for name in ("mvtec", "visa", "dagm", "mpdd"):
        assert name in str(e.value)
    with pytest.raises(DataError, match="known:"):
        list_categories("nope")


def test_dataset_absent_names_folders_looked_for(tmp_path):
    with pytest.raises(DataError) as e:
        get_dataset("visa", "candle", root=tmp_path)
    for d in DATASETS["visa"].dirnames:
        assert str(tmp_path / d) in str(e.value)


def test_unknown_category_lists_available(tmp_path):
    make_mvtec(tmp_path / "mvtec", "bottle")
    make_mvtec(tmp_path / "mvtec", "screw")
    with pytest.raises(DataError, match="'botle'") as e:
        get_dataset("mvtec", "botle", root=tmp_path)
    assert "available: bottle, screw" in str(e.value)


def test_unknown_split(tmp_path):
    make_mvtec(tmp_path / "mvtec")
    with pytest.raises(DataError, match="'val'"):
        get_dataset("mvtec", "bottle", "val", root=tmp_path)


def test_missing_split_folder(tmp_path):
    make_mvtec(tmp_path / "mvtec", n_good=0, defects={})
    with pytest.raises(DataError, match="split folder missing") as e:
        get_dataset("mvtec", "bottle", "test", root=tmp_path)
    assert str(tmp_path / "mvtec" / "bottle" / "test") in str(e.value)


def test_empty_category(tmp_path):
    (tmp_path / "mvtec" / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match="empty") as e:
        get_dataset("mvtec", "bottle", "train", root=tmp_path)
    assert "bottle" in str(e.value)


@pytest.mark.parametrize("kind", ["garbage", "truncated_png", "truncated_jpg", "empty_file"])
def test_corrupt_or_truncated_image(tmp_path, kind):
    make_mvtec(tmp_path / "mvtec")
    good = tmp_path / "mvtec" / "bottle" / "train" / "good"
    if kind == "garbage":
        bad = good / "001.png"
        bad.write_bytes(b"this is not an image at all" * 4)
    elif kind == "empty_file":
        bad = good / "001.png"
        bad.write_bytes(b"")
    else:
        suffix = ".png" if kind == "truncated_png" else ".jpg"
        bad = write_image(good / f"001{suffix}", size=(64, 64))
        if suffix == ".jpg":
            (good / "001.png").unlink()
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    ds = get_dataset("mvtec", "bottle", "train", root=tmp_path)  # indexing reads no pixels
    i = [r.image_path for r in ds.records].index(bad)
    ds[i - 1 if i else i + 1]  # the other samples still read
    with pytest.raises(DataError) as e:
        ds[i]
    assert str(bad) in str(e.value)
    with pytest.raises(DataError) as e:
        validate(ds)
    assert str(bad) in str(e.value)


def test_mask_missing_for_defect_image_is_kept_as_unknown_with_one_warning(tmp_path, caplog):
    root = make_mvtec(tmp_path / "mvtec")
    (root / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    (root / "bottle" / "ground_truth" / "scratch" / "000_mask.png").unlink()
    with caplog.at_level(logging.WARNING, logger="adlib.data.mvtec"):
        ds = get_dataset("mvtec", "bottle", "test", root=tmp_path, transform=RAW)
    (warning,) = [r for r in caplog.records if r.name == "adlib.data.mvtec"]  # one per category
    msg = warning.getMessage()
    assert "2 of 3 defect image(s) have no mask" in msg
    assert str(root / "bottle" / "test" / "crack" / "001.png") in msg
    assert str(root / "bottle" / "ground_truth" / "crack" / "001_mask.png") in msg
    known = {(r.defect_type, r.image_path.name): r.mask_known for r in ds.records if r.label == 1}
    assert known == {("crack", "000.png"): True, ("crack", "001.png"): False, ("scratch", "000.png"): False}
    i = [r.image_path for r in ds.records].index(root / "bottle" / "test" / "crack" / "001.png")
    assert ds.records[i].mask_path is None and ds[i].label == 1 and ds[i].mask.sum() == 0
    assert ds.mask_known.tolist() == [r.mask_known for r in ds.records]


def test_mask_of_other_size(tmp_path):
    root = make_mvtec(tmp_path / "mvtec")
    mask = write_mask(root / "bottle" / "ground_truth" / "scratch" / "000_mask.png", size=(H + 4, W))
    ds = get_dataset("mvtec", "bottle", "test", root=tmp_path)
    i = [r.mask_path for r in ds.records].index(mask)
    with pytest.raises(DataError, match=f"{H + 4}x{W}") as e:
        ds[i]
    assert str(mask) in str(e.value) and str(ds.records[i].image_path) in str(e.value)
    with pytest.raises(DataError, match="000_mask.png"):
        validate(ds)


def test_mask_encodings_all_read_as_binary(tmp_path):
    # 0/255, 0/1, VisA-style ids, a palette mask whose palette is all black, an RGB mask.
    for name, kwargs in {
        "l255": dict(value=255),
        "l1": dict(value=1),
        "ids": dict(value=7),
        "palette": dict(value=1, mode="P"),
    }.items():
        img = Image.open(write_mask(tmp_path / f"{name}.png", **kwargs))
        m = RAW.mask(img)
        assert m.shape == (1, H, W) and set(torch.unique(m).tolist()) == {0.0, 1.0}, name
        assert m.sum() == 16, name
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[0, 0, 2] = 3
    assert np.asarray(binary_mask(Image.fromarray(rgb))).sum() == 255


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        list_images(tmp_path / "nowhere")


# ------------------------------------------------------------------------------- textures


def test_texture_source_dtd(tmp_path, monkeypatch):
    make_textures(tmp_path / "dtd", classes=("banded", "woven", "zigzagged"))
    (tmp_path / "dtd" / "images" / "woven" / ".directory").write_text("x")  # stray file in the archive
    monkeypatch.setenv("ADLIB_DATA", str(tmp_path))
    src = texture_source()
    assert src.name == "dtd" and src.is_stand_in is False and "DTD" in src.description
    assert len(src) == 6 and src.classes == ("banded",) * 2 + ("woven",) * 2 + ("zigzagged",) * 2
    img = src.load(3, 8)
    assert img.mode == "RGB" and img.size == (8, 8)
    assert src.load(0, (6, 10)).size == (10, 6)
    with pytest.raises(IndexError):
        src.load(6, 8)
    assert list_categories("dtd") == ["banded", "woven", "zigzagged"]
    with pytest.raises(DataError, match="texture source"):
        get_dataset("dtd", "banded")
    # The root may also be the DTD folder itself, or hold an archive unpacked one level deeper.
    assert texture_source(tmp_path / "dtd").paths == src.paths
    nested = tmp_path / "other" / "DTD"
    make_textures(nested / "dtd")
    assert texture_source(tmp_path / "other").paths[0].parent.parent.parent.parent == nested


def test_texture_source_stand_in_warns(tmp_path, caplog):
    make_textures(tmp_path / "builtin-textures", classes=("noise", "stripes"), suffix=".png")
    with caplog.at_level(logging.WARNING, logger="adlib.data.textures"):
        src = texture_source(tmp_path)
    assert src.is_stand_in is True
    assert src.description == STAND_IN_DESCRIPTION == "built-in texture bank (DTD stand-in, not DTD)"
    assert set(src.classes) == {"noise", "stripes"} and len(src) == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "stand-in" in warnings[0].getMessage() and "not DTD" in warnings[0].getMessage()
    assert src.load(0, 4).size == (4, 4)
    # The bank folder given as the root is still the stand-in, never reported as DTD.
    assert texture_source(tmp_path / "builtin-textures").is_stand_in is True


def test_texture_source_stand_in_is_not_repeated_by_worker_processes(tmp_path, caplog, monkeypatch):
    """A results-store worker (a multiprocessing child) logs the stand-in at INFO: a notebook whose
    grid runs in workers shows the warning once (its own), not once per worker."""
    import multiprocessing

    make_textures(tmp_path / "builtin-textures", classes=("noise",), suffix=".png")
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    with caplog.at_level(logging.INFO, logger="adlib.data.textures"):
        assert texture_source(tmp_path).is_stand_in
    levels = [r.levelno for r in caplog.records if "stand-in" in r.getMessage()]
    assert levels == [logging.INFO]


def test_texture_source_absent(tmp_path):
    with pytest.raises(DataError) as e:
        texture_source(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "dtd") in msg and str(tmp_path / "DTD") in msg
    assert "adlib data synth --out" in msg and "builtin-textures" in msg


def test_texture_source_dtd_folder_without_images(tmp_path):
    (tmp_path / "dtd").mkdir()
    make_textures(tmp_path / "builtin-textures")  # present, but an empty DTD is not silently replaced
    with pytest.raises(DataError, match="images") as e:
        texture_source(tmp_path)
    assert str(tmp_path / "dtd") in str(e.value)
