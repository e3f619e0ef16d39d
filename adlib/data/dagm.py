"""DAGM 2007 (the ``Class1`` .. ``Class10`` release, as also re-distributed on Kaggle).

::

    <root>/Class<N>/Train/*.PNG
    <root>/Class<N>/Train/Label/Labels.txt
    <root>/Class<N>/Train/Label/<stem>_label.PNG        (defective images only)
    <root>/Class<N>/Test/...                             (same structure)

``Labels.txt`` starts with one header line, then one row per image, whitespace (tab) separated::

    <id>  <flag 0|1>  <image file>  <unused>  <label file, for flag 1>

e.g. ``0002  1  0002.PNG  0  0002_label.PNG``. The flag marks a defective image; its mask is the
label file in the same ``Label/`` folder (non-zero pixels are the defect). The fourth column is not
used. A first line that already parses as a data row is read as data (some copies lack the header).
A copy nested one level deeper (``<root>/Class1/Class1/Train``, as some archives unpack) is
accepted too.

Choices:

- Split ``test``: every row of ``Test/Label/Labels.txt``: label 1 with its mask where flagged,
  else label 0 (``"good"``, zero mask). Defect type ``"defect"`` (DAGM does not name defects).
- Split ``train``: only the NORMAL (flag 0) rows of ``Train/Label/Labels.txt``. The defective
  training images are never used: anomaly detection here is one-class (trained on normal images
  only), as in the papers this library reproduces.
- ``Labels.txt`` is the source of truth: it missing, a malformed row, or a row naming an image or
  label file that does not exist raises :class:`DataError` naming the file and line. Images on disk
  that ``Labels.txt`` does not list are left out with a WARNING.
- Categories: the ``Class<N>`` folders found on disk (with ``Train/`` or ``Test/``), in numeric order.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .base import DataError, Record, check_category_split, inside_root, list_images

log = logging.getLogger(__name__)

SPLITS = {"train": "Train", "test": "Test"}
LABELS_FILE = Path("Label") / "Labels.txt"
DEFECT_TYPE = "defect"
_CLASS_RE = re.compile(r"^Class(\d+)$")


def _class_dir(path: Path, name: str) -> Path:
    """``<path>/<name>``, or ``<path>/<name>/<name>`` when the archive unpacked one level deeper."""
    d = path / name
    nested = d / name
    if not any((d / s).is_dir() for s in SPLITS.values()) and any((nested / s).is_dir() for s in SPLITS.values()):
        return nested
    return d


def _is_class(path: Path, c: Path) -> bool:
    if not (c.is_dir() and _CLASS_RE.match(c.name)):
        return False
    d = _class_dir(path, c.name)
    return any((d / s).is_dir() for s in SPLITS.values())


def looks_like(path: Path) -> bool:
    """True if ``path`` holds at least one ``Class<N>/Train`` or ``Class<N>/Test`` folder."""
    path = Path(path)
    return path.is_dir() and any(_is_class(path, c) for c in path.iterdir())


def categories(path: Path) -> list[str]:
    """``Class<N>`` folders found under ``path``, in numeric order (Class1, Class2, ..., Class10)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"dataset folder not found: {path}")
    names = [c.name for c in path.iterdir() if _is_class(path, c)]
    return sorted(names, key=lambda n: int(_CLASS_RE.match(n).group(1)))


def _parse_row(fields: list[str]) -> tuple[int, str, str | None] | None:
    """(flag, image name, label name or None) if ``fields`` is a data row, else None."""
    if len(fields) < 3 or fields[1] not in ("0", "1"):
        return None
    flag = int(fields[1])
    label = fields[4] if flag == 1 and len(fields) >= 5 else None
    return flag, fields[2], label


def read_labels(labels_path: Path) -> list[tuple[int, int, str, str | None]]:
    """Rows of a DAGM ``Labels.txt``: (line number, flag, image file name, label file name or None)."""
    labels_path = Path(labels_path)
    if not labels_path.is_file():
        raise DataError(
            f"DAGM label list missing: expected {labels_path} (each Class<N>/Train and Class<N>/Test of "
            f"DAGM 2007 ships Label/Labels.txt)"
        )
    try:
        lines = labels_path.read_text(encoding="utf-8-sig", errors="strict").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read DAGM label list {labels_path}: {exc}") from exc
    rows = []
    first = True
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        parsed = _parse_row(fields)
        was_first, first = first, False
        if parsed is None:
            if was_first:
                continue  # the header line
            raise DataError(
                f"{labels_path} line {n}: cannot parse {line.strip()!r}; expected "
                f"'<id> <flag 0|1> <image file> <unused> <label file>'"
            )
        rows.append((n, *parsed))
    return rows


def index(path: Path, category: str, split: str) -> list[Record]:
    """Records of one DAGM class and split (train: normal images only; test: all)."""
    path = Path(path)
    check_category_split(path, category, split, categories(path), SPLITS)
    split_dir = _class_dir(path, category) / SPLITS[split]
    if not split_dir.is_dir():
        raise DataError(f"split folder missing: {split_dir}")
    labels_path = split_dir / LABELS_FILE
    rows = read_labels(labels_path)
    records: list[Record] = []
    listed: dict[str, int] = {}
    for line, flag, image_name, label_name in rows:
        where = f"{labels_path} line {line}"
        if image_name in listed:
            raise DataError(f"{where}: image {image_name!r} is listed twice (also on line {listed[image_name]})")
        image = inside_root(split_dir, image_name, where)
        listed[image_name] = line
        if not image.is_file():
            raise DataError(f"{where} names image {image_name!r}, which does not exist: {image}")
        if flag == 0:
            records.append(Record(image, 0, "good", None, category, split))
            continue
        if split == "train":
            continue  # defective training images are never used (one-class training)
        mask = inside_root(labels_path.parent, label_name or f"{image.stem}_label.PNG", where)
        if not mask.is_file():
            raise DataError(f"mask missing for defect image {image}: expected {mask} (from {where})")
        records.append(Record(image, 1, DEFECT_TYPE, mask, category, split))
    unlisted = [p.name for p in list_images(split_dir) if p.name not in listed]
    if unlisted:
        log.warning(
            "%s: %d image(s) not listed in %s are left out (e.g. %s)",
            split_dir,
            len(unlisted),
            labels_path,
            unlisted[0],
        )
    if not records:
        raise DataError(f"no {split} images of category {category!r} listed in {labels_path} (category is empty)")
    return records
