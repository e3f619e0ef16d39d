"""Image scores from score maps, one function per formula (the methods' ``image_score`` names them).

=========================== ================================================ =====================
function                    formula                                          used by
=========================== ================================================ =====================
:func:`max_score`           max of the map                                   GLASS, SimpleNet
:func:`top_k_mean`          mean of the ``k`` largest positions              ADL (Eq. 2, ``k`` from
                                                                             a ratio), ADTR (Eq. 8)
:func:`mean_pool_max_same`  max of a ``pool x pool`` box mean, zero padding  POUTA, Vanilla,
                            ``pool // 2`` counted (same size)                DRAEM (Eq. 5)
:func:`mean_pool_max_valid` max of a ``window x window`` box mean, no        ADTR
                            padding, the window clipped to the map
=========================== ================================================ =====================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def max_score(score_map: torch.Tensor) -> torch.Tensor:
    """The maximum of each map: ``B x ...`` -> ``B``."""
    return score_map.flatten(1).amax(dim=1)


def top_k_mean(score_map: torch.Tensor, k: int) -> torch.Tensor:
    """The mean of the ``k`` largest values of each map (``B x ...`` -> ``B``); ties do not matter:
    any ``k`` largest have the same mean. ``ValueError`` unless ``1 <= k <= positions``."""
    flat = score_map.flatten(1)
    if not 1 <= k <= flat.shape[1]:
        raise ValueError(f"k must be in [1, {flat.shape[1]}] (the H*W positions), got {k}")
    return flat.topk(k, dim=1).values.mean(dim=1)


def mean_pool_max_same(heat: torch.Tensor, pool: int = 21) -> torch.Tensor:
    """The maximum of the ``pool x pool`` average-pooled map (stride 1, zero padding ``pool // 2``,
    the padded zeros counted: same size for odd ``pool``); ``pool <= 1``: the plain maximum.
    ``heat``: ``B x H x W`` -> ``B``."""
    if pool <= 1:
        return max_score(heat)
    pooled = F.avg_pool2d(heat[:, None], pool, stride=1, padding=pool // 2)
    return pooled.flatten(1).amax(dim=1)


def mean_pool_max_valid(score_map: torch.Tensor, window: int = 16) -> torch.Tensor:
    """The maximum of the ``window x window`` average-pooled map (stride 1, no padding); a window
    larger than the map is clipped to it. ``score_map``: ``B x H x W`` -> ``B``."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    kh, kw = min(window, score_map.shape[-2]), min(window, score_map.shape[-1])
    pooled = F.avg_pool2d(score_map[:, None], (kh, kw), stride=1)
    return pooled.flatten(1).amax(1)


__all__ = ["max_score", "mean_pool_max_same", "mean_pool_max_valid", "top_k_mean"]
