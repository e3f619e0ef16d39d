"""Locally aware patch features, shared by GLASS, SimpleNet and PatchCore.

The three methods describe every position of a backbone feature map by its ``p x p``
neighbourhood (PatchCore Sec. 3.1; GLASS Sec. 3.1 "neighborhood size p = 3"). What the papers
leave open is fixed by the released code, which the three share (implementation-notes.md, GLASS
"Features and adaptor"):

1. each requested layer is unfolded into ``p x p`` patches (stride 1, zero padding ``p // 2``),
   giving ``C * p * p`` values per position, channel-major (:func:`unfold_patches`);
2. deeper layers are bilinearly up-sampled (``align_corners=False``) to the grid of the first
   (shallowest) requested layer, patch values and all;
3. each layer's ``C * p * p`` vector is 1-D adaptive-average-pooled to ``pretrain_embed_dim``;
4. the layers' pooled vectors are concatenated and pooled again to ``target_embed_dim``
   (:func:`reduce_dims`).

On the fast path ``features`` (:mod:`adlib.fastpath`, opt-in) the same linear map is computed
in another order (:func:`reduce_grid`), the same numbers up to float rounding (summation order,
about 1e-7 relative): both poolings average over index ranges, so together with the unfold they
are one fixed ``p x p`` filter per layer (:func:`reduction_matrices`), and that filter (over
channels) commutes with the bilinear up-sampling (over positions). Each layer is therefore
filtered on its own grid by one grouped convolution (:func:`fused_layers`: each output dimension
reads a few adjacent channels; WideResNet-50 layer2 + layer3 at 1024-D is depthwise on layer2 and
pairs of channels on layer3) and up-sampled after, never forming layer3's 9216 unfolded values per
position nor the permuted copies of the released order. The fp32 default keeps the released order
(the recorded numbers are pinned to it).

For WideResNet-50 layer2 + layer3 at 288 px this gives a 36 x 36 grid of 1536-D features whose
first 768 values average blocks of 6 of layer2's 4608 patch values and the last 768 blocks of 12
of layer3's 9216. That is the released reduction, not a spatial average followed by a concat.

Export (:mod:`adlib.export`): the ONNX exporter has no adaptive average pooling of a dynamic number
of rows, nor one whose sizes do not divide (PatchCore's 4608 -> 1024), so while an ONNX export traces
the module (``torch.onnx.is_in_onnx_export()``) each pooling is written in plain operations
(:func:`export_pool`: a reshaped mean, or a gather of the windows); otherwise the code path is the
plain pooling. (A dense averaging matrix would do it too, but weighs 100 MB at the paper's sizes.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import FeatureExtractor


def unfold_patches(f: torch.Tensor, patch_size: int = 3) -> torch.Tensor:
    """``B x C x H x W`` -> ``B x (C * p * p) x H x W``: each position's ``p x p`` neighbourhood.

    Stride 1, zero padding ``p // 2``; values ordered channel-major (all of channel 0's ``p * p``
    neighbours, then channel 1's, ...), as ``torch.nn.functional.unfold`` orders them.
    """
    if patch_size % 2 != 1:
        raise ValueError(f"patch_size must be odd, got {patch_size}")
    b, c, h, w = f.shape
    u = F.unfold(f, kernel_size=patch_size, padding=patch_size // 2, stride=1)
    return u.view(b, c * patch_size * patch_size, h, w)


def adaptive_pool_table(length: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of ``adaptive_avg_pool1d`` from ``length`` to ``size`` as a gather table: indices
    ``size x K`` (``K`` the longest window; output ``i`` averages positions
    ``floor(i * length / size) .. ceil((i + 1) * length / size) - 1``, shorter windows padded with
    their last index) and weights ``size x K`` (``1 / window length``, 0 on the padding)."""
    starts = [(i * length) // size for i in range(size)]
    ends = [-((-(i + 1) * length) // size) for i in range(size)]
    k = max(e - b for b, e in zip(starts, ends))
    idx = np.zeros((size, k), dtype=np.int64)  # NumPy: constants of a traced graph, not traced ops
    w = np.zeros((size, k), dtype=np.float32)
    for i, (b, e) in enumerate(zip(starts, ends)):
        idx[i] = np.minimum(np.arange(b, b + k), e - 1)
        w[i, : e - b] = 1.0 / (e - b)
    return torch.from_numpy(idx), torch.from_numpy(w)


def export_pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """``adaptive_avg_pool1d`` of the rows of ``x`` (``N x L`` -> ``N x size``) in operations an ONNX
    graph holds: the mean of ``L / size`` consecutive values when ``size`` divides ``L`` (GLASS's
    4608 -> 1536), else a gather of the windows (:func:`adaptive_pool_table`, an ``N x size x K``
    intermediate) and their weighted sum (PatchCore's 4608 -> 1024)."""
    length = int(x.shape[-1])
    if length % size == 0:
        return x.reshape(-1, size, length // size).mean(-1)
    idx, w = adaptive_pool_table(length, size)
    return (x[:, idx] * w.to(x)).sum(-1)


def _pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """``adaptive_avg_pool1d`` of the rows of ``x`` (``N x L`` -> ``N x size``); :func:`export_pool`
    while an ONNX export traces (module docstring)."""
    if torch.onnx.is_in_onnx_export():
        return export_pool(x, size)
    return F.adaptive_avg_pool1d(x.unsqueeze(1), size).squeeze(1)


def reduce_dims(per_layer: list[torch.Tensor], pretrain_embed_dim: int, target_embed_dim: int) -> torch.Tensor:
    """Released two-stage reduction: each ``N x D_l`` to ``pretrain_embed_dim``, stacked, then to ``target_embed_dim``."""
    pooled = [_pool(x, pretrain_embed_dim) for x in per_layer]
    return _pool(torch.stack(pooled, dim=1).flatten(1), target_embed_dim)


def _adaptive_bins(n_in: int, n_out: int) -> list[tuple[int, int]]:
    """The input ranges ``[start, end)`` of ``adaptive_avg_pool1d(n_in -> n_out)``'s outputs."""
    return [((i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


def reduction_matrices(in_dims: list[int], pretrain_embed_dim: int, target_embed_dim: int) -> list[torch.Tensor]:
    """The released two-stage reduction (:func:`reduce_dims`) as one linear
    map per layer: ``A_l`` (``target x in_dims[l]``, float64) with ``reduce_dims(xs) = sum_l xs[l] @ A_l.T``
    (both stages are averages over index ranges, so their composition is linear)."""
    stage1 = _adaptive_bins  # per layer: in_dims[l] -> pretrain
    stage2 = _adaptive_bins(len(in_dims) * pretrain_embed_dim, target_embed_dim)
    mats = []
    for li, n_in in enumerate(in_dims):
        A = torch.zeros(target_embed_dim, n_in, dtype=torch.float64)
        bins1 = stage1(n_in, pretrain_embed_dim)
        for o, (s2, e2) in enumerate(stage2):
            for j in range(max(s2, li * pretrain_embed_dim), min(e2, (li + 1) * pretrain_embed_dim)):
                s1, e1 = bins1[j - li * pretrain_embed_dim]
                A[o, s1:e1] += 1.0 / ((e2 - s2) * (e1 - s1))
        mats.append(A)
    return mats


@dataclass
class FusedLayer:
    """One layer's share of the fused patch features: a grouped convolution (``weight``:
    ``n_out x G x p x p``, ``groups``) whose output channels add into the feature dimensions ``rows``."""

    weight: torch.Tensor
    groups: int
    rows: torch.Tensor


def fused_layers(
    channels: list[int], patch_size: int, pretrain_embed_dim: int, target_embed_dim: int
) -> list[FusedLayer]:
    """The released locally aware patch features (:class:`PatchFeatures`:
    unfold ``p x p``, up-sample to the first layer's grid, pool twice) written as one grouped
    ``p x p`` convolution per layer, before the up-sampling (the up-sampling acts on positions and
    the pooling on channels, so they commute). Each output dimension of a layer averages the
    neighbourhoods of a few adjacent channels; the smallest channel group ``G`` (a divisor of
    ``C``) that holds every output's channels, with the same number of outputs per group, gives
    the grouped convolution (``G = C``, a dense one, always qualifies). WideResNet-50 layer2 +
    layer3 at 1024-D: ``G = 1`` for layer2 (512 depthwise filters), ``G = 2`` for layer3."""
    p2 = patch_size * patch_size
    mats = reduction_matrices([c * p2 for c in channels], pretrain_embed_dim, target_embed_dim)
    out = []
    for C, A in zip(channels, mats):
        A = A.view(target_embed_dim, C, p2)
        used = (A != 0).any(dim=2)  # target x C: which channels each output reads
        rows = torch.nonzero(used.any(dim=1))[:, 0]
        lo = torch.tensor([int(torch.nonzero(used[r])[0, 0]) for r in rows])
        hi = torch.tensor([int(torch.nonzero(used[r])[-1, 0]) for r in rows])
        for G in (g for g in range(1, C + 1) if C % g == 0):
            if not torch.equal(lo // G, hi // G):
                continue
            grp = lo // G
            counts = torch.bincount(grp, minlength=C // G)
            if (counts == counts[0]).all() and bool((grp[1:] >= grp[:-1]).all()):
                break
        n_groups = C // G
        w = torch.stack([A[r, int(g) * G : (int(g) + 1) * G] for r, g in zip(rows, grp)])
        out.append(FusedLayer(w.view(len(rows), G, patch_size, patch_size).float(), n_groups, rows))
    return out


def reduce_grid(
    layers: list[torch.Tensor],
    patch_size: int,
    pretrain_embed_dim: int,
    target_embed_dim: int,
    fused: list[FusedLayer] | None = None,
) -> torch.Tensor:
    """The locally aware patch features ``B x h x w x target_embed_dim`` of backbone maps ``layers``
    (``B x C_l x h_l x w_l``, the first the finest) in the grid order of the module docstring:
    each layer filtered by its grouped convolution (``fused``: :func:`fused_layers` of the layers'
    channels, made here when None) on its own grid, up-sampled to the first layer's grid, summed
    into its output dimensions. The released order's numbers up to float round-off."""
    if patch_size % 2 != 1:
        raise ValueError(f"patch_size must be odd, got {patch_size}")
    if fused is None:
        fused = fused_layers([f.shape[1] for f in layers], patch_size, pretrain_embed_dim, target_embed_dim)
    b, _, h, w = layers[0].shape
    out = torch.zeros(b, target_embed_dim, h, w, device=layers[0].device, dtype=torch.float32)
    for f, layer in zip(layers, fused):
        y = F.conv2d(f.float(), layer.weight.to(f.device), padding=patch_size // 2, groups=layer.groups)
        if y.shape[-2:] != (h, w):
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        out.index_add_(1, layer.rows.to(f.device), y)
    return out.permute(0, 2, 3, 1).contiguous()


class PatchFeatures(nn.Module):
    """Frozen backbone + locally aware patch features: images -> ``B x h x w x D``.

    ``backbone`` is a :class:`adlib.backbones.FeatureExtractor` (frozen). The output grid is that
    of the first layer in ``backbone.info.layers``. Runs without gradients.
    """

    def __init__(
        self,
        backbone: FeatureExtractor,
        patch_size: int = 3,
        pretrain_embed_dim: int = 1536,
        target_embed_dim: int = 1536,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.patch_size = patch_size
        self.pretrain_embed_dim = pretrain_embed_dim
        self.target_embed_dim = target_embed_dim

    @property
    def dim(self) -> int:
        return self.target_embed_dim

    def _fused(self, layers: list[torch.Tensor]) -> list[FusedLayer]:
        """:func:`fused_layers` of these layers' channels on their device, made once."""
        key = (tuple(f.shape[1] for f in layers), str(layers[0].device))
        cache = self.__dict__.setdefault("_fused_cache", {})
        if key not in cache:
            made = fused_layers(list(key[0]), self.patch_size, self.pretrain_embed_dim, self.target_embed_dim)
            dev = layers[0].device
            cache[key] = [FusedLayer(x.weight.to(dev), x.groups, x.rows.to(dev)) for x in made]
        return cache[key]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        layers = list(feats.values())
        speed = getattr(self.backbone, "_speed", None)
        if speed is not None and speed.features:  # the fast path adlib.fastpath "features": the grid order
            return reduce_grid(
                layers, self.patch_size, self.pretrain_embed_dim, self.target_embed_dim, self._fused(layers)
            )
        b, _, h, w = layers[0].shape
        per_layer = []
        for f in layers:
            u = unfold_patches(f, self.patch_size)
            if u.shape[-2:] != (h, w):
                u = F.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
            per_layer.append(u.permute(0, 2, 3, 1).reshape(b * h * w, -1))
        out = reduce_dims(per_layer, self.pretrain_embed_dim, self.target_embed_dim)
        return out.view(b, h, w, self.target_embed_dim)
