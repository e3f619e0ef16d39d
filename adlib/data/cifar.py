"""CIFAR-10 and CIFAR-100 in their official python-pickle layouts (the ``*-python.tar.gz`` releases).

::

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5   (10000 training images each)
    <root>/cifar-10-batches-py/test_batch                      (10000 test images)
    <root>/cifar-10-batches-py/batches.meta                    (b"label_names": the 10 class names)

    <root>/cifar-100-python/train                              (50000 training images)
    <root>/cifar-100-python/test                               (10000 test images)
    <root>/cifar-100-python/meta                               (b"fine_label_names", b"coarse_label_names")

Each batch file is a pickled dict (written by Python 2, read with ``pickle.load(f,
encoding="bytes")``, so its keys are bytes): ``b"data"``, a ``uint8`` array ``N x 3072`` whose
rows are a ``3 x 32 x 32`` image stored channel-planar (1024 red, then 1024 green, then 1024 blue
values, each plane row-major), and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` /
``b"coarse_labels"`` (CIFAR-100), lists of ints. Pickles can run code when loaded: read only
copies you trust (the official archives are).

Choices:

- ``cifar10`` is the one-class benchmark (ADTR Table 3): the categories are the 10 class names of
  ``batches.meta`` (``airplane`` ... ``truck``). Split ``train``: that class's training images (5000
  in the full set), label 0, defect type ``"good"``. Split ``test``: the whole test batch (10000):
  label 0 (``"good"``) for the class, 1 for the nine others, whose defect type is their class name
  (so per-type summaries work). No masks: every mask is zero.
- ``cifar100`` is an outlier source (ADTR+ outlier exposure, :mod:`adlib.protocols` ``outliers``),
  not a benchmark: one category, ``all``; split ``train`` is the 50000 training images, ``test`` the
  10000 test images, all label 1, defect type ``"outlier"``, zero masks. ``meta`` is not needed.
- Records (:class:`CifarRecord`) carry the batch file and the row; their ``image_path`` is the
  pseudo-path ``<file>#<row>`` (e.g. ``.../cifar-10-batches-py/test_batch#17``), stable and
  sortable like a file path, and what a :class:`~adlib.data.Sample` reports as its ``path``.
- Pixels live in memory: each batch file is unpickled once per process (a small LRU cache keyed
  by path, modification time and size) and kept as ``uint8`` (all of CIFAR-10 is 180 MB). A read
  converts one row to a 32 x 32 RGB PIL image and passes it through the dataset's
  ``transform.image`` like any image file (so ``resize`` and ``crop`` act the same); the mask is
  ``zeros(1, H, W)`` at the transformed size. :class:`CifarDataset` is the
  :class:`~adlib.data.AnomalyDataset` that reads them (it reads ordinary file records too, so an
  outlier-exposed training set may mix both).
- Safety: the pickles are read by a restricted unpickler (:class:`_CifarUnpickler`) that allows
  only numpy's array reconstruction, so a tampered batch file is refused instead of running code.
- Errors (:class:`~adlib.data.DataError`): a missing batch or meta file, one that does not unpickle
  or lacks the expected keys or shapes, a label outside the class list, all name the file; an
  unknown class lists the classes.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import AnomalyDataset, DataError, Record, Sample, check_category_split

log = logging.getLogger(__name__)

SIDE = 32
OUTLIER = "outlier"  # defect type of every CIFAR-100 record


@dataclass(frozen=True)
class CifarRecord(Record):
    """One image of a batch file: row ``row`` of ``file`` (``image_path`` is ``<file>#<row>``)."""

    file: Path | None = None
    row: int = -1


@dataclass
class CifarDataset(AnomalyDataset):
    """An :class:`AnomalyDataset` whose :class:`CifarRecord` s are read from the decoded batch
    files (other records are read from their files as usual)."""

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        if not isinstance(rec, CifarRecord):
            return super().__getitem__(index)
        x = self.transform.image(Image.fromarray(image_array(rec.file, rec.row)))
        return Sample(
            x,
            torch.zeros((1, *x.shape[-2:]), dtype=torch.float32),
            int(rec.label),
            rec.defect_type,
            str(rec.image_path),
        )


def _get(d: dict, key: str):
    """``d[b"key"]`` (the official Python 2 pickles), else ``d["key"]`` (re-pickled copies)."""
    return d[key.encode()] if key.encode() in d else d[key]


#: the only globals a CIFAR batch pickle may name: numpy's array reconstruction (the official
#: Python 2 pickles, numpy 1/2 re-pickles of protocol 2-5) and ``_codecs.encode`` (Python 3 protocol-2 bytes)
_CIFAR_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }
)


