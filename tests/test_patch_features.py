"""Locally aware patch features: unfold order, up-sampling, and the released two-stage reduction."""

import torch
import torch.nn.functional as F

from adlib.backbones import FeatureExtractor
from adlib.models.features import PatchFeatures, reduce_dims, unfold_patches


def test_unfold_is_channel_major_neighbourhood_with_zero_padding():
    f = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)
    u = unfold_patches(f, 3)
    assert u.shape == (1, 18, 3, 3)
    # centre position (1, 1): channel 0's full 3x3 block, then channel 1's
    assert torch.equal(u[0, :9, 1, 1], f[0, 0].flatten())
    assert torch.equal(u[0, 9:, 1, 1], f[0, 1].flatten())
    # corner (0, 0): zero padding on top and left
    assert torch.equal(u[0, :9, 0, 0], torch.tensor([0, 0, 0, 0, 0, 1, 0, 3, 4.0]))


def test_reduce_dims_matches_block_means_of_the_notes():
    """WRN50 layer2 (512*9=4608) + layer3 (1024*9=9216) -> 1536: blocks of 6 and of 12."""
    torch.manual_seed(0)
    a, b = torch.randn(5, 4608), torch.randn(5, 9216)
    out = reduce_dims([a, b], 1536, 1536)
    assert out.shape == (5, 1536)
    assert torch.allclose(out[:, :768], a.view(5, 768, 6).mean(-1), atol=1e-5)
    assert torch.allclose(out[:, 768:], b.view(5, 768, 12).mean(-1), atol=1e-5)


def test_patch_features_shape_and_upsampled_deeper_layer():
    fx = FeatureExtractor("resnet18", layers=("layer2", "layer3"), pretrained=False)
    pf = PatchFeatures(fx, 3, 64, 48)
    x = torch.randn(2, 3, 64, 64)
    out = pf(x)
    assert out.shape == (2, 8, 8, 48) and not out.requires_grad
    # by hand for one position
    feats = fx(x)
    u2 = unfold_patches(feats["layer2"]).permute(0, 2, 3, 1).reshape(-1, 128 * 9)
    u3 = F.interpolate(unfold_patches(feats["layer3"]), size=(8, 8), mode="bilinear", align_corners=False)
    u3 = u3.permute(0, 2, 3, 1).reshape(-1, 256 * 9)
    ref = reduce_dims([u2, u3], 64, 48).view(2, 8, 8, 48)
    assert torch.allclose(out, ref)
