"""Losses shared by the methods: BCE, focal loss with OHEM (GLASS) and the truncated L1 (SimpleNet).

Label convention for the probability losses: ``p`` is the predicted probability that a point is
*anomalous*; targets are 1 for anomalous and 0 for normal (GLASS Sec. 3.4, Eq. 5-7).

======================= ====================================================================
function                what it is
======================= ====================================================================
:func:`bce`             GLASS Eq. 5 (``L_n``, target 0) and Eq. 6 (``L_gas``, target 1)
:func:`focal_loss`      GLASS Eq. 7 (``L_las``), the focal loss of Lin et al. (ICCV 2017)
:func:`ohem_mask`       GLASS Eq. 8's ``f_ohem`` (online hard example mining, Shrivastava et
                        al., CVPR 2016): which points are kept
:func:`focal_loss_ohem` GLASS Eq. 8's ``f_ohem(L_las)``: the focal loss over the kept points
:func:`truncated_l1`    SimpleNet (Liu et al., CVPR 2023) Sec. 3.4, the truncated l1 loss
======================= ====================================================================

What the GLASS paper leaves open is fixed as its released code does (implementation-notes.md,
GLASS "GAS ... Loss"):

- focal loss: ``gamma = 2``, ``alpha = 1`` (a constant weight of every point: no class
  balancing), label smoothing ``1e-5``: the one-hot target is clamped to
  ``[smoothing, 1 - smoothing]`` and ``smoothing`` is added to ``p_t`` before the log, so
  ``p_t = t' p + (1 - t')(1 - p) + smoothing`` with ``t' = clamp(t, s, 1 - s)`` lies in
  ``[2 s, 1]`` and the loss is finite even for a confidently wrong prediction;
- OHEM: the points whose squared error ``(p - t)^2`` is at or above its ``quantile``-quantile
  (0.5, the median: the hardest half, ties at the median kept) enter the mean; the quantile is
  linearly interpolated between order statistics (``torch.quantile``'s default);
- reductions: means over points (``torch.nn.BCELoss`` and the released focal loss average).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")


def _reduce(x: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    if reduction == "none":
        return x
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _target_like(p: torch.Tensor, target) -> torch.Tensor:
    t = torch.as_tensor(target, dtype=p.dtype, device=p.device)
    return t.expand_as(p) if t.shape != p.shape else t


def bce(p: torch.Tensor, target, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy of probabilities ``p`` against ``target`` (a tensor or a constant).

    GLASS Eq. 5 ``L_n = f_BCE(D(u), 0)`` and Eq. 6 ``L_gas = f_BCE(D(v), 1)``. As
    ``torch.nn.BCELoss`` (the released code): ``-(t log p + (1 - t) log(1 - p))`` with each log
    clamped at ``-100``; mean over points by default.
    """
    return F.binary_cross_entropy(p, _target_like(p, target), reduction=reduction)


def focal_loss(
    p: torch.Tensor,
    target,
    gamma: float = 2.0,
    alpha: float = 1.0,
    smoothing: float = 1e-5,
    reduction: str = "mean",
) -> torch.Tensor:
    """Binary focal loss with label smoothing: GLASS Eq. 7 (``L_las``), Lin et al. (ICCV 2017).

    ``loss = -alpha * (1 - p_t)^gamma * log(p_t)`` with
    ``p_t = t' p + (1 - t') (1 - p) + smoothing`` and ``t' = clamp(t, smoothing, 1 - smoothing)``
    (the released GLASS focal loss on the two-class output ``[1 - p, p]``). ``gamma = 2``,
    ``alpha = 1`` (constant weight, no class balancing), ``smoothing = 1e-5`` as released;
    ``smoothing = 0`` gives the textbook focal loss, ``gamma = 0`` (and ``smoothing = 0``) the BCE.
    ``target`` may be soft (values in [0, 1]) or a constant.
    """
    if not 0.0 <= smoothing < 0.5:
        raise ValueError(f"smoothing must be in [0, 0.5), got {smoothing}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    t = _target_like(p, target).clamp(smoothing, 1.0 - smoothing)
    pt = t * p + (1.0 - t) * (1.0 - p) + smoothing
    if smoothing == 0:
        pt = pt.clamp_min(torch.finfo(pt.dtype).tiny)
    loss = -alpha * (1.0 - pt).clamp_min(0).pow(gamma) * pt.log()
    return _reduce(loss, reduction)


def _quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile of all values (``torch.quantile`` default), any size."""
    s = torch.sort(x.detach().reshape(-1)).values
    pos = q * (s.numel() - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, s.numel() - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def ohem_mask(errors: torch.Tensor, quantile: float = 0.5) -> torch.Tensor:
    """Online hard example mining (GLASS Eq. 8's ``f_ohem``; Shrivastava et al., CVPR 2016).

    Boolean mask of the points whose ``errors`` are at or above their ``quantile``-quantile
    (linear interpolation): with the released ``quantile = 0.5`` the hardest half (the median
    itself and ties with it kept). ``quantile = 0`` keeps every point.
    """
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if errors.numel() == 0:
        return torch.zeros_like(errors, dtype=torch.bool)
    return errors >= _quantile(errors, quantile)


def focal_loss_ohem(
    p: torch.Tensor,
    target,
    quantile: float | None = 0.5,
    gamma: float = 2.0,
    alpha: float = 1.0,
    smoothing: float = 1e-5,
) -> torch.Tensor:
    """``f_ohem(L_las)`` of GLASS Eq. 8: the focal loss (Eq. 7) averaged over the hard points.

    Hardness is the squared error ``(p - t)^2`` (detached); :func:`ohem_mask` keeps the points at
    or above its ``quantile``-quantile (0.5 as released). ``quantile=None`` or ``0`` averages over
    every point (no OHEM, the released ``p = 0`` branch).
    """
    t = _target_like(p, target)
    if quantile:
        keep = ohem_mask((p.detach() - t) ** 2, quantile)
        p, t = p[keep], t[keep]
    return focal_loss(p, t, gamma=gamma, alpha=alpha, smoothing=smoothing, reduction="mean")


def truncated_l1(
    scores_normal: torch.Tensor,
    scores_anomalous: torch.Tensor,
    th_pos: float = 0.5,
    th_neg: float = -0.5,
) -> torch.Tensor:
    """SimpleNet's truncated l1 loss (Liu et al., CVPR 2023, Sec. 3.4 "Loss function").

    The discriminator outputs a *normality* score (no sigmoid): normal features are pushed above
    ``th_pos``, synthetic anomalous ones below ``th_neg``::

        L = mean(max(0, th_pos - D(q))) + mean(max(0, D(q^-) - th_neg))

    with ``th_pos = 0.5`` and ``th_neg = -0.5`` (the paper's truncation terms; the released
    ``dsc_margin = 0.5``). Each mean runs over its own points (the released code averages the two
    clipped terms separately). Scores beyond their threshold cost nothing (the truncation that
    keeps the discriminator from over-fitting).
    """
    pos = (th_pos - scores_normal).clamp_min(0)
    neg = (scores_anomalous - th_neg).clamp_min(0)
    return pos.mean() + neg.mean()


__all__ = ["REDUCTIONS", "bce", "focal_loss", "focal_loss_ohem", "ohem_mask", "truncated_l1"]
