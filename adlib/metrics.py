"""Image- and pixel-level anomaly detection metrics: AUROC, AP, F1-max and AU-PRO.

Definitions
-----------
Image level (one score per image, label 1 = anomalous):

- :func:`image_auroc`: area under the ROC curve (``sklearn.metrics.roc_auc_score``).
- :func:`image_ap`: average precision, ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct
  score thresholds taken in descending order (``sklearn.metrics.average_precision_score``; no
  interpolation of the precision-recall curve).
- :func:`image_f1_max`: the best ``F1 = 2 TP / (2 TP + FP + FN)`` over all thresholds, an image
  being predicted anomalous when ``score >= threshold`` (every observed score is a candidate, tied
  images go together); :func:`f1_max_threshold` also returns the threshold (an observed score, the
  highest one when several reach the best F1). Both classes must be present.

Pixel level (``masks`` and ``maps`` are ``N x H x W`` arrays of identical shape; a mask pixel is
anomalous when its value is > 0):

- :func:`pixel_auroc`: AUROC over all pixels of all images pooled together,
  ``P(s_anomalous > s_normal) + 1/2 P(s_anomalous == s_normal)`` (Mann-Whitney form; equal to
  the trapezoidal area under the ROC curve with tied scores merged into one threshold, which is
  what ``roc_auc_score`` computes on the flattened arrays).
- :func:`pixel_ap`: AP over all pixels pooled, same definition as :func:`image_ap`.
- :func:`pixel_f1_max` / :func:`pixel_f1_max_threshold`: F1-max over all pixels pooled, same
  definition as :func:`image_f1_max` (the best threshold is always an anomalous pixel's score, so
  the counts below give it exactly).
- :func:`au_pro`: the standard AU-PRO of the official MVTec AD evaluation. Ground-truth regions are
  the 8-connected components of each mask (``scipy.ndimage.label`` with a ``3 x 3`` structure of
  ones), pooled over all images and weighted equally. For every distinct score ``t`` (descending)
  the curve has the point ``FPR(t) = #{normal pixels >= t} / #{normal pixels}`` and
  ``PRO(t) = (1/R) sum_r #{pixels of region r >= t} / |r|`` with ``R`` regions. Tied pixels enter
  together (one point per distinct score), both coordinates are clipped to 1, and ``(0, 0)`` and
  ``(1, 1)`` are added. AU-PRO is the trapezoidal area under this curve for ``FPR <= fpr_limit``
  (the curve is interpolated linearly at ``fpr_limit``), divided by ``fpr_limit`` so that the
  result lies in [0, 1]. :func:`pro_curve` returns the curve itself.
- :func:`pro_released`: a named variant, the PRO of GLASS's released code (``metrics.compute_pro``
  of cqylunlun/GLASS at f788d56, what the GLASS paper's PRO column reports): about 200 evenly
  spaced thresholds, predictions dilated by a ``5 x 5`` square for the overlaps only, the points
  with ``FPR < 0.3`` kept and their FPRs min-max rescaled to [0, 1]. It is not the standard AU-PRO
  and reads higher (e.g. 0.965 against 0.931 on the same synthetic maps, issue 17); the differences
  are listed in its docstring. ``evaluate(pred, released_pro=True)`` adds it to a run's metrics.

Maps must already be at ground-truth resolution; :func:`resize_maps` up- or down-samples score maps
bilinearly (``align_corners=False``) for callers whose models predict at a lower resolution. The
pixel metrics never resample and raise ``ValueError`` on a shape mismatch.

Ties
----
Tied scores are never broken by position: all pixels (or images) sharing a score enter the curves at
the same threshold. In the ROC this makes a diagonal step (and a tie between an anomalous and a
normal pixel counts 1/2 in the pairwise form); in the PR curve precision is evaluated once per
distinct threshold; in the PRO curve a normal pixel tied with an anomalous one moves the curve
diagonally together with it.

Algorithm and memory
--------------------
The pixel metrics never flatten, sort or copy the whole ``maps`` array (MVTec AD at full resolution
is about 1.7e9 pixels). Anomalous pixels are few, so their scores ``a`` (and, for AU-PRO, their
region weights ``1 / |region|``) are gathered and sorted; let ``u_1 < ... < u_K`` be the distinct
anomalous scores. The normal pixels are then streamed image by image through
``np.searchsorted(u, sort(s))`` (an image's normal scores are sorted first, which makes the search
cache-friendly; order does not matter for counts), which yields, for every ``u_k``, the exact
number of normal pixels with score ``> u_k`` and ``== u_k``. These counts determine every metric
exactly:

- AUROC: ``sum_k p_k (#normal < u_k + #normal == u_k / 2) / (P N)`` with ``p_k`` anomalous pixels at
  ``u_k``, ``P`` anomalous and ``N`` normal pixels;
- AP: recall only changes at the ``u_k``, where precision is
  ``#anomalous >= u_k / (#anomalous >= u_k + #normal >= u_k)``;
- F1-max: ``2 TP_k / (TP_k + FP_k + P)`` at each ``u_k`` with ``TP_k = #anomalous >= u_k`` and
  ``FP_k = #normal >= u_k``;
- PRO curve: between two consecutive ``u_k`` the PRO value is constant, so all thresholds held only
  by normal pixels form one horizontal segment; at ``u_k`` the curve moves (diagonally, when normal
  pixels share the score) to ``(#normal >= u_k / N, PRO(u_k))``. The returned vertices are a subset
  of the official curve's points, and the dropped points are collinear, so the area is identical.

Cost: the maps are read twice and the masks three times, one image at a time. Time is
``O(T (log K + log HW))`` for ``T`` pixels in total plus ``O(A log A)`` for sorting the ``A``
anomalous pixels (about 60 ns per pixel on one CPU core with float32 maps, i.e. roughly 100 s for
all of MVTec AD at full resolution).
Memory is ``O(A + K)`` plus temporaries for one image. Measured peaks with float32 maps whose
anomalous scores are all distinct (the worst case, ``K = A``) are about 45 bytes per anomalous pixel
for AUROC (50 for AP) and 70 for AU-PRO (95 for :func:`pro_curve`, which also returns the curve);
repeated scores lower this (about 6 and 30 bytes with maps rounded to 0.1).
No float64 copy of the whole maps array is made (non-float maps are converted one image at a time).
AU-PRO is normally computed per category, where ``A`` is typically at most a few million pixels.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "image_auroc",
    "image_ap",
    "pixel_auroc",
    "pixel_ap",
    "image_f1_max",
    "f1_max_threshold",
    "pixel_f1_max",
    "pixel_f1_max_threshold",
    "au_pro",
    "pro_curve",
    "pro_released",
    "pixel_metrics",
    "resize_maps",
]

# 8-connectivity for the ground-truth regions, as in the official MVTec AD evaluation.
_STRUCTURE_8 = np.ones((3, 3), dtype=bool)
_MASK_POSITIVE_VALUES = (1, 255)
_MAX_LISTED = 5  # how many offending values or indices an error message lists


# --------------------------------------------------------------------------------------------------
# image level
# --------------------------------------------------------------------------------------------------


def _format_values(values: np.ndarray) -> str:
    vals = [v.item() if hasattr(v, "item") else v for v in values[:_MAX_LISTED]]
    more = f" (and {len(values) - _MAX_LISTED} more)" if len(values) > _MAX_LISTED else ""
    return f"{vals}{more}"


def check_scores(scores) -> np.ndarray:
    """1-D, non-empty, real and finite image scores as float64; ``ValueError`` naming the shape,
    dtype or the indices of non-finite values (the image-level metrics and :mod:`adlib.thresholds`)."""
    s = np.asarray(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-D array, got shape {s.shape}")
    if s.size == 0:
        raise ValueError("scores are empty")
    if not (s.dtype == bool or np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)):
        raise ValueError(f"scores must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    finite = np.isfinite(s)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        n_nan = int(np.isnan(s).sum())
        raise ValueError(
            f"scores contain {bad.size} non-finite value(s) ({n_nan} NaN, {bad.size - n_nan} inf) "
            f"at index {_format_values(bad)}"
        )
    return s


def _check_labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate image-level inputs; return (bool labels, float64 scores)."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {y.shape}")
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-D array, got shape {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} labels but {s.shape[0]} scores")
    if y.shape[0] == 0:
        raise ValueError("labels and scores are empty")
    s = check_scores(s)
    if y.dtype != bool:
        if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
            raise ValueError(f"labels must be binary (0/1 or bool), got dtype {y.dtype}")
        bad_mask = (y != 0) & (y != 1)  # NaN is caught here too
        if bad_mask.any():
            bad_vals = np.unique(y[bad_mask])
            raise ValueError(
                f"labels must be binary (0/1 or bool); found non-binary value(s) "
                f"{_format_values(bad_vals)} at index {_format_values(np.flatnonzero(bad_mask))}"
            )
        y = y == 1
    return y, s


def _one_class_message(metric: str, y: np.ndarray) -> str:
    cls = "1 (anomalous)" if y[0] else "0 (normal)"
    return (
        f"{metric} is undefined when only one class is present: all {y.size} labels are {cls}; "
        "it needs both normal and anomalous images"
    )


def image_auroc(labels, scores) -> float:
    """Image-level area under the ROC curve.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        Ground truth, 1 (or True) for anomalous and 0 (or False) for normal images.
    scores : array-like of shape (n_images,)
        Anomaly scores, higher means more anomalous. Must be finite.

    Returns
    -------
    float
        AUROC in [0, 1]: ``P(s_anomalous > s_normal) + 1/2 P(s_anomalous == s_normal)``, computed
        with ``sklearn.metrics.roc_auc_score`` (tied scores form one threshold).

    Raises
    ------
    ValueError
        If the arrays are not 1-D, differ in length, are empty, the labels are not binary, the
        scores contain NaN or inf, or only one class is present (AUROC is then undefined).

    Notes
    -----
    O(n log n) time and O(n) memory for n images.
    """
    from sklearn.metrics import roc_auc_score

    y, s = _check_labels_scores(labels, scores)
    if y.all() or not y.any():
        raise ValueError(_one_class_message("image_auroc", y))
    return float(roc_auc_score(y, s))


def image_ap(labels, scores) -> float:
    """Image-level average precision (area under the precision-recall curve).

    ``AP = sum_n (R_n - R_{n-1}) P_n`` where ``P_n`` and ``R_n`` are precision and recall at the
    n-th distinct score threshold in descending order (tied scores form one threshold, no
    interpolation); this is ``sklearn.metrics.average_precision_score``.

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        Ground truth, 1 (or True) for anomalous and 0 (or False) for normal images.
    scores : array-like of shape (n_images,)
        Anomaly scores, higher means more anomalous. Must be finite.

    Returns
    -------
    float
        AP in [0, 1]. With only anomalous images it is 1.0.

    Raises
    ------
    ValueError
        If the arrays are not 1-D, differ in length, are empty, the labels are not binary, the
        scores contain NaN or inf, or there is no anomalous image (recall, hence AP, is undefined).

    Notes
    -----
    O(n log n) time and O(n) memory for n images.
    """
    from sklearn.metrics import average_precision_score

    y, s = _check_labels_scores(labels, scores)
    if not y.any():
        raise ValueError(f"image_ap is undefined without anomalous images: all {y.size} labels are 0 (normal)")
    return float(average_precision_score(y, s))


def _best_f1(thresholds: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_pos: int) -> tuple[float, float]:
    """Best F1 over candidate thresholds given in descending order, and the highest one reaching it.

    ``F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P)``; numerator and denominator are exact
    integers (below 2**53), so equal ratios give equal floats and ties are exact.
    """
    f1 = 2.0 * tp / (tp + fp + n_pos)
    k = int(np.argmax(f1))  # first maximum in descending order: the highest threshold
    return float(f1[k]), float(thresholds[k])


def f1_max_threshold(labels, scores) -> tuple[float, float]:
    """The best image-level F1 over all score thresholds, and the threshold reaching it.

    An image is predicted anomalous when ``score >= threshold``. Every observed score is a
    candidate threshold (tied images are predicted together); ``F1 = 2 TP / (2 TP + FP + FN)``.
    The best threshold is always one of the anomalous images' scores (raising a threshold that
    only normal images hold to the next anomalous score keeps every true positive and drops false
    positives). When several thresholds reach the best F1 the highest one is returned (fewer false
    alarms).

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        Ground truth, 1 (or True) for anomalous and 0 (or False) for normal images.
    scores : array-like of shape (n_images,)
        Anomaly scores, higher means more anomalous. Must be finite.

    Returns
    -------
    (float, float)
        ``(f1, threshold)``: the best F1 in (0, 1] and the observed score reaching it.

    Raises
    ------
    ValueError
        If the arrays are not 1-D, differ in length, are empty, the labels are not binary, the
        scores contain NaN or inf, or only one class is present (without anomalous images F1 is
        undefined; without normal images every threshold up to the lowest score gives F1 = 1,
        which says nothing about where a threshold belongs).

    Notes
    -----
    O(n log n) time and O(n) memory for n images.
    """
    return _image_f1(labels, scores, "f1_max_threshold")


def _image_f1(labels, scores, metric: str) -> tuple[float, float]:
    y, s = _check_labels_scores(labels, scores)
    if y.all() or not y.any():
        raise ValueError(_one_class_message(metric, y))
    order = np.argsort(-s, kind="stable")
    s_desc, y_desc = s[order], y[order]
    tp = np.cumsum(y_desc)
    fp = np.arange(1, s.size + 1) - tp
    last = np.flatnonzero(np.append(s_desc[1:] != s_desc[:-1], True))  # last image of each tie group
    return _best_f1(s_desc[last], tp[last], fp[last], int(tp[-1]))


def image_f1_max(labels, scores) -> float:
    """Image-level F1-max: the best F1 over all score thresholds (``score >= threshold``).

    The F1 of :func:`f1_max_threshold` (which also returns the threshold; same definition, ties
    and errors).

    Parameters
    ----------
    labels : array-like of shape (n_images,)
        Ground truth, 1 (or True) for anomalous and 0 (or False) for normal images.
    scores : array-like of shape (n_images,)
        Anomaly scores, higher means more anomalous. Must be finite.

    Returns
    -------
    float
        The best F1, in (0, 1].

    Raises
    ------
    ValueError
        As :func:`f1_max_threshold` (both classes must be present).

    Notes
    -----
    O(n log n) time and O(n) memory for n images.
    """
    return _image_f1(labels, scores, "image_f1_max")[0]


# --------------------------------------------------------------------------------------------------
# pixel level: validation and the streamed counting pass
# --------------------------------------------------------------------------------------------------


def _as_stack(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must be an N x H x W array, got shape {arr.shape}"
            + (" (wrap a single image as x[None])" if arr.ndim == 2 else "")
        )
    return arr


def _check_pixel_inputs(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    masks = _as_stack(masks, "masks")
    maps = _as_stack(maps, "maps")
    if masks.shape != maps.shape:
        raise ValueError(
            f"maps.shape {maps.shape} differs from masks.shape {masks.shape}: the pixel metrics "
            f"need anomaly maps at ground-truth resolution (see adlib.metrics.resize_maps(maps, "
            f"{tuple(masks.shape[1:])}))"
        )
    if masks.shape[0] == 0 or masks.shape[1] == 0 or masks.shape[2] == 0:
        raise ValueError(f"masks and maps are empty (shape {masks.shape})")
    if not (masks.dtype == bool or np.issubdtype(masks.dtype, np.integer) or np.issubdtype(masks.dtype, np.floating)):
        raise ValueError(f"masks must be bool, integer or float, got dtype {masks.dtype}")
    if not (maps.dtype == bool or np.issubdtype(maps.dtype, np.integer) or np.issubdtype(maps.dtype, np.floating)):
        raise ValueError(f"maps must be real numbers, got dtype {maps.dtype}")
    return masks, maps


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """Float maps are compared in their own dtype (exact); others are converted to float64."""
    return dtype if np.issubdtype(dtype, np.floating) else np.dtype(np.float64)


def _count_mask_pixels(masks: np.ndarray) -> np.ndarray:
    """Validate that every mask is binary; return the number of anomalous pixels per image."""
    counts = np.empty(masks.shape[0], dtype=np.int64)
    for i in range(masks.shape[0]):
        m = masks[i]
        if m.dtype == bool:
            counts[i] = np.count_nonzero(m)
            continue
        nz = m[m != 0]  # NaN lands here and is rejected below
        if nz.size:
            v = nz[0]
            if not (v in _MASK_POSITIVE_VALUES and np.all(nz == v)):
                raise ValueError(
                    "masks must be binary (bool, 0/1 or 0/255; > 0 is anomalous); image index "
                    f"{i} holds value(s) {_format_values(np.unique(m))}"
                )
        counts[i] = nz.size
    return counts


def _check_finite_map(s: np.ndarray, i: int, n: int) -> None:
    if not np.issubdtype(s.dtype, np.floating):
        return
    if np.isfinite(np.sum(s, dtype=np.float64)):  # fast path: one pass, no temporary
        return
    finite = np.isfinite(s)
    n_bad = finite.size - int(np.count_nonzero(finite))
    if n_bad:
        n_nan = int(np.count_nonzero(np.isnan(s)))
        raise ValueError(
            f"maps contain {n_bad} non-finite value(s) ({n_nan} NaN, {n_bad - n_nan} inf) in image "
            f"index {i} (of {n} images); anomaly maps must be finite"
        )


@dataclass
class _PixelCounts:
    """Sufficient statistics of the pixel metrics (see the module docstring)."""

    values: np.ndarray  # (K,) distinct anomalous scores, ascending
    pos_counts: np.ndarray  # (K,) int64, anomalous pixels with score == values[k]
    region_weights: np.ndarray | None  # (K,) float64, sum of 1/|region| over those pixels
    n_regions: int
    neg_gt: np.ndarray  # (K,) int64, normal pixels with score > values[k]
    neg_eq: np.ndarray  # (K,) int64, normal pixels with score == values[k]
    n_pos: int
    n_neg: int


def _class_counts(masks: np.ndarray, metric: str, need_neg: bool) -> tuple[np.ndarray, int, int]:
    """Anomalous pixels per image (binary check included) and the totals of both classes;
    ``ValueError`` naming ``metric`` when a class it needs is absent."""
    per_image = _count_mask_pixels(masks)
    n_pos = int(per_image.sum())
    n_neg = int(masks.size - n_pos)
    if n_pos == 0:
        raise ValueError(
            f"{metric} is undefined when only one class is present: the masks contain no anomalous "
            f"pixel (all {masks.shape[0]} images are normal)"
        )
    if need_neg and n_neg == 0:
        raise ValueError(
            f"{metric} is undefined when only one class is present: every pixel of the masks is "
            "anomalous (no normal pixel)"
        )
    return per_image, n_pos, n_neg


def _pixel_counts(masks, maps, *, metric: str, regions: bool, need_neg: bool) -> _PixelCounts:
    """Validate inputs and compute the exact sufficient statistics in a streamed pass."""
    masks, maps = _check_pixel_inputs(masks, maps)
    n = masks.shape[0]
    wd = _work_dtype(maps.dtype)

    # pass 0 (masks only): binary check and anomalous pixel counts, before any map is read
    per_image, n_pos, n_neg = _class_counts(masks, metric, need_neg)

    # pass 1: finite check of every map; gather the anomalous scores (and region weights)
    scores = np.empty(n_pos, dtype=wd)
    weights = np.empty(n_pos, dtype=np.float64) if regions else None
    n_regions = 0
    off = 0
    for i in range(n):
        s = np.asarray(maps[i], dtype=wd)
        _check_finite_map(s, i, n)
        k = int(per_image[i])
        if k == 0:
            continue
        pos = masks[i] != 0
        scores[off : off + k] = s[pos]
        if regions:
            from scipy import ndimage

            lab, nr = ndimage.label(pos, structure=_STRUCTURE_8)
            sizes = np.bincount(lab.ravel(), minlength=nr + 1)
            inv = np.zeros(nr + 1, dtype=np.float64)
            inv[1:] = 1.0 / sizes[1:]
            weights[off : off + k] = inv[lab[pos]]
            n_regions += int(nr)
        off += k

    # sort the anomalous pixels and merge ties into distinct values
    if regions:
        order = np.argsort(scores)
        scores = scores[order]
        weights = weights[order]
        del order
    else:
        scores.sort()
    starts = np.flatnonzero(np.concatenate(([True], scores[1:] != scores[:-1])))
    values = scores[starts]
    pos_counts = np.diff(np.append(starts, n_pos)).astype(np.int64, copy=False)
    region_weights = np.add.reduceat(weights, starts) if regions else None
    del scores, weights, starts
    n_values = values.size

    # pass 2: stream the normal pixels through searchsorted against the distinct anomalous scores
    lowest = values[0]
    below = 0  # normal pixels under every anomalous score: only N needs them
    c = np.zeros(n_values + 1, dtype=np.int64)  # c[j]: normal pixels above exactly j values
    neg_eq = np.zeros(n_values, dtype=np.int64)  # normal pixels tied with values[k]
    for i in range(n):
        s = np.asarray(maps[i], dtype=wd)
        t = s[masks[i] == 0] if per_image[i] else s.ravel()
        n_img = t.size
        t = t[t >= lowest]
        below += n_img - t.size
        if t.size == 0:
            continue
        t.sort()  # t is a copy; sorted needles make searchsorted cache-friendly (~5x faster)
        left = np.searchsorted(values, t, side="left")  # number of distinct values < score
        np.add.at(c, left, 1)  # unbuffered and O(len(left)): no per-image O(K) bincount
        # tie test; left == K means t > values[-1], and clipping compares it with values[-1]: False
        np.add.at(neg_eq, left[np.take(values, left, mode="clip") == t], 1)
        del left, t
    c[0] += below
    # c[j] = #normal pixels with exactly j distinct anomalous values strictly below their score
    rev = np.cumsum(c[::-1])  # rev[m] = sum_{i >= K - m} c[i]
    del c
    if int(rev[-1]) != n_neg:  # cannot happen; guards the bookkeeping
        raise RuntimeError(f"internal error: counted {int(rev[-1])} normal pixels, expected {n_neg}")
    neg_gt = rev[:-1][::-1]  # score > values[k]  <=>  j >= k + 1  <=>  rev[K - 1 - k]
    log.debug(
        "%s: %d images, %d anomalous / %d normal pixels, %d distinct anomalous scores%s",
        metric,
        n,
        n_pos,
        n_neg,
        n_values,
        f", {n_regions} regions" if regions else "",
    )
    return _PixelCounts(values, pos_counts, region_weights, n_regions, neg_gt, neg_eq, n_pos, n_neg)


# --------------------------------------------------------------------------------------------------
# pixel level: metrics from the counts
# --------------------------------------------------------------------------------------------------


def _auroc_from_counts(st: _PixelCounts) -> float:
    # per distinct anomalous score: normal pixels below it plus half of those tied with it
    credit = st.neg_eq * -0.5
    credit -= st.neg_gt
    credit += st.n_neg
    wins = float(np.dot(credit, st.pos_counts.astype(np.float64)))
    return float(min(1.0, max(0.0, wins / (float(st.n_pos) * float(st.n_neg)))))


def _ap_from_counts(st: _PixelCounts) -> float:
    tp = np.cumsum(st.pos_counts[::-1])[::-1]  # anomalous pixels >= values[k]
    detected = tp + st.neg_gt  # all pixels >= values[k] ...
    detected += st.neg_eq
    precision = tp / detected
    del tp, detected
    precision *= st.pos_counts  # recall step at values[k] is pos_counts[k] / n_pos
    ap = float(precision.sum()) / st.n_pos
    return float(min(1.0, max(0.0, ap)))


def _pro_curve_from_counts(st: _PixelCounts, dedupe: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the PRO curve; ``dedupe=False`` keeps repeated points (same area, less memory)."""
    k = st.values.size
    n = float(st.n_neg)
    fpr = np.empty(2 * k + 2)
    pro = np.empty(2 * k + 2)
    fpr[0] = pro[0] = 0.0
    fpr[-1] = pro[-1] = 1.0
    # descending thresholds (reversed views): for each distinct anomalous score values[k], first
    # the end of the horizontal run of normal-only thresholds above it ...
    fpr_h, pro_h = fpr[1:-1:2], pro[1:-1:2]
    # ... then the (diagonal when normal pixels tie with it) step taken at values[k]
    fpr_d, pro_d = fpr[2:-1:2], pro[2:-1:2]
    np.divide(st.neg_gt[::-1], n, out=fpr_h)
    np.add(st.neg_gt[::-1], st.neg_eq[::-1], out=fpr_d)
    fpr_d /= n
    np.cumsum(st.region_weights[::-1], out=pro_d)
    pro_d /= st.n_regions
    pro_h[0] = 0.0
    pro_h[1:] = pro_d[:-1]
    np.minimum(fpr, 1.0, out=fpr)
    np.minimum(pro, 1.0, out=pro)
    if not dedupe:
        return fpr, pro
    keep = np.empty(fpr.size, dtype=bool)
    keep[0] = True
    np.not_equal(fpr[1:], fpr[:-1], out=keep[1:])
    keep[1:] |= pro[1:] != pro[:-1]
    return fpr[keep], pro[keep]


