"""Synthetic anomalies for training: Perlin masks, GLASS LAS, DRAEM-style synthesis (ADL, POUTA).

- :mod:`adlib.synthesis.perlin`: 2-D Perlin noise and rotated, thresholded Perlin masks;
- :mod:`adlib.synthesis.las`: GLASS Local Anomaly Synthesis (Eq. 3 mask rule, Eq. 4 blend);
- :mod:`adlib.synthesis.draem`: DRAEM/MemSeg-style synthesis with ADL (Eq. 1) and POUTA presets.

Every generator takes an explicit ``torch.Generator``; none touches global RNG state.
"""

from .draem import (
    ADL_PAPER,
    ADL_RELEASED,
    DRAEM_AUGMENTERS,
    POUTA,
    PRESETS,
    DraemSynthesisConfig,
    DraemSynthesizer,
    adl_blend,
    draem_augment,
    preset,
    sample_opacity,
)
from .las import (
    BETA_MODES,
    GLASS_TEXTURE_TRANSFORMS,
    MASK_RULES,
    LocalAnomalySynthesizer,
    combine_masks,
    feature_label,
    las_blend,
    sample_beta,
    texture_augment,
)
from .perlin import fade, perlin_mask, perlin_masks, perlin_noise, perlin_noise_batch, rotate_fields

# other generators: gas, confetti, contamination

__all__ = [
    "ADL_PAPER",
    "ADL_RELEASED",
    "BETA_MODES",
    "DRAEM_AUGMENTERS",
    "GLASS_TEXTURE_TRANSFORMS",
    "MASK_RULES",
    "POUTA",
    "PRESETS",
    "DraemSynthesisConfig",
    "DraemSynthesizer",
    "LocalAnomalySynthesizer",
    "adl_blend",
    "combine_masks",
    "draem_augment",
    "fade",
    "feature_label",
    "las_blend",
    "perlin_mask",
    "perlin_masks",
    "perlin_noise",
    "perlin_noise_batch",
    "preset",
    "rotate_fields",
    "sample_beta",
    "sample_opacity",
    "texture_augment",
]
