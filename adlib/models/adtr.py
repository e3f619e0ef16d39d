"""ADTR (You et al., ICONIP 2022): a transformer reconstructing frozen CNN features, with push-pull adaptation.

ADTR has no released code; this is a first public implementation. The paper's text was only
available as an excerpt (``adtr-excerpt.md``: Eq. 6-9, Fig. 3, the start of Sec. 4.1); what is known
of the rest, with each fact's source tag, is in ``adtr-facts.md`` (P = paper, S3/S2/S1 = secondary
summaries agreeing three/two/one times, U = UniAD's code by the same first author, F = FCDD's code).
Every choice below names its source; every choice tagged *open* is the project's and is a config
field, so the alternatives can be run.

Model (:class:`ADTRNet`)
    1. Frozen backbone (:class:`adlib.backbones.FeatureExtractor`, ImageNet-normalised input),
       stages ``layers``; EfficientNet-B4 stages 1-5 (24+32+56+160+448 = 720 channels, S2) in the
       ``paper`` profile. Weights: timm ``tf_efficientnet_b4.in1k`` (TF-ported ImageNet weights,
       the same origin as the lukemelas weights UniAD loads; the exact file match is unverified, U).
    2. Every stage resized to one ``grid x grid`` map (S3), bilinear with
       ``align_corners=True`` (U; ``align_corners`` is a field), concatenated: ``f`` (C x H x W).
    3. Tokens (H*W of C) -> linear ``C -> width`` (the 1x1 conv, S2) -> encoder (``enc_layers`` = 4,
       8 heads, FFN 4 x width, post-LN, ReLU, dropout 0.1, S2/U) -> decoder (``dec_layers`` = 4:
       self-attention on the query stream, cross-attention to the encoder output, FFN, S3) ->
       linear ``width -> C``: the reconstruction ``f_hat``.
    4. Auxiliary query (``query``): ``"input"`` (default, the summaries' reading): one learned
       ``H*W x width`` embedding is the decoder's input stream; ``"layerwise"`` (UniAD's design, U):
       each decoder layer has its own embedding, which first attends to the encoder output, then
       to the previous layer's output (the encoder output for the first layer).
    5. Positional embedding (``pos_embed``): learned row and column tables (width/2 each) added to
       the queries and keys of every attention (S1 + U, DETR style; ``"rowcol"``, default) or one
       learned ``H*W x width`` table (``"table"``).
    6. Initialisation: ``xavier_uniform`` for every weight matrix of the reconstructor (U),
       positional tables ``U(0, 1)`` (DETR/U), query embeddings ``N(0, 1)`` (``nn.Embedding``),
       all under ``torch.manual_seed(seed)`` in a forked RNG.

Reconstructor variants (``reconstructor``; Table 4(a) names three, what replaces the removed part
is *open*):
    ``"query"``        attention + auxiliary query (ADTR);
    ``"no-query"``     the same transformer whose decoder stream starts from the encoder output
                       instead of the query ("w/o query");
    ``"no-attention"`` the same depth of token-wise blocks with both attentions removed (FFN,
                       residual, LayerNorm): a per-token MLP ("w/o attention");
    ``"cnn"``          linear in-projection, ``enc_layers + dec_layers`` 3x3 conv + ReLU layers at
                       ``width``, linear out-projection ("CNN");
    ``"linear"``       ``f_hat = W f + b`` per token (Sec. 3.2's "identical shortcut" example; not a
                       Table 4 row).

Reconstruction target (``target``; Table 4(b)): ``"features"`` (default) or ``"pixels"``: the
ImageNet-normalised image itself, each grid cell's ``3 x s x s`` pixels as that position's
channels (``pixel_unshuffle``, ``s = image_size / grid``); no backbone is used then.

Scores (:func:`pixel_score`, :func:`image_score`)
    ``d(i, u) = f(i, u) - f_hat(i, u)`` (:func:`feature_difference`); the pixel score is the L2 norm
    of ``d(:, u)`` over channels (S3) -- not Eq. 6's channel mean, which only the losses use; the
    map is up-sampled bilinearly (``align_corners=True``) to the mask size, no smoothing
    (``smooth_sigma = 0``, U; a Gaussian is an option). The image score is the maximum of the map
    average-pooled with a ``score_pool`` window, stride 1, no padding, at the input resolution
    (S3 + U: 16 at 256 px, one grid cell).

Training, normal samples only (:func:`reconstruction_loss`, S3)
    ``L_norm = ||f - f_hat||^2 / (H W)`` (sum over channels and positions), batch mean
    (``norm_loss="sum"``; ``"mse"`` divides by C too, as UniAD's ``MSELoss``; same minimiser).
    AdamW (lr 1e-4, weight decay 1e-4), 500 epochs, lr x 0.1 at epoch 400, batch 16 (S1); no
    augmentation (U), no gradient clipping (``grad_clip``; UniAD clips at 0.1). One model per
    category. The last epoch's model is kept (no selection on the test set).
    The backbone is frozen and there is no augmentation, so the features of the normal training
    images are computed once per fit and cached.

Push-pull adaptation (ADTR+, the excerpt's Eq. 6-9; ``variant``)
    ``"normal"``: normal-only (ADTR). ``"pixel"``: pixel-level labels, ``L_px`` (Eq. 7) on
    ``phi`` (Eq. 6). ``"image"``: image-level labels, ``q`` = mean of the top-``k`` ``phi``
    (Eq. 8), ``L_img`` (Eq. 9). Defaults: ``alpha = 0.003``, ``k = 20`` (S1).
    - Start: from the normal-only model (``adapt_from="normal"``: ``epochs`` normal-only epochs,
      then ``adapt_epochs`` = 300 more, S1) or from initialisation (``"scratch"``: the
      ``adapt_epochs`` only). The adaptation's optimiser is a fresh AdamW at ``adapt_lr``
      (*open*; 1e-4, 1e-5 offered), constant.
    - Mixing (*open*; FCDD's rule, F): each sample of a batch of normal training images is
      replaced by an anomaly with probability ``anomaly_prob`` = 0.5 (``mix="bernoulli"``);
      ``mix="fixed"`` replaces exactly ``round(anomaly_prob * B)`` samples of every batch.
    - Sources (``anomalies``): ``"confetti"``: FCDD confetti noise
      (:func:`adlib.synthesis.confetti.confetti_noise`) on that normal image, labelled at the
      pixels it changed; ``"real"``: a uniformly drawn real labelled anomaly of the training set
      (``adlib.protocols`` ``real_anomalies``: a few per defect type taken from the test split,
      leak-free, or outlier images, protocol ``outliers``) with its ground-truth mask (an anomaly
      without a mask, e.g. an outlier image, is anomalous at every position). Image labels use
      ``y = 1`` for a replaced sample.
    - Grid labels (``grid_label``, *open*): ``"maxpool"`` (default; a cell is anomalous when any
      of its pixels is), ``"area"`` (>= half of it), ``"image"`` (every cell of an anomalous
      image, FCDD's ``malformed_normal``) (:func:`adlib.synthesis.confetti.confetti_grid_label`).
    - ``L_px`` / ``L_img`` replace ``L_norm`` (their first terms already pull normal features;
      ``with_norm=True`` adds ``L_norm`` on the normal samples).
    - Guard (*open*, F): a sample without an anomalous position has no push term (``guard=
      "skip"``); ``1e-31`` is added inside every log. ``guard="eps"`` keeps the term (a constant
      ``-alpha log 1e-31``).

Randomness: CPU ``torch.Generator`` streams seeded from ``seed`` (epoch permutation, mixing,
confetti); dropout draws from the global generator reseeded from ``(seed, epoch)`` at each epoch
(inside ``fork_rng``, the caller's state is untouched). Checkpoints (``last.pt`` after every epoch)
hold the streams with the optimiser state, so an interrupted fit resumes exactly. An adapted run
(``adapt_from="normal"``) reuses a normal-only stage already trained in the same process with the
same settings and data (an exact cache, see ``_NORMAL_STAGES``).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import rehearsal
from ..backbones import FeatureExtractor
from ..data.base import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from .base import Prediction, register, resolve_device
from .core import CliOption, EpochMethod, FlopPart, MethodConfig, NetworkPart, Workload, input_hw, input_size
from .scores import mean_pool_max_valid, top_k_mean
from .smoothing import GaussianFilter, gaussian_maps

log = logging.getLogger(__name__)

VARIANTS = ("normal", "image", "pixel")
RECONSTRUCTORS = ("query", "no-query", "no-attention", "cnn", "linear")
LOG_EPS = 1e-31


# ----------------------------------------------------------------------------------------------
# Equations


def feature_difference(f: torch.Tensor, f_hat: torch.Tensor) -> torch.Tensor:
    """``d(i, u) = f(i, u) - f_hat(i, u)`` (ADTR Sec. 3; excerpt notation ``d(i, u)``): B x C x H x W."""
    return f - f_hat


def pixel_score(d: torch.Tensor) -> torch.Tensor:
    """Test-time anomaly score of each position, ``||d(:, u)||_2`` over channels (adtr-facts S3): B x H x W."""
    return torch.linalg.vector_norm(d, ord=2, dim=1)


def pseudo_huber(d: torch.Tensor) -> torch.Tensor:
    """ADTR Eq. 6: ``phi(u) = sqrt((1/C sum_i |d(i, u)|)^2 + 1) - 1`` (B x C x H x W -> B x H x W)."""
    m = d.abs().mean(dim=1)
    return torch.sqrt(m * m + 1.0) - 1.0


def _push(mean_anomalous: torch.Tensor, eps: float) -> torch.Tensor:
    """``-log(1 - exp(-m) + eps)``, the push term's core (FCDD adds 1e-31 inside the log)."""
    return -torch.log(-torch.expm1(-mean_anomalous) + eps)


