"""GLASS Local Anomaly Synthesis (LAS): Perlin mask rule (Eq. 3), texture, overlay fusion (Eq. 4).

GLASS (ECCV 2024), Sec. 3.3 and Fig. 4, in three steps:

I. Anomaly mask (Eq. 3, :func:`combine_masks`). Two Perlin masks ``m1, m2``
   (:mod:`adlib.synthesis.perlin`), ``p_m ~ U[0, 1]``::

       m = (m1 AND m2) AND m_f     if 0 <= p_m <= alpha            ("intersection")
           (m1 OR  m2) AND m_f     if alpha < p_m <= 2 alpha       ("union")
            m1         AND m_f     if 2 alpha < p_m <= 1           ("m1")

   with ``alpha = 1/3`` (implementation notes), so each rule has probability 1/3. Note the order in
   the paper: the *first* interval is the intersection, not the union. ``m_f`` is the foreground
   mask (all ones when no foreground is used).
II. Anomaly texture (:func:`texture_augment`). A random DTD image, resized, then ``K_R = 3``
   *distinct* transforms out of the ``K = 9`` of :data:`GLASS_TEXTURE_TRANSFORMS` ("similar to
   RandAugment"), then centre-cropped to the image size and normalised like the image (drawing,
   resizing and cropping: :func:`adlib.data.textures.draw_texture`, shared with
   :mod:`adlib.synthesis.draem`).
III. Overlay fusion (Eq. 4, :func:`las_blend`) with the transparency ``beta`` of :func:`sample_beta`.

The feature-level label is the mask max-pooled to the feature grid (:func:`feature_label`; 36 x 36
for the 288 input, i.e. 8 x 8 windows).

Paper vs released code (named options, defaults = released code, as the implementation notes ask)
    - ``beta`` (Sec. 4.1: "beta ~ N(0.5, 0.1^2) is truncated within [0.2, 0.8]"):
      ``beta_mode="clip"`` (default; the released code clips, so 0.2 and 0.8 carry point masses of
      Phi(-3) = 0.135 % each) or ``"truncate"`` (the paper's wording: re-sample until inside).
    - Eq. 4 is applied "in whatever space the inputs are in"; the released code blends the
      ImageNet-normalised image with the normalised texture, and so does
      :class:`LocalAnomalySynthesizer` when ``normalized=True`` (default). Because normalisation
      is affine per channel and Eq. 4 is a convex combination, blending in [0, 1] space and then
      normalising gives the same result; the option only says which space the caller's tensors
      are in.

Choices the paper leaves open (the project's, documented here)
    - Texture transforms: the paper only says "K = 9 ... randomly choose three". The nine and
      their parameter ranges are those of the implementation notes. They are applied in the drawn
      order (a random permutation's first three), on the uint8 texture (as PIL images are in the
      released pipeline), with parameters drawn from the caller's generator:
      contrast/brightness factor ``U(0.8, 1.2)``; saturation factor ``U(0.8, 1.2)`` and hue shift
      ``U(-0.2, 0.2)`` applied in a random order (as ``ColorJitter`` does); flips, grayscale
      (3 channels kept), autocontrast, equalize have no parameter; affine: rotation
      ``U(-45, 45)`` degrees about the centre, nearest interpolation, fill 0 (``RandomAffine``'s
      defaults), no translation/scale/shear.
    - Texture size: the texture is resized to ``texture_resize`` (default: the image size; the
      released shells resize to 288, or 329 for wood and toothbrush, before the 288 crop), then
      augmented, then centre-cropped to the image size.
    - Re-drawing: both Perlin masks are re-drawn until the grid label of the final (foreground-
      intersected) mask is non-empty, as the released code does, but at most ``max_tries`` times
      (the released code loops forever, which hangs on an empty foreground). Fallbacks, each with a
      logged WARNING and recorded in ``info["fallback"]``:
        * foreground given but all zero: it is ignored (``"empty-foreground-ignored"``);
        * ``max_tries`` failed with a non-empty foreground: the mask becomes the foreground inside
          one feature-grid cell chosen uniformly among the cells that hold foreground
          (``"foreground-cell"``), so the mask still lies inside the foreground;
        * ``max_tries`` failed without a foreground (only possible with extreme Perlin settings):
          one grid cell chosen uniformly (``"grid-cell"``).
    - Random draw order per call: Perlin masks (2 per try: exponents, gradients, angles), the
      Eq. 3 rule variable ``p_m``, [fallback cell], texture index, texture transforms, ``beta``.

Shapes: images ``3 x H x W``; pixel masks are returned ``H x W`` float32 in {0, 1} (``mask[None]``
is the ``1 x H x W`` layout of :class:`adlib.data.base.Sample`); grid labels ``gh x gw`` float32.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as nnf
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..data.base import IMAGENET_MEAN, IMAGENET_STD
from ..data.textures import TextureSource, draw_texture, to_uint8_image  # to_uint8_image: re-exported (__all__)
from .perlin import perlin_masks

log = logging.getLogger(__name__)

MASK_RULES = ("intersection", "union", "m1")
"""Eq. 3's three cases, in the paper's order of the ``p_m`` intervals."""

GLASS_TEXTURE_TRANSFORMS = (
    "contrast",
    "brightness",
    "saturation_hue",
    "hflip",
    "vflip",
    "grayscale",
    "autocontrast",
    "equalize",
    "affine",
)
"""The K = 9 texture transforms of GLASS LAS (implementation notes), in the released code's order."""

