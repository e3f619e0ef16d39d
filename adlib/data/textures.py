"""Where synthetic-anomaly textures come from: DTD if present, else the built-in bank (said loudly).

:func:`texture_source` looks, in order, for

1. DTD under the data root (folder names of ``DATASETS["dtd"]``: ``dtd``, ``DTD``; or the data root
   itself when it is a DTD folder), layout ``images/<class>/*.jpg``;
2. the built-in texture bank that ``adlib data synth --out DATA_ROOT`` generates at
   ``<data_root>/builtin-textures/images/<class>/*`` (same layout). It is a procedural stand-in,
   NOT DTD: a WARNING is logged, ``is_stand_in`` is True and ``description`` says so, so results
   obtained with it are never mistaken for results with DTD.

If neither exists a :class:`DataError` says how to provide one. A DTD folder that exists but holds
no images is an error too (it is not silently replaced by the stand-in).

Texture handling shared by the synthesis modules lives here too (``adlib.synthesis`` imports from
``adlib.data``, never the reverse): :func:`to_uint8_image`, :class:`CachedTextures` and
:func:`draw_texture`, which draws the texture for one image the same way for GLASS LAS
(:mod:`adlib.synthesis.las`) and the DRAEM-style synthesis of ADL / POUTA
(:mod:`adlib.synthesis.draem`); what differs between them on purpose (the texture size before
augmentation, the augmentation) is given as arguments.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..paths import data_root
from . import DATASETS, dataset_dir
from . import dtd as _dtd
from .base import DataError, open_image

log = logging.getLogger(__name__)

BUILTIN_TEXTURES_DIRNAME = "builtin-textures"
STAND_IN_DESCRIPTION = "built-in texture bank (DTD stand-in, not DTD)"


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or a pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


#: how a texture is brought to its size before augmentation: both sides (``"squash"``, the project's
#: default) or the shorter side, aspect ratio kept (``"shorter_side"``, the released GLASS
#: ``transforms.Resize(int)`` of DTD textures, then the centre crop)
TEXTURE_RESIZE_MODES = ("squash", "shorter_side")


def texture_size(file_hw: tuple[int, int], size: int | Sequence[int], mode: str = "squash") -> tuple[int, int]:
    """``(H, W)`` a texture of ``file_hw`` is resized to: ``size`` itself (``"squash"``, or a pair), or
    with ``"shorter_side"`` and an int ``size`` the shorter side to ``size`` and the longer one to
    ``int(size * long / short)`` (torchvision's ``Resize(int)``)."""
    if mode not in TEXTURE_RESIZE_MODES:
        raise ValueError(f"texture resize mode must be one of {TEXTURE_RESIZE_MODES}, got {mode!r}")
    if mode == "squash" or not isinstance(size, int):
        return _hw(size)
    h, w = int(file_hw[0]), int(file_hw[1])
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


def to_uint8_image(img: Image.Image | torch.Tensor | np.ndarray) -> torch.Tensor:
    """A ``3 x H x W`` uint8 tensor from a PIL image, a uint8 tensor, or a float tensor in [0, 1]."""
    if isinstance(img, Image.Image):
        return TF.pil_to_tensor(img.convert("RGB"))
    t = torch.as_tensor(img)
    if t.dtype == torch.uint8:
        return t
    return (t.float().clamp(0, 1) * 255.0).round().to(torch.uint8)


@dataclass(frozen=True)
class TextureSource:
    """A list of texture images (``paths[i]`` of class ``classes[i]``) and where they came from."""

    paths: tuple[Path, ...]
    classes: tuple[str, ...]
    name: str
    is_stand_in: bool
    description: str

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int, size: int | tuple[int, int], mode: str = "squash") -> Image.Image:
        """Texture ``i`` as an RGB image resized (bilinear) to ``size`` (int: square, or (H, W));
        ``mode="shorter_side"`` with an int ``size``: the shorter side to ``size``, the aspect ratio
        kept (:func:`texture_size`)."""
        if not -len(self.paths) <= i < len(self.paths):
            raise IndexError(f"texture index {i} out of range for {len(self.paths)} textures ({self.name})")
        img = open_image(self.paths[i], "RGB")
        h, w = texture_size((img.size[1], img.size[0]), size, mode)
        if img.size != (w, h):
            img = img.resize((w, h), resample=Image.BILINEAR)
        return img


