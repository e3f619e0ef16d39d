"""MVTec AD layout, shared by MVTec AD, MPDD, WFDD, MAD-man, MAD-sys and the built-in benchmark.

::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/*.png
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png

Masks are looked up as ``<stem>_mask.png`` first and ``<stem>.png`` second (MPDD and some
re-distributions ship the latter). A defect image without a mask is kept, with
``mask_known=False`` (:class:`~adlib.data.base.Record`): it counts in the image metrics and is left
out of the pixel metrics; one warning per category says how many and names one (every anomalous
test image of the published datasets ships a mask, so a missing one there is a damaged copy). A
category folder counts only if it has ``train/`` or ``test/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .base import DataError, Record, check_category_split, list_images

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


def looks_like(path: Path) -> bool:
    """True if ``path`` holds at least one ``<category>/train`` or ``<category>/test`` folder."""
    path = Path(path)
    return path.is_dir() and any((c / s).is_dir() for c in path.iterdir() if c.is_dir() for s in SPLITS)


def categories(path: Path) -> list[str]:
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"dataset folder not found: {path}")
    return sorted(c.name for c in path.iterdir() if c.is_dir() and any((c / s).is_dir() for s in SPLITS))


def _find_mask(root: Path, category: str, defect: str, image: Path) -> Path | None:
    """The mask file of a defect image, or None when none of the accepted names is there."""
    gt = root / category / "ground_truth" / defect
    for name in (f"{image.stem}_mask.png", f"{image.stem}.png", f"{image.stem}_mask{image.suffix}"):
        if (gt / name).is_file():
            return gt / name
    return None


def index(path: Path, category: str, split: str) -> list[Record]:
    """Records of one category and split; raises :class:`DataError` naming what is wrong."""
    path = Path(path)
    check_category_split(path, category, split, categories(path), SPLITS)
    split_dir = path / category / split
    if not split_dir.is_dir():
        raise DataError(f"split folder missing: {split_dir}")
    records: list[Record] = []
    unmasked: list[tuple[Path, Path]] = []  # (image, where its mask was expected)
    defects = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if split == "train" and defects != ["good"]:
        if "good" not in defects:
            raise DataError(f"training folder {split_dir} has no 'good' subfolder (found: {defects})")
    for defect in defects:
        if split == "train" and defect != "good":
            continue  # MVTec trains on good images only; other folders are not part of the layout
        for img in list_images(split_dir / defect):
            if defect == "good":
                records.append(Record(img, 0, "good", None, category, split))
                continue
            mask = _find_mask(path, category, defect, img)
            if mask is None:
                unmasked.append((img, path / category / "ground_truth" / defect / f"{img.stem}_mask.png"))
            records.append(Record(img, 1, defect, mask, category, split, mask_known=mask is not None))
    if not records:
        raise DataError(f"no images in {split_dir} (category {category!r} is empty)")
    if unmasked:
        n_defect = sum(r.label == 1 for r in records)
        log.warning(
            "%s/%s: %d of %d defect image(s) have no mask (e.g. %s: expected %s); they count in the image "
            "metrics and are left out of the pixel metrics",
            path.name,
            category,
            len(unmasked),
            n_defect,
            unmasked[0][0],
            unmasked[0][1],
        )
    return records
