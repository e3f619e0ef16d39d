"""VisA as shipped (``VisA_20220922.tar``), read through its official 1-class split CSV.

::

    <root>/split_csv/1cls.csv                          object,split,label,image,mask
    <root>/<object>/Data/Images/Normal/*.JPG
    <root>/<object>/Data/Images/Anomaly/*.JPG
    <root>/<object>/Data/Masks/Anomaly/*.png
    <root>/<object>/image_anno.csv                     (not read, see below)

The 12 objects are candle, capsules, cashew, chewinggum, fryum, macaroni1, macaroni2, pcb1..pcb4
and pipe_fryum; :func:`categories` lists the object folders found on disk (those holding
``Data/Images``), so a partial copy works.

Choices (facts from the official amazon-science/spot-diff repository, which publishes the split
CSV and the preparation script the benchmark numbers are computed with):

- Split: ``split_csv/1cls.csv``, one row per image: ``object``, ``split`` (train/test), ``label``
  (``normal``/``anomaly``), ``image`` and ``mask`` paths relative to the root (``mask`` empty for
  normal images). Nothing is re-split: ``train`` = the CSV's normal training rows of the object,
  ``test`` = all its test rows. Without the CSV there is no standard split, so a missing CSV is an
  error naming the expected path (the CSV ships inside the tar and in the spot-diff repository);
  it is never replaced by an ad-hoc random split.
- Masks: VisA masks are not 0/255; pixels hold a per-object defect-class id (0 background,
  1..N a defect class; the official preparation script binarises with ``mask != 0``). Every
  non-zero pixel is anomalous (see :func:`adlib.data.base.binary_mask`).
- Defect type: ``"anomaly"`` for every anomalous image (the CSV's own label). VisA has no
  per-defect folders, and ``image_anno.csv`` gives free text that may name several defects for one
  image, so it is not turned into a per-image defect type. Normal images are ``"good"``.
- A row whose image file is missing, an anomalous row without a mask file, an unknown label or a
  CSV without the expected columns raises :class:`DataError` naming the file (and CSV line).
"""

from __future__ import annotations

import logging
from pathlib import Path

from .base import DataError, Record, check_category_split, inside_root, read_csv_rows

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
SPLIT_CSV = Path("split_csv") / "1cls.csv"
CSV_COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}
DEFECT_TYPE = "anomaly"


def split_csv_path(path: Path) -> Path:
    """Where the official 1-class split CSV is expected under the VisA folder ``path``."""
    return Path(path) / SPLIT_CSV


def _is_object_dir(d: Path) -> bool:
    return d.is_dir() and (d / "Data" / "Images").is_dir()


def looks_like(path: Path) -> bool:
    """True if ``path`` holds ``split_csv/1cls.csv`` or an ``<object>/Data/Images`` folder."""
    path = Path(path)
    if not path.is_dir():
        return False
    return split_csv_path(path).is_file() or any(_is_object_dir(c) for c in path.iterdir())


def categories(path: Path) -> list[str]:
    """The object folders (``<object>/Data/Images``) found under ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"dataset folder not found: {path}")
    return sorted(c.name for c in path.iterdir() if _is_object_dir(c))


def _read_split_csv(csv_path: Path) -> list[tuple[int, dict[str, str]]]:
    if not csv_path.is_file():
        raise DataError(
            f"VisA split CSV missing: expected {csv_path} (it ships in VisA_20220922.tar as "
            f"split_csv/1cls.csv and in the amazon-science/spot-diff repository; copy it there)"
        )
    return read_csv_rows(csv_path, CSV_COLUMNS, "VisA split CSV", ",".join(CSV_COLUMNS))[1]


def index(path: Path, category: str, split: str) -> list[Record]:
    """Records of one VisA object and split, as listed by ``split_csv/1cls.csv``."""
    path = Path(path)
    check_category_split(path, category, split, categories(path), SPLITS)
    csv_path = split_csv_path(path)
    rows = _read_split_csv(csv_path)
    records: list[Record] = []
    skipped = 0
    seen: dict[str, int] = {}
    for line, row in rows:
        if row["object"] != category or row["split"] != split:
            continue
        where = f"{csv_path} line {line}"
        if row["image"] in seen:
            raise DataError(f"{where}: image {row['image']!r} is listed twice (also on line {seen[row['image']]})")
        seen[row["image"]] = line
        label_text = row["label"].lower()
        if label_text not in LABELS:
            raise DataError(f"{where}: unknown label {row['label']!r}; expected 'normal' or 'anomaly'")
        label = LABELS[label_text]
        if split == "train" and label == 1:
            skipped += 1  # the 1-class setting trains on normal images only
            continue
        if not row["image"]:
            raise DataError(f"{where}: empty image path")
        image = inside_root(path, row["image"], where)
        if not image.is_file():
            raise DataError(f"image listed in {where} not found: {image}")
        if label == 0:
            records.append(Record(image, 0, "good", None, category, split))
            continue
        if not row["mask"]:
            raise DataError(f"mask missing for defect image {image}: {where} gives no mask path")
        mask = inside_root(path, row["mask"], where)
        if not mask.is_file():
            raise DataError(f"mask missing for defect image {image}: expected {mask} (from {where})")
        records.append(Record(image, 1, DEFECT_TYPE, mask, category, split))
    if skipped:
        log.warning(
            "%s: skipped %d anomalous row(s) of %s/train (training uses normal images only)",
            csv_path,
            skipped,
            category,
        )
    if not records:
        raise DataError(f"no {split} images of category {category!r} listed in {csv_path} (category is empty)")
    return records
