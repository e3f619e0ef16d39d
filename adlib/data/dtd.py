"""DTD (Describable Textures Dataset) as a texture source, not an anomaly dataset.

::

    <root>/images/<class>/*.jpg        (47 classes: banded, blotchy, ..., zigzagged)
    <root>/labels/, <root>/imdb/       (official splits; not used)

DTD feeds the synthetic-anomaly generators (texture pasted into a normal image under a noise
mask), so there is no ``index`` for train/test splits and :func:`adlib.data.get_dataset` refuses
``dtd``; use :func:`adlib.data.textures.texture_source`. Every image of every class is used (the
official DTD splits are irrelevant to texture pasting). Hidden files and non-image files found in
the class folders (the archive carries a stray ``.directory`` file) are skipped. An archive
unpacked one level deeper (``<root>/dtd/images``) is accepted too.

The same layout is used by the built-in texture bank that ``adlib data synth`` generates at
``<data_root>/builtin-textures`` (a stand-in when DTD is absent), so these functions read both.
"""

from __future__ import annotations

from pathlib import Path

from .base import DataError, list_images


def images_dir(path: Path) -> Path:
    """``<path>/images``, or ``<path>/dtd/images`` when the archive unpacked one level deeper."""
    path = Path(path)
    if not (path / "images").is_dir() and (path / "dtd" / "images").is_dir():
        return path / "dtd" / "images"
    return path / "images"


def looks_like(path: Path) -> bool:
    """True if ``path`` holds ``images/<class>/`` folders."""
    d = images_dir(Path(path))
    return d.is_dir() and any(c.is_dir() for c in d.iterdir())


def categories(path: Path) -> list[str]:
    """The texture classes: ``images/<class>`` folders holding at least one image."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"texture folder not found: {path}")
    d = images_dir(path)
    if not d.is_dir():
        raise DataError(f"texture folder {path} has no images/ sub-folder (expected images/<class>/*.jpg)")
    return sorted(c.name for c in d.iterdir() if c.is_dir() and not c.name.startswith(".") and list_images(c))


def images(path: Path) -> list[tuple[Path, str]]:
    """Every texture image under ``path`` with its class, sorted by class then file name."""
    d = images_dir(Path(path))
    return [(p, cls) for cls in categories(path) for p in list_images(d / cls)]
