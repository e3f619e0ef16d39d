"""PatchCore (Roth et al., CVPR 2022, "Towards Total Recall in Industrial Anomaly Detection").

Registered as ``"patchcore"``. No training: a memory bank of nominal patch features, reduced by a
greedy coreset, is searched by nearest neighbour at test time.

Pipeline (paper Sec. 3)
    1. Locally aware patch features (Sec. 3.1): frozen WideResNet-50 ``layer2`` + ``layer3``,
       every position described by its ``p x p`` neighbourhood (``p = 3``), deeper layer
       up-sampled to the ``layer2`` grid, reduced to 1024-D by the released two-stage adaptive
       average pooling -- :class:`adlib.models.features.PatchFeatures`. Images are resized to 256
       and centre-cropped to 224 (Sec. 4.1), giving a 28 x 28 grid.
    2. Memory bank ``M``: the patch features of all training images (Sec. 3.1).
    3. Coreset subsampling (Sec. 3.2, Alg. 1): the minimax facility-location objective

           M_C* = argmin_{M_C subset M} max_{m in M} min_{n in M_C} ||m - n||_2

       approximated by the greedy (farthest-point) rule: start from one random element, then
       repeatedly add ``argmax_{m in M - M_C} min_{n in M_C} ||psi(m) - psi(n)||_2`` where ``psi``
       is a random linear projection to 128 dimensions (Johnson-Lindenstrauss) --
       :func:`approximate_greedy_coreset`; :func:`exact_greedy_coreset` uses the features
       themselves (``psi`` = identity). Coreset ratio 10 % (the paper also reports 1 %).
    4. Scoring (Sec. 3.3): per test patch the distance to its nearest memory-bank element
       (:func:`nearest_neighbors`); the image score is the largest of those, ``s*``, reweighted
       (:func:`reweighted_image_scores`) by the paper's equation

           s = (1 - exp||m_test,* - m*||_2 / sum_{m in N_b(m*)} exp||m_test,* - m||_2) * s*

       where ``m_test,*`` is the test patch with the largest nearest-neighbour distance, ``m*`` its
       nearest bank element, ``s* = ||m_test,* - m*||_2`` and ``N_b(m*)`` the ``b`` nearest bank
       elements of ``m*`` (``b = 9`` here; ``m*`` itself is one of them, at distance 0, so the
       fraction is a softmax entry and ``s`` lies in ``[0, s*)``). ``reweight=False`` gives
       ``s = s*``. Pixel map: the per-patch distances on the feature grid, bilinearly up-sampled
       (``align_corners=False``) to the mask resolution and smoothed by a Gaussian of
       ``sigma = 4`` (:func:`anomaly_maps`).

Paper vs released code (patchcore-inspection), documented, not all exposed as options
    - Image score: the released code takes the plain maximum of the per-patch scores (no
      reweighting; ``reweight=False`` here). The paper's equation is the default.
    - Distances: the released code scores with faiss ``IndexFlatL2``, i.e. *squared* L2
      distances; the paper and this module use L2 distances. Image AUROC is unaffected without
      reweighting (a monotone transform of the max); pixel maps differ slightly after smoothing.
    - Coreset start: the released approximate sampler initialises the minimum distances with the
      mean distance to 10 random elements and its projection is an ``nn.Linear`` with PyTorch's
      default (uniform) initialisation; here, as in Alg. 1, the greedy starts from one random
      element and the projection is Gaussian with variance ``1 / 128`` (JL scaling, so projected
      distances estimate the original ones).

Memory and cost of the coreset (the trap of ``conventions.md``)
    An exact greedy coreset written with an ``N x N`` distance matrix needs ``4 N^2`` bytes:
    for a full MVTec AD category at paper settings (hazelnut: 391 training images x 28 x 28 =
    306,544 patches) that is about 376 GB. Here the greedy keeps only an ``N``-vector of minimum
    distances, updated once per added element against the new element, ``chunk`` rows at a time:
    memory ``O(N * k)`` for the projected features (``k = 128``: 157 MB for hazelnut) plus
    ``O(chunk)`` scratch (the distances of one chunk to the new element) plus two ``N``-vectors; the features
    themselves (``N x 1024`` float32, 1.26 GB for hazelnut) are held once during the fit, and the
    bank keeps 10 % of them (126 MB). Time: ``n`` iterations of ``O(N * k)`` each, i.e.
    ``ratio * N^2 * k`` multiply-adds (1.2e12 for hazelnut at 10 %). Memory-bandwidth bound
    (each iteration streams the ``N x k`` projection once): measured 6.5 ms per iteration at
    ``N = 100k``, ``k = 128`` on 2 CPU cores, i.e. about 10 minutes for hazelnut on such a CPU;
    on a GPU the iterations run without host synchronisation (estimated seconds, not measured).

Choices left open by the paper (the project's, documented here)
    - Coreset size ``n = max(1, int(ratio * N))`` (the released rounding); ``ratio >= 1`` keeps
      every patch. Elements already selected are never selected again, even among duplicates.
    - ``N_b(m*)`` is computed by exact k-NN inside the bank; if duplicates of ``m*`` crowd it out,
      ``m*`` is put back in place of the farthest neighbour, so the softmax always holds its
      entry. ``b`` is capped at the bank size; ``b = 1`` would make every score 0 and is refused.
    - Nearest-neighbour search is exact (brute force, chunked): candidates by squared distances
      from one matrix product per chunk, then the reported distance recomputed as
      ``||q - m||_2`` from the difference (no cancellation error).
    - Randomness: one CPU ``torch.Generator`` seeded with ``seed`` draws the coreset's first
      element, then the projection matrix; the backbone's random initialisation (``smoke``) is
      fixed by ``backbone_seed``. A checkpoint records a SHA-256 of the backbone's weights and
      loading refuses a backbone that differs (the bank would be meaningless).

Opt-in fast scoring (issue 22; the defaults are the path every recorded number was made with)
    Where the time of scoring goes (``benchmarks/profile_patchcore.py``, ``benchmarks/RESULTS.md``):
    the backbone and, as costly or more, the released patch features (layer3's ``1024 x 3 x 3``
    unfolded values up-sampled to layer2's grid before being pooled); then the nearest-neighbour
    search (one ``queries x bank x D`` matrix product, about a tenth); the reweighting (the ``b``
    neighbours of ``B`` bank rows) and the maps (up-sampling, scipy's Gaussian) take under 1 %
    each, so neither is precomputed nor moved (a table of every bank row's ``b`` neighbours
    would cost ``L^2 D`` at fit time, 1.9e12 multiply-adds for a full MVTec category).

    - the patch features: the shared fast path ``features`` (:mod:`adlib.fastpath`,
      ``fast=("features",)``) computes them as one grouped ``p x p`` convolution per layer
      before the up-sampling (:func:`adlib.models.features.reduce_grid`); same numbers up to
      float round-off.
    - ``nn_backend="faiss"``: faiss's exact ``IndexFlatL2`` (GPU index where faiss has GPU support
      and the bank is on CUDA) finds the nearest row; the distance is recomputed from the
      difference as :func:`knn` does. Same distances up to round-off; a near-tie may pick the other
      row.
    - ``nn_backend="bf16"``: ``nn_candidates`` candidates from a bfloat16 product of centred rows
      (AMX / AVX-512-bf16 / tensor cores), re-ranked by the exact float32 distance
      (:func:`bf16_nearest_neighbors`): exact when the true nearest row is among the candidates;
      tested: at least 99 % of the patches exact, a miss at most 1 % farther. Under the reference
      numerics oneDNN is off and bf16 is emulated (slower): a warning says so and
      :meth:`PatchCore.scoring_path` (recorded in ``info()``) names the path that ran.
    The metrics of both stay within 0.1 point of the default path on the built-in benchmark
    (``tests/test_patchcore.py``). The backbone's own fast paths (bf16 autocast, channels-last,
    compile) are the shared lifecycle's (:mod:`adlib.fastpath`), not PatchCore's.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import rehearsal
from ..backbones import FeatureExtractor
from ..data.base import ImageTransform
from .base import Prediction, register, resolve_device
from .core import FlopPart, Method, MethodConfig, NetworkPart, Workload, input_hw, input_size
from .features import PatchFeatures
from .smoothing import GaussianFilter, gaussian_maps

log = logging.getLogger(__name__)

SAMPLERS = ("approximate", "exact", "random")
#: nearest-neighbour search backends (``PatchCoreConfig.nn_backend``)
NN_BACKENDS = ("torch", "faiss", "bf16")

#: scratch budget defaults (rows per distance chunk)
DEFAULT_CORESET_CHUNK = 65536
DEFAULT_QUERY_CHUNK = 4096
DEFAULT_BANK_CHUNK = 16384


# ----------------------------------------------------------------------------------------------
# Coreset (Sec. 3.2, Alg. 1)


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def random_projection_matrix(
    dim: int, projection_dim: int, generator: torch.Generator | int | None = None
) -> torch.Tensor:
    """A ``dim x projection_dim`` Gaussian matrix with entries ``N(0, 1 / projection_dim)`` (CPU).

    Johnson-Lindenstrauss scaling: ``||x A - y A||`` estimates ``||x - y||``.
    """
    g = _generator(generator)
    return torch.randn(dim, projection_dim, generator=g) / math.sqrt(projection_dim)


def random_projection(features: torch.Tensor, matrix: torch.Tensor, chunk: int = DEFAULT_CORESET_CHUNK) -> torch.Tensor:
    """``features @ matrix`` written chunk by chunk into one ``N x k`` float32 tensor."""
    n = features.shape[0]
    matrix = matrix.to(device=features.device, dtype=torch.float32)
    out = torch.empty(n, matrix.shape[1], device=features.device, dtype=torch.float32)
    for s in range(0, n, chunk):
        torch.mm(features[s : s + chunk].float(), matrix, out=out[s : s + chunk])
    return out


def _greedy(points: torch.Tensor, n: int, start: int, chunk: int, progress: bool) -> tuple[torch.Tensor, float]:
    """Farthest-point greedy on ``points`` (N x k) from index ``start``: indices (n,), covering radius.

    Memory: the N-vector ``min_d`` plus one ``chunk``-vector of distances at a time (computed from
    differences, not from a matrix product, so exact and independent of ``chunk``). No host sync per
    iteration (indices stay on the device), so a GPU runs the loop asynchronously.
    """
    N = points.shape[0]
    dev = points.device
    min_d = torch.full((N,), float("inf"), device=dev, dtype=torch.float32)
    selected = torch.empty(n, dtype=torch.long, device=dev)
    idx = torch.tensor([start], dtype=torch.long, device=dev)
    for i in tqdm(range(n), desc="coreset", disable=not progress, leave=False, mininterval=1.0):
        selected[i : i + 1] = idx
        c = points.index_select(0, idx)  # 1 x k
        for s in range(0, N, chunk):
            d = torch.cdist(points[s : s + chunk], c, compute_mode="donot_use_mm_for_euclid_dist")[:, 0]
            torch.minimum(min_d[s : s + chunk], d, out=min_d[s : s + chunk])
        min_d.index_fill_(0, idx, -1.0)  # selected: -1 stays the minimum, never picked twice
        idx = torch.argmax(min_d).view(1)
    radius = float(min_d.max().clamp_min(0.0)) if n < N else 0.0
    return selected, radius


def _check_n(features: torch.Tensor, n: int) -> int:
    if features.ndim != 2:
        raise ValueError(f"features must be N x D, got shape {tuple(features.shape)}")
    if n < 1:
        raise ValueError(f"coreset size must be >= 1, got {n}")
    return features.shape[0]


def exact_greedy_coreset(
    features: torch.Tensor,
    n: int,
    generator: torch.Generator | int | None = None,
    chunk: int = DEFAULT_CORESET_CHUNK,
    *,
    return_radius: bool = False,
    progress: bool = False,
):
    """Greedy minimax coreset of ``n`` rows of ``features`` (N x D) with distances in the feature space.

    The greedy (Gonzalez) rule of PatchCore Alg. 1 without projection; its covering radius
    ``max_m min_{c in C} ||m - c||`` is at most twice the optimum of the minimax objective.
    The first element is drawn from ``generator`` (a ``torch.Generator`` or an int seed; None:
    seed 0). ``n >= N`` returns ``arange(N)``. Memory ``O(N + chunk)`` beyond the features.

    Returns the selected indices (LongTensor, selection order) and, with ``return_radius``, the
    covering radius of the selection (float).
    """
    N = _check_n(features, n)
    if n >= N:
        idx = torch.arange(N, device=features.device)
        return (idx, 0.0) if return_radius else idx
    g = _generator(generator)
    start = int(torch.randint(N, (1,), generator=g))
    idx, radius = _greedy(features.float(), n, start, chunk, progress)
    return (idx, radius) if return_radius else idx


def approximate_greedy_coreset(
    features: torch.Tensor,
    n: int,
    projection_dim: int | None = 128,
    generator: torch.Generator | int | None = None,
    chunk: int = DEFAULT_CORESET_CHUNK,
    *,
    return_radius: bool = False,
    progress: bool = False,
):
    """PatchCore's coreset (Alg. 1): the greedy on a random projection of the features to ``projection_dim``.

    The first element is drawn from ``generator`` first (so it is the same as
    :func:`exact_greedy_coreset`'s for the same seed), then the ``D x k`` Gaussian projection
    matrix. ``projection_dim`` None or ``>= D`` skips the projection (nothing to reduce).

    Quality: if the projection distorts every pairwise distance by a factor within
    ``[1 - eps, 1 + eps]``, the selection's covering radius *in the original space* is at most
    ``2 (1 + eps) / (1 - eps)`` times the optimum, hence at most that times the exact greedy's
    radius; in practice (tests) it stays within 1.25x of it.

    Memory: the ``N x k`` projected features (float32) + ``O(chunk)`` scratch + two N-vectors;
    never an ``N x N`` matrix. Time: ``n`` passes over the ``N x k`` projection.
    Returns indices (and, with ``return_radius``, the covering radius in the *projected* space).
    """
    N = _check_n(features, n)
    if n >= N:
        idx = torch.arange(N, device=features.device)
        return (idx, 0.0) if return_radius else idx
    g = _generator(generator)
    start = int(torch.randint(N, (1,), generator=g))
    D = features.shape[1]
    if projection_dim is None or projection_dim >= D:
        points = features.float()
    else:
        points = random_projection(features, random_projection_matrix(D, projection_dim, g), chunk)
    idx, radius = _greedy(points, n, start, chunk, progress)
    return (idx, radius) if return_radius else idx


def covering_radius(
    features: torch.Tensor,
    indices: torch.Tensor,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    bank_chunk: int = DEFAULT_BANK_CHUNK,
) -> float:
    """``max_m min_{c in C} ||m - c||_2`` of the rows ``indices`` of ``features`` (the minimax objective)."""
    d, _ = nearest_neighbors(features, features[indices], query_chunk, bank_chunk)
    return float(d.max())


# ----------------------------------------------------------------------------------------------
# Nearest neighbours and scores (Sec. 3.3)


@torch.no_grad()
def knn(
    queries: torch.Tensor,
    bank: torch.Tensor,
    k: int = 1,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    bank_chunk: int = DEFAULT_BANK_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ``k`` nearest bank rows of every query: distances ``M x k`` (ascending) and indices ``M x k``.

    Brute force in ``query_chunk x bank_chunk`` blocks (scratch ``O(query_chunk * bank_chunk)``):
    candidates from squared distances ``|q|^2 + |m|^2 - 2 q.m`` (one matrix product per block),
    then the reported distances recomputed from the differences ``||q - m||_2``.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"need M x D queries and L x D bank, got {tuple(queries.shape)} and {tuple(bank.shape)}")
    L = bank.shape[0]
    if L == 0:
        raise ValueError("empty memory bank")
    k = min(int(k), L)
    queries, bank = queries.float(), bank.float()
    bank_sq = (bank * bank).sum(1)
    M = queries.shape[0]
    out_d = torch.empty(M, k, device=queries.device)
    out_i = torch.empty(M, k, dtype=torch.long, device=queries.device)
    for qs in range(0, M, query_chunk):
        q = queries[qs : qs + query_chunk]
        q_sq = (q * q).sum(1, keepdim=True)
        best_d = best_i = None
        for bs in range(0, L, bank_chunk):
            b = bank[bs : bs + bank_chunk]
            d2 = torch.addmm(q_sq + bank_sq[bs : bs + bank_chunk], q, b.T, beta=1.0, alpha=-2.0)
            kk = min(k, b.shape[0])
            if kk == 1:
                cd, ci = d2.min(dim=1, keepdim=True)
            else:
                cd, ci = torch.topk(d2, kk, dim=1, largest=False)
            ci = ci + bs
            if best_d is None:
                best_d, best_i = cd, ci
            else:
                cat_d, cat_i = torch.cat([best_d, cd], 1), torch.cat([best_i, ci], 1)
                if k == 1:
                    sel = cat_d.argmin(dim=1, keepdim=True)
                else:
                    sel = torch.topk(cat_d, k, dim=1, largest=False).indices
                best_d, best_i = cat_d.gather(1, sel), cat_i.gather(1, sel)
        exact = torch.linalg.vector_norm(q[:, None, :] - bank[best_i], dim=-1)
        order = torch.sort(exact, dim=1, stable=True)
        out_d[qs : qs + query_chunk] = order.values
        out_i[qs : qs + query_chunk] = best_i.gather(1, order.indices)
    return out_d, out_i


def nearest_neighbors(
    queries: torch.Tensor,
    bank: torch.Tensor,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    bank_chunk: int = DEFAULT_BANK_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance ``||q - m*||_2`` of every query to its nearest bank row ``m*`` (M,), and that row's index (M,)."""
    d, i = knn(queries, bank, 1, query_chunk, bank_chunk)
    return d[:, 0], i[:, 0]


@torch.no_grad()
def reweighted_image_scores(
    patches: torch.Tensor,
    nn_dist: torch.Tensor,
    nn_idx: torch.Tensor,
    bank: torch.Tensor,
    num_neighbors: int = 9,
    bank_chunk: int = DEFAULT_BANK_CHUNK,
) -> torch.Tensor:
    """PatchCore's image score (Sec. 3.3): ``s = (1 - exp(s*) / sum_{m in N_b(m*)} exp||m_test,* - m||) * s*``.

    ``patches``: ``B x P x D`` test patch features; ``nn_dist`` / ``nn_idx``: ``B x P`` distance
    to and index of each patch's nearest bank row (:func:`nearest_neighbors`). Per image,
    ``m_test,*`` is the patch of largest ``nn_dist`` (``s*``), ``m*`` its nearest bank row and
    ``N_b(m*)`` the ``b = num_neighbors`` nearest bank rows of ``m*`` (``m*`` included). The
    fraction is computed in softmax form, ``exp(s* - logsumexp_j d_j)``, which cannot overflow
    however large the distances are. Returns ``B`` scores in ``[0, s*)``.
    """
    if num_neighbors < 2:
        raise ValueError(f"num_neighbors (b) must be >= 2 for the reweighting (b = 1 gives s = 0), got {num_neighbors}")
    B = patches.shape[0]
    rows = torch.arange(B, device=patches.device)
    s_star, p_star = nn_dist.max(dim=1)
    m_test = patches[rows, p_star].float()  # B x D
    star = nn_idx[rows, p_star]  # B
    _, nb = knn(bank[star], bank, num_neighbors, bank_chunk=bank_chunk)  # B x b
    missing = ~(nb == star[:, None]).any(dim=1)
    if missing.any():  # duplicates of m* crowded it out: put it back instead of the farthest one
        nb[missing, -1] = star[missing]
    d = torch.linalg.vector_norm(m_test[:, None, :] - bank[nb].float(), dim=-1)  # B x b
    d_star = torch.linalg.vector_norm(m_test - bank[star].float(), dim=-1)  # = s* (recomputed alike)
    frac = torch.exp(d_star - torch.logsumexp(d, dim=1))
    return (1.0 - frac).clamp_min(0.0) * s_star


def anomaly_maps(
    grid_scores: torch.Tensor, size: tuple[int, int], sigma: float = 4.0, on_device: bool = False
) -> np.ndarray:
    """Pixel maps from per-patch scores ``B x h x w``: bilinear up-sampling to ``size``
    (``align_corners=False``), then a Gaussian of ``sigma`` per image (``scipy.ndimage``, reflect
    borders, truncated at 4 sigma; ``on_device``: batched on the scores' device,
    :func:`adlib.models.smoothing.gaussian_maps`). Returns ``B x H x W`` float32."""
    up = F.interpolate(grid_scores[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return gaussian_maps(up, sigma, on_device)


@torch.no_grad()
def bank_neighbours(bank: torch.Tensor, num_neighbors: int = 9, bank_chunk: int = DEFAULT_BANK_CHUNK) -> torch.Tensor:
    """``N_b(m)`` of every bank row ``m`` (:func:`reweighted_image_scores`): the ``L x b`` indices of
    its ``b`` nearest bank rows (:func:`knn`), ``m`` itself put back in place of the farthest one
    where duplicates crowded it out. A function of the bank alone, so an exported model holds it
    as a constant table instead of searching the bank for it (:class:`PatchCoreExport`)."""
    rows = torch.arange(bank.shape[0], device=bank.device)
    _, nb = knn(bank, bank, num_neighbors, bank_chunk=bank_chunk)
    missing = ~(nb == rows[:, None]).any(dim=1)
    nb[missing, -1] = rows[missing]
    return nb


class PatchCoreExport(nn.Module):
    """PatchCore inference as one module, for export (:mod:`adlib.export`): normalised images
    ``B x 3 x H x W`` -> image score ``B`` and pixel map ``B x H x W``, as :meth:`PatchCore.predict`.

    The nearest-neighbour search is matrix products: squared distances
    ``||q||^2 - 2 q m^T + ||m||^2`` of the ``B * P`` patches to the ``L`` bank rows (the largest
    intermediate, ``B x P x L``), the nearest row by ``argmin`` (no sort, no top-k), then
    ``||q - m*||_2`` recomputed from the difference, as :func:`knn` reports it. The reweighting
    (:func:`reweighted_image_scores`) reads ``N_b(m*)`` from the constant table of
    :func:`bank_neighbours` (``L x b`` indices). The bank is a constant of the graph (``L x D``
    float32). The map: bilinear up-sampling and the Gaussian as a fixed convolution
    (:class:`~adlib.models.smoothing.GaussianFilter`)."""

    def __init__(self, features: nn.Module, bank: torch.Tensor, cfg: PatchCoreConfig, size: tuple[int, int]) -> None:
        super().__init__()
        self.features = features
        bank = bank.detach().float()
        self.register_buffer("bank", bank.clone())
        self.register_buffer("bank_sq", (bank * bank).sum(1))
        self.reweight = bool(cfg.reweight)
        nb = bank_neighbours(bank, cfg.num_neighbors, cfg.nn_bank_chunk) if self.reweight else None
        self.register_buffer("neighbours", nb)
        self.size = (int(size[0]), int(size[1]))
        self.smooth = GaussianFilter(cfg.smooth_sigma, self.size) if cfg.smooth_sigma > 0 else None

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(images)
        B, h, w, D = f.shape
        patches = f.reshape(B, h * w, D)
        q = patches.reshape(-1, D)
        d2 = (q * q).sum(1, keepdim=True) - 2.0 * (q @ self.bank.T) + self.bank_sq[None]
        idx = d2.argmin(dim=1)  # (B * P): the nearest bank row of each patch
        dist = torch.linalg.vector_norm(q - self.bank[idx], dim=1).reshape(B, h * w)
        idx = idx.reshape(B, h * w)
        s_star, p_star = dist.max(dim=1)
        if self.reweight:
            m_test = torch.gather(patches, 1, p_star[:, None, None].expand(-1, 1, D))[:, 0]  # B x D
            star = torch.gather(idx, 1, p_star[:, None])[:, 0]  # B
            d = torch.linalg.vector_norm(m_test[:, None, :] - self.bank[self.neighbours[star]], dim=-1)  # B x b
            d_star = torch.linalg.vector_norm(m_test - self.bank[star], dim=-1)
            score = (1.0 - torch.exp(d_star - torch.logsumexp(d, dim=1))).clamp_min(0.0) * s_star
        else:
            score = s_star
        up = F.interpolate(dist.reshape(B, 1, h, w), size=self.size, mode="bilinear", align_corners=False)[:, 0]
        return score, (self.smooth(up) if self.smooth is not None else up)


# ----------------------------------------------------------------------------------------------
# Opt-in fast scoring paths (issue 22): other search backends


def _exact_among(q: torch.Tensor, bank: torch.Tensor, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest of the candidate bank rows ``cand`` (``m x c``) of each query ``q`` (``m x D``), by
    the distance recomputed from the differences ``||q - m||_2`` (as :func:`knn` reports it; ties:
    the first candidate). Returns distances (m,) and bank indices (m,)."""
    d = torch.linalg.vector_norm(q[:, None, :] - bank[cand], dim=-1)
    j = d.argmin(dim=1, keepdim=True)
    return d.gather(1, j)[:, 0], cand.gather(1, j)[:, 0]


def _import_faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is in the locked install
        raise ImportError("nn_backend='faiss' needs faiss: pip install faiss-cpu (or faiss-gpu)") from exc
    return faiss


def faiss_index(bank: torch.Tensor):
    """An exact faiss ``IndexFlatL2`` holding the bank rows (float32); on a GPU faiss
    (``StandardGpuResources`` present) and a CUDA bank, a ``GpuIndexFlatL2`` on that device."""
    faiss = _import_faiss()
    rows = np.ascontiguousarray(bank.detach().float().cpu().numpy())
    if bank.device.type == "cuda" and hasattr(faiss, "StandardGpuResources"):
        res = faiss.StandardGpuResources()
        cfg = faiss.GpuIndexFlatConfig()
        cfg.device = bank.device.index or 0
        index = faiss.GpuIndexFlatL2(res, rows.shape[1], cfg)
        index._adlib_resources = res  # keep the resources alive with the index
    else:
        index = faiss.IndexFlatL2(rows.shape[1])
    index.add(rows)
    return index


@torch.no_grad()
def faiss_nearest_neighbors(
    queries: torch.Tensor,
    bank: torch.Tensor,
    index=None,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nearest_neighbors` through faiss's exact ``IndexFlatL2`` (``index``: from
    :func:`faiss_index`, built here when None): faiss finds the nearest row by its squared
    distances, the reported distance is recomputed from the difference as :func:`knn` does.
    faiss runs on ``torch.get_num_threads()`` OpenMP threads. Rows whose nearest and second
    nearest bank rows are equally far up to round-off may get the other of the two (same distance
    up to round-off)."""
    faiss = _import_faiss()
    if index is None:
        index = faiss_index(bank)
    faiss.omp_set_num_threads(torch.get_num_threads())
    queries, bank = queries.float(), bank.float()
    M = queries.shape[0]
    out_d = torch.empty(M, device=queries.device)
    out_i = torch.empty(M, dtype=torch.long, device=queries.device)
    for qs in range(0, M, query_chunk):
        q = queries[qs : qs + query_chunk]
        _, idx = index.search(np.ascontiguousarray(q.cpu().numpy()), 1)
        cand = torch.from_numpy(idx).to(q.device)
        out_d[qs : qs + query_chunk], out_i[qs : qs + query_chunk] = _exact_among(q, bank, cand)
    return out_d, out_i


@dataclass
class Bf16Bank:
    """The bank prepared for :func:`bf16_nearest_neighbors`: its mean ``mu`` (D,) and, in
    bfloat16, the centred rows with minus half their squared norms appended (``L x (D + 1)``)."""

    mu: torch.Tensor
    rows: torch.Tensor

    @classmethod
    def of(cls, bank: torch.Tensor) -> Bf16Bank:
        bank = bank.float()
        mu = bank.mean(0)
        c = bank - mu
        return cls(mu, torch.cat([c, -0.5 * (c * c).sum(1, keepdim=True)], 1).bfloat16())


@torch.no_grad()
def bf16_nearest_neighbors(
    queries: torch.Tensor,
    bank: torch.Tensor,
    candidates: int = 4,
    prepared: Bf16Bank | None = None,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`nearest_neighbors` with the candidates found by a bfloat16 matrix product.

    Rows and queries are centred on the bank mean (distances do not change; the products get
    smaller, so their rounding matters less); the ``candidates`` bank rows of largest
    ``q.m - |m|^2 / 2`` (the nearest ones) come from one bf16 product per chunk of ``[q, 1]``
    with ``[m, -|m|^2 / 2]`` (accumulated in float32 inside the product, the result rounded to
    bf16; AMX / AVX-512-bf16 units on a CPU that has them, tensor cores on a GPU), then the nearest of those by the exact float32
    distance from the differences. Exact whenever the true nearest row is among the candidates; a
    query whose true nearest row ranks below ``candidates`` under bf16 rounding gets the nearest
    of its candidates instead (``tests/test_patchcore.py`` bounds how often and how much on the
    built-in benchmark)."""
    if prepared is None:
        prepared = Bf16Bank.of(bank)
    queries, bank = queries.float(), bank.float()
    c = min(int(candidates), bank.shape[0])
    M = queries.shape[0]
    out_d = torch.empty(M, device=queries.device)
    out_i = torch.empty(M, dtype=torch.long, device=queries.device)
    refine = 1024  # rows per exact re-ranking (scratch refine x c x D float32)
    for qs in range(0, M, query_chunk):
        q = queries[qs : qs + query_chunk]
        qa = F.pad(q - prepared.mu, (0, 1), value=1.0).bfloat16()
        cand = torch.topk(torch.mm(qa, prepared.rows.T), c, dim=1).indices
        for rs in range(0, q.shape[0], refine):
            d, i = _exact_among(q[rs : rs + refine], bank, cand[rs : rs + refine])
            out_d[qs + rs : qs + rs + d.shape[0]], out_i[qs + rs : qs + rs + d.shape[0]] = d, i
    return out_d, out_i


_BF16_WARNED = False


def _warn_bf16_once() -> None:
    """Log once per process when the bf16 search runs on a CPU without its bf16 units."""
    global _BF16_WARNED
    if not _BF16_WARNED:
        note = _bf16_units_note()
        if not note.startswith("native"):
            log.warning("patchcore nn_backend='bf16': %s", note)
        _BF16_WARNED = True


def _bf16_units_note() -> str:
    """Whether a CPU bf16 product can use the machine's bf16 units under the numerics in force."""
    from .. import numerics

    if numerics.mode() == "reference":
        return (
            "reference numerics switch oneDNN off (adlib.numerics): bf16 products run without AMX or "
            "AVX-512-bf16, emulated and slower than float32; set ADLIB_NUMERICS=native before Python starts"
        )
    return "native numerics: oneDNN may use AMX / AVX-512-bf16 where the CPU has them"


# ----------------------------------------------------------------------------------------------
# Configuration


@dataclass
class PatchCoreConfig(MethodConfig):
    """PatchCore settings. Defaults (= ``paper`` profile): WideResNet-50 (torchvision ImageNet
    weights, timm ``.tv_in1k``) ``layer2`` + ``layer3``, ``p = 3``, 1024-D, resize 256 and centre
    crop 224, approximate greedy coreset of 10 % with a 128-D random projection, reweighted image
    score with ``b = 9``, Gaussian ``sigma = 4``. ``smoke``: random-init ResNet-18 at 128 px with
    256-D features (seconds per category on 2 CPU cores)."""

    # features (Sec. 3.1, 4.1)
    backbone: str = "wide_resnet50_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    pretrained: bool = True
    backbone_tag: str | None = None  # None: adlib.backbones.BACKBONES (".tv_in1k" for the ResNets)
    weights_file: str | None = None
    backbone_seed: int = 0  # random initialisation when pretrained=False
    patch_size: int = 3
    pretrain_embed_dim: int = 1024
    target_embed_dim: int = 1024
    resize: int = 256
    crop: int | None = 224
    # memory bank (Sec. 3.2)
    coreset_ratio: float = 0.1
    sampler: str = "approximate"  # "approximate" (Alg. 1), "exact" (no projection), "random" (ablation)
    projection_dim: int | None = 128
    # scoring (Sec. 3.3)
    reweight: bool = True
    num_neighbors: int = 9
    smooth_sigma: float = 4.0
    # running
    batch_size: int = 8
    seed: int = 0
    device: str | None = None  # None / "auto": CUDA when available
    data_root: str | None = None  # recorded by the runner; unused here
    coreset_chunk: int = DEFAULT_CORESET_CHUNK
    nn_query_chunk: int = DEFAULT_QUERY_CHUNK
    nn_bank_chunk: int = DEFAULT_BANK_CHUNK
    # opt-in fast scoring (issue 22; the defaults are the path every recorded number was made with)
    nn_backend: str = "torch"  # "torch" (knn), "faiss" (IndexFlatL2), "bf16" (bf16 candidates + exact re-rank)
    nn_candidates: int = 4  # nn_backend="bf16": candidates re-ranked by the exact distance

    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "smoke": dict(
            backbone="resnet18",
            pretrained=False,
            resize=128,
            crop=128,
            pretrain_embed_dim=256,
            target_embed_dim=256,
            device="cpu",
        ),
    }

    REHEARSAL: ClassVar[dict[str, int]] = {}

    def rehearsal_changes(self) -> dict[str, Any]:
        """As :meth:`MethodConfig.rehearsal_changes`; the crop at most ``rehearsal.SIDE`` with the
        resize following it (same ratio), or the resize alone where there is no crop."""
        return {**super().rehearsal_changes(), **rehearsal.crop_changes(self.resize, self.crop)}

    def _validate(self) -> None:
        super()._validate()
        self.layers = tuple(self.layers)
        if not 0.0 < self.coreset_ratio <= 1.0:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {self.coreset_ratio}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.projection_dim is not None and self.projection_dim < 1:
            raise ValueError(f"projection_dim must be None or >= 1, got {self.projection_dim}")
        if self.reweight and self.num_neighbors < 2:
            raise ValueError(f"num_neighbors (b) must be >= 2 with reweight=True, got {self.num_neighbors}")
        if self.nn_backend not in NN_BACKENDS:
            raise ValueError(f"nn_backend must be one of {NN_BACKENDS}, got {self.nn_backend!r}")
        for name in ("batch_size", "coreset_chunk", "nn_query_chunk", "nn_bank_chunk", "nn_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {self.smooth_sigma}")


# ----------------------------------------------------------------------------------------------
# The method


class PatchCoreNet(nn.Module):
    """PatchCore as one module: the frozen patch features and the memory bank (a buffer, None
    until fitted), all the method's parts (export, device moves).

    ``forward(images)``: normalised images ``B x 3 x H x W`` -> image scores ``B`` and the
    per-patch nearest-neighbour distances ``B x h x w`` to the bank (:func:`nearest_neighbors`;
    ``reweight``: the image score of :func:`reweighted_image_scores`, else the maximum distance)."""

    def __init__(self, features: nn.Module, cfg: PatchCoreConfig):
        super().__init__()
        self.features = features
        self.register_buffer("memory_bank", None)
        self.cfg = cfg  # read at each call: reweight, num_neighbors, the search chunks, the backends
        # what the opt-in paths prepare once (not part of the state: rebuilt from the bank / backbone)
        self._prepared: dict[str, Any] = {}

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features ``B x h x w x D`` (the shared fast path ``features`` of
        :mod:`adlib.fastpath` computes them in the grid order, :func:`adlib.models.features.reduce_grid`)."""
        return self.features(images)

    def _bank_key(self, bank: torch.Tensor, what: str) -> tuple:
        return (what, bank.data_ptr(), bank._version, tuple(bank.shape), str(bank.device))

    def search(self, queries: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest bank row of every query row (``M x D``): distances (M,) and indices (M,), by
        ``cfg.nn_backend``; what a backend prepares from the bank (faiss index, centred bf16 rows)
        is kept until the bank changes."""
        bank = self.memory_bank
        cfg = self.cfg
        if cfg.nn_backend == "torch":
            return nearest_neighbors(queries, bank, cfg.nn_query_chunk, cfg.nn_bank_chunk)
        key = self._bank_key(bank, cfg.nn_backend)
        if key not in self._prepared:
            self._prepared = {}
            self._prepared[key] = faiss_index(bank) if cfg.nn_backend == "faiss" else Bf16Bank.of(bank)
        if cfg.nn_backend == "faiss":
            return faiss_nearest_neighbors(queries, bank, self._prepared[key], cfg.nn_query_chunk)
        return bf16_nearest_neighbors(queries, bank, cfg.nn_candidates, self._prepared[key], cfg.nn_query_chunk)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bank = self.memory_bank
        if bank is None:
            raise RuntimeError("PatchCore has no memory bank: call fit() (or load()) first")
        f = self.extract(images)
        B, h, w, D = f.shape
        patches = f.reshape(B, h * w, D)
        cfg = self.cfg
        d, i = self.search(patches.reshape(-1, D))
        d, i = d.view(B, h * w), i.view(B, h * w)
        if cfg.reweight:
            s = reweighted_image_scores(patches, d, i, bank, cfg.num_neighbors, cfg.nn_bank_chunk)
        else:
            s = d.max(dim=1).values
        return s, d.view(B, h, w)

    def train(self, mode: bool = True) -> PatchCoreNet:
        super().train(mode)
        self.features.eval()
        return self


@register("patchcore", display="PatchCore")
class PatchCore(Method):
    """PatchCore: frozen patch features, a coreset memory bank, nearest-neighbour scores.

    >>> model = build("patchcore", profile="smoke")                  # doctest: +SKIP
    >>> model.fit(get_dataset("synth", "wood", "train", root=r, transform=model.transform))  # doctest: +SKIP
    >>> pred = model.predict(test_ds)                                 # doctest: +SKIP
    """

    smooths_maps = True  # the maps' Gaussian (fast path ``smoothing``)

    Config: ClassVar[type] = PatchCoreConfig
    name: ClassVar[str] = "patchcore"

    def __init__(self, cfg: PatchCoreConfig | None = None) -> None:
        super().__init__(cfg)
        cfg = self.cfg
        fx = FeatureExtractor.from_config(cfg)
        features = PatchFeatures(fx, cfg.patch_size, cfg.pretrain_embed_dim, cfg.target_embed_dim)
        #: the method as one module (:class:`PatchCoreNet`): ``features`` and ``memory_bank`` are its parts
        self.net = PatchCoreNet(features, cfg).eval()
        self.fit_stats: dict[str, Any] = {}

    # -- basics --------------------------------------------------------------------------------
    @property
    def transform(self) -> ImageTransform:
        """The image transform the model expects (resize, centre crop, ImageNet normalisation)."""
        return ImageTransform(resize=self.cfg.resize, crop=self.cfg.crop, normalize=True)

    @property
    def fitted(self) -> bool:
        return self.memory_bank is not None

    features = NetworkPart(doc="The frozen patch features (:class:`~adlib.models.features.PatchFeatures`).")
    memory_bank = NetworkPart(doc="The coreset of training patch features (``M x D``), None before :meth:`fit`.")

    def _backbone(self) -> torch.nn.Module:
        return self.features.backbone

    #: the former name of :meth:`backbone_fingerprint`
    backbonefingerprint = Method.backbone_fingerprint

    @torch.no_grad()
    def patch_features(self, images: torch.Tensor) -> torch.Tensor:
        """Locally aware patch features ``B x h x w x D`` of normalised images."""
        return self.net.extract(images.to(self.device))

    # -- what a run costs (the bill, :mod:`adlib.bill`) ------------------------------------------
    def flop_parts(self) -> dict[str, FlopPart]:
        """``infer``: the patch features of one image (the nearest-neighbour search is data, not a
        module: :meth:`workload` counts it by formula)."""
        s = input_size(self.transform)
        return {"infer": FlopPart(self.features, (1, 3, s, s))}

    def workload(self, n_train: int, n_test: int) -> Workload:
        """No training steps: every training image once through ``infer`` (the bank's features) and
        every test image once. By formula (a multiply-add = 2 FLOPs, as the counter counts): the
        random projection of the ``N = n_train * h * w`` patch rows to ``projection_dim`` and the
        approximate greedy coreset (each of its ``n`` picks updates the distances of all ``N``
        projected rows), and the exact nearest-neighbour search of every test patch row against
        the ``n``-row bank (``h x w``: the first level's grid, stride 8 for ``layer2``). The saved
        model holds the bank: ``n x dim`` float32."""
        cfg = self.cfg
        s = input_size(self.transform)
        stride = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}
        rows = math.ceil(s / min(stride.get(str(layer), 8) for layer in cfg.layers)) ** 2
        n_rows = int(n_train) * rows
        bank = self.coreset_size(n_rows) if n_rows else 0
        dim = int(self.features.dim)
        proj = min(int(cfg.projection_dim or dim), dim)
        flops = 0.0
        if bank < n_rows and cfg.sampler != "random":
            flops += (2.0 * n_rows * dim * proj if proj < dim else 0.0) + 2.0 * n_rows * bank * proj
        flops += 2.0 * int(n_test) * rows * bank * dim
        return Workload(
            train_images=int(n_train),
            test_images=int(n_test),
            passes={"infer": int(n_train) + int(n_test)},
            extra_flops=flops,
            extra_state_bytes=bank * dim * 4,
            note=f"memory bank {bank} x {dim}; coreset and kNN search by formula",
        )

    # -- memory bank ---------------------------------------------------------------------------
    def coreset_size(self, n_patches: int) -> int:
        """``max(1, int(ratio * N))``; ``N`` when the ratio is 1."""
        if self.cfg.coreset_ratio >= 1.0:
            return n_patches
        return max(1, int(n_patches * self.cfg.coreset_ratio))

    def select_coreset(self, feats: torch.Tensor, progress: bool = False) -> tuple[torch.Tensor, float | None]:
        """Indices of the memory bank rows among ``feats`` (N x D) and the sampler's covering radius."""
        cfg = self.cfg
        N = feats.shape[0]
        n = self.coreset_size(N)
        g = torch.Generator().manual_seed(int(cfg.seed))
        if n >= N:
            return torch.arange(N, device=feats.device), 0.0
        if cfg.sampler == "random":
            return torch.randperm(N, generator=g)[:n].to(feats.device), None
        if cfg.sampler == "exact":
            return exact_greedy_coreset(feats, n, g, cfg.coreset_chunk, return_radius=True, progress=progress)
        return approximate_greedy_coreset(
            feats, n, cfg.projection_dim, g, cfg.coreset_chunk, return_radius=True, progress=progress
        )

    # -- fit -----------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, train_ds, *, device=None, progress: bool = True, checkpoint_dir=None) -> PatchCore:
        """Build the memory bank from the (normal) images of ``train_ds``.

        One pass: patch features of every training image (held once, ``N x D`` float32, in a
        preallocated tensor on the model's device), then the coreset. ``checkpoint_dir`` is
        accepted for the common method interface and unused (nothing to resume).
        """
        cfg = self.cfg
        self.to(resolve_device(device if device is not None else cfg.device))
        t0 = time.perf_counter()
        loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=False, num_workers=0)
        feats: torch.Tensor | None = None
        pos = 0
        grid = None
        for batch in tqdm(loader, desc="patchcore features", disable=not progress, leave=False):
            f = self.patch_features(batch.image)
            b, h, w, d = f.shape
            if feats is None:
                grid = (h, w)
                feats = torch.empty(len(train_ds) * h * w, d, device=self.device, dtype=torch.float32)
            feats[pos : pos + b * h * w] = f.reshape(-1, d)
            pos += b * h * w
        if feats is None:
            raise ValueError("empty training set")
        feats = feats[:pos]
        t_feat = time.perf_counter() - t0
        N = feats.shape[0]
        n = self.coreset_size(N)
        log.info(
            "patchcore: %d patches (%d images, grid %dx%d, %d-D) from %s/%s; coreset %s of %d (%.1f%%) on %s",
            N,
            len(train_ds),
            grid[0],
            grid[1],
            feats.shape[1],
            getattr(train_ds, "name", "?"),
            getattr(train_ds, "category", "?"),
            cfg.sampler,
            n,
            100.0 * n / N,
            self.device,
        )
        t1 = time.perf_counter()
        idx, radius = self.select_coreset(feats, progress)
        self.memory_bank = feats.index_select(0, idx.to(feats.device)).clone()
        del feats
        t_core = time.perf_counter() - t1
        self.fit_stats = {
            "train_images": len(train_ds),
            "grid": list(grid),
            "patches": int(N),
            "bank_size": int(self.memory_bank.shape[0]),
            "sampler": cfg.sampler,
            "sampler_radius": radius,
            "feature_seconds": round(t_feat, 4),
            "coreset_seconds": round(t_core, 4),
        }
        log.info(
            "patchcore: memory bank %d x %d in %.1f s (features %.1f s, coreset %.1f s)",
            *self.memory_bank.shape,
            t_feat + t_core,
            t_feat,
            t_core,
        )
        return self

    # -- inference -----------------------------------------------------------------------------
    def _check_fitted(self) -> torch.Tensor:
        if self.memory_bank is None:
            raise RuntimeError("PatchCore has no memory bank: call fit() (or load()) first")
        if self.cfg.nn_backend == "bf16" and self.device.type == "cpu":
            _warn_bf16_once()
        return self.memory_bank

    @torch.no_grad()
    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores ``B`` and per-patch nearest-neighbour distances ``B x h x w`` of normalised images."""
        self._check_fitted()
        return self.net(images.to(self.device))

    @torch.no_grad()
    def predict(self, test_ds, *, device=None, batch_size: int | None = None, progress: bool = True) -> Prediction:
        """Image scores and pixel maps (at the masks' resolution) of every test image."""
        if device is not None:
            self.to(resolve_device(device))
        self._check_fitted()

        def score_batch(batch):
            s, grid = self.score(batch.image)
            return s, anomaly_maps(grid, tuple(batch.mask.shape[-2:]), self.cfg.smooth_sigma, self.speed.smoothing)

        return self._predict_batches(test_ds, score_batch, batch_size, progress)

    def export_module(self) -> PatchCoreExport:
        """:meth:`predict`'s path as one module (:class:`PatchCoreExport`) at the transform's size."""
        bank = self._check_fitted()
        self.eval()
        return PatchCoreExport(self.features, bank, self.cfg, input_hw(self.transform)).eval()

    def scoring_path(self) -> dict[str, Any]:
        """Which feature and search paths score (recorded by :meth:`info`): ``nn_backend`` (with the
        faiss version and index kind, or the bf16 candidates and whether the CPU's bf16 units can
        run under the numerics in force); the patch features' path is the shared fast path's
        (``info()["speed"]``, :mod:`adlib.fastpath`)."""
        cfg = self.cfg
        out: dict[str, Any] = {"nn_backend": cfg.nn_backend}
        if cfg.nn_backend == "faiss":
            faiss = _import_faiss()
            gpu = self.device.type == "cuda" and hasattr(faiss, "StandardGpuResources")
            out["faiss"] = f"{faiss.__version__} {'GpuIndexFlatL2' if gpu else 'IndexFlatL2'} (exact)"
        elif cfg.nn_backend == "bf16":
            out["nn_candidates"] = int(cfg.nn_candidates)
            if self.device.type == "cpu":
                out["bf16_units"] = _bf16_units_note()
        return out

    # -- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        bank = self._check_fitted()
        return {
            "memory_bank": bank.detach().cpu().contiguous(),
            "fit_stats": dict(self.fit_stats),
            "backbone": self.features.backbone.info.as_dict(),
            "backbone_fingerprint": self.backbone_fingerprint(),
        }

    def _load_state(self, state: dict[str, Any], path=None, strict: bool = True) -> None:
        """The backbone is rebuilt from the config; ``strict`` refuses one whose weights differ from
        those the bank was built with (else a warning is logged)."""
        self._check_backbone(state, path, strict)
        self.memory_bank = state["memory_bank"].float().to(self.device)
        self.fit_stats = dict(state.get("fit_stats", {}))

    # -- provenance ----------------------------------------------------------------------------
    def _info(self) -> dict[str, Any]:
        bi = self.features.backbone.info
        return {
            "backbone": bi.as_dict(),
            "weights": bi.weights,
            "backbone_fingerprint": self.backbone_fingerprint(),
            "bank_size": None if self.memory_bank is None else int(self.memory_bank.shape[0]),
            "bank_dim": None if self.memory_bank is None else int(self.memory_bank.shape[1]),
            "image_score": "reweighted (paper Sec. 3.3)" if self.cfg.reweight else "max (released code)",
            "scoring_path": self.scoring_path(),
            "fit": dict(self.fit_stats),
        }


__all__ = [
    "Bf16Bank",
    "PatchCore",
    "PatchCoreConfig",
    "PatchCoreExport",
    "anomaly_maps",
    "bank_neighbours",
    "approximate_greedy_coreset",
    "bf16_nearest_neighbors",
    "covering_radius",
    "exact_greedy_coreset",
    "faiss_index",
    "faiss_nearest_neighbors",
    "knn",
    "nearest_neighbors",
    "random_projection",
    "random_projection_matrix",
    "reweighted_image_scores",
]
