"""The one sample API every dataset in adlib speaks.

A dataset is indexed into a list of :class:`Record` (paths and labels, no pixels), validated once,
and read lazily by :class:`AnomalyDataset`, which returns :class:`Sample` tuples:

``Sample(image, mask, label, defect_type, path)``

- ``image``: float tensor ``3 x H x W`` (ImageNet-normalised when the transform asks for it,
  else in [0, 1]);
- ``mask``: float tensor ``1 x H x W`` with values in {0, 1}, all zeros for good images (any
  non-zero pixel of the mask file counts as anomalous, see :func:`binary_mask`), and all zeros
  for an anomalous image whose mask is unknown (its :class:`Record` has ``mask_known=False``;
  :attr:`AnomalyDataset.mask_known` lists them, and the evaluation leaves them out of the pixel
  metrics);
- ``label``: 0 (good) or 1 (anomalous);
- ``defect_type``: ``"good"`` or the defect folder name;
- ``path``: the source image path (str).

``Sample`` is a ``NamedTuple``, so ``torch.utils.data.default_collate`` batches it field by field.

Images and masks go through one :class:`ImageTransform`: resize (bilinear for images, nearest for
masks), optional centre crop, optional ImageNet normalisation. Errors name the file.

Geometry (``ImageTransform.resize_mode``, a named option)
    ``"squash"`` (default, the project's): both sides to ``resize`` (a non-square image is
    squashed), then the centre crop (offsets rounded down). ``"shorter_side"`` (the released GLASS /
    SimpleNet loaders: torchvision ``Resize(int)`` then ``CenterCrop``): the shorter side to
    ``resize``, the longer one to ``int(resize * long / short)`` (aspect ratio kept), then the centre
    crop with torchvision's offsets ``int(round((H - h) / 2))`` (Python rounding). Square images give
    the same pixels under both modes.

Ground-truth masks at evaluation (:data:`MASK_RULES`, :meth:`AnomalyDataset.masks`)
    ``"nearest"`` (default, what :class:`Sample` carries): the binarised mask resized with nearest
    neighbour. ``"bilinear_truncate"`` (released GLASS MVTec/MPDD/WFDD loader: the 0/255 mask
    resized bilinearly as an ``L`` image, ``ToTensor`` then ``astype(int)`` in the metrics): a pixel
    is anomalous only where the resized value is 255, i.e. the mask is eroded by about a pixel at
    its border. ``"bilinear_positive"`` (released VisA loader: the mask read as a float ``F`` image,
    resized bilinearly, then ``> 0``): any pixel that a defect pixel contributes to, i.e. dilated.
    The released rule of a dataset: :func:`released_mask_rule`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: image geometry of :class:`ImageTransform` (module docstring)
RESIZE_MODES = ("squash", "shorter_side")
#: ground-truth mask resampling rules at evaluation (module docstring)
MASK_RULES = ("nearest", "bilinear_truncate", "bilinear_positive")
#: datasets whose released GLASS loader dilates the masks (``> 0``); every other dataset truncates
_RELEASED_POSITIVE_MASKS = frozenset({"visa"})
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".PNG", ".JPG", ".JPEG", ".BMP")


class DataError(ValueError):
    """Bad dataset input: a missing or corrupt file, a wrong layout, an unknown name."""


class Sample(NamedTuple):
    image: torch.Tensor
    mask: torch.Tensor
    label: int
    defect_type: str
    path: str


@dataclass(frozen=True)
class Record:
    """One image of a dataset split, before any pixel is read."""

    image_path: Path
    label: int  # 0 good, 1 anomalous
    defect_type: str  # "good" or the defect name
    mask_path: Path | None = None  # None: all-zero mask (good images, or no mask shipped)
    category: str = ""
    split: str = ""
    #: False for an anomalous image shipped without a mask: its defect pixels are unknown (the
    #: sample's mask is all zeros) and the pixel metrics leave it out; good images are always known
    mask_known: bool = True


@dataclass(frozen=True)
class ImageTransform:
    """Resize (+ optional centre crop) applied identically to an image and its mask.

    ``resize``: int (square) or (H, W); None keeps the file's size.
    ``crop``: int (square) or (H, W) centre crop after resizing; None for no crop.
    ``normalize``: subtract ImageNet mean and divide by its std.
    ``resize_mode``: ``"squash"`` or ``"shorter_side"`` (module docstring, "Geometry"); with
    ``"shorter_side"`` an int ``resize`` is the shorter side's length (a pair is used as is).
    """

    resize: int | tuple[int, int] | None = 256
    crop: int | tuple[int, int] | None = None
    normalize: bool = True
    resize_mode: str = "squash"

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"ImageTransform resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")

    @staticmethod
    def _hw(size: int | Sequence[int]) -> tuple[int, int]:
        if isinstance(size, int):
            return (size, size)
        h, w = size
        return (int(h), int(w))

    def resized_hw(self, file_hw: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` after the resize (before the crop) of an image of ``file_hw``."""
        if self.resize is None:
            return (int(file_hw[0]), int(file_hw[1]))
        if self.resize_mode == "shorter_side" and isinstance(self.resize, int):
            h, w = int(file_hw[0]), int(file_hw[1])
            if h <= w:  # torchvision Resize(int): the longer side truncated
                return (self.resize, int(self.resize * w / h))
            return (int(self.resize * h / w), self.resize)
        return self._hw(self.resize)

    def geometry(self, img: Image.Image, resample: int) -> Image.Image:
        """Resize (``resample`` filter) and centre-crop a PIL image, as :meth:`image` and :meth:`mask` do."""
        if self.resize is not None:
            h, w = self.resized_hw((img.size[1], img.size[0]))
            if img.size != (w, h):
                img = img.resize((w, h), resample=resample)
        if self.crop is not None:
            ch, cw = self._hw(self.crop)
            w, h = img.size
            if ch > h or cw > w:
                raise DataError(f"crop {ch}x{cw} is larger than the resized image {h}x{w}")
            if self.resize_mode == "shorter_side":  # torchvision CenterCrop's offsets
                top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            else:
                top, left = (h - ch) // 2, (w - cw) // 2
            img = img.crop((left, top, left + cw, top + ch))
        return img

    def image(self, img: Image.Image) -> torch.Tensor:
        img = self.geometry(to_rgb(img), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0
        if self.normalize:
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            x = (x - mean) / std
        return x

    def mask(self, img: Image.Image) -> torch.Tensor:
        img = self.geometry(binary_mask(img), Image.NEAREST)
        m = np.asarray(img) > 0
        return torch.from_numpy(m.astype(np.float32))[None]

    def mask_resampled(self, img: Image.Image, rule: str = "nearest") -> np.ndarray:
        """A mask file through this geometry with resampling ``rule`` (:data:`MASK_RULES`): ``H x W``
        uint8 in {0, 1}. ``"nearest"`` equals :meth:`mask`; ``"bilinear_truncate"``: the 0/255
        ``L`` image resized bilinearly, anomalous where the result is 255; ``"bilinear_positive"``:
        the binary mask as a float ``F`` image (0/1) resized bilinearly, anomalous where > 0."""
        if rule == "nearest":
            return self.mask(img)[0].numpy().astype(np.uint8)
        if rule == "bilinear_truncate":
            out = np.asarray(self.geometry(binary_mask(img), Image.BILINEAR))
            return (out == 255).astype(np.uint8)
        if rule == "bilinear_positive":
            f = Image.fromarray((np.asarray(binary_mask(img)) > 0).astype(np.float32), mode="F")
            return (np.asarray(self.geometry(f, Image.BILINEAR)) > 0).astype(np.uint8)
        raise ValueError(f"mask rule must be one of {MASK_RULES}, got {rule!r}")

    def output_size(self, file_size_hw: tuple[int, int]) -> tuple[int, int]:
        if self.crop is not None:
            return self._hw(self.crop)
        return self.resized_hw(file_size_hw)


def released_mask_rule(dataset: str) -> str:
    """The mask resampling of the released GLASS loaders for ``dataset``: ``"bilinear_positive"``
    for VisA (``datasets/visa.py``), ``"bilinear_truncate"`` for every other dataset (MVTec AD, MPDD,
    WFDD and the MVTec-layout sets go through ``datasets/mvtec.py``)."""
    return "bilinear_positive" if dataset.lower() in _RELEASED_POSITIVE_MASKS else "bilinear_truncate"


def binary_mask(img: Image.Image) -> Image.Image:
    """A mask file as an ``L`` image with 0 (good) / 255 (anomalous): every non-zero value is anomalous.

    Masks do not all store 0/255: VisA stores per-pixel defect-class ids (1, 2, ...), some
    re-distributions store 0/1, others palette (``P``) images. Palette images are read by their
    index (a palette could map index 1 to black, which ``convert("L")`` would lose); colour masks
    count a pixel as anomalous when any colour channel is non-zero; 16-bit and float masks by value.
    """
    if img.mode in ("P", "PA"):
        arr = np.asarray(img.getchannel(0) if img.mode == "PA" else img)
    elif img.mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        arr = np.asarray(img.convert("RGB")).max(axis=-1)
    elif img.mode == "LA":
        arr = np.asarray(img.getchannel(0))
    else:  # 1, L, I, I;16*, F
        arr = np.asarray(img)
    return Image.fromarray(((arr > 0) * 255).astype(np.uint8))


def to_rgb(img: Image.Image) -> Image.Image:
    """An 8-bit RGB image of any PIL mode, converted by value.

    PIL's own ``convert("RGB")`` clips 16-bit and 32-bit grey values at 255 (a 16-bit PNG reads as
    pure white) and float images likewise. Here: 16-bit modes (``I;16*``) and ``I`` images whose
    values exceed 255 are scaled by 255 / 65535; float (``F``) images in [0, 1] are scaled by 255,
    others clipped to [0, 255]; palette images go through their palette; alpha is dropped (the
    colour channels are kept as stored); 1-bit and 8-bit grey are replicated to three channels."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if not np.isfinite(arr).all():
            raise DataError("float image holds NaN or inf values")
        if arr.min(initial=0) >= 0 and arr.max(initial=0) <= 1:
            arr = arr * 255.0
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("P", "PA"):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet normalisation (``... x 3 x H x W``), clamped to [0, 1] for display."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def open_image(path: Path, mode: str | None = None) -> Image.Image:
    """Open and fully decode an image (every loader reads through here); ``mode="RGB"`` converts
    by value (:func:`to_rgb`: 16-bit, float, palette, alpha). A missing, corrupt or truncated
    file, and a decompression bomb (more pixels than PIL's ``MAX_IMAGE_PIXELS`` allows), raise
    :class:`DataError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                if mode == "RGB":
                    return to_rgb(img)
                return img.convert(mode) if mode else img.copy()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"refused image {path}: {exc}") from exc
    except DataError as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def inside_root(root: Path, rel: str, where: str) -> Path:
    """``root / rel`` for a path read from a dataset's own index file (VisA's split CSV, DAGM's
    ``Labels.txt``), resolved and checked to stay inside ``root``: an absolute path or one that
    climbs out with ``..`` (or through a symbolic link) is refused, naming ``where`` (file and row)."""
    rel_path = Path(rel.replace("\\", "/"))
    base = Path(root).resolve()
    target = (base / rel_path).resolve()
    if rel_path.is_absolute() or not target.is_relative_to(base):
        raise DataError(f"{where}: path {rel!r} points outside the dataset folder {base}; refused")
    return Path(root) / rel_path


def check_category_split(path: Path, category: str, split: str, categories: list[str], splits) -> None:
    """Raise :class:`DataError` for a category not in ``categories`` or a split not in ``splits``."""
    if category not in categories:
        raise DataError(f"unknown category {category!r} in {path}; available: {', '.join(categories) or '(none)'}")
    if split not in splits:
        raise DataError(f"unknown split {split!r}; expected one of {tuple(splits)}")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped).

    Suffixes match case-insensitively (``.PNG``, ``.Jpg``, ``.TIF`` ...). A missing folder raises
    :class:`DataError` naming it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    suffixes = {s.lower() for s in IMAGE_SUFFIXES}
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith(".")
    )


@dataclass
class AnomalyDataset(torch.utils.data.Dataset):
    """A validated list of records read lazily through one transform.

    ``name``, ``category`` and ``split`` describe where the records came from; ``source`` is a
    free-text note shown wherever the data is used (e.g. "built-in texture bank, DTD stand-in").
    """

    records: list[Record]
    transform: ImageTransform = field(default_factory=ImageTransform)
    name: str = ""
    category: str = ""
    split: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.records:
            raise DataError(f"{self.name or 'dataset'}/{self.category}/{self.split}: no images found")

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> np.ndarray:
        return np.array([r.label for r in self.records], dtype=np.int64)

    @property
    def mask_known(self) -> np.ndarray:
        """Per record, whether its mask is known (bool, aligned with :attr:`labels`): False only for
        anomalous images shipped without a mask (:attr:`Record.mask_known`)."""
        return np.array([bool(getattr(r, "mask_known", True)) for r in self.records], dtype=bool)

    @property
    def defect_types(self) -> list[str]:
        return [r.defect_type for r in self.records]

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        img = open_image(rec.image_path)
        x = self.transform.image(img)
        if rec.mask_path is None:
            m = torch.zeros((1, *x.shape[-2:]), dtype=torch.float32)
        else:
            mask_img = open_image(rec.mask_path)
            if mask_img.size != img.size:
                raise DataError(
                    f"mask {rec.mask_path} is {mask_img.size[1]}x{mask_img.size[0]} but its image "
                    f"{rec.image_path} is {img.size[1]}x{img.size[0]}"
                )
            m = self.transform.mask(mask_img)
        return Sample(x, m, int(rec.label), rec.defect_type, str(rec.image_path))

    def masks(self, rule: str = "nearest") -> np.ndarray:
        """The ground-truth masks of every record, in order, resampled with ``rule``
        (:data:`MASK_RULES`): ``N x H x W`` uint8 in {0, 1}, zeros for records without a mask.
        ``"nearest"`` gives the masks a :class:`~adlib.models.Prediction` carries; the released rules
        read the mask files again (the predicted maps are not touched)."""
        out = []
        for rec in self.records:
            if rec.mask_path is None:
                img = open_image(rec.image_path)
                out.append(np.zeros(self.transform.output_size((img.size[1], img.size[0])), dtype=np.uint8))
                continue
            out.append(self.transform.mask_resampled(open_image(rec.mask_path), rule))
        return np.stack(out)

    def summary(self) -> dict[str, int]:
        """Count of images per defect type (``good`` included)."""
        out: dict[str, int] = {}
        for r in self.records:
            out[r.defect_type] = out.get(r.defect_type, 0) + 1
        return out


def read_csv_rows(
    csv_path: Path, columns, what: str, expected: str
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the ``(line number, row)`` pairs of a CSV with a header line (values
    stripped, a UTF-8 BOM accepted); :class:`DataError` naming ``what`` and the file when it cannot
    be read or lacks one of ``columns`` (``expected``: the header to show in that message)."""
    import csv

    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(
                    f"{what} {csv_path} lacks column(s) {', '.join(missing)}; expected header "
                    f"{expected} (found: {','.join(header) or '(empty file)'})"
                )
            reader.fieldnames = header
            # DictReader line numbers: the header is line 1
            rows = [
                (reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}) for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read {what} {csv_path}: {exc}") from exc
    return header, rows
