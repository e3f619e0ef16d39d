"""Synthetic anomalies for training: Perlin masks, GLASS LAS, DRAEM-style synthesis (ADL, POUTA).

- :mod:`adlib.synthesis.perlin`: 2-D Perlin noise and rotated, thresholded Perlin masks;
- :mod:`adlib.synthesis.las`: GLASS Local Anomaly Synthesis (Eq. 3 mask rule, Eq. 4 blend);
- :mod:`adlib.synthesis.draem`: DRAEM/MemSeg-style synthesis with ADL (Eq. 1) and POUTA presets;
- :mod:`adlib.synthesis.gas`: GLASS Global Anomaly Synthesis (Eq. 1-2, Algorithm 1), model-independent;
- :mod:`adlib.synthesis.confetti`: FCDD confetti noise (ADTR+ anomalies) and its grid labels;
- :mod:`adlib.synthesis.contamination`: ADL's training-set contamination (leak-free / released);
- :mod:`adlib.synthesis.foreground`: foreground estimation for object categories (LAS);
- :mod:`adlib.synthesis.weak`: weak-defect test sets in the MAD-sys manner;
- :mod:`adlib.synthesis.toy`: the 2-D GAS toy behind the GLASS Fig. 3 schematic.

Every generator takes an explicit ``torch.Generator``; none touches global RNG state.
"""

from .confetti import confetti_grid_label, confetti_noise, replace_with_confetti
from .contamination import ContaminatedSplit, add_contamination_noise, contaminate, contamination_count
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
from .gas import (
    gas,
    gradient_ascent_step,
    hypersphere_radius,
    truncated_projection_hypersphere,
    truncated_projection_manifold,
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

__all__ = [
    "ContaminatedSplit",
    "add_contamination_noise",
    "confetti_grid_label",
    "confetti_noise",
    "contaminate",
    "contamination_count",
    "gas",
    "gradient_ascent_step",
    "hypersphere_radius",
    "replace_with_confetti",
    "truncated_projection_hypersphere",
    "truncated_projection_manifold",
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