def push_pull_pixel_loss(
    phi: torch.Tensor, y: torch.Tensor, alpha: float = 0.003, guard: str = "skip", eps: float = LOG_EPS
) -> torch.Tensor:
    """ADTR Eq. 7, the pixel-level push-pull loss, averaged over the batch::

        L_px = 1/HW sum_u (1 - y(u)) phi(u) - alpha log(1 - exp(-1/HW sum_u y(u) phi(u)))

    ``phi`` and ``y`` (0 normal, 1 anomalous) are B x H x W; both sums divide by all H*W positions.
    Guard for a sample whose ``y`` is all 0 (``log 0``): ``"skip"`` (default; FCDD skips the push
    term for such samples) or ``"eps"`` (keep it; ``eps`` inside the log makes it the constant
    ``-alpha log(eps)``). ``eps`` (1e-31, FCDD) is added inside the log in both cases.
    """
    if phi.shape != y.shape or phi.dim() != 3:
        raise ValueError(f"phi and y must both be B x H x W, got {tuple(phi.shape)} and {tuple(y.shape)}")
    if guard not in ("skip", "eps"):
        raise ValueError(f"guard must be 'skip' or 'eps', got {guard!r}")
    y = y.to(phi.dtype)
    pull = ((1.0 - y) * phi).flatten(1).mean(1)
    push = _push((y * phi).flatten(1).mean(1), eps)
    if guard == "skip":
        has = y.flatten(1).amax(1) > 0
        push = torch.where(has, push, torch.zeros_like(push))
    return (pull + alpha * push).mean()


def topk_score(phi: torch.Tensor, k: int) -> torch.Tensor:
    """ADTR Eq. 8: ``q = 1/k sum top-k(phi)``, the mean of the ``k`` largest ``phi(u)`` of each
    sample (B x H x W -> B). Ties do not matter: any ``k`` largest have the same mean."""
    return top_k_mean(phi, k)


def push_pull_image_loss(q: torch.Tensor, y: torch.Tensor, alpha: float = 0.003, eps: float = LOG_EPS) -> torch.Tensor:
    """ADTR Eq. 9, the image-level push-pull loss, averaged over the batch::

        L_img = (1 - y) q - alpha y log(1 - exp(-q))

    ``q`` (Eq. 8) and ``y`` (0 normal, 1 anomalous) have shape (B,). ``eps`` (1e-31) inside the log
    keeps an anomalous sample with ``q = 0`` finite (normal samples have no push term)."""
    if q.shape != y.shape or q.dim() != 1:
        raise ValueError(f"q and y must both have shape (B,), got {tuple(q.shape)} and {tuple(y.shape)}")
    y = y.to(q.dtype)
    return ((1.0 - y) * q + alpha * y * _push(q, eps)).mean()


