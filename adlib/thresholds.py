"""Decision thresholds for anomaly scores: which score makes an image (or a pixel) anomalous.

A threshold ``t`` turns scores into decisions with one rule everywhere: **anomalous when
``score >= t``** (:func:`decide`). A :class:`Threshold` records the value together with how it was
chosen, on which level and from how many normal and anomalous samples, and round-trips through a
JSON-safe dict (:meth:`Threshold.as_dict`, :meth:`Threshold.from_dict`) so it can be stored with a
trained model.

Rules
-----
- ``"normal-quantile"`` (:func:`from_normal`, :func:`from_normal_maps`; the default, it needs no
  anomalous example): with the ``n`` held-out normal scores sorted ascending, ``s_(0) <= ... <=
  s_(n-1)``, the threshold is ``s_(j)`` with ``j = ceil((n - 1) q)`` computed exactly for the
  binary value of ``q`` (``np.quantile(scores, q, method="higher")``, without its float rounding of
  ``(n - 1) q``). It is an observed score, at most ``floor((n - 1)(1 - q))`` normal scores lie
  strictly above it, and with ``>=`` the held-out false alarms are those plus the scores tied with
  it (at most ``1 + floor((n - 1)(1 - q))`` when the scores are distinct: with ``q = 0.99`` and 50
  normal images, exactly one, the highest).
- ``"f1-max"`` (:func:`from_labels`): the threshold of the best F1 on labelled data
  (:func:`adlib.metrics.f1_max_threshold`, or :func:`adlib.metrics.pixel_f1_max_threshold` on the
  pixels): an observed anomalous score, the highest one when several reach the best F1.
- ``"target-fpr"`` (:func:`from_labels`): the lowest observed score (of any image or pixel) whose
  false-positive rate ``#{normal >= t} / #{normal}`` is ``<= target_fpr``. When no observed score
  reaches it (every score ties with or lies below the ``floor(target_fpr * n_normal) + 1``-th
  highest normal score) the threshold is the next representable number above that normal score in
  the scores' dtype (no observed score is flagged) and a warning says so.

Pixel level: the same rules over all pixels of all maps pooled (``N x H x W`` arrays; a mask pixel
is anomalous when > 0). Nothing is flattened or copied whole: quantiles are exact radix selections
streamed image by image (four passes over the maps), F1-max uses the counting pass of
:mod:`adlib.metrics`.

Edge cases
----------
- Labelled data without any anomalous image (or pixel): :func:`from_labels` falls back to the
  normal-quantile rule on those normal scores (``params["fallback_from"]`` names the rule asked
  for) and logs a warning. It never returns the lowest score, which would flag every image.
- Labelled data without any normal image (or pixel): ``ValueError`` (nothing bounds the false
  alarms).
- All scores equal: ``ValueError`` ("all N scores are equal to X: no threshold separates
  anything").
- NaN or inf scores: ``ValueError`` naming the index (the image index for maps).
- Empty input, a quantile outside (0, 1), a target FPR outside [0, 1), an unknown rule or level:
  ``ValueError`` naming the value.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from adlib import metrics as _m

log = logging.getLogger(__name__)

__all__ = ["Threshold", "RULES", "LEVELS", "from_normal", "from_normal_maps", "from_labels", "decide"]

RULES = ("normal-quantile", "f1-max", "target-fpr")
"""The rules a :class:`Threshold` may record."""
LEVELS = ("image", "pixel")
"""The levels a :class:`Threshold` may apply to."""

_FIELDS = ("value", "rule", "level", "params", "n_normal", "n_anomalous")


@dataclass(frozen=True)
class Threshold:
    """A decision threshold (anomalous when ``score >= value``) and how it was chosen.

    Attributes
    ----------
    value : float
        The threshold, finite.
    rule : str
        One of :data:`RULES`.
    level : str
        ``"image"`` (one score per image) or ``"pixel"`` (anomaly maps).
    params : dict
        The rule's parameters and diagnostics, JSON-safe (str keys; numbers, str, bool or None
        values), e.g. ``{"quantile": 0.99, "method": "higher"}``, ``{"f1": 0.93}``,
        ``{"target_fpr": 0.01, "fpr": 0.008}``; ``"fallback_from"`` when :func:`from_labels` fell
        back to the normal-quantile rule.
    n_normal, n_anomalous : int
        How many normal and anomalous images (pixels at the pixel level) it was chosen from.
    """

    value: float
    rule: str
    level: str = "image"
    params: dict = field(default_factory=dict)
    n_normal: int = 0
    n_anomalous: int = 0

    def __post_init__(self) -> None:
        """Validate every field; ``ValueError`` naming the field and value."""
        v = self.value
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"Threshold value must be a finite number, got {v!r}")
        object.__setattr__(self, "value", float(v))
        if self.rule not in RULES:
            raise ValueError(f"Threshold rule must be one of {RULES}, got {self.rule!r}")
        if self.level not in LEVELS:
            raise ValueError(f"Threshold level must be one of {LEVELS}, got {self.level!r}")
        if not isinstance(self.params, dict):
            raise ValueError(f"Threshold params must be a dict, got {type(self.params).__name__}")
        for key, val in self.params.items():
            if not isinstance(key, str):
                raise ValueError(f"Threshold params keys must be str, got {key!r}")
            ok = val is None or isinstance(val, (str, bool, numbers.Integral))
            ok = ok or (isinstance(val, numbers.Real) and math.isfinite(float(val)))
            if not ok:
                raise ValueError(f"Threshold params[{key!r}] must be a finite number, str, bool or None, got {val!r}")
        for name in ("n_normal", "n_anomalous"):
            n = getattr(self, name)
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
                raise ValueError(f"Threshold {name} must be a non-negative int, got {n!r}")
            object.__setattr__(self, name, int(n))

    def as_dict(self) -> dict:
        """A JSON-safe dict of every field (``Threshold.from_dict(t.as_dict()) == t``)."""
        params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self.params.items()}
        return {
            "value": self.value,
            "rule": self.rule,
            "level": self.level,
            "params": params,
            "n_normal": self.n_normal,
            "n_anomalous": self.n_anomalous,
        }

    @classmethod
    def from_dict(cls, d) -> Threshold:
        """The :class:`Threshold` of a dict written by :meth:`as_dict`.

        Raises
        ------
        ValueError
            If ``d`` is not a dict, a key is missing or unknown (named), or a field is invalid.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a threshold must be a dict, got {type(d).__name__}")
        missing = [k for k in _FIELDS if k not in d]
        if missing:
            raise ValueError(f"threshold dict lacks key(s) {missing}")
        unknown = sorted(str(k) for k in d if k not in _FIELDS)
        if unknown:
            raise ValueError(f"threshold dict has unknown key(s) {unknown}; expected {list(_FIELDS)}")
        params = d["params"]
        return cls(
            value=d["value"],
            rule=d["rule"],
            level=d["level"],
            params=dict(params) if isinstance(params, dict) else params,
            n_normal=d["n_normal"],
            n_anomalous=d["n_anomalous"],
        )