class _CifarUnpickler(pickle.Unpickler):
    """A restricted unpickler: the data may build dicts, lists, strings, numbers and numpy arrays,
    nothing else. Any other global (``os.system``, ``builtins.eval``, a class, ...) is refused
    before it is looked up, so a tampered file cannot run code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name} (a CIFAR batch holds only arrays and lists)")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """One batch or meta file through :class:`_CifarUnpickler` (no code runs from the file)."""
    if not path.is_file():
        raise DataError(f"CIFAR file missing: {path}")
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as exc:  # a truncated, foreign or tampered file can fail in many ways
        raise DataError(f"cannot read CIFAR file {path}: {exc}") from exc
    if not isinstance(d, dict):
        raise DataError(f"CIFAR file {path} does not hold a dict (got {type(d).__name__})")
    return d


@lru_cache(maxsize=16)
def _batch(path: str, mtime_ns: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels ``N x 3 x 32 x 32`` uint8, labels ``N``) of one batch file (cached per process)."""
    d = _unpickle(Path(path))
    key = "labels" if b"labels" in d or "labels" in d else "fine_labels"  # CIFAR-10 / CIFAR-100
    try:
        data = np.asarray(_get(d, "data"))
        labels = np.asarray(_get(d, key), dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"CIFAR file {path} lacks b'data' or b'labels' / b'fine_labels': {exc!r}") from exc
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE or labels.shape != (len(data),):
        raise DataError(
            f"CIFAR file {path}: expected uint8 data N x {3 * SIDE * SIDE} and N labels, got data "
            f"{data.dtype} {data.shape} and labels {labels.shape}"
        )
    log.debug("decoded %s: %d images", path, len(data))
    return data.reshape(-1, 3, SIDE, SIDE), labels


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pixels ``N x 3 x 32 x 32`` uint8, channel-planar as stored; labels ``N``: ``b"labels"``,
    else ``b"fine_labels"``) of one batch file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CIFAR file missing: {path}")
    st = path.stat()
    return _batch(str(path), st.st_mtime_ns, st.st_size)


def image_array(path: Path, row: int) -> np.ndarray:
    """Row ``row`` of a batch file as a ``32 x 32 x 3`` uint8 RGB array (planes to channels-last)."""
    return np.ascontiguousarray(read_batch(path)[0][row].transpose(1, 2, 0))


@dataclass(frozen=True, eq=False)
class CifarLayout:
    """One of the two layouts; ``DatasetSpec.layout`` names it as ``cifar:cifar10`` / ``cifar:cifar100``."""

    name: str
    files: dict  # split -> batch file names (tuple)
    meta: str

    dataset_class = CifarDataset

    def looks_like(self, path: Path) -> bool:
        """True if ``path`` holds this layout's meta file and at least one of its batch files."""
        path = Path(path)
        return (path / self.meta).is_file() and any((path / f).is_file() for fs in self.files.values() for f in fs)

    def categories(self, path: Path) -> list[str]:
        """CIFAR-10: the class names of ``batches.meta``, in label order; CIFAR-100: ``["all"]``."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"dataset folder not found: {path}")
        if self.name == "cifar100":
            return ["all"]
        d = _unpickle(path / self.meta)
        try:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(d, "label_names")]
        except (KeyError, TypeError, UnicodeDecodeError) as exc:
            raise DataError(f"CIFAR meta file {path / self.meta} lacks b'label_names': {exc!r}") from exc
        return names

    def index(self, path: Path, category: str, split: str) -> list[Record]:
        """Records of one class and split (module docstring)."""
        path = Path(path)
        classes = self.categories(path)
        check_category_split(path, category, split, classes, self.files)
        records: list[Record] = []
        for name in self.files[split]:
            f = path / name
            _, labels = read_batch(f)
            if self.name == "cifar100":
                records += [
                    CifarRecord(Path(f"{f}#{i}"), 1, OUTLIER, None, category, split, file=f, row=i)
                    for i in range(len(labels))
                ]
                continue
            if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
                raise DataError(
                    f"CIFAR file {f}: label {int(labels.max())} outside the {len(classes)} classes "
                    f"of {path / self.meta}"
                )
            target = classes.index(category)
            for i, y in enumerate(labels.tolist()):
                if y == target:
                    records.append(CifarRecord(Path(f"{f}#{i}"), 0, "good", None, category, split, file=f, row=i))
                elif split == "test":
                    records.append(CifarRecord(Path(f"{f}#{i}"), 1, classes[y], None, category, split, file=f, row=i))
        if not records:
            raise DataError(f"no {split} images of class {category!r} in {path}")
        return records


cifar10 = CifarLayout(
    "cifar10", {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}, "batches.meta"
)
cifar100 = CifarLayout("cifar100", {"train": ("train",), "test": ("test",)}, "meta")
