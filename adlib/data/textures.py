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
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..paths import data_root
from . import DATASETS, dataset_dir
from . import dtd as _dtd
from .base import DataError, open_image

log = logging.getLogger(__name__)

BUILTIN_TEXTURES_DIRNAME = "builtin-textures"
STAND_IN_DESCRIPTION = "built-in texture bank (DTD stand-in, not DTD)"


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

    def load(self, i: int, size: int | tuple[int, int]) -> Image.Image:
        """Texture ``i`` as an RGB image resized (bilinear) to ``size`` (int: square, or (H, W))."""
        if not -len(self.paths) <= i < len(self.paths):
            raise IndexError(f"texture index {i} out of range for {len(self.paths)} textures ({self.name})")
        h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        img = open_image(self.paths[i], "RGB")
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
        # once per bank and process at WARNING (every model build calls this), then at INFO
        level = logging.INFO if str(bank) in _WARNED else logging.WARNING
        _WARNED.add(str(bank))
        log.log(
            level,
            "DTD not found under %s (looked for %s): using the %s at %s. Results with it are not "
            "comparable to papers that paste DTD textures.",
            base, ", ".join(DATASETS["dtd"].dirnames), STAND_IN_DESCRIPTION, bank,
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

    def load(self, i: int, size) -> torch.Tensor:
        from ..synthesis.las import to_uint8_image  # (import here: synthesis imports data)

        hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        key = (int(i), hw)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        t = to_uint8_image(self.source.load(i, hw))
        self._cache[key] = t
        if len(self._cache) > self.max_items:
            self._cache.popitem(last=False)
        return t


__all__ = ["BUILTIN_TEXTURES_DIRNAME", "CachedTextures", "STAND_IN_DESCRIPTION", "TextureSource", "texture_source"]