def reconstruction_loss(f: torch.Tensor, f_hat: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """Normal-only loss ``L_norm = 1/(H W) ||f - f_hat||_2^2`` (adtr-facts S3, "Eq. 1" of summary B),
    batch mean: ``"sum"`` sums over channels and positions, divided by H*W; ``"mse"`` is the mean
    over C, H and W too (UniAD's ``nn.MSELoss``; the same minimiser, 1/C the scale)."""
    sq = (f - f_hat).pow(2)
    if reduction == "sum":
        return sq.sum(dim=(1, 2, 3)).mean() / (f.shape[-2] * f.shape[-1])
    if reduction == "mse":
        return sq.mean()
    raise ValueError(f"reduction must be 'sum' or 'mse', got {reduction!r}")


def image_score(score_map: torch.Tensor, window: int = 16) -> torch.Tensor:
    """Image score: maximum of the (B x H x W) map average-pooled with a ``window x window`` box,
    stride 1, no padding (adtr-facts S3 + U's ``avg_pool2d(16, 1)`` then max). A window larger
    than the map is clipped to it (:func:`adlib.models.scores.mean_pool_max_valid`)."""
    return mean_pool_max_valid(score_map, window)


def query_attention(q: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sec. 3.2's argument in one line: ``x_hat = softmax(q x^T / sqrt(C)) x`` (adtr-facts section 2).

    Each output row is a convex combination of the input rows with strictly positive weights, so
    unlike a linear reconstructor (``w = I``) it cannot return an input with distinct rows exactly.
    """
    c = x.shape[-1]
    return torch.softmax(q @ x.transpose(-1, -2) / math.sqrt(c), dim=-1) @ x


# ----------------------------------------------------------------------------------------------
# The network


class PositionEmbedding(nn.Module):
    """Learned positional embedding for a ``grid x grid`` token map: ``"rowcol"`` (row and column
    tables of width/2, concatenated; U) or ``"table"`` (one H*W x width table)."""

    def __init__(self, grid: int, width: int, kind: str = "rowcol") -> None:
        super().__init__()
        self.grid, self.kind = grid, kind
        if kind == "rowcol":
            if width % 2:
                raise ValueError(f"rowcol positional embedding needs an even width, got {width}")
            self.row = nn.Parameter(torch.rand(grid, width // 2))
            self.col = nn.Parameter(torch.rand(grid, width - width // 2))
        elif kind == "table":
            self.table = nn.Parameter(torch.rand(grid * grid, width))
        else:
            raise ValueError(f"pos_embed must be 'rowcol' or 'table', got {kind!r}")

    def forward(self) -> torch.Tensor:
        if self.kind == "table":
            return self.table
        g = self.grid
        return torch.cat(
            [self.row[:, None, :].expand(g, g, -1), self.col[None, :, :].expand(g, g, -1)], dim=-1
        ).reshape(g * g, -1)


class _FFN(nn.Module):
    def __init__(self, width: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, width))

    def forward(self, x):
        return self.net(x)


class EncoderLayer(nn.Module):
    """Post-LN transformer encoder layer; the positional embedding is added to queries and keys."""

    def __init__(self, width: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ffn = _FFN(width, ffn, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = x + pos
        x = self.norm1(x + self.drop(self.attn(qk, qk, x, need_weights=False)[0]))
        return self.norm2(x + self.drop(self.ffn(x)))


class DecoderLayer(nn.Module):
    """Post-LN decoder layer: self-attention on the stream, cross-attention to ``memory``, FFN.

    With ``query`` given (UniAD's layer-wise queries), the first attention is that query attending
    to ``memory`` and the second attends to the stream (the previous layer's output)."""

    def __init__(self, width: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.attn1 = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.attn2 = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ffn = _FFN(width, ffn, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, stream: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query: torch.Tensor | None = None
    ) -> torch.Tensor:
        if query is None:  # ADTR reading: self-attention on the stream, then cross-attention
            qk = stream + pos
            t = self.norm1(stream + self.drop(self.attn1(qk, qk, stream, need_weights=False)[0]))
            t2 = self.attn2(t + pos, memory + pos, memory, need_weights=False)[0]
        else:  # UniAD: the layer's query attends to the memory, then to the stream
            t = self.norm1(query + self.drop(self.attn1(query + pos, memory + pos, memory, need_weights=False)[0]))
            t2 = self.attn2(t + pos, stream + pos, stream, need_weights=False)[0]
        t = self.norm2(t + self.drop(t2))
        return self.norm3(t + self.drop(self.ffn(t)))


class TokenMLPLayer(nn.Module):
    """A transformer layer with its attention removed: FFN, residual, LayerNorm (Table 4(a) "w/o attention")."""

    def __init__(self, width: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.ffn = _FFN(width, ffn, dropout)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.norm(x + self.drop(self.ffn(x)))


class ADTRNet(nn.Module):
    """The reconstructor: ``f`` (B x C x H x W) -> ``f_hat`` (same shape); see the module docstring."""

    def __init__(
        self,
        channels: int,
        grid: int,
        width: int = 256,
        heads: int = 8,
        ffn: int = 1024,
        enc_layers: int = 4,
        dec_layers: int = 4,
        dropout: float = 0.1,
        reconstructor: str = "query",
        query: str = "input",
        pos_embed: str = "rowcol",
    ) -> None:
        super().__init__()
        self.channels, self.grid, self.width = channels, grid, width
        self.reconstructor, self.query_mode = reconstructor, query
        n = grid * grid
        if reconstructor == "linear":
            self.linear = nn.Linear(channels, channels)
        else:
            self.in_proj = nn.Linear(channels, width)
            self.out_proj = nn.Linear(width, channels)
        if reconstructor in ("query", "no-query"):
            self.pos = PositionEmbedding(grid, width, pos_embed)
            self.encoder = nn.ModuleList(EncoderLayer(width, heads, ffn, dropout) for _ in range(enc_layers))
            self.decoder = nn.ModuleList(DecoderLayer(width, heads, ffn, dropout) for _ in range(dec_layers))
            if reconstructor == "query":
                k = dec_layers if query == "layerwise" else 1
                self.queries = nn.ParameterList(nn.Parameter(torch.empty(n, width)) for _ in range(k))
        elif reconstructor == "no-attention":
            self.blocks = nn.ModuleList(TokenMLPLayer(width, ffn, dropout) for _ in range(enc_layers + dec_layers))
        elif reconstructor == "cnn":
            layers: list[nn.Module] = []
            for _ in range(enc_layers + dec_layers):
                layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
            self.convs = nn.Sequential(*layers)
        elif reconstructor != "linear":
            raise ValueError(f"reconstructor must be one of {RECONSTRUCTORS}, got {reconstructor!r}")
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if name.startswith("pos.") or name.startswith("queries."):
                continue
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if hasattr(self, "queries"):
            for q in self.queries:
                nn.init.normal_(q)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        b, c, h, w = f.shape
        if c != self.channels or h != self.grid or w != self.grid:
            raise ValueError(f"expected B x {self.channels} x {self.grid} x {self.grid} features, got {tuple(f.shape)}")
        tokens = f.flatten(2).transpose(1, 2)  # B x HW x C
        if self.reconstructor == "linear":
            out = self.linear(tokens)
        elif self.reconstructor == "cnn":
            x = self.in_proj(tokens).transpose(1, 2).reshape(b, self.width, h, w)
            x = self.convs(x).flatten(2).transpose(1, 2)
            out = self.out_proj(x)
        else:
            x = self.in_proj(tokens)
            if self.reconstructor == "no-attention":
                for blk in self.blocks:
                    x = blk(x)
            else:
                pos = self.pos()[None]
                for layer in self.encoder:
                    x = layer(x, pos)
                memory = x
                if self.reconstructor == "no-query":
                    stream = memory
                    for layer in self.decoder:
                        stream = layer(stream, memory, pos)
                elif self.query_mode == "layerwise":
                    stream = memory
                    for layer, q in zip(self.decoder, self.queries):
                        stream = layer(stream, memory, pos, query=q[None].expand(b, -1, -1))
                else:
                    stream = self.queries[0][None].expand(b, -1, -1)
                    for layer in self.decoder:
                        stream = layer(stream, memory, pos)
                x = stream
            out = self.out_proj(x)
        return out.transpose(1, 2).reshape(b, c, h, w)


class FeatureTarget(nn.Module):
    """Images (B x 3 x S x S in [0, 1]) -> the reconstruction target ``f`` (B x C x grid x grid).

    ``"features"``: frozen backbone stages, each resized to the grid (bilinear, ``align_corners``)
    and concatenated; ``"pixels"``: the normalised image, each cell's pixels as channels."""

    def __init__(
        self,
        target: str,
        grid: int,
        image_size: int,
        backbone: FeatureExtractor | None = None,
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        self.target, self.grid, self.image_size, self.align_corners = target, grid, image_size, align_corners
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if target == "pixels":
            self.channels = 3 * (image_size // grid) ** 2
        elif target == "features":
            if backbone is None:
                raise ValueError("target 'features' needs a backbone")
            self.channels = int(sum(backbone.info.channels))
        else:
            raise ValueError(f"target must be 'features' or 'pixels', got {target!r}")

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images - self.mean) / self.std
        if self.target == "pixels":
            return F.pixel_unshuffle(x, self.image_size // self.grid)
        feats = self.backbone(x)
        g = (self.grid, self.grid)
        return torch.cat(
            [
                F.interpolate(v, size=g, mode="bilinear", align_corners=self.align_corners) if v.shape[-2:] != g else v
                for v in feats.values()
            ],
            dim=1,
        )


class ADTRModel(nn.Module):
    """ADTR as one module: the frozen target ``features`` (:class:`FeatureTarget`) and the
    ``reconstructor`` (:class:`ADTRNet`), all the method's parts (export, device moves).

    ``forward(images)``: images ``B x 3 x S x S`` in [0, 1] -> the score of each grid position,
    ``||f - f_hat||_2`` (:func:`feature_difference`, :func:`pixel_score`): ``B x grid x grid``.
    :meth:`train` leaves the frozen features in eval mode."""

    def __init__(self, features: FeatureTarget, reconstructor: ADTRNet) -> None:
        super().__init__()
        self.features = features
        self.reconstructor = reconstructor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.features(images)
        return pixel_score(feature_difference(f, self.reconstructor(f)))

    def train(self, mode: bool = True) -> ADTRModel:
        super().train(mode)
        self.features.eval()
        return self


class ADTRExport(nn.Module):
    """ADTR inference as one module, for export (:mod:`adlib.export`): images in [0, 1]
    ``B x 3 x H x W`` -> image score ``B`` (:func:`image_score`, window ``pool``) and the pixel map
    at ``size``: ``||d(:, u)||_2`` (:class:`ADTRModel`) up-sampled bilinearly (``align_corners``
    as configured) and, with ``sigma > 0``, smoothed by the fixed convolution equal to SciPy's
    Gaussian (:class:`~adlib.models.smoothing.GaussianFilter`), as :meth:`ADTR.predict`."""

    def __init__(self, model: ADTRModel, size: tuple[int, int], align_corners: bool, sigma: float, pool: int) -> None:
        super().__init__()
        self.model = model
        self.size = (int(size[0]), int(size[1]))
        self.align_corners = bool(align_corners)
        self.smooth = GaussianFilter(sigma, self.size) if sigma > 0 else None
        self.pool = int(pool)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.model(images)
        up = F.interpolate(s[:, None], size=self.size, mode="bilinear", align_corners=self.align_corners)[:, 0]
        if self.smooth is not None:
            up = self.smooth(up)
        return image_score(up, self.pool), up


# ----------------------------------------------------------------------------------------------
# Configuration


def parse_anomalies(text: str) -> tuple[str, int | None]:
    """``--anomalies``: ``confetti`` -> ``("confetti", None)``; ``real:N`` -> ``("real", N)`` (N real
    labelled anomalies per defect type from the test split, protocol ``real_anomalies``)."""
    if text == "confetti":
        return "confetti", None
    if text.startswith("real:"):
        try:
            n = int(text[5:])
        except ValueError:
            n = 0
        if n >= 1:
            return "real", n
    raise ValueError(f"--anomalies must be 'confetti' or 'real:N' with N >= 1 (per defect type), got {text!r}")


def _cli_labels(value: str, overrides: dict[str, Any], protocol: dict[str, Any]) -> None:
    overrides["variant"] = "normal" if value == "none" else value


def _cli_anomalies(value: str, overrides: dict[str, Any], protocol: dict[str, Any]) -> None:
    source, n = parse_anomalies(value)
    overrides["anomalies"] = source
    if n is not None:
        protocol["real_anomalies"] = n


def _cli_real_holdout(value: int, overrides: dict[str, Any], protocol: dict[str, Any]) -> None:
    protocol["real_holdout"] = value


@dataclass
class ADTRConfig(MethodConfig):
    """ADTR settings. Defaults (= ``paper`` profile): adtr-facts.md section 7 (EfficientNet-B4
    stages 1-5, 256 px, 16 x 16 grid, width 256, 4 + 4 layers, 8 heads, AdamW 1e-4, 500 epochs,
    x0.1 at 400, batch 16; ADTR+: 300 more epochs, alpha 0.003, k 20). ``smoke``: random-init
    ResNet-18 stages 1-3 at 128 px on an 8 x 8 grid (stride 16, as 16 x 16 at 256 px), width 64,
    1 + 1 layers, 4 heads, no dropout, 60 epochs at 2e-3 (x0.1 at 48), + 20 adaptation epochs at
    1e-3, a 16-px score window = one grid cell (CPU seconds per category)."""

    variant: str = "normal"  # "normal" (ADTR), "image" (Eq. 8-9), "pixel" (Eq. 6-7)
    # features (S2/S3/U)
    backbone: str = "efficientnet_b4"
    layers: tuple = (0, 1, 2, 3, 4)  # feature stages (timm features_only indices or names)
    pretrained: bool = True
    backbone_tag: str | None = None  # None: adlib.backbones.BACKBONES (tf_efficientnet_b4.in1k)
    weights_file: str | None = None
    backbone_seed: int = 0
    target: str = "features"  # Table 4(b): "features" or "pixels"
    image_size: int = 256
    grid: int = 16
    align_corners: bool = True
    # reconstructor (S2/U)
    reconstructor: str = "query"  # Table 4(a): "query", "no-query", "no-attention", "cnn"; "linear"
    query: str = "input"  # "input" (one embedding) or "layerwise" (UniAD)
    pos_embed: str = "rowcol"
    width: int = 256
    heads: int = 8
    ffn: int = 1024
    enc_layers: int = 4
    dec_layers: int = 4
    dropout: float = 0.1
    # normal-only training (S1/S3)
    norm_loss: str = "sum"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 500
    lr_milestones: tuple = (400,)
    lr_gamma: float = 0.1
    batch_size: int = 16
    grad_clip: float | None = None
    # push-pull adaptation (excerpt Eq. 6-9; S1; F)
    anomalies: str = "confetti"  # "confetti" or "real" (labelled anomalies in the training set)
    alpha: float = 0.003
    k: int = 20
    adapt_epochs: int = 300
    adapt_lr: float = 1e-4
    adapt_from: str = "normal"  # "normal" or "scratch"
    anomaly_prob: float = 0.5
    mix: str = "bernoulli"  # "bernoulli" (each sample with anomaly_prob, FCDD) or "fixed" (that share of every batch)
    grid_label: str = "maxpool"  # "maxpool", "area", "image"
    with_norm: bool = False
    guard: str = "skip"
    # inference (S3/U)
    score_pool: int = 16
    smooth_sigma: float = 0.0
    seed: int = 0
    data_root: str | None = None  # recorded by the runner; unused

    CLI_OPTIONS: ClassVar[tuple[CliOption, ...]] = (
        CliOption(
            "--labels",
            "train with normal images only (none, default), or adapt with image- or pixel-level labels "
            "(push-pull, Eq. 6-9); the variant normal / image / pixel",
            _cli_labels,
            choices=("none", "image", "pixel"),
        ),
        CliOption(
            "--anomalies",
            "anomalies for --labels image/pixel: FCDD confetti noise (default), or N real labelled anomalies "
            "per defect type taken from the test split (removed from evaluation)",
            _cli_anomalies,
            metavar="confetti|real:N",
        ),
        CliOption(
            "--real-holdout",
            "with --anomalies real:N: hold M >= N anomalies per defect type out of the test set (default N), "
            "so runs with different N share one test set",
            _cli_real_holdout,
            type=int,
            metavar="M",
        ),
    )
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {},
        "smoke": dict(
            backbone="resnet18",
            layers=(1, 2, 3),
            pretrained=False,
            image_size=128,
            grid=8,
            width=64,
            heads=4,
            ffn=256,
            enc_layers=1,
            dec_layers=1,
            dropout=0.0,
            lr=2e-3,
            epochs=60,
            lr_milestones=(48,),
            adapt_epochs=20,
            adapt_lr=1e-3,
            batch_size=16,
            score_pool=16,
        ),
    }

    REHEARSAL: ClassVar[dict[str, int]] = {"epochs": rehearsal.EPOCHS, "adapt_epochs": rehearsal.EPOCHS}

    def rehearsal_changes(self) -> dict[str, Any]:
        """As :meth:`MethodConfig.rehearsal_changes`; the image at most ``rehearsal.SIDE`` with the
        grid following it (the same cell size, so ``score_pool``, one cell, stays) and ``k`` following
        the grid's area (the same share of positions), the milestones scaled with the epochs."""
        out = super().rehearsal_changes()
        side = rehearsal.SIDE
        if self.image_size > side:
            grid = rehearsal.follow(self.grid, self.image_size, side)
            out.update(image_size=side, grid=grid, k=rehearsal.follow(self.k, self.grid**2, grid**2))
        if "epochs" in out:
            out["lr_milestones"] = rehearsal.scaled_milestones(self.lr_milestones, self.epochs, out["epochs"])
        return out

    def _validate(self) -> None:
        super()._validate()
        self.layers = tuple(self.layers)
        self.lr_milestones = tuple(int(m) for m in self.lr_milestones)
        choices = {
            "variant": VARIANTS,
            "reconstructor": RECONSTRUCTORS,
            "query": ("input", "layerwise"),
            "pos_embed": ("rowcol", "table"),
            "target": ("features", "pixels"),
            "norm_loss": ("sum", "mse"),
            "anomalies": ("confetti", "real"),
            "adapt_from": ("normal", "scratch"),
            "mix": ("bernoulli", "fixed"),
            "grid_label": ("maxpool", "area", "image"),
            "guard": ("skip", "eps"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.image_size % self.grid:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of grid ({self.grid})")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if not 1 <= self.k <= self.grid * self.grid:
            raise ValueError(f"k must be in [1, grid^2 = {self.grid**2}], got {self.k}")
        if self.alpha < 0 or not 0.0 <= self.anomaly_prob <= 1.0:
            raise ValueError(f"need alpha >= 0 and anomaly_prob in [0, 1], got {self.alpha}, {self.anomaly_prob}")
        if min(self.epochs, self.adapt_epochs) < 0 or self.batch_size < 1 or self.score_pool < 1:
            raise ValueError("epochs, adapt_epochs must be >= 0; batch_size, score_pool >= 1")

    @property
    def adapting(self) -> bool:
        return self.variant != "normal"

    @property
    def normal_epochs(self) -> int:
        """Normal-only epochs before any adaptation (0 when adapting from scratch)."""
        return 0 if (self.adapting and self.adapt_from == "scratch") else int(self.epochs)

    @property
    def total_epochs(self) -> int:
        return self.normal_epochs + (int(self.adapt_epochs) if self.adapting else 0)


#: Normal-only stages finished in this process (key: :meth:`ADTR._normal_stage_key`): an adapted
#: run (ADTR+, ``adapt_from="normal"``) starts from the normal-only model, which the normal-only run
#: of the same seed (or another adapted run) may already have trained here. Every epoch's
#: randomness is a function of (seed, epoch), so a cached stage is exactly the stage a fit would
#: train: the numbers do not depend on whether the cache was hit (tested).
_NORMAL_STAGES: OrderedDict[str, dict[str, Any]] = OrderedDict()
_NORMAL_STAGES_MAX = 8


# ----------------------------------------------------------------------------------------------
# The method


@register("adtr", display="ADTR", variants={"normal": "ADTR", "image": "ADTR+ (image labels)", "pixel": "ADTR+"})
class ADTR(EpochMethod):
    """ADTR / ADTR+: feature reconstruction by a transformer with an auxiliary query, push-pull adaptation.

    >>> model = build("adtr", profile="smoke", variant="pixel")      # doctest: +SKIP
    >>> model.fit(train_ds).predict(test_ds)                          # doctest: +SKIP
    """

    @property
    def smooths_maps(self) -> bool:
        """Whether the maps are smoothed (``smooth_sigma > 0``; the fast path ``smoothing``)."""
        return self.cfg.smooth_sigma > 0

    Config: ClassVar[type] = ADTRConfig
    name: ClassVar[str] = "adtr"
    RESUME_FREE_FIELDS: ClassVar[frozenset[str]] = frozenset({"epochs", "adapt_epochs", "data_root"})
    #: fit() reads sample.label: labelled anomalies of the training set (protocol real_anomalies) are anomalies
    uses_training_labels: ClassVar[bool] = True
    STREAMS: ClassVar[tuple[str, ...]] = ("shuffle", "mix", "confetti")
    #: ADTR's seeds are salted (:func:`adlib.models.core.seed_for`)
    SEED_SALT: ClassVar[int] = 0xAD7

    def __init__(self, cfg: ADTRConfig | None = None) -> None:
        super().__init__(cfg)
        cfg = self.cfg
        backbone = None
        if cfg.target == "features":
            backbone = FeatureExtractor.from_config(cfg)
        features = FeatureTarget(cfg.target, cfg.grid, cfg.image_size, backbone, cfg.align_corners)
        with self._seeded_init():
            reconstructor = ADTRNet(
                features.channels,
                cfg.grid,
                cfg.width,
                cfg.heads,
                cfg.ffn,
                cfg.enc_layers,
                cfg.dec_layers,
                cfg.dropout,
                cfg.reconstructor,
                cfg.query,
                cfg.pos_embed,
            )
        self._network = ADTRModel(features, reconstructor).eval()
        self.opt_stage = self._stage(0)
        self.optimizer = self._make_optimizer(self.opt_stage)
        self.train_counts: dict[str, int] = {}
        self.normal_stage_cached = False

    # -- basics --------------------------------------------------------------------------------
    @property
    def transform(self) -> ImageTransform:
        """Resize to ``image_size`` (square), values in [0, 1]; ImageNet normalisation happens inside
        (confetti noise is added to the uint8 image first)."""
        return ImageTransform(resize=self.cfg.image_size, crop=None, normalize=False)

    @property
    def total_epochs(self) -> int:
        return self.cfg.total_epochs

    @property
    def network(self) -> ADTRModel:
        """The method as one module (:class:`ADTRModel`); :attr:`features` and :attr:`net` (the
        reconstructor) are its parts."""
        return self._network

    features = NetworkPart(doc="The frozen target (:class:`FeatureTarget`).")
    net = NetworkPart(
        "reconstructor", doc="The reconstructor (:class:`ADTRNet`; its state is the checkpoint's ``net``)."
    )

    def eval(self) -> None:
        self.net.eval()

    def _backbone(self) -> nn.Module | None:
        return self.features.backbone

    # -- what a run costs (the bill, :mod:`adlib.bill`) ------------------------------------------
    def flop_parts(self) -> dict[str, FlopPart]:
        """``infer`` (target and reconstructor on one image), ``extract`` (the frozen target alone)
        and ``train`` (the reconstructor's forward and backward on one image's target: training
        runs on targets extracted once)."""
        s = input_size(self.transform)
        image = (1, 3, s, s)
        g = int(self.cfg.grid)
        return {
            "infer": FlopPart(self.network, image),
            "extract": FlopPart(self.features, image),
            "train": FlopPart(self.net, (1, int(self.features.channels), g, g), backward=True),
        }

    def workload(self, n_train: int, n_test: int) -> Workload:
        """``n_train`` normal images (labelled anomalies of the training set excluded: ``n_train``
        is what the bill passes) through ``extract`` once, then ``normal_epochs`` epochs over them
        through ``train`` and, when adapting, ``adapt_epochs`` more (confetti noise: each step's
        replaced images, ``anomaly_prob`` of them on average, through ``extract`` again). The
        normal-only stage an adapted run starts from is counted in full (the cache that shares it
        lives in one process only). Every test image once through ``infer``."""
        cfg = self.cfg
        n = int(n_train)
        epochs = int(cfg.normal_epochs) + (int(cfg.adapt_epochs) if cfg.adapting else 0)
        train = epochs * n
        extract = n
        if cfg.adapting and cfg.anomalies == "confetti":
            extract += int(round(int(cfg.adapt_epochs) * n * float(cfg.anomaly_prob)))
        return Workload(train, int(n_test), {"extract": extract, "train": train, "infer": int(n_test)})

    def _stage(self, epoch: int) -> str:
        return "normal" if epoch < self.cfg.normal_epochs else "adapt"

    def _make_optimizer(self, stage: str) -> torch.optim.Optimizer:
        """AdamW for a stage: ``lr`` for the normal-only stage, a fresh one at ``adapt_lr`` for the adaptation."""
        c = self.cfg
        lr = c.lr if stage == "normal" else c.adapt_lr
        return torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=c.weight_decay)

    def learning_rate(self, epoch: int) -> float:
        """The normal stage's step schedule (x ``lr_gamma`` at each milestone), then ``adapt_lr`` constant."""
        c = self.cfg
        if self._stage(epoch) == "adapt":
            return float(c.adapt_lr)
        return float(c.lr * c.lr_gamma ** sum(epoch >= m for m in c.lr_milestones))

    # -- features and scores -------------------------------------------------------------------
    @torch.no_grad()
    def extract(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """The target ``f`` of images in [0, 1] (B x 3 x S x S), on the model's device."""
        out = [self.features(images[i : i + batch_size].to(self.device)) for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0)

    def reconstruct(self, f: torch.Tensor) -> torch.Tensor:
        return self.net(f)

    @torch.no_grad()
    def difference(self, images: torch.Tensor) -> torch.Tensor:
        """``d = f - f_hat`` of images (B x C x H x W), model in eval mode: Fig. 5's vectors ``d(:, u)``."""
        self.net.eval()
        f = self.extract(images)
        return feature_difference(f, self.net(f))

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Pixel scores ``||d(:, u)||_2`` up-sampled (bilinear, ``align_corners``) to ``size``
        (default: the input size) and smoothed if ``smooth_sigma > 0``: B x H x W on the CPU."""
        s = pixel_score(self.difference(images))
        size = size or tuple(images.shape[-2:])
        up = F.interpolate(s[:, None], size=size, mode="bilinear", align_corners=self.cfg.align_corners)[:, 0]
        if self.cfg.smooth_sigma > 0:  # SciPy per image, or batched on the device (the fast path smoothing)
            return torch.from_numpy(gaussian_maps(up, self.cfg.smooth_sigma, self.speed.smoothing))
        return up.cpu()

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def _load(cls, ds, progress: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        samples = cls._load_samples(ds, progress)
        if not samples:
            raise ValueError(f"{getattr(ds, 'name', '?')}/{getattr(ds, 'category', '?')}: the training set is empty")
        images = torch.stack([s.image for s in samples])
        masks = torch.stack([s.mask[0] > 0 for s in samples])
        labels = torch.tensor([int(s.label) for s in samples])
        return images, masks, labels, [s.path for s in samples]

    def _grid_labels(self, masks: torch.Tensor, replaced: torch.Tensor | None = None) -> torch.Tensor:
        from ..synthesis.confetti import confetti_grid_label

        return confetti_grid_label(masks, self.cfg.grid, mode=self.cfg.grid_label, replaced=replaced)

    def fit(self, train_ds, *, device=None, progress: bool = True, checkpoint_dir=None) -> ADTR:
        """Normal-only training, then (variant ``image`` / ``pixel``) push-pull adaptation.

        ``train_ds``: normal images (label 0) and, for ``anomalies="real"``, labelled anomalies
        (label 1, with masks). Normal-only training ignores labelled anomalies. ``checkpoint_dir``:
        ``last.pt`` is written after every epoch and resumed from when present.
        """
        return super().fit(train_ds, device=device, progress=progress, checkpoint_dir=checkpoint_dir)

    def _fit_start(self, train_ds, progress: bool):
        cfg = self.cfg
        images, masks, labels, paths = self._load(train_ds, progress)
        normal = labels == 0
        if not normal.any():
            raise ValueError(
                f"{getattr(train_ds, 'name', '?')}/{getattr(train_ds, 'category', '?')}: no normal training image"
            )
        n_anom = int((~normal).sum())
        self.train_counts = {"normal": int(normal.sum()), "labelled_anomalies": n_anom}
        if cfg.adapting and cfg.anomalies == "real" and n_anom == 0:
            raise ValueError(
                f"{self.label} with anomalies='real' needs labelled anomalies in the training set "
                "(protocol real_anomalies, CLI --anomalies real:N)"
            )
        if n_anom and not (cfg.adapting and cfg.anomalies == "real"):
            log.warning(
                "%s: %d labelled anomalies in the training set are not used (variant %s, anomalies %s)",
                self.label,
                n_anom,
                cfg.variant,
                cfg.anomalies,
            )
        normal_images = images[normal]
        f_normal = self.extract(normal_images)
        real = None
        if cfg.adapting and cfg.anomalies == "real":
            y = self._grid_labels(masks[~normal])
            empty = ~masks[~normal].flatten(1).any(1)
            if empty.any():  # a labelled anomaly without a mask (e.g. an outlier image): all of it is anomalous
                y[empty] = 1.0
                log.info(
                    "%s: %d labelled anomalies without a mask are labelled anomalous everywhere",
                    self.label,
                    int(empty.sum()),
                )
            real = (self.extract(images[~normal]), y.to(self.device))
        uint8 = (normal_images * 255).round().clamp(0, 255).to(torch.uint8) if cfg.adapting else None
        stage_key = self._normal_stage_key(f_normal)
        if 0 < cfg.normal_epochs and self.epoch < cfg.normal_epochs and stage_key in _NORMAL_STAGES:
            self._restore_normal_stage(_NORMAL_STAGES[stage_key])
            _NORMAL_STAGES.move_to_end(stage_key)
            log.info("%s: normal-only stage (%d epochs) taken from this process's cache", self.label, self.epoch)
        return f_normal, uint8, real, stage_key

    def _fit_description(self, train_ds, data) -> str:
        return f"{self.train_counts['normal']} normal, {self.train_counts['labelled_anomalies']} labelled anomalies"

    def _epoch_start(self, data) -> None:
        if self._stage(self.epoch) != self.opt_stage:  # normal-only stage done: a fresh optimiser
            self.opt_stage = self._stage(self.epoch)
            self.optimizer = self._make_optimizer(self.opt_stage)

    def _run_epoch(self, data) -> dict[str, float]:
        f_normal, uint8, real, _ = data
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if self.device.type == "cuda" else []):
            torch.manual_seed(self.seed_for(1000 + self.epoch))  # dropout: a function of (seed, epoch)
            return self._train_epoch(f_normal, uint8, real)

    def _epoch_end(self, data, stats: dict[str, Any]) -> None:
        if self.epoch == self.cfg.normal_epochs:
            self._remember_normal_stage(data[3])

    # -- the normal-only stage cache ----------------------------------------------------------
    #: config fields that do not affect the normal-only stage
    ADAPTATION_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "variant",
            "anomalies",
            "alpha",
            "k",
            "adapt_epochs",
            "adapt_lr",
            "adapt_from",
            "anomaly_prob",
            "mix",
            "grid_label",
            "with_norm",
            "guard",
            "score_pool",
            "smooth_sigma",
            "data_root",
        }
    )

    def _normal_stage_key(self, f_normal: torch.Tensor) -> str:
        """What determines the normal-only stage: the other config fields, the device type and the
        normal training features (hence the images and the frozen backbone)."""
        import hashlib
        import json

        h = hashlib.sha256()
        cfg = {k: v for k, v in self.cfg.as_dict().items() if k not in self.ADAPTATION_FIELDS}
        h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
        h.update(self.device.type.encode())
        h.update(f_normal.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def _remember_normal_stage(self, key: str) -> None:
        _NORMAL_STAGES[key] = {
            "net": {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "shuffle": self.generators["shuffle"].get_state(),
            "history": [dict(h) for h in self.history[: self.cfg.normal_epochs]],
        }
        _NORMAL_STAGES.move_to_end(key)
        while len(_NORMAL_STAGES) > _NORMAL_STAGES_MAX:
            _NORMAL_STAGES.popitem(last=False)

    def _restore_normal_stage(self, entry: dict[str, Any]) -> None:
        self.net.load_state_dict(entry["net"])
        self.generators["shuffle"].set_state(entry["shuffle"])
        self.history = [dict(h, cached=True) for h in entry["history"]]
        self.epoch = int(self.cfg.normal_epochs)
        self.normal_stage_cached = True

    def _train_epoch(self, f_normal: torch.Tensor, uint8: torch.Tensor | None, real) -> dict[str, float]:
        stage = self._stage(self.epoch)
        lr = self.learning_rate(self.epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        perm = torch.randperm(len(f_normal), generator=self.generators["shuffle"])
        sums: dict[str, float] = {}
        batches = list(torch.split(perm, self.cfg.batch_size))
        for idx in batches:
            if stage == "normal":
                out = self.normal_step(f_normal[idx.to(f_normal.device)])
            else:
                f, y_grid, y_img = self.mix_batch(idx, f_normal, uint8, real)
                out = self.adapt_step(f, y_grid, y_img)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + v
        self.net.eval()
        return {**{k: v / max(len(batches), 1) for k, v in sums.items()}, "lr": lr, "stage": stage == "adapt"}

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.optimizer.step()

    def normal_step(self, f: torch.Tensor) -> dict[str, float]:
        """One AdamW step on ``L_norm`` for a batch of normal features."""
        self.net.train()
        loss = reconstruction_loss(f, self.net(f), self.cfg.norm_loss)
        self._step(loss)
        return {"loss": float(loss.detach()), "norm": float(loss.detach())}

    def mix_batch(self, idx: torch.Tensor, f_normal: torch.Tensor, uint8: torch.Tensor | None, real):
        """A training batch of the adaptation: each normal sample ``idx`` replaced by an anomaly with
        probability ``anomaly_prob`` (confetti on that image, or a uniformly drawn real labelled
        anomaly). Returns ``(f, grid labels B x H x W, image labels B)``."""
        cfg = self.cfg
        g = self.generators["mix"]
        b = len(idx)
        if cfg.mix == "bernoulli":
            replaced = torch.rand(b, generator=g) < cfg.anomaly_prob
        else:  # "fixed": exactly round(anomaly_prob * B) samples of every batch, chosen at random
            replaced = torch.zeros(b, dtype=torch.bool)
            replaced[torch.randperm(b, generator=g)[: int(round(cfg.anomaly_prob * b))]] = True
        f = f_normal[idx.to(f_normal.device)].clone()
        y = torch.zeros((b, cfg.grid, cfg.grid), device=f.device)
        rep = replaced.nonzero().flatten()
        if len(rep):
            if cfg.anomalies == "real":
                pick = torch.randint(len(real[0]), (len(rep),), generator=g)
                f[rep.to(f.device)] = real[0][pick.to(f.device)]
                y[rep.to(f.device)] = real[1][pick.to(f.device)]
            else:
                from ..synthesis.confetti import confetti_noise

                noisy, changed = confetti_noise(uint8[idx[rep]], self.generators["confetti"])
                f[rep.to(f.device)] = self.extract(noisy.float() / 255.0)
                y[rep.to(f.device)] = self._grid_labels(changed, replaced=torch.ones(len(rep), dtype=torch.bool)).to(
                    f.device
                )
        return f, y, replaced.to(f.device).float()

    def adapt_step(self, f: torch.Tensor, y_grid: torch.Tensor, y_img: torch.Tensor) -> dict[str, float]:
        """One AdamW step on ``L_px`` (Eq. 7, variant ``pixel``) or ``L_img`` (Eq. 9, variant
        ``image``), plus ``L_norm`` on the normal samples when ``with_norm``."""
        cfg = self.cfg
        self.net.train()
        f_hat = self.net(f)
        phi = pseudo_huber(feature_difference(f, f_hat))
        if cfg.variant == "pixel":
            loss = push_pull_pixel_loss(phi, y_grid, cfg.alpha, cfg.guard)
        else:
            loss = push_pull_image_loss(topk_score(phi, cfg.k), y_img, cfg.alpha)
        out = {"push_pull": float(loss.detach())}
        if cfg.with_norm and (y_img == 0).any():
            keep = y_img == 0
            ln = reconstruction_loss(f[keep], f_hat[keep], cfg.norm_loss)
            loss = loss + ln
            out["norm"] = float(ln.detach())
        self._step(loss)
        return {"loss": float(loss.detach()), **out, "anomaly_share": float(y_img.mean())}

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, test_ds, *, device=None, batch_size: int | None = None, progress: bool = True) -> Prediction:
        """Pixel maps (``||d(:, u)||_2``, up-sampled) and image scores (max of the pooled map)."""
        if device is not None:
            self.to(resolve_device(device))
        self.net.eval()

        def score_batch(batch):
            maps = self.score_maps(batch.image, tuple(batch.mask.shape[-2:]))
            return image_score(maps, self.cfg.score_pool), maps.numpy()

        return self._predict_batches(test_ds, score_batch, batch_size, progress)

    def export_module(self) -> ADTRExport:
        """:meth:`predict`'s path as one module (:class:`ADTRExport`) at the transform's size."""
        self.net.eval()
        c = self.cfg
        return ADTRExport(self.network, input_hw(self.transform), c.align_corners, c.smooth_sigma, c.score_pool).eval()

    # -- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            **super()._state(),
            **self._trained_state(),
            "optimizer_stage": self.opt_stage,
            "train_counts": dict(self.train_counts),
            "backbone_fingerprint": self.backbone_fingerprint(),
        }

    def _load_state(self, state: dict[str, Any], path=None, strict: bool = True) -> None:
        """The frozen backbone is rebuilt from the config; its fingerprint must match the checkpoint's."""
        self._check_backbone(state, path, strict)
        self.opt_stage = state.get("optimizer_stage", "normal")
        self.optimizer = self._make_optimizer(self.opt_stage)
        self._load_trained_state(state)
        self.train_counts = dict(state.get("train_counts", {}))
        self.to(self.device)

    def _info(self) -> dict[str, Any]:
        bb = self.features.backbone
        c = self.cfg
        return {
            "backbone": bb.info.as_dict() if bb is not None else None,
            "weights": bb.info.weights if bb is not None else "none (pixel target)",
            "backbone_fingerprint": self.backbone_fingerprint(),
            "feature_channels": int(self.features.channels),
            "parameters": int(sum(p.numel() for p in self.net.parameters())),
            "losses": {"normal": "L_norm"}
            | (
                {"adapt": "L_px (Eq. 7)" if c.variant == "pixel" else "L_img (Eq. 9)", "anomalies": c.anomalies}
                if c.adapting
                else {}
            ),
            "train_counts": dict(self.train_counts),
            "normal_stage_cached": bool(self.normal_stage_cached),
        }


__all__ = [
    "ADTR",
    "ADTRConfig",
    "ADTRExport",
    "ADTRNet",
    "DecoderLayer",
    "EncoderLayer",
    "FeatureTarget",
    "PositionEmbedding",
    "RECONSTRUCTORS",
    "TokenMLPLayer",
    "VARIANTS",
    "feature_difference",
    "image_score",
    "pixel_score",
    "pseudo_huber",
    "push_pull_image_loss",
    "push_pull_pixel_loss",
    "query_attention",
    "reconstruction_loss",
    "topk_score",
]