BETA_MODES = ("clip", "truncate")

__all__ = [
    "BETA_MODES",
    "GLASS_TEXTURE_TRANSFORMS",
    "MASK_RULES",
    "LocalAnomalySynthesizer",
    "combine_masks",
    "feature_label",
    "las_blend",
    "sample_beta",
    "texture_augment",
    "to_uint8_image",
]


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def _uniform(generator: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------
# Step I: mask rule (Eq. 3)


def combine_masks(
    m1: torch.Tensor,
    m2: torch.Tensor,
    generator: torch.Generator,
    alpha: float = 1.0 / 3.0,
    foreground: torch.Tensor | None = None,
) -> tuple[torch.Tensor, str]:
    """GLASS Eq. 3: the anomaly mask from two Perlin masks (and the foreground), and the rule used.

    Draws ``p_m ~ U[0, 1)`` from ``generator``: ``p_m <= alpha`` -> ``m1 AND m2``
    ("intersection"), ``alpha < p_m <= 2 alpha`` -> ``m1 OR m2`` ("union"), else ``m1`` ("m1");
    the result is AND-ed with ``foreground`` when given. ``alpha`` must lie in ``[0, 1/2]``;
    ``alpha = 1/3`` (default) makes the three rules equally likely. Returns a bool tensor of the
    masks' shape and the rule name (one of :data:`MASK_RULES`).
    """
    if not 0.0 <= alpha <= 0.5:
        raise ValueError(f"alpha must lie in [0, 1/2] for Eq. 3 to have three cases, got {alpha}")
    if m1.shape != m2.shape:
        raise ValueError(f"masks differ in shape: {tuple(m1.shape)} vs {tuple(m2.shape)}")
    a, b = m1.bool(), m2.bool()
    p = float(torch.rand((), generator=generator, dtype=torch.float64))
    if p <= alpha:
        rule, m = "intersection", a & b
    elif p <= 2 * alpha:
        rule, m = "union", a | b
    else:
        rule, m = "m1", a.clone()
    if foreground is not None:
        m = m & foreground.bool().reshape(m.shape)
    return m, rule


# ----------------------------------------------------------------------------------------------
# Step II: texture


def _apply_texture_transform(name: str, img: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    if name == "contrast":
        f = _uniform(generator, 0.8, 1.2)
        return TF.adjust_contrast(img, f), {"factor": f}
    if name == "brightness":
        f = _uniform(generator, 0.8, 1.2)
        return TF.adjust_brightness(img, f), {"factor": f}
    if name == "saturation_hue":
        f = _uniform(generator, 0.8, 1.2)
        h = _uniform(generator, -0.2, 0.2)
        hue_first = bool(torch.rand((), generator=generator) < 0.5)
        if hue_first:
            img = TF.adjust_saturation(TF.adjust_hue(img, h), f)
        else:
            img = TF.adjust_hue(TF.adjust_saturation(img, f), h)
        return img, {"saturation": f, "hue": h, "hue_first": hue_first}
    if name == "hflip":
        return TF.horizontal_flip(img), {}
    if name == "vflip":
        return TF.vertical_flip(img), {}
    if name == "grayscale":
        return TF.rgb_to_grayscale(img, num_output_channels=3), {}
    if name == "autocontrast":
        return TF.autocontrast(img), {}
    if name == "equalize":
        return TF.equalize(img), {}
    if name == "affine":
        a = _uniform(generator, -45.0, 45.0)
        out = TF.affine(
            img,
            angle=a,
            translate=[0, 0],
            scale=1.0,
            shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.NEAREST,
            fill=0,
        )
        return out, {"angle": a}
    raise ValueError(f"unknown texture transform {name!r}; known: {GLASS_TEXTURE_TRANSFORMS}")


def texture_augment(
    img: Image.Image | torch.Tensor,
    generator: torch.Generator,
    k: int = 3,
    transforms: Sequence[str] = GLASS_TEXTURE_TRANSFORMS,
) -> tuple[torch.Tensor, list[str], list[dict]]:
    """GLASS LAS step II: apply ``k`` distinct transforms drawn from ``transforms`` (default the 9).

    ``img``: PIL image or ``3 x H x W`` tensor (uint8, or float in [0, 1]); the result has the
    same dtype (PIL input gives uint8). The ``k`` transforms are the first ``k`` of a random
    permutation drawn from ``generator`` and are applied in that order; their parameters come
    from ``generator`` too (ranges in the module docstring). Returns ``(image, names, params)``.
    """
    if not 0 <= k <= len(transforms):
        raise ValueError(f"k must lie in 0..{len(transforms)}, got {k}")
    x = TF.pil_to_tensor(img.convert("RGB")) if isinstance(img, Image.Image) else img
    order = torch.randperm(len(transforms), generator=generator)[:k].tolist()
    names, params = [], []
    for i in order:
        name = transforms[i]
        x, p = _apply_texture_transform(name, x, generator)
        names.append(name)
        params.append(p)
    return x, names, params


# ----------------------------------------------------------------------------------------------
# Step III: transparency and overlay fusion (Eq. 4)


def sample_beta(
    generator: torch.Generator,
    mean: float = 0.5,
    std: float = 0.1,
    low: float = 0.2,
    high: float = 0.8,
    mode: str = "clip",
    size: int | tuple[int, ...] | None = None,
) -> float | torch.Tensor:
    """GLASS Eq. 4's transparency ``beta ~ N(mean, std^2)`` limited to ``[low, high]`` (Sec. 4.1).

    ``mode="clip"`` (default, the released code: ``clip(beta, low, high)``, point masses at the
    bounds) or ``"truncate"`` (the paper's wording: draw again until inside; a truncated normal,
    no point mass). ``size=None`` returns a Python float, else a float64 tensor of that size.
    """
    if mode not in BETA_MODES:
        raise ValueError(f"beta mode must be one of {BETA_MODES}, got {mode!r}")
    if not low <= high:
        raise ValueError(f"need low <= high, got {low}, {high}")
    shape = () if size is None else ((size,) if isinstance(size, int) else tuple(size))
    b = mean + std * torch.randn(shape, generator=generator, dtype=torch.float64)
    if mode == "clip":
        b = b.clamp(low, high)
    else:
        if std == 0 and not low <= mean <= high:
            raise ValueError("truncate mode with std 0 and the mean outside [low, high] never ends")
        bad = (b < low) | (b > high)
        while bool(bad.any()):
            b[bad] = mean + std * torch.randn(int(bad.sum()), generator=generator, dtype=torch.float64)
            bad = (b < low) | (b > high)
    return float(b) if size is None else b


def las_blend(x: torch.Tensor, texture: torch.Tensor, mask: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    """GLASS Eq. 4: ``x+ = x * (1 - m) + (1 - beta) * texture * m + beta * x * m``.

    Computed in whatever space the inputs are in (the released code: both ImageNet-normalised).
    ``mask`` broadcasts against ``x`` (``H x W`` masks are given a channel axis); ``beta`` a float
    or a tensor broadcastable to ``x`` (e.g. ``B x 1 x 1 x 1``). Outside the mask ``x`` is returned
    unchanged bit for bit; ``beta = 1`` returns ``x`` everywhere.
    """
    m = mask.to(x.dtype)
    if m.dim() == 2 and x.dim() >= 3:
        m = m[None]
    if isinstance(beta, torch.Tensor):
        beta = beta.to(x.dtype)
    return x * (1 - m) + (1 - beta) * texture * m + beta * x * m


def feature_label(mask: torch.Tensor, grid: int | Sequence[int] = (36, 36)) -> torch.Tensor:
    """The feature-level LAS label: the pixel mask max-pooled to the feature grid (float32).

    ``mask``: ``H x W`` or ``... x H x W``. When ``H, W`` are multiples of the grid this is an exact
    block max (8 x 8 windows for 288 -> 36, as released); otherwise adaptive max pooling (windows
    ``floor(i*H/gh) .. ceil((i+1)*H/gh)``).
    """
    gh, gw = _hw(grid)
    m = mask.float()
    h, w = m.shape[-2:]
    lead = m.shape[:-2]
    flat = m.reshape(-1, h, w)
    if h % gh == 0 and w % gw == 0:
        out = flat.reshape(-1, gh, h // gh, gw, w // gw).amax(dim=(2, 4))
    else:
        out = nnf.adaptive_max_pool2d(flat[:, None], (gh, gw))[:, 0]
    return out.reshape(*lead, gh, gw)


# ----------------------------------------------------------------------------------------------
# The whole LAS branch


@dataclass
class LocalAnomalySynthesizer:
    """GLASS LAS for one image: ``(x_plus, pixel_mask, grid_label, info) = las(image, generator)``.

    Configuration (defaults = GLASS released settings, see the module docstring):

    - ``image_size``: expected ``(H, W)`` of the input (None: taken from the image);
    - ``grid``: feature grid of the label (36 x 36 for 288 inputs);
    - ``beta_mean, beta_std, beta_low, beta_high, beta_mode``: :func:`sample_beta`;
    - ``alpha``: Eq. 3's rule probability;
    - ``perlin_min_scale_exp, perlin_max_scale_exp (exclusive), perlin_rotate, perlin_threshold``:
      :func:`adlib.synthesis.perlin.perlin_masks`;
    - ``textures``: a :class:`adlib.data.textures.TextureSource` (DTD or the stand-in bank); may be
      None if every call passes ``texture=``;
    - ``texture_resize``: size the texture is resized to before augmentation (None: image size),
      then centre-cropped to the image size; ``texture_resize_mode``: ``"squash"`` (both sides to
      ``texture_resize``) or ``"shorter_side"`` (released: the shorter side, aspect kept;
      :func:`adlib.data.textures.texture_size`); ``n_texture_transforms`` (3) of
      ``texture_transforms`` (the 9);
    - ``use_foreground``: AND the mask with the ``foreground`` passed to ``__call__`` (Eq. 3's
      ``m_f``); ignored when no foreground is passed;
    - ``normalized``: the input image is ImageNet-normalised, so the texture is normalised the
      same way before Eq. 4 (the released code); False: both in [0, 1];
    - ``max_tries``: cap on mask re-draws before the documented fallback.

    ``info``: ``beta``, ``mask_rule``, ``transforms`` (names, in order), ``transform_params``,
    ``texture_index`` and ``texture_path`` (None for a passed texture), ``tries``, ``fallback``
    (None or a string), ``scale_exp`` and ``angle`` of ``m1, m2`` (last try).
    """

    image_size: int | tuple[int, int] | None = None
    grid: int | tuple[int, int] = (36, 36)
    beta_mean: float = 0.5
    beta_std: float = 0.1
    beta_low: float = 0.2
    beta_high: float = 0.8
    beta_mode: str = "clip"
    alpha: float = 1.0 / 3.0
    perlin_min_scale_exp: int = 0
    perlin_max_scale_exp: int = 6
    perlin_rotate: tuple[float, float] | None = (-90.0, 90.0)
    perlin_threshold: float = 0.5
    textures: TextureSource | None = field(default=None, repr=False)
    texture_resize: int | tuple[int, int] | None = None
    texture_resize_mode: str = "squash"
    n_texture_transforms: int = 3
    texture_transforms: tuple[str, ...] = GLASS_TEXTURE_TRANSFORMS
    use_foreground: bool = True
    normalized: bool = True
    max_tries: int = 100

    def __post_init__(self) -> None:
        if self.beta_mode not in BETA_MODES:
            raise ValueError(f"beta_mode must be one of {BETA_MODES}, got {self.beta_mode!r}")
        if self.max_tries < 1:
            raise ValueError("max_tries must be >= 1")
        if self.texture_resize_mode not in ("squash", "shorter_side"):
            raise ValueError(
                f"texture_resize_mode must be 'squash' or 'shorter_side', got {self.texture_resize_mode!r}"
            )
        unknown = set(self.texture_transforms) - set(GLASS_TEXTURE_TRANSFORMS)
        if unknown:
            raise ValueError(f"unknown texture transforms {sorted(unknown)}")

    # -- pieces -----------------------------------------------------------------------------
    def _draw_mask(self, hw: tuple[int, int], generator: torch.Generator, fg: torch.Tensor | None):
        info: dict[str, Any] = {"fallback": None}
        tries = 0
        for tries in range(1, self.max_tries + 1):  # noqa: B007 - the count is reported after the loop
            pair, pinfo = perlin_masks(
                2,
                hw,
                generator,
                self.perlin_min_scale_exp,
                self.perlin_max_scale_exp,
                self.perlin_rotate,
                self.perlin_threshold,
                return_info=True,
            )
            mask, rule = combine_masks(pair[0], pair[1], generator, self.alpha, fg)
            label = feature_label(mask, self.grid)
            if bool(label.any()):
                break
        else:
            mask, rule, label = self._fallback(hw, generator, fg)
            info["fallback"] = "foreground-cell" if fg is not None else "grid-cell"
            log.warning(
                "LAS: no non-empty anomaly mask after %d Perlin re-draws%s; using one %s instead",
                self.max_tries,
                " inside the foreground" if fg is not None else "",
                "foreground grid cell" if fg is not None else "grid cell",
            )
        info.update(
            tries=tries,
            mask_rule=rule,
            scale_exp=pinfo["scale_exp"].tolist(),
            angle=pinfo["angle"].tolist(),
            m1=pair[0],
            m2=pair[1],  # the last Perlin pair drawn (for figures such as GLASS Fig. 4)
        )
        return mask, label, info

    def _fallback(self, hw: tuple[int, int], generator: torch.Generator, fg: torch.Tensor | None):
        h, w = hw
        gh, gw = _hw(self.grid)
        if fg is not None:
            cells = feature_label(fg, (gh, gw)).flatten().nonzero()[:, 0]
        else:
            cells = torch.arange(gh * gw)
        c = int(cells[torch.randint(len(cells), (), generator=generator)])
        i, j = divmod(c, gw)
        y0, y1 = (i * h) // gh, -((-(i + 1) * h) // gh)
        x0, x1 = (j * w) // gw, -((-(j + 1) * w) // gw)
        mask = torch.zeros((h, w), dtype=torch.bool)
        mask[y0:y1, x0:x1] = True
        if fg is not None:
            mask &= fg
        return mask, "fallback", feature_label(mask, (gh, gw))

    def _texture(self, hw: tuple[int, int], generator: torch.Generator, texture) -> tuple[torch.Tensor, dict]:
        # GLASS (released): resized to texture_resize, K_R of the 9 uint8 transforms, centre crop to hw
        drawn = draw_texture(
            self.textures,
            hw,
            generator,
            texture,
            resize=self.texture_resize,
            owner="LocalAnomalySynthesizer",
            resize_mode=self.texture_resize_mode,
            augment=lambda t, g: texture_augment(t, g, self.n_texture_transforms, self.texture_transforms),
        )
        img, names, params = drawn.image, drawn.augmentations, drawn.params
        info: dict[str, Any] = {"texture_index": drawn.index, "texture_path": drawn.path}
        info.update(texture_raw=drawn.raw, texture_augmented=img)  # uint8, before normalisation
        t = img.float() / 255.0
        if self.normalized:
            mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
            t = (t - mean) / std
        info.update(transforms=names, transform_params=params)
        return t, info

    # -- call --------------------------------------------------------------------------------
    def __call__(
        self,
        image: torch.Tensor,
        generator: torch.Generator,
        foreground: torch.Tensor | None = None,
        texture: Image.Image | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Synthesise one local anomaly: ``(x_plus, pixel_mask, grid_label, info)``.

        ``image``: ``3 x H x W`` float (ImageNet-normalised if ``normalized``); ``foreground``:
        ``H x W`` (or ``1 x H x W``) mask, non-zero = foreground; ``texture``: optional texture
        (PIL, uint8 tensor or float [0, 1] tensor) used instead of drawing one from ``textures``.
        """
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"image must be 3 x H x W, got {tuple(image.shape)}")
        hw = (int(image.shape[-2]), int(image.shape[-1]))
        if self.image_size is not None and _hw(self.image_size) != hw:
            raise ValueError(f"image is {hw[0]}x{hw[1]} but the synthesizer expects {_hw(self.image_size)}")
        fg = None
        empty_fg = False
        if foreground is not None and self.use_foreground:
            fg = torch.as_tensor(foreground).reshape(-1, *foreground.shape[-2:])[0] != 0
            if tuple(fg.shape) != hw:
                raise ValueError(f"foreground is {tuple(fg.shape)} but the image is {hw}")
            if not bool(fg.any()):
                log.warning("LAS: the foreground mask is empty; it is ignored for this image")
                fg, empty_fg = None, True
        mask, label, info = self._draw_mask(hw, generator, fg)
        if empty_fg:
            info["fallback"] = "empty-foreground-ignored" if info["fallback"] is None else info["fallback"]
        tex, tinfo = self._texture(hw, generator, texture)
        info.update(tinfo)
        beta = sample_beta(generator, self.beta_mean, self.beta_std, self.beta_low, self.beta_high, self.beta_mode)
        info["beta"] = beta
        x_plus = las_blend(image, tex.to(image.dtype), mask, beta)
        return x_plus, mask.float(), label, info


@dataclass
class LasWalkthrough:
    """Every intermediate of one LAS draw, for figures (GLASS Fig. 4). Images in [0, 1]."""

    image: torch.Tensor  # 3 x H x W
    m1: torch.Tensor  # H x W bool, first Perlin mask
    m2: torch.Tensor  # second Perlin mask
    foreground: torch.Tensor | None  # H x W bool, or None
    mask: torch.Tensor  # H x W bool: Eq. 3 rule applied to m1, m2, times the foreground
    mask_rule: str
    texture_raw: torch.Tensor  # 3 x h x w uint8, as loaded
    texture: torch.Tensor  # 3 x H x W float in [0, 1], after the 3 transforms
    transforms: list[str]
    blends: dict[float, torch.Tensor]  # beta -> Eq. 4 result


def las_walkthrough(
    image: torch.Tensor,
    textures: TextureSource,
    generator: torch.Generator,
    foreground: torch.Tensor | None = None,
    betas: Sequence[float] = (0.2, 0.5, 0.8),
    **config,
) -> LasWalkthrough:
    """Run :class:`LocalAnomalySynthesizer` once on ``image`` (``3 x H x W`` in [0, 1]) and return
    its intermediates, with the Eq. 4 blend at each of ``betas`` for the same mask and texture.
    ``config`` goes to the synthesizer (``normalized`` is forced to False)."""
    las = LocalAnomalySynthesizer(textures=textures, **{**config, "normalized": False})
    _, mask, _, info = las(image, generator, foreground=foreground)
    tex = info["texture_augmented"].float() / 255.0
    m = mask.bool()
    fg = None if foreground is None else (torch.as_tensor(foreground).reshape(m.shape) != 0)
    return LasWalkthrough(
        image=image,
        m1=info.get("m1", m),
        m2=info.get("m2", m),
        foreground=fg,
        mask=m,
        mask_rule=info["mask_rule"],
        texture_raw=info["texture_raw"],
        texture=tex,
        transforms=list(info["transforms"]),
        blends={float(b): las_blend(image, tex, m, float(b)) for b in betas},
    )