# --------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------


def _check_quantile(quantile) -> float:
    if isinstance(quantile, bool) or not isinstance(quantile, numbers.Real):
        raise ValueError(f"quantile must be a number in (0, 1), got {quantile!r}")
    q = float(quantile)
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile!r}")
    return q


def _check_target_fpr(target_fpr) -> float:
    if isinstance(target_fpr, bool) or not isinstance(target_fpr, numbers.Real):
        raise ValueError(f"target_fpr must be a number in [0, 1), got {target_fpr!r}")
    f = float(target_fpr)
    if not 0.0 <= f < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr!r}")
    return f


def _check_level(level) -> str:
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    return level


def _check_scores(scores) -> np.ndarray:
    """1-D, non-empty, real and finite image scores as float64 (:func:`adlib.metrics.check_scores`)."""
    return _m.check_scores(scores)


def _check_maps(maps) -> np.ndarray:
    """N x H x W, non-empty, real maps (finiteness is checked image by image while streaming)."""
    maps = _m._as_stack(maps, "maps")
    if maps.size == 0:
        raise ValueError(f"maps are empty (shape {maps.shape})")
    if not (maps.dtype == bool or np.issubdtype(maps.dtype, np.integer) or np.issubdtype(maps.dtype, np.floating)):
        raise ValueError(f"maps must be real numbers, got dtype {maps.dtype}")
    return maps


# --------------------------------------------------------------------------------------------------
# exact streamed order statistics (radix selection on the float64 bit patterns)
# --------------------------------------------------------------------------------------------------

Chunks = Callable[[], Iterator[np.ndarray]]
"""A function returning a fresh iterator over 1-D float64 chunks of the scores (one pass each)."""

_SIGN = np.uint64(1 << 63)
_DIGIT = 16  # bits selected per pass: 4 passes for 64-bit keys, 65,536-bin histograms


