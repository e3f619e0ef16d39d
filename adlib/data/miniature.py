"""Miniature copies of every dataset the paper profile reads, each in the layout it ships in.

The rehearsal of the paper profile (:mod:`adlib.rehearsal`) runs every notebook on these: the
same readers, the same folder and file conventions, the same image formats and colour modes as
the real datasets, only a handful of small images. :func:`write_miniature` writes, under a data
root::

    mvtec/hazelnut/{train/good, test/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png}, mvtec/wood/...
    mpdd/metal_plate/...             (MVTec layout, masks named <stem>.png as MPDD ships them)
    wfdd/grey_cloth/...              (MVTec layout)
    mad-man/hazelnut/..., mad-sys/wood/...   (MVTec layout: weak defects of MVTec AD categories)
    visa/split_csv/1cls.csv, visa/candle/Data/Images/{Normal,Anomaly}/*.JPG, Data/Masks/Anomaly/*.png
    dagm/Class1/{Train,Test}/*.PNG, Label/Labels.txt, Label/<stem>_label.PNG  (grayscale)
    dtd/images/<class>/*.jpg
    cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar-100-python/{train, test, meta}

Choices:

- Images are renders of the built-in benchmark (:func:`adlib.data.synth.render_sample`): normal
  images of one benchmark category per dataset, defects with exact masks, so the pictures in a
  rehearsal's figures look like inspection images. They are not the real datasets' content and
  the numbers a rehearsal prints mean nothing (every output says so).
- One category per dataset (the one the paper notebooks show: MVTec AD ``hazelnut``, the
  t-SNE / representation category; and MVTec AD's ``wood``, a texture, from which GLASS's weak
  defects are synthesised; the rehearsal's plans take the first category), a real name (MAD-man ``hazelnut``, MAD-sys ``wood``: GLASS's
  weak-defect sets are made of MVTec AD categories, MAD-sys of its textures; their defects are
  rendered at a low contrast); five images per defect type (ADTR's real-anomaly protocol holds four
  out); VisA's mask pixels hold a defect-class id (1, 2)
  as VisA's do; DAGM is 8-bit grayscale with its ``Labels.txt``; VisA's images are not square (the
  shorter-side resize of the released code is exercised).
- CIFAR-10 holds its ten classes (the one-class protocol needs the nine others as anomalies),
  three training and two test images each; CIFAR-100 a few outlier images.
- Deterministic: the same arguments write the same bytes.
"""

from __future__ import annotations

import csv
import io
import logging
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from .synth import render_sample

log = logging.getLogger(__name__)

#: dataset -> (category written, benchmark category rendered, its two defects)
MVTEC_FAMILY: dict[str, tuple[str, str, tuple[str, str]]] = {
    "mvtec": ("hazelnut", "nut", ("chip", "stain")),
    "mpdd": ("metal_plate", "gravel", ("foreign", "stain")),
    "wfdd": ("grey_cloth", "fabric", ("hole", "thread")),
    "mad-man": ("hazelnut", "nut", ("chip", "stain")),
    "mad-sys": ("wood", "wood", ("crack", "color")),
}
#: more categories of a dataset: MVTec AD's ``wood``, a texture category, from which GLASS's
#: weak-defect synthesis (``glass/01``) builds its MAD-sys-like sets
EXTRA: dict[str, tuple[tuple[str, str, tuple[str, str]], ...]] = {"mvtec": (("wood", "wood", ("crack", "color")),)}
#: the weak-defect sets (MVTec AD-manual, MVTec AD-synthesis) are rendered at this defect contrast
WEAK = {"mad-man": 0.4, "mad-sys": 0.4}
VISA = ("candle", "pill", ("crack", "color"))
DAGM = ("Class1", "grass", ("color", "foreign"))
DTD_CLASSES = {"banded": "wood", "woven": "fabric", "marbled": "brick"}
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
#: what each CIFAR-10 class is drawn from (benchmark category, defect or None)
_CIFAR_SOURCES = (
    ("brick", None),
    ("grass", None),
    ("gravel", None),
    ("fabric", None),
    ("wood", None),
    ("nut", None),
    ("pill", None),
    ("screw", None),
    ("nut", "stain"),
    ("pill", "color"),
)
#: every dataset :func:`write_miniature` writes
DATASETS = (*MVTEC_FAMILY, "visa", "dagm", "dtd", "cifar10", "cifar100")


def _render(
    category: str, index: int, defect: str | None, size: int, seed: int, split: str = "test", contrast: float = 1.0
):
    r = render_sample(category, index, seed, defect, split=split, size=size, contrast=contrast)
    return r.image, r.mask


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _mask_u8(mask: np.ndarray, value: int = 255) -> np.ndarray:
    return np.where(np.asarray(mask) > 0, value, 0).astype(np.uint8)


