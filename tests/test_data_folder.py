"""The ``folder`` dataset (your own images) and anomalous images without masks: the layout with and
without ``split.csv``, the deterministic split, bad CSV rows, the evaluation over the known masks,
and ``adlib train`` / ``adlib test`` on a tiny folder dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adlib import metrics
from adlib.cli import main
from adlib.data import DataError, ImageTransform, dataset_dir, get_dataset, list_categories
from adlib.data import folder as folder_layout
from adlib.data.info import category_table, describe_root
from adlib.models import Prediction, evaluate
from adlib.models.base import predict_dataset

RAW = ImageTransform(resize=None, crop=None, normalize=False)
S = 32


def write_image(path: Path, seed: int, square: bool = False) -> Path:
    """A noisy grey-ish image of S x S; ``square``: with a bright square at rows/cols 8..16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(seed).integers(60, 100, (S, S, 3), dtype=np.uint8)
    if square:
        a[8:16, 8:16] = 250
    Image.fromarray(a).save(path)
    return path


def write_mask(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.zeros((S, S), dtype=np.uint8)
    a[8:16, 8:16] = 255
    Image.fromarray(a).save(path)
    return path


def make_folder(cat: Path, n_normal: int = 12) -> Path:
    """``n_normal`` normal images; 2 anomalous images directly in abnormal/ (a.png with a mask
    named a_mask.png, b.png without) and 2 in abnormal/scratch/ (c.jpg with a mask named c.png,
    d.png without)."""
    for i in range(n_normal):
        write_image(cat / "normal" / f"n{i:02d}.png", seed=i)
    write_image(cat / "abnormal" / "a.png", 100, square=True)
    write_image(cat / "abnormal" / "b.png", 101, square=True)
    write_image(cat / "abnormal" / "scratch" / "c.jpg", 102, square=True)
    write_image(cat / "abnormal" / "scratch" / "d.png", 103, square=True)
    write_mask(cat / "masks" / "a_mask.png")
    write_mask(cat / "masks" / "scratch" / "c.png")
    return cat


# ------------------------------------------------------------------------------------- the layout


def test_folder_layout_without_csv_splits_every_fifth_normal_image_and_finds_some_masks(tmp_path, caplog):
    cat = make_folder(tmp_path / "folder" / "mine")
    assert dataset_dir("folder", tmp_path) == tmp_path / "folder"
    assert list_categories("folder", tmp_path) == ["mine"]
    train = get_dataset("folder", "mine", "train", root=tmp_path, transform=RAW)
    with caplog.at_level(logging.INFO, logger="adlib.data.folder"):
        test = get_dataset("folder", "mine", "test", root=tmp_path, transform=RAW)
    assert "2 of 4 anomalous image(s) have no mask" in caplog.text
    # 12 normal images sorted by name: positions 4 and 9 (every 5th) are test images, 20 % rounded down
    assert [r.image_path.name for r in train.records] == [f"n{i:02d}.png" for i in range(12) if i not in (4, 9)]
    assert set(train.labels) == {0} and train.mask_known.all()
    assert [(r.image_path.name, r.label, r.defect_type) for r in test.records] == [
        ("n04.png", 0, "good"),
        ("n09.png", 0, "good"),
        ("a.png", 1, "abnormal"),
        ("b.png", 1, "abnormal"),
        ("c.jpg", 1, "scratch"),
        ("d.png", 1, "scratch"),
    ]
    assert [r.mask_path for r in test.records] == [
        None,
        None,
        cat / "masks" / "a_mask.png",
        None,
        cat / "masks" / "scratch" / "c.png",
        None,
    ]
    assert test.mask_known.tolist() == [True, True, True, False, True, False]
    assert test[2].mask.sum() == 64 and test[3].mask.sum() == 0  # unknown: an all-zero mask, flagged
    assert folder_layout.TEST_FRACTION == 0.2 and folder_layout.is_test_position(4)


def test_a_mask_matching_no_image_is_named_in_one_warning(tmp_path, caplog):
    cat = make_folder(tmp_path / "folder" / "mine")
    write_mask(cat / "masks" / "scratch" / "dd_mask.png")  # a typo: the image is d.png
    write_mask(cat / "masks" / "zz.png")
    with caplog.at_level(logging.WARNING, logger="adlib.data.folder"):
        test = get_dataset("folder", "mine", "test", root=tmp_path)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "2 mask file(s) match no image of abnormal/" in warning and "zz.png" in warning
    assert test.mask_known.tolist() == [True, True, True, False, True, False]


def test_the_root_may_be_the_folder_itself(tmp_path):
    make_folder(tmp_path / "my_images" / "mine")
    ds = get_dataset("folder", "mine", "test", root=tmp_path / "my_images")
    assert len(ds) == 6 and ds.name == "folder"
    with pytest.raises(DataError, match="unknown category 'other'"):
        get_dataset("folder", "other", "test", root=tmp_path / "my_images")
    with pytest.raises(DataError, match="unknown split 'val'"):
        get_dataset("folder", "mine", "val", root=tmp_path / "my_images")


def test_fewer_normal_images_than_the_test_step_warn_that_none_is_tested(tmp_path, caplog):
    make_folder(tmp_path / "folder" / "mine", n_normal=3)
    with caplog.at_level(logging.WARNING, logger="adlib.data.folder"):
        test = get_dataset("folder", "mine", "test", root=tmp_path)
    assert set(test.labels) == {1} and "3 normal image(s), fewer than 5" in caplog.text
    assert len(get_dataset("folder", "mine", "train", root=tmp_path)) == 3


def test_data_info_lists_the_folder_dataset_and_its_images_without_mask(tmp_path):
    make_folder(tmp_path / "folder" / "mine")
    found = describe_root(tmp_path)
    assert list(found) == ["folder"]
    row = category_table("folder", tmp_path).iloc[0].to_dict()
    assert row["train_good"] == 10 and row["test_good"] == 2 and row["test_anomalous"] == 4
    assert row["defect_types"] == "abnormal (2, 1 without mask), scratch (2, 1 without mask)"


# ---------------------------------------------------------------------------------- the split CSV

CSV_HEADER = "image,label,split,mask,defect\n"


def make_csv_folder(cat: Path, extra: str = "") -> Path:
    for i in range(4):
        write_image(cat / "imgs" / f"n{i}.png", seed=i)
    write_image(cat / "imgs" / "bad1.png", 10, square=True)
    write_image(cat / "imgs" / "bad2.png", 11, square=True)
    write_image(cat / "imgs" / "extra.png", 12)  # not listed
    write_mask(cat / "gt" / "bad1.png")
    text = (
        CSV_HEADER
        + "imgs/n0.png,normal,train,,\n"
        + "imgs/n1.png,0,train,,\n"
        + "imgs/n2.png,normal,train,,\n"
        + "imgs/n3.png,normal,test,,\n"
        + "imgs/bad1.png,anomaly,test,gt/bad1.png,dent\n"
        + "imgs/bad2.png,1,test,,\n"
        + extra
    )
    (cat / "split.csv").write_text(text, encoding="utf-8")
    return cat


def test_split_csv_is_the_split(tmp_path):
    cat = make_csv_folder(tmp_path / "folder" / "mine")
    write_image(cat / "normal" / "ignored.png", 0)  # the CSV is the split: folders are not read
    train = get_dataset("folder", "mine", "train", root=tmp_path, transform=RAW)
    test = get_dataset("folder", "mine", "test", root=tmp_path, transform=RAW)
    assert [r.image_path.name for r in train.records] == ["n0.png", "n1.png", "n2.png"]
    assert [(r.image_path.name, r.label, r.defect_type, r.mask_known) for r in test.records] == [
        ("n3.png", 0, "good", True),
        ("bad1.png", 1, "dent", True),
        ("bad2.png", 1, "abnormal", False),
    ]
    assert test.records[1].mask_path == cat / "gt" / "bad1.png" and test[1].mask.sum() == 64


@pytest.mark.parametrize(
    "row,message",
    [
        ("imgs/n3.png,normal,test,,\n", "image 'imgs/n3.png' is listed twice (also on line 5)"),
        ("imgs/extra.png,broken,test,,\n", "unknown label 'broken'"),
        ("imgs/extra.png,normal,val,,\n", "unknown split 'val'"),
        ("../other/x.png,normal,test,,\n", "points outside the dataset folder"),
        ("imgs/bad2.png,anomaly,train,,\n", "anomalous image 'imgs/bad2.png' in the train split"),
        ("imgs/missing.png,normal,test,,\n", "image not found"),
        ("imgs/bad2.png,anomaly,test,../../x.png,\n", "points outside the dataset folder"),
        ("imgs/bad2.png,anomaly,test,gt/nope.png,\n", "mask not found"),
    ],
)
def test_bad_csv_rows_give_one_line_naming_the_file_and_line(tmp_path, row, message):
    # each bad row is appended as line 8 (header, six good rows), or replaces bad2.png's row (line 7)
    cat = make_csv_folder(tmp_path / "folder" / "mine")
    text = (cat / "split.csv").read_text()
    if "twice" not in message and "imgs/bad2.png" in row:  # the row's own image: drop its good listing
        text = text.replace("imgs/bad2.png,1,test,,\n", "")
        row_line = 7
    else:
        row_line = 8
    (cat / "split.csv").write_text(text + row, encoding="utf-8")
    with pytest.raises(DataError) as e:
        get_dataset("folder", "mine", "train", root=tmp_path)  # any split: every row is checked
    msg = str(e.value)
    assert message in msg and f"{cat / 'split.csv'} line {row_line}" in msg and "\n" not in msg


def test_normal_row_with_a_mask_and_a_missing_column_are_refused(tmp_path):
    cat = make_csv_folder(tmp_path / "folder" / "mine")
    csv_path = cat / "split.csv"
    csv_path.write_text(
        csv_path.read_text().replace("imgs/n3.png,normal,test,,", "imgs/n3.png,normal,test,gt/bad1.png,")
    )
    with pytest.raises(DataError, match=r"line 5: normal image 'imgs/n3.png' has a mask"):
        get_dataset("folder", "mine", "test", root=tmp_path)
    csv_path.write_text("image,split\nimgs/n0.png,train\n")
    with pytest.raises(DataError, match=r"split.csv lacks column\(s\) label"):
        get_dataset("folder", "mine", "test", root=tmp_path)


def test_a_symbolic_link_out_of_the_category_is_refused(tmp_path):
    cat = make_csv_folder(tmp_path / "folder" / "mine")
    outside = write_image(tmp_path / "secret" / "x.png", 5)
    (cat / "imgs" / "link.png").symlink_to(outside)
    (cat / "split.csv").write_text((cat / "split.csv").read_text() + "imgs/link.png,normal,test,,\n")
    with pytest.raises(DataError, match="line 8: path 'imgs/link.png' points outside"):
        get_dataset("folder", "mine", "test", root=tmp_path)


# ------------------------------------------------------------------------ evaluation, unknown masks


def _prediction(mask_known=(True, True, False, True)) -> Prediction:
    """4 images of 2 x 2: normal, anomalous with a known mask (top row), anomalous without a mask
    (high map values: counted as normal pixels they would lower the pixel metrics), normal."""
    maps = np.array(
        [
            [[0.1, 0.2], [0.3, 0.4]],
            [[0.9, 0.35], [0.1, 0.5]],
            [[0.95, 0.92], [0.8, 0.7]],
            [[0.0, 0.6], [0.2, 0.1]],
        ],
        dtype=np.float32,
    )
    masks = np.zeros((4, 2, 2), np.uint8)
    masks[1, 0] = 1
    return Prediction(
        image_scores=np.array([0.6, 0.5, 0.9, 0.2]),
        maps=maps,
        labels=np.array([0, 1, 1, 0]),
        masks=masks,
        paths=["n0.png", "a.png", "b.png", "n1.png"],
        mask_known=np.array(mask_known),
    )


def test_pixel_metrics_use_only_the_images_with_a_known_mask_and_image_metrics_use_all(caplog):
    pred = _prediction()
    with caplog.at_level(logging.INFO, logger="adlib.models.base"):
        out = evaluate(pred)
    assert "1 anomalous image(s) without a mask left out (e.g. b.png)" in caplog.text
    # image metrics over all 4: positives 0.5, 0.9 vs negatives 0.6, 0.2 -> 3 of 4 pairs
    assert out["image_auroc"] == pytest.approx(0.75)
    assert out["image_ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # ranks: 0.9 (P), 0.6, 0.5 (P)
    # pixel metrics over images 0, 1, 3: positives 0.9, 0.35 vs 10 negatives; 0.9 beats all 10,
    # 0.35 beats 7 (0.1, 0.2, 0.3, 0.1, 0.0, 0.2, 0.1) -> 17 / 20; AP: 0.9 (P) ... 0.35 (P, 5th) -> 0.7
    assert out["pixel_auroc"] == pytest.approx(0.85)
    assert out["pixel_ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 5)
    keep = [0, 1, 3]
    assert out["au_pro"] == pytest.approx(metrics.au_pro(pred.masks[keep], pred.maps[keep]))
    assert out["pixel_images"] == 3
    # counted as a known empty mask instead, image b's high values lower the pixel AUROC to 19/28
    everything = evaluate(_prediction(mask_known=(True,) * 4))
    assert everything["pixel_auroc"] == pytest.approx(19 / 28) and "pixel_images" not in everything
    assert list(everything) == ["image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "au_pro"]


def test_no_known_mask_of_an_anomalous_image_leaves_the_pixel_metrics_out(caplog):
    with caplog.at_level(logging.WARNING, logger="adlib.models.base"):
        out = evaluate(_prediction(mask_known=(True, False, False, True)))
    assert list(out) == ["image_auroc", "image_ap"] and out["image_auroc"] == pytest.approx(0.75)
    assert "none of the 2 anomalous image(s) has a mask (e.g. a.png)" in caplog.text


def test_prediction_mask_known_defaults_to_all_and_must_align():
    p = _prediction()
    default = Prediction(p.image_scores, p.maps, p.labels, p.masks)
    assert default.mask_known.dtype == bool and default.mask_known.tolist() == [True] * 4
    with pytest.raises(ValueError, match="mask_known 3"):
        Prediction(p.image_scores, p.maps, p.labels, p.masks, mask_known=np.ones(3, bool))


def test_predict_dataset_carries_which_masks_are_known(tmp_path):
    make_folder(tmp_path / "folder" / "mine")
    test = get_dataset("folder", "mine", "test", root=tmp_path, transform=RAW)
    pred = predict_dataset(test, lambda b: (b.label.float(), b.image[:, 0].numpy()), batch_size=4, progress=False)
    assert pred.mask_known.tolist() == [True, True, True, False, True, False]
    assert pred.masks[3].sum() == 0 and pred.masks[2].sum() == 64


# ------------------------------------------------------------------------------- command line


def test_train_and_test_on_a_folder_dataset_from_the_command_line(tmp_path):
    data = tmp_path / "own"
    cat = data / "mine"
    for i in range(12):
        write_image(cat / "normal" / f"{i:02d}.png", seed=i)
    for i in range(4):
        write_image(cat / "abnormal" / f"x{i}.png", seed=50 + i, square=True)
    write_mask(cat / "masks" / "x0_mask.png")
    write_mask(cat / "masks" / "x2_mask.png")
    out = tmp_path / "runs"
    args = [
        "patchcore",
        "--dataset",
        "folder",
        "--category",
        "mine",
        "--data-root",
        str(data),
        "--out",
        str(out),
        "--set",
        "resize=32",
        "--set",
        "crop=32",
    ]
    assert main(["train", *args]) == 0
    assert main(["test", *args]) == 0
    (run,) = sorted((out / "patchcore" / "folder" / "mine").glob("s*-*"))
    rec = json.loads((run / "record.json").read_text())
    assert rec["dataset"] == "folder" and rec["test_images"] == 6 and rec["train_images"] == 10
    for k in ("image_auroc", "image_ap", "pixel_auroc", "pixel_ap", "au_pro"):
        assert 0.0 <= rec["metrics"][k] <= 1.0
    assert rec["metrics"]["pixel_images"] == 4  # 2 normal test images + the 2 anomalous ones with a mask
    with np.load(run / "prediction.npz") as z:
        assert z["mask_known"].tolist() == [True, True, True, False, True, False]
