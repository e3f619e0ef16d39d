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

For WideResNet-50 layer2 + layer3 at 288 px this gives a 36 x 36 grid of 1536-D features whose
first 768 values average blocks of 6 of layer2's 4608 patch values and the last 768 blocks of 12
of layer3's 9216. That is the released reduction, not a spatial average followed by a concat.

Export (:mod:`adlib.export`): the ONNX exporter has no adaptive average pooling whose sizes do not
divide (PatchCore's 4608 -> 1024), so while an ONNX export traces the module
(``torch.onnx.is_in_onnx_export()``) each pooling is the equal matrix product with a constant
averaging matrix (:func:`adaptive_pool_matrix`); otherwise the code path is the plain pooling.
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


def adaptive_pool_matrix(length: int, size: int) -> torch.Tensor:
    """The ``length x size`` matrix ``A`` with ``x @ A = adaptive_avg_pool1d(x, size)``: column ``i``
    averages positions ``floor(i * length / size) .. ceil((i + 1) * length / size) - 1``."""
    a = np.zeros((length, size), dtype=np.float32)  # NumPy: a constant of a traced graph, not traced ops
    for i in range(size):
        start, end = (i * length) // size, -((-(i + 1) * length) // size)
        a[start:end, i] = 1.0 / (end - start)
    return torch.from_numpy(a)


def _pool(x: torch.Tensor, size: int) -> torch.Tensor:
    """``adaptive_avg_pool1d`` of the rows of ``x`` (``N x L`` -> ``N x size``); as a matrix product
    while an ONNX export traces (module docstring)."""
    if torch.onnx.is_in_onnx_export():
        return x @ adaptive_pool_matrix(int(x.shape[-1]), size).to(x)
    return F.adaptive_avg_pool1d(x.unsqueeze(1), size).squeeze(1)


def reduce_dims(per_layer: list[torch.Tensor], pretrain_embed_dim: int, target_embed_dim: int) -> torch.Tensor:
    """Released two-stage reduction: each ``N x D_l`` to ``pretrain_embed_dim``, stacked, then to ``target_embed_dim``."""
    pooled = [_pool(x, pretrain_embed_dim) for x in per_layer]
    return _pool(torch.stack(pooled, dim=1).flatten(1), target_embed_dim)


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
        b, _, h, w = layers[0].shape
        per_layer = []
        for f in layers:
            u = unfold_patches(f, self.patch_size)
            if u.shape[-2:] != (h, w):
                u = F.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
            per_layer.append(u.permute(0, 2, 3, 1).reshape(b * h * w, -1))
        out = reduce_dims(per_layer, self.pretrain_embed_dim, self.target_embed_dim)
        return out.view(b, h, w, self.target_embed_dim)