def _area_up_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoidal area under (x, y) for x <= limit, x non-decreasing, interpolating at limit."""
    i = int(np.searchsorted(x, limit, side="right"))  # x[:i] <= limit
    xs, ys = x[:i], y[:i]
    area = 0.0
    step = 1 << 16  # chunks keep the temporaries small for long curves
    for a in range(0, max(i - 1, 0), step):
        b = min(a + step, i - 1)
        area += 0.5 * float(np.dot(xs[a + 1 : b + 1] - xs[a:b], ys[a + 1 : b + 1] + ys[a:b]))
    if i < x.size and xs[-1] < limit:
        x0, y0, x1, y1 = x[i - 1], y[i - 1], x[i], y[i]
        y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += float((limit - x0) * (y0 + y_lim) * 0.5)
    return area


def _check_fpr_limit(fpr_limit) -> float:
    if isinstance(fpr_limit, bool) or not isinstance(fpr_limit, numbers.Real):
        raise ValueError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}")
    limit = float(fpr_limit)
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    return limit


def _au_pro_from_counts(st: _PixelCounts, limit: float) -> float:
    fpr, pro = _pro_curve_from_counts(st, dedupe=False)
    return float(min(1.0, max(0.0, _area_up_to(fpr, pro, limit) / limit)))


def pixel_auroc(masks, maps) -> float:
    """Pixel-level AUROC over all pixels of all images pooled together.

    Exactly ``sklearn.metrics.roc_auc_score(masks.ravel() > 0, maps.ravel())``, i.e.
    ``P(s_anomalous > s_normal) + 1/2 P(s_anomalous == s_normal)``, computed without flattening.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W)
        Ground-truth masks: bool, 0/1 or 0/255 integers, or float {0, 1}; > 0 is anomalous.
        All-zero masks (normal images) are allowed.
    maps : array-like of shape (n_images, H, W)
        Anomaly maps at ground-truth resolution (``maps.shape == masks.shape``; use
        :func:`resize_maps` first otherwise). Higher means more anomalous. Must be finite.

    Returns
    -------
    float
        AUROC in [0, 1].

    Raises
    ------
    ValueError
        If the arrays are not 3-D or their shapes differ (both shapes are named), a mask is not
        binary, a map holds NaN or inf (the count and image index are named), or the masks hold
        only one class (AUROC is then undefined).

    Notes
    -----
    Memory: O(A + K) for A anomalous pixels and K distinct anomalous scores (at worst about
    45 bytes per anomalous pixel with float32 maps), plus temporaries for one image;
    the full maps array is never flattened, sorted or copied to float64. Time: O(T (log K +
    log HW)) for T pixels in H x W images, plus O(A log A) to sort the anomalous pixels; the
    maps are read twice and the masks three times, image by image.
    """
    st = _pixel_counts(masks, maps, metric="pixel_auroc", regions=False, need_neg=True)
    return _auroc_from_counts(st)


def pixel_ap(masks, maps) -> float:
    """Pixel-level average precision over all pixels of all images pooled together.

    Exactly ``sklearn.metrics.average_precision_score(masks.ravel() > 0, maps.ravel())``:
    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds in descending order
    (tied pixels enter together, no interpolation), computed without flattening.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W)
        Ground-truth masks: bool, 0/1 or 0/255 integers, or float {0, 1}; > 0 is anomalous.
    maps : array-like of shape (n_images, H, W)
        Anomaly maps at ground-truth resolution (``maps.shape == masks.shape``). Must be finite.

    Returns
    -------
    float
        AP in [0, 1]; 1.0 when every pixel is anomalous.

    Raises
    ------
    ValueError
        If the arrays are not 3-D or their shapes differ, a mask is not binary, a map holds NaN
        or inf (the count and image index are named), or no pixel is anomalous.

    Notes
    -----
    Memory: O(A + K) for A anomalous pixels and K distinct anomalous scores (at worst about
    50 bytes per anomalous pixel with float32 maps), plus temporaries for one image;
    the full maps array is never flattened, sorted or copied to float64. Time: O(T (log K +
    log HW)) for T pixels in H x W images, plus O(A log A) to sort the anomalous pixels; the
    maps are read twice and the masks three times, image by image.
    """
    st = _pixel_counts(masks, maps, metric="pixel_ap", regions=False, need_neg=False)
    return _ap_from_counts(st)


def _f1_from_counts(st: _PixelCounts) -> tuple[float, float]:
    # candidates: the distinct anomalous scores (descending); at values[k] the predicted pixels are
    # the anomalous ones >= values[k] and the normal ones > or == values[k]
    tp = np.cumsum(st.pos_counts[::-1])
    fp = st.neg_gt[::-1] + st.neg_eq[::-1]
    return _best_f1(st.values[::-1], tp, fp, st.n_pos)


def pixel_f1_max_threshold(masks, maps) -> tuple[float, float]:
    """The best pixel-level F1 over all pixels pooled, and the threshold reaching it.

    A pixel is predicted anomalous when ``score >= threshold``; ``F1 = 2 TP / (2 TP + FP + FN)``
    over all pixels of all images pooled together, i.e. what :func:`f1_max_threshold` gives on
    ``masks.ravel() > 0`` and ``maps.ravel()``, computed without flattening. The threshold is one
    of the anomalous pixels' scores (the best one always is); among thresholds reaching the best
    F1 the highest is returned.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W)
        Ground-truth masks: bool, 0/1 or 0/255 integers, or float {0, 1}; > 0 is anomalous.
    maps : array-like of shape (n_images, H, W)
        Anomaly maps at ground-truth resolution (``maps.shape == masks.shape``). Must be finite.

    Returns
    -------
    (float, float)
        ``(f1, threshold)``; the threshold is returned as a Python float (exact for float32 maps).

    Raises
    ------
    ValueError
        If the arrays are not 3-D or their shapes differ, a mask is not binary, a map holds NaN
        or inf (the count and image index are named), or the masks hold only one class.

    Notes
    -----
    The counting pass of :func:`pixel_ap`: memory O(A + K) for A anomalous pixels and K distinct
    anomalous scores plus temporaries for one image, time O(T (log K + log HW)) for T pixels.
    """
    st = _pixel_counts(masks, maps, metric="pixel_f1_max_threshold", regions=False, need_neg=True)
    return _f1_from_counts(st)


def pixel_f1_max(masks, maps) -> float:
    """Pixel-level F1-max over all pixels pooled (``score >= threshold``).

    The F1 of :func:`pixel_f1_max_threshold` (same definition, ties and errors).

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W)
        Ground-truth masks: bool, 0/1 or 0/255 integers, or float {0, 1}; > 0 is anomalous.
    maps : array-like of shape (n_images, H, W)
        Anomaly maps at ground-truth resolution (``maps.shape == masks.shape``). Must be finite.

    Returns
    -------
    float
        The best F1, in (0, 1].

    Raises
    ------
    ValueError
        As :func:`pixel_f1_max_threshold`.

    Notes
    -----
    Memory O(A + K) plus temporaries for one image; time O(T (log K + log HW)).
    """
    st = _pixel_counts(masks, maps, metric="pixel_f1_max", regions=False, need_neg=True)
    return _f1_from_counts(st)[0]


def pro_curve(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap (PRO) curve of the official MVTec AD evaluation.

    Regions are the 8-connected components of every mask, pooled over all images and weighted
    equally. At each distinct score ``t`` (descending) the curve is at
    ``FPR(t) = #{normal pixels >= t} / #{normal pixels}`` and
    ``PRO(t) = mean over regions r of #{pixels of r >= t} / |r|``; tied pixels enter together,
    values are clipped to 1, and ``(0, 0)`` and ``(1, 1)`` are added.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W)
        Ground-truth masks: bool, 0/1 or 0/255 integers, or float {0, 1}; > 0 is anomalous.
    maps : array-like of shape (n_images, H, W)
        Anomaly maps at ground-truth resolution (``maps.shape == masks.shape``). Must be finite.

    Returns
    -------
    fpr : ndarray of shape (n_points,), float64
        Non-decreasing, from 0 to 1.
    pro : ndarray of shape (n_points,), float64
        Non-decreasing, from 0 to 1.

    Raises
    ------
    ValueError
        As :func:`au_pro`.

    Notes
    -----
    The official curve has one point per distinct score of any pixel, which cannot be held in
    bounded memory. Between two consecutive distinct anomalous scores it is horizontal, so only
    the ends of those horizontal runs are returned (at most ``2 K + 2`` points for ``K`` distinct
    anomalous scores; consecutive duplicate points are dropped). Every returned point is a point
    of the official curve and the omitted points lie on the returned segments, so areas and linear
    interpolation are unchanged.

    Memory: O(A + K) for A anomalous pixels and K distinct anomalous scores (at worst about
    95 bytes per anomalous pixel with float32 maps), plus temporaries for one image;
    the full maps array is never flattened, sorted or copied to float64. Time: O(T (log K +
    log HW)) for T pixels in H x W images, plus O(A log A) to sort the anomalous pixels; the
    maps are read twice and the masks three times, image by image.
    """
    st = _pixel_counts(masks, maps, metric="pro_curve", regions=True, need_neg=True)
    return _pro_curve_from_counts(st)


