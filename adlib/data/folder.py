"""Your own images: the ``folder`` dataset.

::

    <root>/<category>/normal/*.png|jpg|...                  normal images (training pool and normal test images)
    <root>/<category>/abnormal/[<defect>/]*.png             anomalous test images (optionally one sub-folder per defect type)
    <root>/<category>/masks/[<defect>/]<stem>[_mask].png    optional masks, for some or all of the anomalous images
    <root>/<category>/split.csv                             optional: the split, listed (below)

``<root>`` is the ``folder`` sub-folder of the data root, or a folder passed as the data root
itself (``--data-root PATH``, ``get_dataset("folder", category, split, root=PATH)``); a category
is any sub-folder holding ``normal/`` or ``split.csv``.

Without ``split.csv``
    The split is deterministic, never random: the images of ``normal/`` sorted by file name, the
    image at position ``k`` (counting from 0) goes to the test split when ``k % TEST_EVERY ==
    TEST_EVERY - 1`` (every 5th image: :data:`TEST_FRACTION`, 20 %, of the normal images), the
    others to the training split. Every image of ``abnormal/`` is a test image, of defect type
    ``abnormal`` (directly in ``abnormal/``) or the name of its sub-folder. The mask of
    ``abnormal/[<defect>/]<stem>.<ext>`` is ``masks/[<defect>/]<stem>_mask.png``, else
    ``<stem>.png``, ``<stem>_mask.<ext>`` or ``<stem>.<ext>`` there (any non-zero pixel is a
    defect pixel, :func:`~adlib.data.base.binary_mask`). Files of ``masks/`` that match no image
    (a misspelt name) are named in one warning.

With ``split.csv``
    The CSV is the split: columns ``image,label,split`` and optionally ``mask`` (and ``defect``, a
    defect type; default ``abnormal``), paths relative to the category folder, ``label``
    ``normal``/``anomaly`` (or ``0``/``1``), ``split`` ``train``/``test``. Training rows must be
    normal; a normal row cannot have a mask; masks come from the ``mask`` column only (the
    ``masks/`` folder is not searched). A path outside the category folder (absolute, ``..``, a
    symbolic link out), an image listed twice, an unknown label or split, a missing file or a
    missing column each raise one :class:`~adlib.data.DataError` line naming the file and line.

Anomalous images without a mask are kept with ``mask_known=False``
(:class:`~adlib.data.base.Record`): they count in the image metrics, and the pixel metrics are
computed over the images whose mask is known (:func:`adlib.models.evaluate`); a log line says how
many have no mask.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .base import DataError, Record, check_category_split, inside_root, list_images, read_csv_rows

log = logging.getLogger(__name__)

SPLITS = ("train", "test")
#: every TEST_EVERY-th normal image (sorted by name) is a test image, the others are training images
TEST_EVERY = 5
#: the share of the normal images in the test split without ``split.csv``
TEST_FRACTION = 1 / TEST_EVERY
NORMAL, ABNORMAL, MASKS = "normal", "abnormal", "masks"
SPLIT_CSV = "split.csv"
CSV_COLUMNS = ("image", "label", "split")
LABELS = {"normal": 0, "anomaly": 1, "0": 0, "1": 1}
#: defect type of anomalous images not in a defect sub-folder (and of CSV rows without ``defect``)
DEFECT_TYPE = "abnormal"


def _is_category(d: Path) -> bool:
    return d.is_dir() and not d.name.startswith(".") and ((d / NORMAL).is_dir() or (d / SPLIT_CSV).is_file())


def looks_like(path: Path) -> bool:
    """True if ``path`` holds a ``<category>/normal`` folder or a ``<category>/split.csv``."""
    path = Path(path)
    return path.is_dir() and any(_is_category(c) for c in path.iterdir())


def categories(path: Path) -> list[str]:
    """The category folders (holding ``normal/`` or ``split.csv``) under ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"dataset folder not found: {path}")
    return sorted(c.name for c in path.iterdir() if _is_category(c))


def is_test_position(k: int) -> bool:
    """Whether the normal image at position ``k`` (0-based, sorted by name) is a test image."""
    return k % TEST_EVERY == TEST_EVERY - 1


def index(path: Path, category: str, split: str) -> list[Record]:
    """Records of one category and split (from ``split.csv`` when there is one); raises
    :class:`DataError` naming what is wrong."""
    path = Path(path)
    check_category_split(path, category, split, categories(path), SPLITS)
    cat = path / category
    records = _from_csv(cat, category, split) if (cat / SPLIT_CSV).is_file() else _from_folders(cat, category, split)
    if not records:
        where = cat / SPLIT_CSV if (cat / SPLIT_CSV).is_file() else cat
        raise DataError(f"no {split} images of category {category!r} in {where} (the split is empty)")
    unmasked = [r for r in records if not r.mask_known]
    if unmasked:
        log.info(
            "folder/%s/%s: %d of %d anomalous image(s) have no mask (e.g. %s); pixel metrics use the others",
            category,
            split,
            len(unmasked),
            sum(r.label == 1 for r in records),
            unmasked[0].image_path,
        )
    return records


