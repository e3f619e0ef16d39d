"""Weak-defect test sets in the manner of GLASS's MAD-sys.

GLASS (Sec. 4.1) builds MAD-sys from the five MVTec AD texture categories with its LAS blend
(Eq. 4) at ``beta`` in {0.1, 0.3, 0.5, 0.7}; no construction code is public. Here the same is
done for the texture categories of any MVTec-layout dataset and written out in that layout, one
dataset folder per ``beta``::

    <out>/beta_0.1/<category>/train/good/...          (the source's training images, copied)
    <out>/beta_0.1/<category>/test/good/...
    <out>/beta_0.1/<category>/test/synthetic/NNN.png
    <out>/beta_0.1/<category>/ground_truth/synthetic/NNN_mask.png
    <out>/beta_0.3/...
    <out>/manifest.json

Choices (the paper leaves them open):

- The source test/good images of each category are split deterministically (by a seeded
  permutation) into two halves: one half stays ``good``, the other half receives one synthetic
  defect each, so no image appears both as good and (altered) as defective.
- Each defect is :class:`~adlib.synthesis.las.LocalAnomalySynthesizer`'s mask (two Perlin masks
  combined by Eq. 3) and augmented texture, blended in [0, 1] image space with Eq. 4 at a *fixed*
  ``beta``. The mask and the texture of a given image are the same for every ``beta`` (the
  generator is re-seeded per image), so the subsets differ only in how weak the defect is:
  larger ``beta`` keeps more of the normal image, i.e. a weaker defect.
- Texture categories are taken from :data:`adlib.synthesis.foreground.TEXTURE_CATEGORIES` for
  known datasets, or given explicitly; no foreground mask is used (textures are all surface).
- Images keep their source resolution; masks are 0/255 PNGs.

Like MAD-sys, these sets are for *testing* a model trained on the source's normal images. The
manifest records the source, the texture source (DTD or the built-in stand-in), seed and betas.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data import list_categories
from ..data.base import DataError, list_images, open_image
from ..data.textures import TextureSource
from .foreground import TEXTURE_CATEGORIES
from .las import LocalAnomalySynthesizer

log = logging.getLogger(__name__)

MAD_SYS_BETAS = (0.1, 0.3, 0.5, 0.7)
DEFECT_NAME = "synthetic"


def weak_defect(
    image: torch.Tensor, textures: TextureSource, beta: float, seed: int, grid: int = 36
) -> tuple[torch.Tensor, torch.Tensor]:
    """One weak defect on a ``3 x H x W`` image in [0, 1]: GLASS Eq. 3 mask, Eq. 4 blend at ``beta``.

    The same ``seed`` gives the same mask and texture whatever ``beta`` is.
    Returns ``(defective image in [0, 1], bool H x W mask)``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    las = LocalAnomalySynthesizer(
        image_size=tuple(image.shape[-2:]),
        grid=grid,
        beta_mean=beta,
        beta_std=0.0,
        beta_low=0.0,
        beta_high=1.0,
        textures=textures,
        use_foreground=False,
        normalized=False,
    )
    g = torch.Generator().manual_seed(int(seed))
    x_plus, mask, _, info = las(image, g)
    if abs(float(info["beta"]) - beta) > 1e-6:
        raise AssertionError(f"LAS drew beta {info['beta']} instead of the fixed {beta}")
    return x_plus.clamp(0, 1), mask.bool().reshape(image.shape[-2:])


def _save_png(arr: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)


def write_weak_defect_sets(
    source: str | os.PathLike,
    out: str | os.PathLike,
    textures: TextureSource,
    *,
    dataset: str = "mvtec",
    categories: Sequence[str] | None = None,
    betas: Sequence[float] = MAD_SYS_BETAS,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Write one MVTec-layout weak-defect dataset per ``beta`` under ``out`` (see module docstring).

    ``source`` is an MVTec-layout dataset folder; ``dataset`` names it (to pick its texture
    categories when ``categories`` is None). Returns the manifest, also written to
    ``out/manifest.json`` last, so a folder without it is an interrupted run.
    """
    source, out = Path(source), Path(out)
    if categories is None:
        known = TEXTURE_CATEGORIES.get(dataset)
        if known is None:
            raise DataError(f"no texture-category list for dataset {dataset!r}: pass categories=[...]")
        categories = [c for c in list_categories(dataset, source) if c in known]
        if not categories:
            raise DataError(f"no texture categories of {dataset!r} ({', '.join(sorted(known))}) found in {source}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for cat in tqdm(list(categories), desc="weak-defect sets", disable=not progress):
        good_dir = source / cat / "test" / "good"
        train_dir = source / cat / "train" / "good"
        if not good_dir.is_dir():
            raise DataError(f"source category has no test/good folder: {good_dir}")
        goods = list_images(good_dir)
        if len(goods) < 2:
            raise DataError(f"need at least 2 good test images in {good_dir}, found {len(goods)}")
        perm = np.random.default_rng([seed, sum(map(ord, cat))]).permutation(len(goods))
        to_defect = sorted(perm[: len(goods) // 2])
        keep_good = sorted(perm[len(goods) // 2 :])
        for beta in betas:
            root = out / f"beta_{beta:g}" / cat
            if root.exists():
                shutil.rmtree(root)
            for sub in ("train/good", "test/good", f"test/{DEFECT_NAME}", f"ground_truth/{DEFECT_NAME}"):
                (root / sub).mkdir(parents=True)
            for p in list_images(train_dir):
                shutil.copy2(p, root / "train" / "good" / p.name)
            for i in keep_good:
                shutil.copy2(goods[i], root / "test" / "good" / goods[i].name)
            for i in to_defect:
                img = open_image(goods[i], "RGB")
                x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
                x_plus, mask = weak_defect(x, textures, beta, seed=seed * 100003 + int(i) * 7919 + sum(map(ord, cat)))
                arr = (x_plus.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
                stem = goods[i].stem
                _save_png(arr, root / "test" / DEFECT_NAME / f"{stem}.png")
                _save_png(
                    (mask.numpy() * 255).astype(np.uint8), root / "ground_truth" / DEFECT_NAME / f"{stem}_mask.png"
                )
        counts[cat] = {"test_good": len(keep_good), "test_defective": len(to_defect)}
    manifest = {
        "kind": "weak-defect sets (MAD-sys manner, GLASS Eq. 4 at fixed beta)",
        "source": str(source),
        "dataset": dataset,
        "betas": [float(b) for b in betas],
        "seed": seed,
        "texture_source": textures.description,
        "texture_is_stand_in": textures.is_stand_in,
        "categories": counts,
    }
    tmp = out / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / "manifest.json")
    log.info("weak-defect sets for %d categories x %d betas written to %s", len(counts), len(betas), out)
    return manifest