def write_mvtec_family(
    root: Path, dataset: str, n_train: int, n_good: int, n_defect: int, size: int, seed: int
) -> Path:
    """``<root>/<dataset>/<category>/...`` in the MVTec AD layout (MPDD: masks named ``<stem>.png``),
    for the dataset's category and its :data:`EXTRA` ones; returns the first category's folder."""
    first = None
    for category, source, defects in (MVTEC_FAMILY[dataset], *EXTRA.get(dataset, ())):
        cat = _write_mvtec_category(root, dataset, category, source, defects, n_train, n_good, n_defect, size, seed)
        first = first or cat
    return first


def _write_mvtec_category(root, dataset, category, source, defects, n_train, n_good, n_defect, size, seed) -> Path:
    cat = Path(root) / dataset / category
    for i in range(n_train):
        _save(cat / "train" / "good" / f"{i:03d}.png", _render(source, i, None, size, seed, "train")[0])
    for i in range(n_good):
        _save(cat / "test" / "good" / f"{i:03d}.png", _render(source, i, None, size, seed)[0])
    for d in defects:
        for i in range(n_defect):
            image, mask = _render(source, i, d, size, seed, contrast=WEAK.get(dataset, 1.0))
            _save(cat / "test" / d / f"{i:03d}.png", image)
            stem = f"{i:03d}" if dataset == "mpdd" else f"{i:03d}_mask"
            _save(cat / "ground_truth" / d / f"{stem}.png", _mask_u8(mask))
    return cat