def au_pro(masks, maps, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (the MVTec AD AU-PRO).

    The curve is that of :func:`pro_curve` (8-connected regions pooled over all images, each region
    weighted equally, ties merged, clipped to 1, with ``(0, 0)`` and ``(1, 1)`` added). Its
    trapezoidal area over ``0 <= FPR <= fpr_limit`` (interpolating linearly at ``fpr_limit``) is
    divided by ``fpr_limit``.

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W)
        Ground-truth masks: bool, 0/1 or 0/255 integers, or float {0, 1}; > 0 is anomalous.
        All-zero masks (normal images) are allowed; they contribute normal pixels only.
    maps : array-like of shape (n_images, H, W)
        Anomaly maps at full ground-truth resolution (``maps.shape == masks.shape``; use
        :func:`resize_maps` first otherwise). Higher means more anomalous. Must be finite.
    fpr_limit : float, default=0.3
        Upper integration limit of the false positive rate, in (0, 1].

    Returns
    -------
    float
        AU-PRO in [0, 1] (clipped, so rounding can never push it above 1). 1.0 when every anomalous
        pixel scores above every normal pixel; 0.0 when every normal pixel scores above every
        anomalous one.

    Raises
    ------
    ValueError
        If the arrays are not 3-D or their shapes differ (both shapes are named), a mask is not
        binary, a map holds NaN or inf (the count and image index are named), the masks hold no
        anomalous region or no normal pixel, or ``fpr_limit`` is not in (0, 1].

    Notes
    -----
    Memory: O(A + K) for A anomalous pixels and K distinct anomalous scores (at worst about
    70 bytes per anomalous pixel with float32 maps), plus temporaries for one image;
    the full maps array is never flattened, sorted or copied to float64. Time: O(T (log K +
    log HW)) for T pixels in H x W images, plus O(A log A) to sort the anomalous pixels; the
    maps are read twice and the masks three times, image by image.
    """
    limit = _check_fpr_limit(fpr_limit)
    st = _pixel_counts(masks, maps, metric="au_pro", regions=True, need_neg=True)
    return _au_pro_from_counts(st, limit)


def pixel_metrics(masks, maps, fpr_limit: float = 0.3) -> dict[str, float]:
    """Pixel AUROC, pixel AP and AU-PRO from one streamed pass (cheaper than three calls).

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W)
        Ground-truth masks: bool, 0/1 or 0/255 integers, or float {0, 1}; > 0 is anomalous.
    maps : array-like of shape (n_images, H, W)
        Anomaly maps at ground-truth resolution (``maps.shape == masks.shape``). Must be finite.
    fpr_limit : float, default=0.3
        Integration limit of :func:`au_pro`, in (0, 1].

    Returns
    -------
    dict
        ``{"pixel_auroc": float, "pixel_ap": float, "au_pro": float}``, each equal to the result of
        the function of that name.

    Raises
    ------
    ValueError
        As :func:`au_pro` (both classes must be present).

    Notes
    -----
    Memory: O(A + K) for A anomalous pixels and K distinct anomalous scores (at worst about
    70 bytes per anomalous pixel with float32 maps), plus temporaries for one image;
    the full maps array is never flattened, sorted or copied to float64. Time: O(T (log K +
    log HW)) for T pixels in H x W images, plus O(A log A) to sort the anomalous pixels; the
    maps are read twice and the masks three times, image by image.
    """
    limit = _check_fpr_limit(fpr_limit)
    st = _pixel_counts(masks, maps, metric="pixel_metrics", regions=True, need_neg=True)
    return {
        "pixel_auroc": _auroc_from_counts(st),
        "pixel_ap": _ap_from_counts(st),
        "au_pro": _au_pro_from_counts(st, limit),
    }


# --------------------------------------------------------------------------------------------------
# the released GLASS PRO (a named variant, not the standard AU-PRO)
# --------------------------------------------------------------------------------------------------


def _check_positive_int(value, name: str, odd: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    if odd and int(value) % 2 == 0:
        raise ValueError(f"{name} must be odd (a window centred on the pixel), got {value!r}")
    return int(value)


def pro_released(masks, maps, *, num_thresholds: int = 200, dilation: int = 5, fpr_limit: float = 0.3) -> float:
    """The PRO of GLASS's released code: thresholded, dilated, FPR-rescaled (not the standard AU-PRO).

    What ``metrics.compute_pro(masks, amaps, num_th=200)`` of the released GLASS code (cqylunlun/GLASS
    at f788d56, called by its ``GLASS._evaluate`` for the reported PRO) computes, vectorised and
    streamed image by image. With ``lo`` / ``hi`` the smallest / largest score of all maps:

    1. thresholds ``t_k = np.arange(lo, hi, (hi - lo) / num_thresholds)`` (computed exactly so, in
       the maps' dtype: ``num_thresholds`` values, or one more when the float count rounds up; ``hi``
       itself is never a threshold);
    2. at each ``t_k`` a pixel is predicted anomalous when its score is ``> t_k``;
       ``FPR_k = #{normal pixels > t_k} / #{normal pixels}`` (undilated predictions);
    3. ``PRO_k`` = the mean over the ground-truth regions (8-connected components of every mask,
       pooled over all images, each weighted equally) of the fraction of the region's pixels that
       are predicted anomalous **after a dilation** of the prediction by a ``dilation x dilation``
       square (``cv2.dilate`` with a 5 x 5 rectangle in the released code): a region pixel counts
       as detected when any pixel of its window (clipped at the image border) scores ``> t_k``.
       Computed as ``max_filter(map) > t_k``, which is the same set (dilation of a thresholded map
       equals the threshold of its grey-level dilation);
    4. only the points with ``FPR_k < fpr_limit`` (strict) are kept; their FPRs are rescaled to
       ``(FPR - min) / (max - min + 1e-10)`` over the kept points; the result is the trapezoidal
       area under ``PRO`` against the rescaled FPR (``sklearn.metrics.auc``).

    How it differs from :func:`au_pro` (the standard MVTec AD AU-PRO, which is unchanged):

    - :func:`au_pro` uses the exact curve with one point per distinct score (``score >= t``, ties
      together); here about 200 evenly spaced thresholds, so the curve is coarse where scores crowd;
    - :func:`au_pro` measures overlaps on the predictions themselves; here on predictions dilated
      by 5 x 5 pixels, which raises every overlap (a region is credited for detections up to two
      pixels outside it; a 1-pixel defect beside a high score counts as found) while the FPR does
      not pay for the dilation: the main reason the released numbers read higher;
    - :func:`au_pro` integrates ``FPR`` over ``[0, fpr_limit]`` (with ``(0, 0)`` added and the
      curve interpolated at ``fpr_limit``) and divides by ``fpr_limit``; here the area is taken
      over the span of the kept thresholds' FPRs only, stretched to length 1, i.e. the mean PRO over
      ``[FPR_min, FPR_max]`` of the kept points (the low-FPR start of the curve, where PRO is lowest,
      is dropped when the highest threshold still has false positives).

    Parameters
    ----------
    masks : array-like of shape (n_images, H, W)
        Ground-truth masks: bool, 0/1 or 0/255 integers, or float {0, 1}; > 0 is anomalous.
        (The released code receives float {0, 1} masks.)
    maps : array-like of shape (n_images, H, W)
        Anomaly maps at ground-truth resolution. Must be finite and not all equal. Float maps keep
        their dtype (the thresholds are computed from their float32 / float64 extremes as the
        released code does); others are converted to float64.
    num_thresholds : int, default=200
        ``num_th`` of the released code.
    dilation : int, default=5
        Side of the square dilation of the predictions for the overlaps (odd; 1: no dilation).
    fpr_limit : float, default=0.3
        Points with ``FPR < fpr_limit`` are kept, in (0, 1].

    Returns
    -------
    float
        The released PRO, in [0, 1].

    Raises
    ------
    ValueError
        As :func:`au_pro` (shapes, binary masks, finite maps, both classes present); also if all
        scores are equal (no threshold), fewer than two thresholds have ``FPR < fpr_limit`` (the
        area is undefined; ``sklearn.metrics.auc`` raises there too, and the released
        ``GLASS._evaluate`` then records PRO 0.0), or ``num_thresholds`` / ``dilation`` are not
        positive ints (``dilation`` odd).

    Notes
    -----
    Exactly the released function's numbers (compared with them in ``tests/test_metrics_released.py``
    on a golden fixture, ``tests/golden/pro_released.json``), up to the summation order of the
    mean overlap. Time: ``O(T log K)`` for ``T`` pixels and ``K`` thresholds plus one max filter per
    image; the released loop is ``O(K T)``. Memory: temporaries of one image and ``R x (K + 1)``
    counts for its ``R`` regions; the maps are read twice.
    """
    from scipy import ndimage

    masks, maps = _check_pixel_inputs(masks, maps)
    num_thresholds = _check_positive_int(num_thresholds, "num_thresholds")
    dilation = _check_positive_int(dilation, "dilation", odd=True)
    limit = _check_fpr_limit(fpr_limit)
    n = masks.shape[0]
    wd = _work_dtype(maps.dtype)
    per_image, n_pos, n_neg = _class_counts(masks, "pro_released", need_neg=True)

    # pass 1: finite check and the score range, in the maps' own dtype (as amaps.min() / .max())
    lo = hi = None
    for i in range(n):
        s = np.asarray(maps[i], dtype=wd)
        _check_finite_map(s, i, n)
        lo = s.min() if lo is None else min(lo, s.min())
        hi = s.max() if hi is None else max(hi, s.max())
    if not hi > lo:
        raise ValueError(f"pro_released is undefined for constant maps: every score equals {lo.item()!r}")
    thresholds = np.arange(lo, hi, (hi - lo) / num_thresholds)
    ct = np.result_type(thresholds.dtype, wd)  # float32 scores compare exactly in float64
    thresholds = thresholds.astype(ct, copy=False)
    k = thresholds.size

    # pass 2: a pixel counts at thresholds t_j < score, i.e. j < searchsorted(t, score, "left")
    neg_hist = np.zeros(k + 1, dtype=np.int64)
    overlap_sum = np.zeros(k, dtype=np.float64)
    n_regions = 0
    for i in range(n):
        s = np.asarray(maps[i], dtype=wd)
        if not per_image[i]:
            neg_hist += np.bincount(np.searchsorted(thresholds, s.ravel().astype(ct, copy=False)), minlength=k + 1)
            continue
        pos = masks[i] != 0
        neg_hist += np.bincount(np.searchsorted(thresholds, s[~pos].astype(ct, copy=False)), minlength=k + 1)
        lab, nr = ndimage.label(pos, structure=_STRUCTURE_8)
        grown = ndimage.maximum_filter(s, size=dilation, mode="nearest") if dilation > 1 else s
        idx = np.searchsorted(thresholds, grown[pos].astype(ct, copy=False))
        hist = np.bincount((lab[pos] - 1) * (k + 1) + idx, minlength=nr * (k + 1)).reshape(nr, k + 1)
        above = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1]  # above[r, j] = #pixels of r with idx >= j
        overlap_sum += (above[:, 1:] / above[:, :1]).sum(axis=0)  # detected at t_j: idx >= j + 1
        n_regions += int(nr)
    fpr = np.cumsum(neg_hist[::-1])[::-1][1:] / n_neg
    pro = overlap_sum / n_regions

    keep = fpr < limit  # fpr is non-increasing along the thresholds: a suffix is kept
    if int(keep.sum()) < 2:
        raise ValueError(
            f"pro_released needs at least two of its {k} thresholds with FPR < {limit}, got "
            f"{int(keep.sum())} (the normal pixels' scores crowd at the top of the range)"
        )
    x, y = fpr[keep], pro[keep]
    x = (x - x.min()) / (x.max() - x.min() + 1e-10)
    area = 0.5 * float(np.dot(x[:-1] - x[1:], y[:-1] + y[1:]))  # x descends along the thresholds
    log.debug(
        "pro_released: %d images, %d regions, %d thresholds, %d with FPR < %s",
        n,
        n_regions,
        k,
        int(keep.sum()),
        limit,
    )
    return area


# --------------------------------------------------------------------------------------------------
# resampling
# --------------------------------------------------------------------------------------------------


def resize_maps(maps, size, *, chunk_size: int | None = None) -> np.ndarray:
    """Bilinearly resample score maps to ``size`` (e.g. to ground-truth resolution).

    Uses ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` on the CPU in
    float32, ``chunk_size`` maps at a time, writing into one preallocated output array.

    Parameters
    ----------
    maps : array-like of shape (n_images, h, w) or (h, w)
        Score maps (numpy array or CPU torch tensor).
    size : int or (int, int)
        Target ``(H, W)``; an int means ``(size, size)``.
    chunk_size : int, optional
        Maps resampled per call; by default as many as keep one chunk's input and output
        under about 2**24 float32 values (64 MiB).

    Returns
    -------
    ndarray of shape (n_images, H, W) or (H, W), float32
        A new array, also when the maps already have the target size (then only converted to
        float32). Down-sampling is plain bilinear (no anti-aliasing).

    Raises
    ------
    ValueError
        If ``maps`` is not 2-D or 3-D, or ``size`` / ``chunk_size`` is not positive.

    Notes
    -----
    Memory: the float32 output (n_images * H * W * 4 bytes) plus one chunk of input and output.
    Time: O(n_images * H * W).
    """
    import torch
    import torch.nn.functional as F

    if isinstance(maps, torch.Tensor):
        maps = maps.detach().cpu().numpy()
    arr = np.asarray(maps)
    if arr.ndim not in (2, 3):
        raise ValueError(f"maps must be N x h x w (or h x w), got shape {arr.shape}")
    if isinstance(size, numbers.Integral):
        size = (int(size), int(size))
    try:
        out_h, out_w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be an int or a pair (H, W), got {size!r}") from None
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"size must be positive, got {(out_h, out_w)}")
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    n, h, w = arr.shape
    if chunk_size is None:
        chunk_size = max(1, (1 << 24) // max(1, h * w + out_h * out_w))
    elif chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    out = np.empty((n, out_h, out_w), dtype=np.float32)
    if (h, w) == (out_h, out_w):
        out[...] = arr
    else:
        with torch.no_grad():
            for i in range(0, n, chunk_size):
                x = torch.from_numpy(np.ascontiguousarray(arr[i : i + chunk_size], dtype=np.float32))
                y = F.interpolate(x[:, None], size=(out_h, out_w), mode="bilinear", align_corners=False)
                out[i : i + x.shape[0]] = y[:, 0].numpy()
    log.debug("resize_maps: %d maps %dx%d -> %dx%d", n, h, w, out_h, out_w)
    return out[0] if single else out
