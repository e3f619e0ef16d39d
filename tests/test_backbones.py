"""Frozen timm feature extraction: layers, shapes, freezing, and where the weights come from."""

import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from adlib.backbones import BACKBONES, FeatureExtractor, WeightsUnavailable


@pytest.mark.parametrize(
    "name,layers,channels",
    [
        ("resnet18", ("layer2", "layer3"), (128, 256)),
        ("resnet50", ("layer1", "layer2", "layer3"), (256, 512, 1024)),
        ("wide_resnet50_2", ("layer2", "layer3"), (512, 1024)),
        ("resnet101", ("layer3",), (1024,)),
    ],
)
def test_random_init_layers_and_shapes(name, layers, channels):
    fx = FeatureExtractor(name, layers=layers, pretrained=False)
    assert fx.info.channels == channels
    assert fx.info.tag == BACKBONES[name] and fx.info.tag.endswith(".tv_in1k")
    assert fx.info.weights == "random-init seed=0" and fx.info.pretrained is False
    out = fx(torch.zeros(1, 3, 64, 64))
    assert list(out) == list(layers)
    for (layer, f), c, s in zip(out.items(), channels, fx.info.strides):
        assert f.shape == (1, c, 64 // s, 64 // s), layer


def test_layer_indices_and_unknown_names():
    fx = FeatureExtractor("resnet18", layers=(2, 3), pretrained=False)
    assert fx.info.layers == ("layer2", "layer3")
    with pytest.raises(ValueError, match="layer9.*available"):
        FeatureExtractor("resnet18", layers=("layer9",), pretrained=False)
    with pytest.raises(ValueError, match="unknown backbone 'vgg_nope'.*resnet18"):
        FeatureExtractor("vgg_nope", pretrained=False)


def test_frozen_and_stays_in_eval_mode():
    fx = FeatureExtractor("resnet18", pretrained=False)
    parent = torch.nn.Sequential(fx)
    parent.train()
    assert not fx.training and not fx.model.training
    assert all(not p.requires_grad for p in fx.parameters())
    x = torch.randn(2, 3, 32, 32)
    a = fx(x)["layer2"]
    b = fx(x)["layer2"]  # BatchNorm running stats must not move between calls
    assert torch.equal(a, b)
    assert not a.requires_grad


def test_random_init_is_seeded():
    x = torch.randn(1, 3, 32, 32)
    a = FeatureExtractor("resnet18", pretrained=False, seed=1)(x)["layer3"]
    b = FeatureExtractor("resnet18", pretrained=False, seed=1)(x)["layer3"]
    c = FeatureExtractor("resnet18", pretrained=False, seed=2)(x)["layer3"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _reference_state(seed=123):
    torch.manual_seed(seed)
    return timm.create_model("resnet18", pretrained=False).state_dict()


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_weights_file_is_loaded_and_recorded(tmp_path, fmt):
    sd = _reference_state()
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pth":
        torch.save(sd, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    fx = FeatureExtractor("resnet18", layers=("layer2",), pretrained=True, weights_file=path)
    assert fx.info.pretrained and fx.info.weights.startswith(f"file:{path} sha256:")
    loaded = dict(fx.model.named_parameters())
    assert torch.equal(loaded["layer2.0.conv1.weight"], sd["layer2.0.conv1.weight"])


def test_weights_dir_env(tmp_path, monkeypatch):
    sd = _reference_state(7)
    torch.save(sd, tmp_path / "resnet18.tv_in1k.pth")
    monkeypatch.setenv("ADLIB_WEIGHTS_DIR", str(tmp_path))
    fx = FeatureExtractor("resnet18", layers=("layer1",), pretrained=True)
    assert "resnet18.tv_in1k.pth" in fx.info.weights
    assert torch.equal(dict(fx.model.named_parameters())["layer1.0.conv1.weight"], sd["layer1.0.conv1.weight"])


def test_hf_cache_is_used_without_network(tmp_path, monkeypatch):
    """A weights file in the Hugging Face cache layout is found and loaded with no download."""
    sd = _reference_state(11)
    snap = tmp_path / "models--timm--resnet18.tv_in1k" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (tmp_path / "models--timm--resnet18.tv_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--resnet18.tv_in1k" / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(snap / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fx = FeatureExtractor("resnet18", layers=("layer3",), pretrained=True)
    assert fx.info.weights.startswith("timm:resnet18.tv_in1k (hf cache")
    assert torch.equal(dict(fx.model.named_parameters())["layer3.0.conv1.weight"], sd["layer3.0.conv1.weight"])


def test_offline_without_cache_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ADLIB_WEIGHTS_DIR", raising=False)
    t = time.perf_counter()
    with pytest.raises(WeightsUnavailable) as err:
        FeatureExtractor("wide_resnet50_2", pretrained=True)
    assert time.perf_counter() - t < 20  # no network retries (they take ~45 s here)
    msg = str(err.value)
    assert "wide_resnet50_2.tv_in1k" in msg and "weights_file" in msg and "pretrained=False" in msg


def test_missing_or_bad_weights_file(tmp_path):
    with pytest.raises(WeightsUnavailable, match="weights file not found: .*nope.pth"):
        FeatureExtractor("resnet18", pretrained=True, weights_file=tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="cannot load weights file .*bad.pth"):
        FeatureExtractor("resnet18", pretrained=True, weights_file=bad)