def write_visa(root: Path, n_train: int, n_good: int, n_defect: int, size: int, seed: int) -> Path:
    """``<root>/visa``: one object with ``Data/Images/{Normal,Anomaly}/*.JPG``, class-id masks and
    ``split_csv/1cls.csv`` (rows ``object,split,label,image,mask``); images wider than tall."""
    obj, source, defects = VISA
    base = Path(root) / "visa"
    rows = []

    def wide(a: np.ndarray) -> np.ndarray:  # 4:3, as VisA's 1500 x 1000-ish images are not square
        h = a.shape[0]
        return np.concatenate([a, a[:, : h // 3]], axis=1)

    k = 0
    for split, n in (("train", n_train), ("test", n_good)):
        for i in range(n):
            image = _render(source, i, None, size, seed, "train" if split == "train" else "test")[0]
            rel = f"{obj}/Data/Images/Normal/{k:04d}.JPG"
            _save(base / rel, wide(image))
            rows.append((obj, split, "normal", rel, ""))
            k += 1
    for j, d in enumerate(defects, start=1):
        for i in range(n_defect):
            image, mask = _render(source, i, d, size, seed)
            rel, mrel = f"{obj}/Data/Images/Anomaly/{k:03d}.JPG", f"{obj}/Data/Masks/Anomaly/{k:03d}.png"
            _save(base / rel, wide(image))
            _save(base / mrel, wide(_mask_u8(mask, value=j)))
            rows.append((obj, "test", "anomaly", rel, mrel))
            k += 1
    (base / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(base / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("object", "split", "label", "image", "mask"))
        w.writerows(rows)
    return base


def write_dagm(root: Path, n_train: int, n_good: int, n_defect: int, size: int, seed: int) -> Path:
    """``<root>/dagm/Class1/{Train,Test}``: 8-bit grayscale ``.PNG`` with ``Label/Labels.txt`` (a
    header, then ``id flag file 0 label-file`` rows) and ``<stem>_label.PNG`` masks."""
    cls, source, defects = DAGM
    base = Path(root) / "dagm" / cls

    def gray(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).convert("L"))

    for split, n_normal, n_bad in (("Train", n_train, 1), ("Test", n_good, n_defect)):
        folder = base / split
        lines = ["No.\tflag\tfile\tunused\tlabel"]
        k = 0
        for i in range(n_normal):
            _save(folder / f"{k:04d}.PNG", gray(_render(source, i, None, size, seed, split.lower())[0]))
            lines.append(f"{k + 1}\t0\t{k:04d}.PNG\t0")
            k += 1
        # a defective training image is listed too (DAGM ships them; one-class training leaves it out)
        for d in defects[: 1 if split == "Train" else len(defects)]:
            for i in range(n_bad):
                image, mask = _render(source, i + (10 if split == "Train" else 0), d, size, seed)
                _save(folder / f"{k:04d}.PNG", gray(image))
                _save(folder / "Label" / f"{k:04d}_label.PNG", _mask_u8(mask))
                lines.append(f"{k + 1}\t1\t{k:04d}.PNG\t0\t{k:04d}_label.PNG")
                k += 1
        (folder / "Label").mkdir(parents=True, exist_ok=True)
        (folder / "Label" / "Labels.txt").write_text("\n".join(lines) + "\n")
    return base


def write_dtd(root: Path, n: int, size: int, seed: int) -> Path:
    """``<root>/dtd/images/<class>/*.jpg``, a few classes."""
    base = Path(root) / "dtd" / "images"
    for c, (name, source) in enumerate(DTD_CLASSES.items()):
        for i in range(n):
            _save(base / name / f"{name}_{i:04d}.jpg", _render(source, 100 + i, None, size, seed + c)[0])
    return base.parent


def _cifar_rows(images: list[np.ndarray]) -> np.ndarray:
    """``N x 3072`` uint8, each row a ``3 x 32 x 32`` image stored channel-planar."""
    return np.stack([np.asarray(a, dtype=np.uint8).transpose(2, 0, 1).reshape(-1) for a in images])


def _pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    pickle.dump(obj, buf, protocol=2)
    path.write_bytes(buf.getvalue())


def write_cifar(
    root: Path, n_train: int = 3, n_test: int = 2, n_outliers: int = 16, seed: int = 0
) -> tuple[Path, Path]:
    """``cifar-10-batches-py`` (five training batches, the test batch, ``batches.meta``; bytes
    keys as the Python-2 pickles have) and ``cifar-100-python`` (``train``, ``test``, ``meta``)."""
    c10 = Path(root) / "cifar-10-batches-py"
    train: list[tuple[np.ndarray, int]] = []
    test: list[tuple[np.ndarray, int]] = []
    for label, (source, defect) in enumerate(_CIFAR_SOURCES):
        for i in range(n_train):
            train.append((_render(source, i, defect, 32, seed, "train" if defect is None else "test")[0], label))
        for i in range(n_test):
            test.append((_render(source, 50 + i, defect, 32, seed)[0], label))
    for b in range(5):  # the training images dealt over the five batch files
        part = train[b::5]
        _pickle(
            c10 / f"data_batch_{b + 1}",
            {
                b"batch_label": f"training batch {b + 1} of 5".encode(),
                b"labels": [y for _, y in part],
                b"data": _cifar_rows([a for a, _ in part]),
            },
        )
    _pickle(
        c10 / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [y for _, y in test],
            b"data": _cifar_rows([a for a, _ in test]),
        },
    )
    _pickle(c10 / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_vis": 3072})
    c100 = Path(root) / "cifar-100-python"
    sources = ("brick", "grass", "gravel", "fabric", "wood", "nut", "pill", "screw")
    for name, n, offset in (("train", n_outliers, 200), ("test", max(2, n_outliers // 4), 300)):
        imgs = [_render(sources[i % len(sources)], offset + i, None, 32, seed + 7)[0] for i in range(n)]
        _pickle(
            c100 / name,
            {
                b"fine_labels": [i % 100 for i in range(n)],
                b"coarse_labels": [i % 20 for i in range(n)],
                b"data": _cifar_rows(imgs),
            },
        )
    _pickle(c100 / "meta", {b"fine_label_names": [f"class{i}".encode() for i in range(100)]})
    return c10, c100


def write_miniature(
    root: str | Path,
    datasets: tuple[str, ...] | list[str] | None = None,
    n_train: int = 8,
    n_good: int = 3,
    n_defect: int = 5,
    size: int = 96,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the miniature datasets (default: all of :data:`DATASETS`) under ``root``; returns
    dataset -> folder. ``n_defect`` images per defect type (two types per dataset); ``size``: the
    side of the rendered images (CIFAR is 32 px)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    want = tuple(datasets) if datasets else DATASETS
    unknown = [d for d in want if d not in DATASETS]
    if unknown:
        raise ValueError(f"no miniature layout for {unknown}; known: {', '.join(DATASETS)}")
    out: dict[str, Path] = {}
    for ds in want:
        if ds in MVTEC_FAMILY:
            out[ds] = write_mvtec_family(root, ds, n_train, n_good, n_defect, size, seed)
        elif ds == "visa":
            out[ds] = write_visa(root, n_train, n_good, n_defect, size, seed)
        elif ds == "dagm":
            out[ds] = write_dagm(root, n_train, n_good, n_defect, size, seed)
        elif ds == "dtd":
            out[ds] = write_dtd(root, 2, size, seed)
        elif ds == "cifar10":
            out[ds] = write_cifar(root, seed=seed)[0]
        elif ds == "cifar100":
            out.setdefault("cifar10", write_cifar(root, seed=seed)[0])
            out[ds] = root / "cifar-100-python"
    log.info("miniature datasets written under %s: %s", root, ", ".join(out))
    return out


__all__ = ["DATASETS", "write_miniature"]
