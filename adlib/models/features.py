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

On the fast path ``features`` (:mod:`adlib.fastpath`, opt-in) the same reduction is computed
in another order (:func:`reduce_grid`), the same numbers up to float rounding: the adaptive pooling
over a position's values is a linear map over channels (block means when the sizes divide, as in
every configuration of the papers; else one matrix product), which commutes with the bilinear
up-sampling (the same linear map in space for every channel), so each layer is pooled on its own
grid first and up-sampled after, and nothing is permuted before the last, small result. At 288 px, batch 8, this skips up-sampling layer3's 9216 unfolded values per
position (pooled to 768 first) and two permuted copies of 48 M and 96 M values; the fp32 path keeps
the released order (its numbers are pinned).

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


def pool_matrix(d: int, p: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``p x d``: 1-D adaptive average pooling of ``d`` values to ``p`` as a matrix (row ``i``
    averages values ``floor(i d / p)`` to ``ceil((i + 1) d / p) - 1``, as ``adaptive_avg_pool1d``)."""
    i = torch.arange(p)
    start, end = (i * d) // p, ((i + 1) * d + p - 1) // p
    j = torch.arange(d)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return (inside / (end - start)[:, None]).to(device=device, dtype=dtype)


def _pool_channels(x: torch.Tensor, p: int) -> torch.Tensor:
    """``B x d x n`` -> ``B x p x n``: adaptive average pooling over the channels (block means when
    ``p`` divides ``d``, else one matrix product with :func:`pool_matrix`)."""
    b, d, n = x.shape
    if d % p == 0:
        return x.view(b, p, d // p, n).mean(2)
    return torch.matmul(pool_matrix(d, p, x.device, x.dtype), x)


def reduce_grid(layers: list[torch.Tensor], patch_size: int, pretrain_embed_dim: int, target_embed_dim: int):
    """The locally aware patch features ``B x h x w x target_embed_dim`` of backbone maps ``layers``
    (``B x C_l x h_l x w_l``, the first the finest), reduced in the grid order of the module
    docstring: each layer's ``p x p`` patches pooled to ``pretrain_embed_dim`` on its own grid,
    then up-sampled to the first layer's grid, concatenated, pooled to ``target_embed_dim``. The
    released order's numbers up to float rounding (pooling over channels and up-sampling in space
    are linear maps on different axes, so they commute)."""
    if patch_size % 2 != 1:
        raise ValueError(f"patch_size must be odd, got {patch_size}")
    b, _, h, w = layers[0].shape
    pooled = []
    for f in layers:
        hl, wl = f.shape[-2:]
        u = F.unfold(f, kernel_size=patch_size, padding=patch_size // 2, stride=1)  # B x (C p p) x (hl wl)
        v = _pool_channels(u, pretrain_embed_dim).view(b, pretrain_embed_dim, hl, wl)
        if (hl, wl) != (h, w):
            v = F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
        pooled.append(v)
    stacked = torch.cat(pooled, dim=1).view(b, -1, h * w)  # layer-major, as the released stack
    out = _pool_channels(stacked, target_embed_dim).view(b, target_embed_dim, h, w)
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

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        layers = list(feats.values())
        speed = getattr(self.backbone, "_speed", None)
        if speed is not None and speed.features:  # the fast path adlib.fastpath "features": the grid order
            return reduce_grid(layers, self.patch_size, self.pretrain_embed_dim, self.target_embed_dim)
        b, _, h, w = layers[0].shape
        per_layer = []
        for f in layers:
            u = unfold_patches(f, self.patch_size)
            if u.shape[-2:] != (h, w):
                u = F.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
            per_layer.append(u.permute(0, 2, 3, 1).reshape(b * h * w, -1))
        out = reduce_dims(per_layer, self.pretrain_embed_dim, self.target_embed_dim)
        return out.view(b, h, w, self.target_embed_dim)