def _from_folder(folder: Path, name: str, is_stand_in: bool, description: str) -> TextureSource:
    items = _dtd.images(folder)
    if not items:
        raise DataError(f"texture folder {folder} holds no images (expected images/<class>/*.jpg)")
    paths, classes = zip(*items)
    return TextureSource(tuple(paths), tuple(classes), name, is_stand_in, description)


_WARNED: set[str] = set()


def texture_source(root: str | os.PathLike | None = None) -> TextureSource:
    """DTD under the data root, else the built-in texture bank (WARNING logged), else DataError."""
    base = data_root(root)
    try:
        folder = dataset_dir("dtd", root)
    except DataError:
        folder = None
    if folder is not None and folder.name != BUILTIN_TEXTURES_DIRNAME:
        return _from_folder(folder, "dtd", False, f"Describable Textures Dataset (DTD) at {folder}")
    # The root may be the bank folder itself; it is still the stand-in, never reported as DTD.
    bank = base if base.name == BUILTIN_TEXTURES_DIRNAME else base / BUILTIN_TEXTURES_DIRNAME
    if _dtd.looks_like(bank):
        # once per bank and process at WARNING (every model build calls this), then at INFO; at INFO
        # in the results store's worker processes (their parent warns, or the record names the source:
        # a notebook would otherwise print it once per worker)
        level = (
            logging.INFO if str(bank) in _WARNED or multiprocessing.parent_process() is not None else logging.WARNING
        )
        _WARNED.add(str(bank))
        log.log(
            level,
            "DTD not found under %s (looked for %s): using the %s at %s. Results with it are not "
            "comparable to papers that paste DTD textures.",
            base,
            ", ".join(DATASETS["dtd"].dirnames),
            STAND_IN_DESCRIPTION,
            bank,
        )
        return _from_folder(bank, BUILTIN_TEXTURES_DIRNAME, True, STAND_IN_DESCRIPTION)
    looked = ", ".join(str(base / d) for d in DATASETS["dtd"].dirnames)
    raise DataError(
        f"no texture source under data root {base}: DTD not found (looked for {looked}) and no built-in "
        f"texture bank at {bank}. Either download DTD (https://www.robots.ox.ac.uk/~vgg/data/dtd/) and "
        f"unpack it so that {base / 'dtd' / 'images'}/<class>/*.jpg exists, or generate the stand-in bank "
        f"with `adlib data synth --out DATA_ROOT` (DATA_ROOT = {base})."
    )


class CachedTextures:
    """A :class:`~adlib.data.textures.TextureSource` whose resized textures are kept (uint8, LRU)."""

    def __init__(self, source, max_items: int = 1024) -> None:
        self.source = source
        self.paths = source.paths
        self.max_items = max_items
        self._cache: OrderedDict[tuple[int, tuple[int, int]], torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self.source)

    def load(self, i: int, size, mode: str = "squash") -> torch.Tensor:
        hw = _hw(size) if mode == "squash" else size
        key = (int(i), hw) if mode == "squash" else (int(i), hw, mode)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        t = to_uint8_image(self.source.load(i, hw) if mode == "squash" else self.source.load(i, hw, mode))
        self._cache[key] = t
        if len(self._cache) > self.max_items:
            self._cache.popitem(last=False)
        return t


