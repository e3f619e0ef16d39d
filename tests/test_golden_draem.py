"""adlib's DRAEM-style losses and synthesis against numbers from DRAEM's released code (VitjanZ/DRAEM).

Fixture ``tests/golden/draem_released.npz`` (provenance in ``draem_released.json``) is written by
``tools/golden/make_draem.py`` from an unmodified checkout; the tests need only the fixture.

Compared: the focal loss (adlib's :func:`adlib.losses.focal_loss` and ADL's
:func:`adlib.models.adl.segmentation_loss`), the L2 term, the SSIM term on the pixels where the
released zero-padded window lies inside the image, the Perlin noise for the released gradient
angles (adlib's :func:`adlib.synthesis.perlin.perlin_noise_batch` fed the angles DRAEM drew from
numpy's global RNG), the ``> 0.5`` threshold, and the blend of ADL Eq. 1 (:func:`adl_blend`) with
the released ``b`` (texture weight ``1 - b``). Not compared: the imgaug texture augmenters and the
imgaug rotation of the noise (stubbed as the identity in the generator). Tolerances: float32
round-off; measured max differences in the comments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adlib import losses
from adlib.models import adl, pouta
from adlib.synthesis.draem import adl_blend
from adlib.synthesis.perlin import perlin_noise_batch

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def ref():
    with np.load(GOLDEN / "draem_released.npz") as d:
        return {k: torch.from_numpy(d[k]) for k in d.files}


@pytest.fixture(scope="module")
def meta():
    return json.loads((GOLDEN / "draem_released.json").read_text())


def test_provenance(meta):
    assert meta["repo"].endswith("VitjanZ/DRAEM")
    assert len(meta["commit"]) == 40


def test_focal_loss(ref):
    p = torch.softmax(ref["focal_logits"], dim=1)[:, 1]  # anomaly channel; released uses channel 0 for 1 - p
    target = ref["focal_mask"][:, 0]
    expected = float(ref["focal_loss"])
    assert float(losses.focal_loss(p, target)) == pytest.approx(expected, rel=1e-6, abs=1e-7)  # measured 0
    assert float(adl.segmentation_loss(p, target)) == pytest.approx(expected, rel=1e-6, abs=1e-7)  # measured 0


def test_l2_loss(ref):
    got = F.mse_loss(ref["ssim_rec"], ref["ssim_img"])  # what pouta.reconstruction_loss uses
    assert float(got) == pytest.approx(float(ref["l2_loss"]), rel=1e-6, abs=1e-8)  # measured 0


def test_ssim_map_mean_is_released_loss(ref):
    # fixture consistency: SSIM() = 1 - mean of the stored map (measured 2.6e-8)
    assert 1.0 - float(ref["ssim_map"].double().mean()) == pytest.approx(float(ref["ssim_loss"]), abs=1e-6)


def test_reconstruction_loss_interior(ref):
    """adlib's MSE + SSIM term (``pouta.reconstruction_loss``, pytorch-msssim: window 11, sigma 1.5,
    no padding) equals DRAEM's L2 + (1 - SSIM) restricted to the pixels whose window lies inside
    the image (the released map cropped by 5 pixels). Measured |diff| 4.6e-8."""
    got = pouta.reconstruction_loss(ref["ssim_rec"], ref["ssim_img"])
    interior = 1.0 - float(ref["ssim_map"][..., 5:-5, 5:-5].double().mean())
    assert float(got) == pytest.approx(float(ref["l2_loss"]) + interior, abs=1e-6)


def test_reconstruction_loss_full_image_differs(ref):
    """Known difference (reported): DRAEM's released SSIM pads the window with zeros and averages
    over every pixel; adlib's (pytorch-msssim) averages only the valid pixels. On these 32 x 32
    images the SSIM terms differ by 0.0724; the difference shrinks with the image size."""
    got = pouta.reconstruction_loss(ref["ssim_rec"], ref["ssim_img"])
    full = float(ref["l2_loss"]) + float(ref["ssim_loss"])
    assert abs(float(got) - full) > 1e-2


@pytest.mark.parametrize("i", range(6))
def test_perlin_noise_and_threshold(ref, meta, i):
    case = meta["perlin_cases"][i]
    angles = ref[f"perlin{i}_angles"]  # float64 radians, (res_y + 1) x (res_x + 1)
    noise = perlin_noise_batch(tuple(case["shape"]), torch.tensor([case["res"]]), angles[None])[0]
    # measured max |diff| 1.2e-7 .. 1.8e-7 (float64 numpy vs adlib's float32 lerp), values in [-1, 1]
    torch.testing.assert_close(noise, ref[f"perlin{i}_noise"], rtol=0, atol=1e-6)
    # the threshold (released np.where(noise > 0.5, 1, 0)); no value lies within 3e-4 of 0.5 here
    # (perlin<i>_margin), far beyond the round-off, so the masks must match exactly
    assert float(ref[f"perlin{i}_margin"]) > 1e-5
    assert torch.equal((noise > 0.5).to(torch.uint8), ref[f"perlin{i}_mask"])


def test_released_mask_is_thresholded_noise(ref):
    # fixture consistency: the blend's mask is the released threshold of the (unrotated) noise
    assert torch.equal((ref["blend_noise"] > 0.5).float(), ref["blend_mask"])
    assert 0 < float(ref["blend_mask"].mean()) < 0.5


def test_blend(ref):
    """ADL Eq. 1 with opacity ``beta = 1 - b``: the released blend weights the texture by ``1 - b``
    (``b = 0.8 u``), adlib's ``adl_released`` preset draws ``beta = 1 - 0.8 u``. Measured max |diff|
    6e-8 (the released blend runs in float64)."""
    image = ref["blend_image"].permute(2, 0, 1)
    texture = ref["blend_texture"].permute(2, 0, 1).float() / 255.0
    got = adl_blend(image, texture, ref["blend_mask"], 1.0 - float(ref["blend_b"]))
    torch.testing.assert_close(got, ref["blend_out"].permute(2, 0, 1), rtol=0, atol=1e-6)
    outside = ref["blend_mask"] == 0
    assert torch.equal(got[:, outside], image[:, outside])  # exact outside the mask
