"""GLASS Global Anomaly Synthesis (GAS) at the feature level, independent of any model.

GLASS (ECCV 2024), Sec. 3.2, Eq. 1-2 and Algorithm 1. Starting from adapted normal feature vectors
``u`` (last dimension = channels ``C``; any leading shape, e.g. ``N x C`` or ``B x HW x C``):

1. Gaussian noise (:func:`gaussian_noise`): ``g = u + eps``, ``eps ~ N(0, sigma_g^2)`` per element,
   ``sigma_g = 0.015`` (Sec. 4.1 and the released code).
2. Gradient ascent (Eq. 1, :func:`gradient_ascent_step`):
   ``g <- g + eta * grad L_gas(g) / ||grad L_gas(g)||`` with ``L_gas = BCE(D(g), 1)`` (Eq. 6), the
   gradient L2-normalised per feature vector, ``eta = 0.001``, 20 steps.
3. Truncated projection (Eq. 2), after every 5th step (Alg. 1, lines 10-14):

   - manifold (GLASS-m, :func:`truncated_projection_manifold`): the offset ``g - u`` to the paired
     normal feature is rescaled so that its length lies in ``[r1, r2]``;
   - hypersphere (GLASS-h, :func:`truncated_projection_hypersphere`): the offset ``g - c`` to the
     centre is rescaled into ``[r, 2r]``, and LAS features with mask 1 into ``[2r, 4r]``;
     ``r`` is the 0.75-quantile of the normal distances (:func:`hypersphere_radius`) and ``c`` the
     mean normal feature (:func:`hypersphere_center`).

:func:`gas` runs Algorithm 1 end to end; :func:`zero_distance_guard` defines the direction of a
zero offset.

Direction of the "ascent" (label convention: the discriminator ``D`` outputs the probability that a
feature is *anomalous*; normal = 0, anomalous = 1). ``L_gas = BCE(D(g), 1) = -log D(g)``. Its
gradient points to where ``D(g)`` *decreases*, so adding it (ascending the loss) moves the
synthetic anomalies toward the region the discriminator currently calls normal: they become
near-in-distribution, hard anomalies sitting on the decision boundary (paper Fig. 1(c) and 3).
The truncated projection then keeps them at least ``r1`` (resp. ``r``) away from the normal
feature so they cannot collapse onto it, and at most ``r2`` (resp. ``2r``) away.

Paper vs released code (named options; defaults = released code, as the implementation notes ask)
    - Manifold radii: paper ``r1 = 1, r2 = 2`` (Sec. 4.1); released ``[0.5, 1.0]``.
      :data:`MANIFOLD_RADII` names both presets (``"paper"``, ``"released"``); the default of
      :func:`truncated_projection_manifold` and :func:`gas` is ``"released"``.
    - Hypersphere centre: paper one global mean ``c``; released the per-spatial-position mean of
      the adapted training features, recomputed every epoch. :func:`hypersphere_center` offers
      ``mode="released"`` (default) and ``"paper"``.
    - Normalisation guards: the released code divides by ``||grad|| + 1e-10`` (Eq. 1) and by
      ``||offset|| + 1e-10`` (Eq. 2); the paper divides exactly. Both functions take ``eps``
      (default ``1e-10``, released); ``eps=0`` is the exact form. The difference is a relative
      ``eps / norm``: invisible in float32 for offsets >= 1e-3, but the released step shrinks when
      the per-vector gradient is tiny (saturated discriminator, or many vectors under the mean
      reduction), which is reproduced by the default.
    - Joint forward: the released code scores ``cat([normal, gas])`` in one discriminator call, so
      BatchNorm (in training mode) sees both halves; only the GAS half enters ``L_gas``.
      :func:`gas` does the same by default (``joint_forward=True``); it matters only for scorers
      whose output for one vector depends on the rest of the batch.
    - Cached context (speed, same numbers): the normal half is the same in all 20 ascent steps, so a
      scorer may offer ``bind_context(context)`` (:class:`ContextScorer`): a callable that scores
      ``g`` as if it followed ``context`` in one batch and returns only ``g``'s part, computing the
      context-only layers once (``adlib.models.glass.Discriminator`` caches its first Linear). On
      the CPU under the reference numerics this is bitwise the same as scoring ``cat([u, g])``
      (a matrix product's rows do not depend on the other rows; ``tests/test_glass.py``
      checks it) and halves the ascent's matrix products.

Choices the paper leaves open (the project's, documented here)
    - Reduction of ``L_gas``: mean over all feature vectors (``torch.nn.BCELoss`` default, as
      released). The per-vector normalisation makes the direction independent of the reduction;
      only the ``eps`` guard sees the scale.
    - Probability scorers are scored with ``binary_cross_entropy`` (log clamped at -100 as in
      ``torch.nn.BCELoss``); ``scorer_output="logits"`` uses the numerically stable
      ``binary_cross_entropy_with_logits`` instead.
    - Zero gradients give a zero step (no direction exists). Zero offsets in a projection are given
      a direction by :func:`zero_distance_guard` (a random unit vector when a generator is given,
      else ``(1, ..., 1) / sqrt(C)``) so the result really lies in the interval; the released code
      leaves such a point on its anchor (distance 0). With continuous Gaussian noise this event has
      probability zero.
    - Gradients: the ascent increments are constants for autograd (the released code adds them
      in place under ``no_grad``; Alg. 1 line 9 "with no grad"), while the projections are
      differentiable. So if ``features`` requires grad, the returned GAS features depend on it
      exactly as in the released code (identity for the manifold projection; through the
      rescaling for the hypersphere one), and ``L_gas`` on them trains the adaptor.
    - ``steps`` not a multiple of ``project_every``: the last steps stay unprojected (Alg. 1 as
      written). ``steps=0`` gives Gaussian-noise-only features (the "GN" ablation, Tab. 4);
      ``projection=None`` gives "GN + GA" without TP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: Manifold truncation interval ``(r1, r2)`` of Eq. 2: paper Sec. 4.1 vs the released code.
MANIFOLD_RADII: dict[str, tuple[float, float]] = {"paper": (1.0, 2.0), "released": (0.5, 1.0)}
DEFAULT_MANIFOLD_RADII = "released"
#: Hypersphere bounds in units of the radius ``r``: GAS features ``[r, 2r]``, LAS features ``[2r, 4r]``.
HYPERSPHERE_GAS_BOUNDS: tuple[float, float] = (1.0, 2.0)
HYPERSPHERE_LAS_BOUNDS: tuple[float, float] = (2.0, 4.0)
#: Released normalisation guard (``+ 1e-10`` in the denominators of Eq. 1 and Eq. 2).
RELEASED_EPS = 1e-10
SCORER_OUTPUTS = ("probability", "logits")
CENTER_MODES = ("released", "paper")

Scorer = Callable[[torch.Tensor], torch.Tensor]


@runtime_checkable
class ContextScorer(Protocol):
    """A scorer that can fix the joint forward's context once (see the module docstring):
    ``bind_context(context)(g)`` equals ``scorer(cat([context, g]))[len(context):]``."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def bind_context(self, context: torch.Tensor) -> Scorer: ...


