"""Figures shared by the notebooks: sample grids with mask overlays, and saving in PNG + PDF.

Notebooks stay thin: they call these functions and :func:`save_figure`, which writes
``figures/<subdir>/<name>.png`` and ``.pdf`` with fixed metadata (no timestamps), so reruns
produce the same files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .data.base import AnomalyDataset, denormalize
from .paths import figures_dir

log = logging.getLogger(__name__)


def to_display(image) -> np.ndarray:
    """A ``3 x H x W`` tensor (normalised or in [0, 1]) or ``H x W x 3`` array -> ``H x W x 3`` floats in [0, 1]."""
    import torch

    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        if x.min() < 0 or x.max() > 1:
            x = denormalize(x)
        return x.permute(1, 2, 0).numpy()
    arr = np.asarray(image)
    return arr / 255.0 if arr.dtype == np.uint8 else arr


def overlay_mask(ax, image, mask, color=(1.0, 0.1, 0.1), alpha: float = 0.45) -> None:
    """Draw ``image`` with the pixels of ``mask`` tinted and outlined."""
    img = to_display(image)
    m = np.asarray(mask.squeeze() if hasattr(mask, "squeeze") else mask) > 0
    ax.imshow(img)
    if m.any():
        tint = np.zeros((*m.shape, 4))
        tint[m] = (*color, alpha)
        ax.imshow(tint)
        ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=0.8)
    ax.set_xticks([])
    ax.set_yticks([])


def pick_examples(ds: AnomalyDataset, n_good: int, n_defect: int, seed: int = 0) -> list[int]:
    """Indices of ``n_good`` good images and up to ``n_defect`` defective ones spread over defect types."""
    rng = np.random.default_rng(seed)
    good = [i for i, r in enumerate(ds.records) if r.label == 0]
    by_type: dict[str, list[int]] = {}
    for i, r in enumerate(ds.records):
        if r.label == 1:
            by_type.setdefault(r.defect_type, []).append(i)
    picked = list(rng.choice(good, size=min(n_good, len(good)), replace=False)) if good else []
    types = sorted(by_type)
    k = 0
    while types and len(picked) < n_good + n_defect and any(by_type.values()):
        t = types[k % len(types)]
        if by_type[t]:
            picked.append(by_type[t].pop(int(rng.integers(len(by_type[t])))))
        k += 1
        if k > 10 * (n_defect + 1):
            break
    return [int(i) for i in picked]


def sample_grid(rows: Sequence[tuple[str, AnomalyDataset, list[int]]], cell: float = 1.6):
    """One row per ``(row_title, dataset, indices)``, each cell an image with its mask overlaid."""
    ncols = max(len(idx) for _, _, idx in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(cell * ncols, cell * len(rows)), squeeze=False)
    for r, (title, ds, idx) in enumerate(rows):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(idx):
                ax.axis("off")
                continue
            s = ds[idx[c]]
            overlay_mask(ax, s.image, s.mask)
            ax.set_title(s.defect_type, fontsize=7)
        axes[r, 0].set_ylabel(title, fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(
    fig, name: str, subdir: str | None = None, formats: Sequence[str] = ("png", "pdf"), dpi: int = 110
) -> list[Path]:
    """Write ``fig`` to ``figures/<subdir>/<name>.<fmt>`` for each format; returns the paths."""
    from .rehearsal import stamp_figure

    out = []
    d = figures_dir(subdir)
    stamp_figure(fig)
    for fmt in formats:
        p = d / f"{name}.{fmt}"
        meta = {"Software": None} if fmt == "png" else {"Creator": None, "Producer": None, "CreationDate": None}
        fig.savefig(p, dpi=dpi, bbox_inches="tight", metadata=meta)
        out.append(p)
    log.info("saved %s", ", ".join(str(p) for p in out))
    return out


def score_histograms(
    panels: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 20, ncols: int = 4, cell: float = 2.4
):
    """GLASS Fig. 5 style: one panel per ``title -> (image_scores, labels)``; normal scores in
    green, anomalous in red, on a shared bin grid per panel (scores min-max scaled per panel)."""
    n = len(panels)
    ncols = min(ncols, n) or 1
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * 0.8 * nrows), squeeze=False)
    for ax, (title, (scores, labels)) in zip(axes.flat, panels.items()):
        s = np.asarray(scores, dtype=float)
        lab = np.asarray(labels).astype(bool)
        lo, hi = float(s.min()), float(s.max())
        s = (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)
        edges = np.linspace(0, 1, bins + 1)
        ax.hist(s[~lab], bins=edges, color="tab:green", alpha=0.6, label="normal")
        ax.hist(s[lab], bins=edges, color="tab:red", alpha=0.6, label="anomalous")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def qualitative_grid(rows: Sequence[dict], cell: float = 1.5):
    """GLASS Fig. 6/7 style. Each row: ``{"title", "image", "mask", "maps": {name: map}}``;
    columns: the image, the ground truth overlaid, then each method's map (bilinearly resized to
    the image when its resolution differs, min-max scaled per map, jet colour map, over the
    image)."""
    from .metrics import resize_maps

    names = list(dict.fromkeys(n for r in rows for n in r["maps"]))
    ncols = 2 + len(names)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(cell * ncols, cell * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        img = to_display(r["image"])
        axes[i, 0].imshow(img)
        overlay_mask(axes[i, 1], r["image"], r["mask"])
        for j, name in enumerate(names, start=2):
            ax = axes[i, j]
            m = r["maps"].get(name)
            if m is not None:
                m = np.asarray(m, dtype=float)
                if m.shape != img.shape[:2]:
                    m = resize_maps(m.astype(np.float32), img.shape[:2]).astype(float)
                m = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else np.zeros_like(m)
                ax.imshow(img)
                ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                ax.set_title(name, fontsize=8)
        axes[i, 0].set_ylabel(r.get("title", ""), fontsize=7)
        if i == 0:
            axes[i, 0].set_title("image", fontsize=8)
            axes[i, 1].set_title("ground truth", fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


#: the t-SNE pictures' default styles: group -> (colour, marker)
TSNE_STYLES = {
    0: ("tab:blue", "o"),
    1: ("tab:red", "o"),
    "normal": ("tab:green", "o"),
    "LAS": ("tab:gray", "^"),
    "GN": ("tab:pink", "D"),
    "GAS": ("tab:blue", "s"),
}


def tsne_embedding(points: np.ndarray, perplexity: float = 30, seed: int = 0) -> np.ndarray:
    """2-D t-SNE of ``N x D`` points (scikit-learn, PCA initialisation, ``seed``; the perplexity is
    lowered to ``N - 1`` for small sets), the embedding of every t-SNE figure of the papers
    (GLASS Fig. 1, POUTA Figs. 2 / 8 / 10, ADTR Fig. 5)."""
    from sklearn.manifold import TSNE

    points = np.asarray(points)
    perplexity = min(float(perplexity), max(1.0, len(points) - 1.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)


def tsne_scatter(ax, xy: np.ndarray, groups, names: dict | None = None, styles: dict | None = None, size: float = 6):
    """Scatter a t-SNE embedding on ``ax`` by group (``groups[i]`` the group of point ``i``; one
    legend entry per group, named by ``names`` when given, coloured by ``styles`` or
    :data:`TSNE_STYLES`), without ticks."""
    styles = {**TSNE_STYLES, **(styles or {})}
    groups = np.asarray(groups)
    for g in dict.fromkeys(groups.tolist()):
        colour, marker = styles.get(g, (None, "o"))
        sel = groups == g
        ax.scatter(xy[sel, 0], xy[sel, 1], s=size, c=colour, marker=marker, alpha=0.7, label=(names or {}).get(g, g))
    ax.set_xticks([])
    ax.set_yticks([])
    return ax