def _find_mask(masks: Path, image: Path) -> Path | None:
    names = dict.fromkeys(
        (
            f"{image.stem}_mask.png",
            f"{image.stem}.png",
            f"{image.stem}_mask{image.suffix}",
            f"{image.stem}{image.suffix}",
        )
    )
    for name in names:
        if (masks / name).is_file():
            return masks / name
    return None


def _from_folders(cat: Path, category: str, split: str) -> list[Record]:
    normal = list_images(cat / NORMAL)
    if split == "train":
        return [Record(p, 0, "good", None, category, split) for k, p in enumerate(normal) if not is_test_position(k)]
    records = [Record(p, 0, "good", None, category, split) for k, p in enumerate(normal) if is_test_position(k)]
    if not records:
        log.warning(
            "%s: %d normal image(s), fewer than %d: none goes to the test split (add images, or list the split in %s)",
            cat / NORMAL,
            len(normal),
            TEST_EVERY,
            cat / SPLIT_CSV,
        )
    abnormal = cat / ABNORMAL
    if not abnormal.is_dir():
        return records
    groups = [(DEFECT_TYPE, abnormal, cat / MASKS)]
    groups += [
        (d.name, d, cat / MASKS / d.name)
        for d in sorted(abnormal.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    ]
    for defect, folder, masks in groups:
        for img in list_images(folder):
            mask = _find_mask(masks, img)
            records.append(Record(img, 1, defect, mask, category, split, mask_known=mask is not None))
    _warn_unused_masks(cat / MASKS, {r.mask_path for r in records if r.mask_path is not None})
    return records


def _warn_unused_masks(masks: Path, used: set[Path]) -> None:
    """One warning naming how many files of ``masks/`` (and its defect sub-folders) belong to no
    anomalous image, e.g. a mask whose name does not match its image's."""
    if not masks.is_dir():
        return
    folders = [masks, *(d for d in sorted(masks.iterdir()) if d.is_dir() and not d.name.startswith("."))]
    unused = [m for f in folders for m in list_images(f) if m not in used]
    if unused:
        log.warning(
            "%s: %d mask file(s) match no image of abnormal/ (e.g. %s); a mask of abnormal/[<defect>/]<stem>.<ext> "
            "is masks/[<defect>/]<stem>_mask.png or <stem>.png",
            masks,
            len(unused),
            unused[0],
        )


def _read_csv(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    return read_csv_rows(csv_path, CSV_COLUMNS, "split CSV", "image,label,split[,mask]")


def _from_csv(cat: Path, category: str, split: str) -> list[Record]:
    csv_path = cat / SPLIT_CSV
    _, rows = _read_csv(csv_path)
    records: list[Record] = []
    seen: dict[str, int] = {}
    for line, row in rows:  # every row is checked, whichever split is asked for
        where = f"{csv_path} line {line}"
        if not any(row.values()):
            continue  # a blank line
        if not row["image"]:
            raise DataError(f"{where}: empty image path")
        image = inside_root(cat, row["image"], where)
        key = str(image.resolve())
        if key in seen:
            raise DataError(f"{where}: image {row['image']!r} is listed twice (also on line {seen[key]})")
        seen[key] = line
        label = LABELS.get(row["label"].lower())
        if label is None:
            raise DataError(f"{where}: unknown label {row['label']!r}; expected normal or anomaly (or 0 or 1)")
        row_split = row["split"].lower()
        if row_split not in SPLITS:
            raise DataError(f"{where}: unknown split {row['split']!r}; expected train or test")
        if row_split == "train" and label == 1:
            raise DataError(
                f"{where}: anomalous image {row['image']!r} in the train split; training uses normal images only"
            )
        mask_text = row.get("mask", "")
        if label == 0 and mask_text:
            raise DataError(
                f"{where}: normal image {row['image']!r} has a mask {mask_text!r}; only anomalous images have one"
            )
        if not image.is_file():
            raise DataError(f"{where}: image not found: {image}")
        mask = inside_root(cat, mask_text, where) if mask_text else None
        if mask is not None and not mask.is_file():
            raise DataError(f"{where}: mask not found: {mask}")
        if row_split != split:
            continue
        if label == 0:
            records.append(Record(image, 0, "good", None, category, split))
        else:
            defect = row.get("defect", "") or DEFECT_TYPE
            records.append(Record(image, 1, defect, mask, category, split, mask_known=mask is not None))
    return records