def _keys(x: np.ndarray) -> np.ndarray:
    """Unsigned keys ordered as the floats (-0.0 merged with 0.0; NaN never reaches here)."""
    b = (x + 0.0).view(np.uint64)  # + 0.0 turns -0.0 into 0.0
    return np.where(b >= _SIGN, ~b, b | _SIGN)


def _from_key(key: int) -> float:
    k = np.uint64(key)
    b = k & ~_SIGN if k >= _SIGN else ~k
    return float(np.array([b], dtype=np.uint64).view(np.float64)[0])


def _kth_smallest(chunks: Chunks, j: int) -> float:
    """The ``j``-th smallest value (0-based) of all chunks: exact, O(T) time, O(1) extra memory."""
    prefix = 0
    for p in range(64 // _DIGIT):
        shift = 64 - _DIGIT * (p + 1)
        hist = np.zeros(1 << _DIGIT, dtype=np.int64)
        for x in chunks():
            k = _keys(x)
            if p:
                k = k[(k >> np.uint64(shift + _DIGIT)) == np.uint64(prefix)]
            digits = ((k >> np.uint64(shift)) & np.uint64((1 << _DIGIT) - 1)).astype(np.intp)
            hist += np.bincount(digits, minlength=1 << _DIGIT)
        cum = np.cumsum(hist)
        d = int(np.searchsorted(cum, j, side="right"))  # first digit with more than j values <= it
        if d:
            j -= int(cum[d - 1])
        prefix = (prefix << _DIGIT) | d
    return _from_key(prefix)


def _min_above(chunks: Chunks, v: float) -> float | None:
    """The smallest value ``> v``, or None."""
    best = None
    for x in chunks():
        above = x[x > v]
        if above.size:
            m = float(above.min())
            best = m if best is None else min(best, m)
    return best


def _count_ge(chunks: Chunks, t: float) -> int:
    return sum(int(np.count_nonzero(x >= t)) for x in chunks())


def _check_not_constant(lo: float, hi: float, n: int, what: str) -> None:
    if lo == hi:
        raise ValueError(f"all {n} {what} are equal to {lo!r}: no threshold separates anything")


# --------------------------------------------------------------------------------------------------
# the normal-quantile rule
# --------------------------------------------------------------------------------------------------


def _quantile_index(n: int, q: float) -> int:
    return math.ceil(Fraction(n - 1) * Fraction(q))  # exact for the binary value of q


def _normal_quantile(chunks: Chunks, n: int, q: float, level: str, what: str, params: dict) -> Threshold:
    lo = min(float(x.min()) for x in chunks())
    hi = max(float(x.max()) for x in chunks())
    _check_not_constant(lo, hi, n, what)
    j = _quantile_index(n, q)
    value = _kth_smallest(chunks, j)
    log.debug("normal-quantile threshold (%s): q=%s, order statistic %d of %d: %r", level, q, j, n, value)
    return Threshold(value, "normal-quantile", level, {"quantile": q, "method": "higher", **params}, n, 0)


def from_normal(scores, quantile: float = 0.99, level: str = "image") -> Threshold:
    """The normal-quantile threshold of held-out NORMAL scores (the default rule).

    With the ``n`` scores sorted ascending, ``s_(0) <= ... <= s_(n-1)``, the threshold is ``s_(j)``
    with ``j = ceil((n - 1) * quantile)`` computed exactly (``np.quantile(scores, quantile,
    method="higher")`` without the float rounding of ``(n - 1) * quantile``). So it is an observed
    score, at most ``floor((n - 1)(1 - quantile))`` scores are strictly above it, and the held-out
    false alarms under ``score >= threshold`` are those plus the scores tied with it.

    Parameters
    ----------
    scores : array-like of shape (n_images,)
        Scores of normal images only (not the training images: held-out ones). At
        ``level="pixel"`` an ``N x H x W`` stack of normal maps (see :func:`from_normal_maps`).
    quantile : float, default=0.99
        In (0, 1).
    level : {"image", "pixel"}, default="image"

    Returns
    -------
    Threshold
        ``rule="normal-quantile"``, ``params={"quantile": q, "method": "higher"}``,
        ``n_normal=n``, ``n_anomalous=0``.

    Raises
    ------
    ValueError
        If the scores are not 1-D, empty, not real, contain NaN or inf (index named) or are all
        equal, or ``quantile`` is not in (0, 1) (value named).

    Notes
    -----
    O(n) time (an exact radix selection in four passes) and O(n) memory.
    """
    if _check_level(level) == "pixel":
        return from_normal_maps(scores, quantile)
    q = _check_quantile(quantile)
    s = _check_scores(scores)
    return _normal_quantile(lambda: iter((s,)), s.size, q, "image", "scores", {})


def from_normal_maps(maps, quantile: float = 0.99) -> Threshold:
    """The pixel-level normal-quantile threshold over every pixel of NORMAL images' maps.

    The rule of :func:`from_normal` applied to all ``n = N * H * W`` pixel scores pooled; the
    maps are streamed image by image, never flattened or copied whole.

    Parameters
    ----------
    maps : array-like of shape (n_images, H, W)
        Anomaly maps of held-out normal images.
    quantile : float, default=0.99
        In (0, 1).

    Returns
    -------
    Threshold
        ``level="pixel"``, ``rule="normal-quantile"``, ``n_normal`` = the number of pixels.

    Raises
    ------
    ValueError
        If ``maps`` is not 3-D, empty or not real, a map holds NaN or inf (image index named), all
        pixels are equal, or ``quantile`` is not in (0, 1).

    Notes
    -----
    Five passes over the maps (range, then four radix passes), O(H W) temporaries.
    """
    q = _check_quantile(quantile)
    maps = _check_maps(maps)
    n = maps.shape[0]
    for i in range(n):
        _m._check_finite_map(np.asarray(maps[i]), i, n)

    def chunks() -> Iterator[np.ndarray]:
        for i in range(n):
            yield np.asarray(maps[i], dtype=np.float64).ravel()

    return _normal_quantile(chunks, int(maps.size), q, "pixel", "pixel scores", {})


# --------------------------------------------------------------------------------------------------
# labelled rules
# --------------------------------------------------------------------------------------------------


def _target_fpr(normal: Chunks, all_: Chunks, n_neg: int, f: float, dtype: np.dtype) -> tuple[float, float]:
    """The lowest observed score with ``#{normal >= t} <= floor(f * n_neg)``, and its FPR."""
    m = math.floor(Fraction(f) * n_neg)  # false positives allowed
    v = _kth_smallest(normal, n_neg - 1 - m)  # the (m + 1)-th highest normal score
    t = _min_above(all_, v)  # thresholds > v flag at most m normals; those <= v at least m + 1
    if t is None:
        t = float(np.nextafter(np.asarray(v, dtype=dtype), np.asarray(np.inf, dtype=dtype)))
        log.warning(
            "target-fpr threshold: no observed score reaches FPR <= %s (%d normal samples; the "
            "%d-th highest normal score %r is the highest score); using the next number above it, %r, "
            "which flags no observed sample",
            f,
            n_neg,
            m + 1,
            v,
            t,
        )
    return t, _count_ge(normal, t) / n_neg


def from_labels(
    labels,
    scores,
    rule: str = "f1-max",
    *,
    target_fpr: float = 0.01,
    quantile: float = 0.99,
    level: str = "image",
) -> Threshold:
    """A threshold chosen on labelled held-out data: F1-max or a target false-positive rate.

    Parameters
    ----------
    labels : array-like
        ``level="image"``: shape (n_images,), 1 (or True) for anomalous and 0 for normal images.
        ``level="pixel"``: ground-truth masks of shape (n_images, H, W) (> 0 is anomalous).
    scores : array-like
        Image scores of shape (n_images,), or anomaly maps of the masks' shape. Finite.
    rule : {"f1-max", "target-fpr"}, default="f1-max"
        ``"f1-max"``: the threshold of the best F1 (:func:`adlib.metrics.f1_max_threshold` /
        :func:`adlib.metrics.pixel_f1_max_threshold`; the highest when tied). ``"target-fpr"``: the
        lowest observed score whose false-positive rate on the normal samples is ``<= target_fpr``
        (see the module docstring for when no observed score reaches it).
    target_fpr : float, default=0.01
        In [0, 1); used by ``"target-fpr"``.
    quantile : float, default=0.99
        In (0, 1); used by the fallback when there is no anomalous sample.
    level : {"image", "pixel"}, default="image"

    Returns
    -------
    Threshold
        ``params`` holds ``{"f1": best F1}`` or ``{"target_fpr": f, "fpr": achieved FPR}``. Without
        any anomalous sample: the :func:`from_normal` / :func:`from_normal_maps` threshold of the
        normal scores with ``params["fallback_from"] = rule`` (a warning is logged; never the
        lowest score).

    Raises
    ------
    ValueError
        On an unknown rule or level, invalid labels, masks or scores (as :mod:`adlib.metrics`:
        NaN / inf with the index named, lengths or shapes differing, non-binary labels), empty
        input, all scores equal, no normal sample, or ``target_fpr`` / ``quantile`` out of range.
    """
    if rule not in ("f1-max", "target-fpr"):
        raise ValueError(f"rule must be 'f1-max' or 'target-fpr', got {rule!r}")
    level = _check_level(level)
    f = _check_target_fpr(target_fpr)
    q = _check_quantile(quantile)
    if level == "image":
        y, s = _m._check_labels_scores(labels, scores)
        n_pos = int(np.count_nonzero(y))
        n_neg = int(y.size - n_pos)
        _check_not_constant(float(s.min()), float(s.max()), s.size, "scores")
        neg_scores = s[~y]

        def normal() -> Iterator[np.ndarray]:
            yield neg_scores

        def all_() -> Iterator[np.ndarray]:
            yield s

        dtype, what = np.dtype(np.float64), "image"
    else:
        masks, maps = _m._check_pixel_inputs(labels, scores)
        per_image = _m._count_mask_pixels(masks)
        n_pos = int(per_image.sum())
        n_neg = int(masks.size - n_pos)
        n = masks.shape[0]
        for i in range(n):
            _m._check_finite_map(np.asarray(maps[i]), i, n)

        def normal() -> Iterator[np.ndarray]:
            for i in range(n):
                x = np.asarray(maps[i], dtype=np.float64)
                yield x[masks[i] == 0] if per_image[i] else x.ravel()

        def all_() -> Iterator[np.ndarray]:
            for i in range(n):
                yield np.asarray(maps[i], dtype=np.float64).ravel()

        lo = min(float(x.min()) for x in all_())
        hi = max(float(x.max()) for x in all_())
        _check_not_constant(lo, hi, int(maps.size), "pixel scores")
        dtype, what = _m._work_dtype(maps.dtype), "pixel"

    if n_pos == 0:
        log.warning(
            "from_labels(rule=%r): the labelled data hold no anomalous %s (%d normal ones); falling "
            "back to the normal-only rule (the %s quantile of the normal scores), not the lowest score",
            rule,
            what,
            n_neg,
            q,
        )
        return _normal_quantile(normal, n_neg, q, level, f"{what} scores", {"fallback_from": rule})
    if n_neg == 0:
        raise ValueError(
            f"from_labels(rule={rule!r}) needs normal samples: all {n_pos} labelled {what}s are "
            "anomalous, so nothing bounds the false alarms"
        )
    if rule == "f1-max":
        if level == "image":
            f1, t = _m.f1_max_threshold(y, s)
        else:
            f1, t = _m.pixel_f1_max_threshold(masks, maps)
        params = {"f1": f1}
    else:
        t, fpr = _target_fpr(normal, all_, n_neg, f, dtype)
        params = {"target_fpr": f, "fpr": fpr}
    log.debug("%s threshold (%s): %r, %s", rule, level, t, params)
    return Threshold(t, rule, level, params, n_neg, n_pos)


def decide(scores, threshold) -> np.ndarray:
    """Decisions ``scores >= threshold`` (True = anomalous), elementwise, any shape.

    Parameters
    ----------
    scores : array-like
        Image scores or anomaly maps. Finite.
    threshold : Threshold or float
        The threshold (its ``value`` when a :class:`Threshold`).

    Returns
    -------
    ndarray of bool, the shape of ``scores``
        Compared in float64 (float32 maps are not rounded and the threshold is not cast to
        float32, so a threshold between two float32 values keeps its meaning).

    Raises
    ------
    ValueError
        If the scores are not real numbers or hold NaN or inf (the first index is named), or the
        threshold is not a finite number.
    """
    value = threshold.value if isinstance(threshold, Threshold) else threshold
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"threshold must be a Threshold or a finite number, got {threshold!r}")
    s = np.asarray(scores)
    if not (s.dtype == bool or np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)):
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    if np.issubdtype(s.dtype, np.floating):
        finite = np.isfinite(s)
        if not finite.all():
            bad = np.argwhere(~finite)
            first = tuple(int(i) for i in bad[0]) if s.ndim != 1 else int(bad[0][0])
            raise ValueError(f"scores contain {len(bad)} non-finite value(s); the first at index {first}")
    return np.greater_equal(s, np.float64(value))