Projection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _randn(shape, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    dev = generator.device if generator is not None else like.device
    dtype = like.dtype if like.is_floating_point() else torch.float32
    z = torch.randn(tuple(shape), generator=generator, device=dev, dtype=dtype)
    return z.to(like.device)


def gaussian_noise(
    features: torch.Tensor, std: float = 0.015, generator: torch.Generator | None = None, mean: float = 0.0
) -> torch.Tensor:
    """Gaussian anomaly features ``g = u + eps``, ``eps ~ N(mean, std^2)`` per element.

    GLASS Sec. 3.2 "Gaussian Noise" (``g_i = u_i + eps_i``, ``eps ~ N(mu_g, sigma_g^2)``) and
    Alg. 1 line 5; ``std = 0.015``, ``mean = 0`` (Sec. 4.1, released code). Differentiable w.r.t.
    ``features``. Drawn from ``generator`` (on the generator's device, then moved).
    """
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    return features + (_randn(features.shape, generator, features) * std + mean)


def _bce(out: torch.Tensor, target: float, scorer_output: str) -> torch.Tensor:
    tgt = torch.full_like(out, float(target))
    if scorer_output == "probability":
        return F.binary_cross_entropy(out, tgt)
    if scorer_output == "logits":
        return F.binary_cross_entropy_with_logits(out, tgt)
    raise ValueError(f"scorer_output must be one of {SCORER_OUTPUTS}, got {scorer_output!r}")


def gas_loss(
    features: torch.Tensor,
    scorer: Scorer,
    target: float = 1.0,
    scorer_output: str = "probability",
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_gas = BCE(D(features), target)`` with mean reduction (GLASS Eq. 6, target 1).

    ``context`` (optional): vectors scored in the same call, in front of ``features`` along dim 0
    (the released code scores ``cat([normal, gas])``), and left out of the loss.
    """
    if context is not None:
        out = scorer(torch.cat([context, features], dim=0))[context.shape[0] :]
    else:
        out = scorer(features)
    return _bce(out, target, scorer_output)


def gradient_ascent_step(
    features: torch.Tensor,
    scorer: Scorer,
    eta: float = 0.001,
    target: float = 1.0,
    scorer_output: str = "probability",
    eps: float = RELEASED_EPS,
    context: torch.Tensor | None = None,
) -> torch.Tensor:
    """One gradient-ascent step of GLASS Eq. 1: ``g + eta * grad L / ||grad L||`` per vector.

    ``L = BCE(scorer(g), target)`` (GLASS Eq. 6 with ``target = 1``; mean reduction). The gradient
    w.r.t. the features is L2-normalised over the last dimension (one norm per feature vector,
    ``||grad|| + eps`` with the released ``eps = 1e-10``; ``eps = 0`` normalises exactly) and
    *added* with step ``eta`` (default 0.001): the loss is ascended.

    Direction: with the discriminator's convention (output = probability of "anomalous", normal =
    0, anomalous = 1) and ``target = 1``, ``L = -log D(g)`` grows where ``D(g)`` falls, so the step
    moves each vector toward the region currently scored *normal*: the synthetic anomalies become
    near-in-distribution (hard) anomalies. The projection (Eq. 2) then bounds how close they get.

    ``scorer``: callable on ``... x C`` tensors returning probabilities in (0, 1)
    (``scorer_output="probability"``, the GLASS discriminator ends in a sigmoid) or logits
    (``"logits"``), of shape ``...`` or ``... x 1``. Only the features are differentiated; no
    parameter gradient is accumulated. The increment is a constant for autograd (Alg. 1 line 9,
    "with no grad"): if ``features`` requires grad, the result depends on it by identity.
    Vectors with a zero gradient do not move.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    with torch.enable_grad():
        leaf = features.detach().requires_grad_(True)
        ctx = context.detach() if context is not None else None
        loss = gas_loss(leaf, scorer, target=target, scorer_output=scorer_output, context=ctx)
        (grad,) = torch.autograd.grad(loss, [leaf])
    norm = grad.norm(dim=-1, keepdim=True)
    if eps > 0:
        direction = grad / (norm + eps)
    else:
        direction = torch.where(norm > 0, grad / norm.clamp_min(torch.finfo(grad.dtype).tiny), torch.zeros_like(grad))
    return features + (eta * direction).detach()


def zero_distance_guard(
    offset: torch.Tensor, generator: torch.Generator | None = None, threshold: float = 0.0
) -> torch.Tensor:
    """Give offset vectors of length ``<= threshold`` (default: exactly 0) a unit direction.

    A truncated projection (GLASS Eq. 2) rescales an offset ``x - anchor`` to length ``alpha``;
    when ``x == anchor`` the direction is undefined. This guard replaces such rows (over the last
    dimension) with a unit vector: an isotropic random direction drawn from ``generator`` when one
    is given, else the fixed ``(1, ..., 1) / sqrt(C)``. Other rows are returned unchanged. (The
    released code's ``alpha / (0 + 1e-10) * 0`` leaves the point on its anchor instead.)
    """
    norm = offset.norm(dim=-1, keepdim=True)
    bad = norm <= threshold
    if not bool(bad.any()):
        return offset
    c = offset.shape[-1]
    if generator is not None:
        d = _randn(offset.shape, generator, offset)
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(d.dtype).tiny)
    else:
        d = torch.full_like(offset, 1.0 / math.sqrt(c))
    log.debug("zero_distance_guard: %d zero offset(s) given a direction", int(bad.sum()))
    return torch.where(bad, d, offset)