@dataclass
class DrawnTexture:
    """The texture drawn for one image by :func:`draw_texture`.

    ``image``: after the augmentation and the centre crop (dtype as ``augment`` returns it; uint8
    without ``augment``); ``raw``: the uint8 texture as loaded (or passed) and resized, before the
    augmentation; ``index`` and ``path``: the texture drawn from the source (None for a passed
    texture); ``augmentations`` and ``params``: what ``augment`` reported (empty without it).
    """

    image: torch.Tensor
    raw: torch.Tensor
    index: int | None = None
    path: str | None = None
    augmentations: list[str] = field(default_factory=list)
    params: list[dict] = field(default_factory=list)


TextureAugment = Callable[[torch.Tensor, torch.Generator], tuple]
"""``augment(uint8 3 x H x W texture, generator) -> (image, names, params)`` of :func:`draw_texture`."""


def draw_texture(
    textures: Any,
    image_size: int | Sequence[int],
    generator: torch.Generator,
    texture: Image.Image | torch.Tensor | np.ndarray | None = None,
    *,
    resize: int | Sequence[int] | None = None,
    augment: TextureAugment | None = None,
    owner: str = "the synthesizer",
    resize_mode: str = "squash",
) -> DrawnTexture:
    """The anomaly texture for one image of ``image_size`` (``(H, W)`` or an int).

    1. Without ``texture``: an index uniform over ``textures`` (one ``torch.randint`` draw from
       ``generator``; a :class:`TextureSource` or :class:`CachedTextures`), that texture loaded at
       the size ``resize`` (None: the image size; bilinear). With ``texture`` (PIL, uint8 tensor
       or float tensor in [0, 1]): that texture, resized to the same size (bilinear, antialiased)
       if it differs; nothing is drawn.
    2. ``augment(uint8 texture, generator)`` when given, right after (it draws from ``generator``).
    3. A centre crop to the image size when the size in 1. differs from it.

    What differs between the methods on purpose is given by the caller: GLASS LAS (released code)
    resizes to ``texture_resize`` (e.g. 329 before a 288 crop) and applies ``K_R = 3`` of its 9
    uint8 transforms; the DRAEM-style synthesis of ADL / POUTA loads at the image size and applies
    DRAEM's augmenters on [0, 1] floats (or none: POUTA). ``owner`` names the caller in the error
    raised when there is neither a non-empty ``textures`` nor a ``texture``. ``resize_mode``
    (:data:`TEXTURE_RESIZE_MODES`): ``"shorter_side"`` with an int ``resize`` brings the shorter side
    to ``resize`` (aspect ratio kept, :func:`texture_size`) before 2. and 3.
    """
    hw = _hw(image_size)
    size = _hw(resize) if resize is not None else hw
    index = path = None
    if texture is None:
        if textures is None or len(textures) == 0:
            raise ValueError(f"{owner} needs a texture source (textures=) or a texture= argument")
        index = int(torch.randint(len(textures), (), generator=generator))
        if resize_mode == "squash" or not isinstance(resize, int):
            img = to_uint8_image(textures.load(index, size))
        else:
            img = to_uint8_image(textures.load(index, resize, resize_mode))
        path = str(textures.paths[index])
    else:
        img = to_uint8_image(texture)
        if resize_mode != "squash" and isinstance(resize, int):
            size = texture_size(tuple(img.shape[-2:]), resize, resize_mode)
        if tuple(img.shape[-2:]) != size:
            img = TF.resize(img, list(size), interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    raw = img
    names: list[str] = []
    params: list[dict] = []
    if augment is not None:
        img, names, params = augment(img, generator)
    if tuple(img.shape[-2:]) != hw:
        img = TF.center_crop(img, list(hw))
    return DrawnTexture(img, raw, index, path, list(names), list(params))


__all__ = [
    "BUILTIN_TEXTURES_DIRNAME",
    "CachedTextures",
    "DrawnTexture",
    "STAND_IN_DESCRIPTION",
    "TEXTURE_RESIZE_MODES",
    "TextureAugment",
    "TextureSource",
    "draw_texture",
    "texture_size",
    "texture_source",
    "to_uint8_image",
]