def _truncate(
    x: torch.Tensor,
    anchor: torch.Tensor,
    low: torch.Tensor | float,
    high: torch.Tensor | float,
    eps: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    h = zero_distance_guard(x - anchor, generator=generator)
    norm = h.norm(dim=-1, keepdim=True)
    low_t = torch.as_tensor(low, dtype=norm.dtype, device=norm.device)
    high_t = torch.as_tensor(high, dtype=norm.dtype, device=norm.device)
    if bool((low_t > high_t).any()) or bool((low_t < 0).any()):
        raise ValueError(f"truncation interval must satisfy 0 <= low <= high, got [{low}, {high}]")
    alpha = torch.maximum(torch.minimum(norm, high_t), low_t)
    return anchor + h * (alpha / (norm + eps))


def truncated_projection_manifold(
    x: torch.Tensor,
    normal: torch.Tensor,
    r1: float | None = None,
    r2: float | None = None,
    *,
    radii: str = DEFAULT_MANIFOLD_RADII,
    eps: float = RELEASED_EPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Truncated projection under the manifold hypothesis: GLASS Eq. 2 (Alg. 1 lines 12-14).

    ``eps~ = x - u`` (offset to the paired normal feature ``normal``, same shape as ``x``);
    ``alpha = clamp(||eps~||, r1, r2)``; returns ``v = u + alpha / ||eps~|| * eps~``. Points already
    inside ``[r1, r2]`` are unchanged (up to the ``eps`` guard, relative ``eps / ||eps~||``).

    ``r1, r2`` default to the preset ``radii`` of :data:`MANIFOLD_RADII`: ``"released"`` (default,
    ``[0.5, 1.0]``) or ``"paper"`` (``r1 = 1, r2 = 2``, Sec. 4.1). ``eps``: the released ``1e-10``
    in the denominator; 0 for the exact Eq. 2. Zero offsets: :func:`zero_distance_guard`.
    Differentiable in ``x`` and ``normal``.
    """
    if radii not in MANIFOLD_RADII:
        raise ValueError(f"radii must be one of {sorted(MANIFOLD_RADII)}, got {radii!r}")
    d1, d2 = MANIFOLD_RADII[radii]
    r1 = d1 if r1 is None else r1
    r2 = d2 if r2 is None else r2
    return _truncate(x, normal, r1, r2, eps, generator)


def truncated_projection_hypersphere(
    x: torch.Tensor,
    center: torch.Tensor,
    r: float | torch.Tensor,
    low: float = 1.0,
    high: float = 2.0,
    *,
    eps: float = RELEASED_EPS,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Truncated projection under the hypersphere hypothesis (GLASS Sec. 3.2, "Similar to Eq. 2").

    The offset to the centre ``x - c`` is rescaled so that its length lies in
    ``[low * r, high * r]``: GAS features onto ``N'_p`` with ``[r'_1, r'_2] = [r, 2r]``
    (``low=1, high=2``, default, :data:`HYPERSPHERE_GAS_BOUNDS`), LAS features with mask 1 onto
    ``N''_p`` with ``[r'_2, r'_3] = [2r, 4r]`` (``low=2, high=4``, :data:`HYPERSPHERE_LAS_BOUNDS`).
    ``center`` broadcasts against ``x``: one global ``C`` vector (paper), ``P x C`` per position
    against ``B x P x C`` features, or ``P x C`` against flattened ``(B * P) x C`` features, which is
    tiled batch-major as the released code does (``c.repeat(B, 1, 1)``); ``r`` a scalar
    (:func:`hypersphere_radius`). ``eps`` and zero offsets as in
    :func:`truncated_projection_manifold`. Differentiable in ``x``.
    """
    r_t = torch.as_tensor(r, dtype=x.dtype, device=x.device)
    center = center.to(device=x.device, dtype=x.dtype)
    if center.dim() == 2 and x.dim() == 2 and center.shape[0] not in (1, x.shape[0]):
        if x.shape[0] % center.shape[0]:
            raise ValueError(f"center with {center.shape[0]} positions does not tile {x.shape[0]} feature rows")
        center = center.repeat(x.shape[0] // center.shape[0], 1)  # released: c.repeat(B, 1, 1), batch-major
    center = center.expand_as(x)
    return _truncate(x, center, low * r_t, high * r_t, eps, generator)


def hypersphere_radius(dists: torch.Tensor | np.ndarray, q: float = 0.75) -> torch.Tensor:
    """The hypersphere radius ``r'_1``: the ``q``-quantile of distances to the centre.

    GLASS Sec. 3.2 (Truncated Projection, Hypersphere): "empirically set to cover 75% of the
    normal samples", ``q = 0.75``. Released code: recomputed every batch over the distances of the
    normal features and of the mask-0 LAS features to the centre. Linear interpolation between
    order statistics (``numpy.quantile``'s default, ``torch.quantile``'s ``"linear"``), computed
    by sorting so it has no input-size limit. Returns a 0-d tensor (float64 for numpy input).
    """
    t = torch.as_tensor(dists)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    t = t.reshape(-1)
    if t.numel() == 0:
        raise ValueError("hypersphere_radius: no distances given")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q must be in [0, 1], got {q}")
    s = torch.sort(t.detach()).values
    pos = q * (s.numel() - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, s.numel() - 1)
    frac = pos - lo
    return s[lo] + (s[hi] - s[lo]) * frac


def hypersphere_center(features: torch.Tensor, mode: str = "released") -> torch.Tensor:
    """Hypersphere centre ``c`` of GLASS Sec. 3.2 ("Distribution Hypothesis").

    ``features``: ``N x P x C`` adapted normal features (``N`` images, ``P`` spatial positions).
    ``mode="released"`` (default): the per-position mean over images, ``P x C`` (recomputed each
    epoch in the released code); ``"paper"``: ``c = 1/|U| sum u``, one ``C`` vector.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be N x P x C, got shape {tuple(features.shape)}")
    if mode == "released":
        return features.mean(dim=0)
    if mode == "paper":
        return features.reshape(-1, features.shape[-1]).mean(dim=0)
    raise ValueError(f"mode must be one of {CENTER_MODES}, got {mode!r}")


def gas(
    features: torch.Tensor,
    scorer: Scorer,
    steps: int = 20,
    eta: float = 0.001,
    noise_std: float = 0.015,
    project_every: int = 5,
    projection: Projection | None | str = "manifold",
    generator: torch.Generator | None = None,
    *,
    target: float = 1.0,
    scorer_output: str = "probability",
    eps: float = RELEASED_EPS,
    joint_forward: bool = True,
) -> torch.Tensor:
    """Global anomaly features from normal features: GLASS Algorithm 1 (Eq. 1 and Eq. 2).

    1. ``g = u + N(0, noise_std^2)`` (:func:`gaussian_noise`, Alg. 1 line 5);
    2. for ``step = 1 .. steps``: one :func:`gradient_ascent_step` (Eq. 1, lines 7-9);
       if ``step % project_every == 0``: ``g = projection(g, u)`` (Eq. 2, lines 10-14).

    Defaults are the released ones: 20 steps, ``eta = 0.001``, ``noise_std = 0.015``, projection
    after steps 5, 10, 15, 20. ``projection``: ``"manifold"`` (default; Eq. 2 with the released
    radii ``[0.5, 1]``), ``None`` (no truncated projection) or any callable ``(g, u) -> v``, e.g.
    ``partial(truncated_projection_manifold, radii="paper")`` or
    ``lambda g, u: truncated_projection_hypersphere(g, c, r)``.

    ``joint_forward=True`` (released): the scorer sees ``cat([u, g])`` along dim 0 and only the
    ``g`` half enters the loss (matters for BatchNorm in training mode); ``features`` must then be
    ``N x C``-like (concatenable along dim 0). A scorer with ``bind_context`` (:class:`ContextScorer`)
    is bound to ``u`` once for all steps instead (same result, the context's layers computed once). The final forward pass and the loss on the returned
    features are the caller's (the released code's ``step == 20`` pass). Autograd: the ascent
    increments are constants and the projections are differentiable, so the result depends on
    ``features`` as in the released code. Deterministic given ``generator``.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if project_every < 1:
        raise ValueError(f"project_every must be >= 1, got {project_every}")
    if projection == "manifold":
        projection = partial(truncated_projection_manifold, radii=DEFAULT_MANIFOLD_RADII)
    elif isinstance(projection, str):
        raise ValueError(f"projection must be 'manifold', None or a callable, got {projection!r}")
    u = features
    g = gaussian_noise(u, std=noise_std, generator=generator)
    context = u.detach() if joint_forward else None
    if context is not None and steps > 0 and isinstance(scorer, ContextScorer):
        scorer, context = scorer.bind_context(context), None
    for step in range(1, steps + 1):
        g = gradient_ascent_step(
            g, scorer, eta=eta, target=target, scorer_output=scorer_output, eps=eps, context=context
        )
        if projection is not None and step % project_every == 0:
            g = projection(g, u)
    return g


__all__ = [
    "CENTER_MODES",
    "ContextScorer",
    "DEFAULT_MANIFOLD_RADII",
    "HYPERSPHERE_GAS_BOUNDS",
    "HYPERSPHERE_LAS_BOUNDS",
    "MANIFOLD_RADII",
    "RELEASED_EPS",
    "SCORER_OUTPUTS",
    "gas",
    "gas_loss",
    "gaussian_noise",
    "gradient_ascent_step",
    "hypersphere_center",
    "hypersphere_radius",
    "truncated_projection_hypersphere",
    "truncated_projection_manifold",
    "zero_distance_guard",
]
