"""The opt-in fast paths (adlib.fastpath): the option, the run's key, the record, and the metrics
of bf16 / channels-last against the fp32 path on the built-in benchmark.

The tests run under the reference numerics (oneDNN off, ATen's kernels): bf16 runs there without the
CPU's bf16 units (slower than fp32, the same rounding), which the record says.

Tolerances (measured on this benchmark: wood at 128 px, 16 training images, 30 good + 8 per defect
type test images; benchmarks/RESULTS.md):

- channels-last and grid-order patch features are fp32 math in another memory layout and order: image
  scores within 1e-4 (relative), image AUROC within 0.1 point;
- GLASS, bf16 + channels-last + features inference of one trained model against its fp32 inference: image
  AUROC within 0.1 point (measured: equal, 0.951 both);
- PatchCore, bf16 + channels-last + features: per-image scores within 1 % of fp32's and image AUROC within
  0.5 point. PatchCore's reweighting exponentiates distance differences, so bf16's rounding of the
  (random-init ResNet-18) features flips a few near-tied normal/anomalous pairs: measured -0.1,
  +0.4, +0.4 point on wood, grass, nut (mean +0.24); the 0.1-point goal of issue 22 holds for
  GLASS, not for PatchCore on this benchmark.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adlib import fastpath
from adlib.cli import main as cli_main
from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.models import build
from adlib.models.base import evaluate
from adlib.models.features import reduce_dims, reduce_grid, unfold_patches
from adlib.models.glass import GLASSConfig
from adlib.results import Job, config_hash

CATEGORY = "wood"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("fastpath-bench")
    generate_benchmark(
        root, seed=0, categories=[CATEGORY], n_train=16, n_test_good=30, n_per_defect=8, size=128, progress=False
    )
    return root


def _sets(root, model):
    tr = get_dataset("synth", CATEGORY, "train", root=root, transform=model.transform)
    te = get_dataset("synth", CATEGORY, "test", root=root, transform=model.transform)
    return tr, te


# ----------------------------------------------------------------------------------------------
# The option


def test_parse_spellings_and_errors():
    assert fastpath.parse("bf16,channels-last") == ("bf16", "channels_last")
    assert fastpath.parse(["channels_last", "BF16", "bf16"]) == ("bf16", "channels_last")
    assert fastpath.parse("bf16+cuda-graphs+compile") == ("bf16", "compile", "cuda_graphs")
    assert fastpath.parse("grid-features,bf16") == ("bf16", "features")
    assert fastpath.parse("device-smoothing,bf16") == ("bf16", "smoothing")
    assert fastpath.parse("bf16-gas,features") == ("features", "bf16_ascent")
    assert fastpath.parse("none") == fastpath.parse("") == fastpath.parse(None) == ()
    with pytest.raises(ValueError, match=r"--fast: unknown fast path 'fp16'; expected .*bf16, channels-last"):
        fastpath.parse("bf16,fp16", "--fast")
    with pytest.raises(ValueError, match=r"GLASSConfig.fast: unknown fast path 'amx'"):
        build("glass", "smoke", fast="amx")
    cfg = build("patchcore", "smoke", fast="channels-last,bf16").cfg
    assert cfg.fast == ("bf16", "channels_last") and build("patchcore", "smoke").cfg.fast == ()


def test_cli_bad_fast_value_is_one_line(tmp_path, capsys):
    rc = cli_main(
        ["train", "glass", "--dataset", "synth", "--category", "wood", "--out", str(tmp_path), "--fast", "bf61"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("adlib: error: --fast: unknown fast path 'bf61'")
    assert not any(tmp_path.iterdir())  # refused before anything ran


def test_cli_help_names_every_fast_path():
    from adlib.cli import FAST_HELP

    missing = [o for o in fastpath.OPTIONS if o.replace("_", "-") not in FAST_HELP]
    assert not missing, missing


def _released_order(layers, p, pretrain, target):
    h, w = layers[0].shape[-2:]
    per = []
    for f in layers:
        u = unfold_patches(f, p)
        if u.shape[-2:] != (h, w):
            u = F.interpolate(u, size=(h, w), mode="bilinear", align_corners=False)
        per.append(u.permute(0, 2, 3, 1).reshape(-1, u.shape[1]))
    return reduce_dims(per, pretrain, target).view(layers[0].shape[0], h, w, target)


@pytest.mark.parametrize(
    "c2, c3, pretrain, target",
    [(64, 128, 192, 192), (64, 128, 96, 64), (32, 64, 100, 70)],  # block means; pooled twice; uneven windows
)
def test_grid_order_features_equal_the_released_order(c2, c3, pretrain, target):
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, c2, 12, 10, generator=g), torch.randn(2, c3, 6, 5, generator=g)]
    ref = _released_order(layers, 3, pretrain, target)
    fast = reduce_grid(layers, 3, pretrain, target)
    assert fast.shape == ref.shape and fast.is_contiguous()
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# The run's key

#: config hashes of the fp32 path before the fast paths existed (main at a48ac57): unchanged
BEFORE = {"glass": "b62443a5abfa", "patchcore": "b83f22dc11a9", "pouta": "a75856ddccff", "adtr": "adde7308df19"}


@pytest.mark.parametrize("method", sorted(BEFORE))
def test_fast_path_enters_the_key_and_fp32_keys_are_unchanged(method):
    plain = Job.make(method, "synth", CATEGORY)
    assert plain.key()["config_hash"] == BEFORE[method]
    assert Job.make(method, "synth", CATEGORY, fast=()).key() == plain.key()
    bf16 = Job.make(method, "synth", CATEGORY, fast="bf16")
    both = Job.make(method, "synth", CATEGORY, fast=("channels_last", "bf16"))
    hashes = {plain.key()["config_hash"], bf16.key()["config_hash"], both.key()["config_hash"]}
    assert len(hashes) == 3
    # the spelling does not matter, the setting does
    assert Job.make(method, "synth", CATEGORY, fast="bf16,channels-last").key() == both.key()
    cfg = plain.config()
    assert cfg["fast"] == () and config_hash(cfg) == config_hash({k: v for k, v in cfg.items() if k != "fast"})
    assert config_hash({**cfg, "fast": []}) == config_hash(cfg)  # read back from JSON: a list


# ----------------------------------------------------------------------------------------------
# GLASS: bf16 training separates; bf16 inference of the trained model equals fp32's within 0.1 point


def test_glass_bf16_training_and_inference(bench):
    model = build("glass", "smoke", variant="m", data_root=str(bench), fast="bf16,channels-last,features")
    tr, te = _sets(bench, model)
    model.fit(tr, progress=False)
    fx = model.features.backbone
    assert fx.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    info = model.info()
    assert info["config"]["fast"] == ("bf16", "channels_last", "features")
    rec = info["speed"]
    assert rec["path"] == "bf16+channels_last+features"
    assert rec["applied"] == {"bf16": "backbone", "channels_last": "backbone", "features": "patch features"}
    assert rec["cpu"]["numerics"] == "reference" and rec["cpu"]["onednn_max_cpu_isa"] == "AVX2"
    assert rec["cpu"]["mkldnn"] is False and rec["bf16_units"] == "emulated (oneDNN off)"
    assert np.isfinite(model.history[-1]["loss"])

    fast = model.predict(te, progress=False)
    m_fast = evaluate(fast)
    assert m_fast["image_auroc"] >= 0.80 and m_fast["pixel_auroc"] >= 0.85, m_fast  # trained in bf16, separates

    model.set_fast(())  # the same trained model on the fp32 path
    assert "speed" not in model.info() and fx.model.conv1.weight.is_contiguous()
    fp32 = model.predict(te, progress=False)
    m_fp32 = evaluate(fp32)
    # 0.1 point, or one normal/anomalous pair where that is finer than the test set can resolve
    pairs = int((fast.labels == 1).sum()) * int((fast.labels == 0).sum())
    tol = max(0.001, 1.0 / pairs + 1e-12)
    assert abs(m_fast["image_auroc"] - m_fp32["image_auroc"]) <= tol, (m_fast, m_fp32, pairs)
    assert abs(m_fast["pixel_auroc"] - m_fp32["pixel_auroc"]) <= 0.001, (m_fast, m_fp32)
    assert fast.maps.dtype == fp32.maps.dtype == np.float32
    assert not np.array_equal(fast.image_scores, fp32.image_scores)  # bf16 did run


# ----------------------------------------------------------------------------------------------
# GLASS: the heads' products in bf16 at inference (bf16_heads)


@pytest.fixture(scope="module")
def glass_fp32(bench):
    """GLASS-m trained on the fp32 path on the benchmark, and its fp32 metrics."""
    model = build("glass", "smoke", variant="m", data_root=str(bench))
    tr, te = _sets(bench, model)
    model.fit(tr, progress=False)
    return model, evaluate(model.predict(te, progress=False))


def test_discriminator_output_layer_stays_float32():
    """Under autocast the discriminator's hidden layer runs in bf16 and its output layer in float32
    (:func:`fastpath.float32_tail`): scores are not rounded to bf16's 8 bits; without autocast the
    output is bitwise the plain ``tail``'s."""
    from adlib.models.glass import Discriminator

    torch.manual_seed(0)
    disc = Discriminator(48, hidden=64).eval()
    x = torch.randn(300, 48)
    with torch.no_grad():
        plain = torch.sigmoid(disc.tail(disc.body(x))).squeeze(-1)
        assert torch.equal(disc(x), plain)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = disc.body(x)
            got = disc(x)
        assert hidden.dtype == torch.bfloat16 and got.dtype == torch.float32
        bf16_tail = torch.sigmoid(disc.tail(hidden.float()).to(torch.bfloat16).float()).squeeze(-1)
    # float32 scores: far more distinct values than a bf16 output layer leaves
    assert got.unique().numel() == 300 and bf16_tail.unique().numel() < 300
    assert (got - plain).abs().max() < 0.02
    torch.testing.assert_close(got, torch.sigmoid(disc.tail(hidden.float())).squeeze(-1))


def test_rescore_top_replaces_each_images_highest_positions():
    """:func:`fastpath.rescore_top`: the ``k`` highest positions of each image get the exact scores of
    their features, every other position keeps its value, and the input grid is not modified."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 4, 5, 6, generator=g)
    exact = feats.sum(-1)
    approx = (exact + 0.01 * torch.randn(exact.shape, generator=g)).to(torch.bfloat16)
    got = fastpath.rescore_top(approx, feats, lambda t: t.sum(-1), k=3)
    assert got.dtype == torch.float32 and got.shape == (3, 4, 5)
    flat_a, flat_g, flat_e = approx.float().reshape(3, -1), got.reshape(3, -1), exact.reshape(3, -1)
    for b in range(3):
        top = set(flat_a[b].topk(3).indices.tolist())
        for i in range(20):
            want = flat_e[b, i] if i in top else flat_a[b, i]
            assert flat_g[b, i] == want, (b, i)
    assert torch.equal(got.amax((1, 2)), exact.amax((1, 2)))  # the true maxima were among the top 3
    assert approx.dtype == torch.bfloat16 and not torch.equal(approx.float(), got)  # input untouched


@pytest.mark.parametrize("method", ["glass", "simplenet"])
def test_bf16_heads_score_grid_keeps_fp32_maxima(method):
    """Untrained GLASS and SimpleNet (SimpleNet's scores are negated normality scores): with
    ``bf16_heads`` each image's maximum is the fp32 path's (rescored), the rest of the grid is within
    bf16's rounding of it, and the model's parameters stay float32."""
    torch.manual_seed(0)
    model = build(method, "smoke")
    model.to("cpu")
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = model.score_grid(x)
    model.set_fast("bf16-heads")
    got = model.score_grid(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    torch.testing.assert_close(got.amax((1, 2)), ref.amax((1, 2)), rtol=0, atol=1e-6)
    assert not torch.equal(got, ref)  # the rest of the grid came from bf16 products
    scale = ref.abs().max()
    assert (got - ref).abs().max() <= 0.05 * scale, ((got - ref).abs().max(), scale)
    assert all(p.dtype == torch.float32 for p in model.net.parameters())


def test_glass_bf16_heads_inference(bench, glass_fp32):
    """The fp32-trained GLASS-m scored with ``bf16_heads`` gives the fp32 path's image scores (each
    image's highest positions rescored in fp32) and a pixel AUROC within 0.1 point; with every inference
    fast path (the fastest GLASS inference of ``benchmarks/bench_peers.py``) the image AUROC stays within
    0.1 point of its fp32 scoring (or one normal/anomalous pair, where that is finer than the test set
    resolves). The record says where it applied."""
    model, m_fp32 = glass_fp32
    _, te = _sets(bench, model)
    fp32 = model.predict(te, progress=False)
    pairs = int((fp32.labels == 1).sum()) * int((fp32.labels == 0).sum())
    tol = max(0.001, 1.0 / pairs + 1e-12)
    try:
        for fast in ("bf16-heads", "bf16,channels-last,features,smoothing,bf16-heads"):
            model.set_fast(fast)
            rec = model.info()["speed"]
            assert rec["applied"]["bf16_heads"] == "heads at inference (adaptor, discriminator hidden layer)"
            assert rec["bf16_units"] == "emulated (oneDNN off)"
            pred = model.predict(te, progress=False)
            m = evaluate(pred)
            assert not np.array_equal(pred.maps, fp32.maps)  # bf16 did run
            if fast == "bf16-heads":  # each image's maximum rescored on the fp32 path: fp32's image scores
                np.testing.assert_allclose(pred.image_scores, fp32.image_scores, rtol=0, atol=1e-6)
            assert abs(m["image_auroc"] - m_fp32["image_auroc"]) <= tol, (fast, m, m_fp32, pairs)
            assert abs(m["pixel_auroc"] - m_fp32["pixel_auroc"]) <= 0.001, (fast, m, m_fp32)
    finally:
        model.set_fast(())
    assert "speed" not in model.info()
    np.testing.assert_array_equal(model.predict(te, progress=False).image_scores, fp32.image_scores)
    patchcore = build("patchcore", "smoke", fast="bf16_heads")
    patchcore.to("cpu")
    assert patchcore.info()["speed"]["applied"] == {"bf16_heads": "not applied (no trained heads on frozen features)"}


# ----------------------------------------------------------------------------------------------
# GLASS: GAS's gradient ascent in bf16 (bf16_ascent), a training fast path


def test_bf16_ascent_scorer_gives_the_fp32_ascent_up_to_bf16_rounding():
    """The ascent through :class:`fastpath.Bf16Scorer` (products in bf16, the loss in fp32) moves each
    vector as the fp32 ascent does up to bf16's rounding of the gradient's direction, with and
    without the bound context (the same result both ways); the features stay fp32."""
    from adlib.models.glass import Discriminator
    from adlib.synthesis.gas import gas

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    disc = Discriminator(32, hidden=64).train()
    u = torch.randn(200, 32, generator=g)
    ref = gas(u, disc, steps=10, eta=0.01, generator=torch.Generator().manual_seed(1))
    sc = fastpath.ascent_scorer(disc, fastpath.Speed.of("bf16_ascent"), "cpu")
    assert isinstance(sc, fastpath.Bf16Scorer) and fastpath.ascent_scorer(disc, fastpath.Speed(), "cpu") is disc
    got = gas(u, sc, steps=10, eta=0.01, generator=torch.Generator().manual_seed(1))
    assert got.dtype == torch.float32
    plain = fastpath.Bf16Scorer(disc.forward, "cpu")  # no bind_context: the joint forward every step
    assert not hasattr(plain, "bind_context")
    torch.testing.assert_close(gas(u, plain, steps=10, eta=0.01, generator=torch.Generator().manual_seed(1)), got)
    moved = (ref - u).norm(dim=1)  # about 10 * 0.01, then projected
    err = (got - ref).norm(dim=1) / moved
    # most rows within 1 % (bf16 keeps 8 significant bits); a few with a nearly flat gradient turn
    # further (measured: median 0.2 %, max 19 % of the distance moved)
    assert 0 < err.median() < 0.01 and err.quantile(0.9) < 0.05, (err.median(), err.quantile(0.9))
    assert disc.body[0].weight.dtype == torch.float32  # the module itself is untouched


def test_glass_bf16_ascent_training(bench, glass_fp32):
    """GLASS-m trained with ``bf16_ascent`` separates, and its image AUROC lies within the spread that
    fp32 round-off alone gives a training. Measured on this benchmark (3 categories x 2 seeds,
    benchmarks/RESULTS.md): bf16_ascent vs fp32 |delta| <= 0.94 point (mean +0.14), and the fp32
    ``features`` path (the same math in another order, 1e-7 apart) vs fp32 |delta| <= 1.15 point; a
    0.1-point rule cannot hold for any training path, fp32 reordering included. SimpleNet (no
    ascent) does not apply it."""
    _, m_fp32 = glass_fp32
    model = build("glass", "smoke", variant="m", data_root=str(bench), fast="bf16-ascent")
    tr, te = _sets(bench, model)
    model.fit(tr, progress=False)
    rec = model.info()["speed"]
    assert rec["applied"] == {"bf16_ascent": "GAS gradient ascent (training)"}
    assert rec["bf16_units"] == "emulated (oneDNN off)"
    pred = model.predict(te, progress=False)
    m = evaluate(pred)
    assert m["image_auroc"] >= 0.80 and m["pixel_auroc"] >= 0.85, m
    assert abs(m["image_auroc"] - m_fp32["image_auroc"]) <= 0.015, (m, m_fp32)
    assert abs(m["pixel_auroc"] - m_fp32["pixel_auroc"]) <= 0.015, (m, m_fp32)
    assert model.discriminator.body[0].weight.dtype == torch.float32
    simplenet = build("simplenet", "smoke", fast="bf16_ascent")
    simplenet.to("cpu")
    assert simplenet.info()["speed"]["applied"] == {"bf16_ascent": "not applied (no gradient ascent in training)"}


# ----------------------------------------------------------------------------------------------
# PatchCore: channels-last and bf16 inference of one memory bank


def test_patchcore_fast_inference(bench):
    model = build("patchcore", "smoke")
    tr, te = _sets(bench, model)
    model.fit(tr, progress=False)
    ref = model.predict(te, progress=False)
    m_ref = evaluate(ref)

    model.set_fast("channels-last,features")  # fp32 math, another layout and order
    cl = model.predict(te, progress=False)
    assert model.info()["speed"]["path"] == "channels_last+features"
    assert abs(evaluate(cl)["image_auroc"] - m_ref["image_auroc"]) <= 0.001
    np.testing.assert_allclose(cl.image_scores, ref.image_scores, rtol=1e-4)

    model.set_fast("bf16,channels-last,features")
    bf = model.predict(te, progress=False)
    m_bf = evaluate(bf)
    rel = np.abs(bf.image_scores - ref.image_scores) / np.abs(ref.image_scores).max()
    assert 0 < rel.max() <= 0.01, rel.max()
    assert abs(m_bf["image_auroc"] - m_ref["image_auroc"]) <= 0.005, (m_bf, m_ref)
    assert abs(m_bf["pixel_auroc"] - m_ref["pixel_auroc"]) <= 0.001, (m_bf, m_ref)

    model.set_fast("none")  # back on the fp32 path: the fp32 numbers, bit for bit
    again = model.predict(te, progress=False)
    np.testing.assert_array_equal(again.image_scores, ref.image_scores)
    np.testing.assert_array_equal(again.maps, ref.maps)

    model.set_fast("smoothing")  # the maps' Gaussian batched in torch: SciPy's filter up to float32 rounding
    sm = model.predict(te, progress=False)
    assert model.info()["speed"]["applied"] == {"smoothing": "maps (batched Gaussian on the device)"}
    np.testing.assert_array_equal(sm.image_scores, ref.image_scores)
    np.testing.assert_allclose(sm.maps, ref.maps, rtol=0, atol=1e-6 * float(np.abs(ref.maps).max()))
    assert abs(evaluate(sm)["pixel_auroc"] - m_ref["pixel_auroc"]) <= 0.001


def test_batched_gaussian_is_scipys():
    from scipy import ndimage

    from adlib.models.smoothing import gaussian_maps

    g = torch.Generator().manual_seed(0)
    for shape, sigma in (
        ((3, 64, 48), 4.0),
        ((2, 9, 11), 4.0),
        ((1, 40, 40), 1.5),
    ):  # incl. maps smaller than the kernel
        maps = torch.rand(*shape, generator=g) * 5
        want = np.stack([ndimage.gaussian_filter(m, sigma=sigma) for m in maps.numpy()])
        torch.testing.assert_close(torch.from_numpy(gaussian_maps(maps, sigma)), torch.from_numpy(want))
        got = gaussian_maps(maps, sigma, on_device=True)
        assert got.dtype == np.float32 and got.shape == shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.abs(want).max()))
    assert not np.array_equal(gaussian_maps(maps, 0.0), want)  # sigma 0: no smoothing
    np.testing.assert_array_equal(gaussian_maps(maps, 0.0), maps.numpy())


# ----------------------------------------------------------------------------------------------
# A method without a frozen backbone: the whole network under autocast


def test_pouta_whole_network_bf16(bench):
    tiny = dict(image_size=32, widths=(4, 8, 8, 8), mapping_width=8, batch_size=4, epochs=1)
    tiny.update(fcm_widths=(4, 4, 8, 8), aggregate_width=4)
    model = build("pouta", "smoke", data_root=str(bench), fast="bf16,channels_last", **tiny)
    tr, te = _sets(bench, model)
    model.fit(tr, progress=False)
    assert np.isfinite(model.history[-1]["loss"])
    rec = model.info()["speed"]
    assert rec["applied"] == {"bf16": "network", "channels_last": "network"}
    pred = model.predict(te, progress=False)
    assert pred.maps.dtype == np.float32 and np.isfinite(pred.image_scores).all()
    model.set_fast(())
    fp32 = model.predict(te, progress=False)
    # end to end in bf16 (heat map included): close to fp32's, ranked alike (measured: |diff| <= 0.05, rho 0.97)
    assert np.abs(pred.image_scores - fp32.image_scores).max() <= 0.1
    ranks = [np.argsort(np.argsort(s)) for s in (pred.image_scores, fp32.image_scores)]
    rho = np.corrcoef(*ranks)[0, 1]
    assert rho >= 0.95, rho
    assert not np.array_equal(pred.image_scores, fp32.image_scores)  # bf16 did run


# ----------------------------------------------------------------------------------------------
# The paper profile's knob ($ADLIB_FAST, adlib reproduce --profile paper --fast)


def test_paper_profile_knob(monkeypatch, capsys):
    plain_paper = Job.make("glass", "mvtec", "bottle", "paper").key()
    plain_smoke = Job.make("glass", "synth", CATEGORY).key()
    monkeypatch.setenv(fastpath.ENV, "bf16,channels-last")
    assert GLASSConfig.for_profile("paper").fast == ("bf16", "channels_last")
    assert GLASSConfig.for_profile("paper", fast=()).fast == ()  # a config's own setting wins
    assert GLASSConfig.for_profile("smoke").fast == ()  # never for the smoke profile
    assert Job.make("glass", "synth", CATEGORY).key() == plain_smoke
    assert Job.make("glass", "mvtec", "bottle", "paper").key()["config_hash"] != plain_paper["config_hash"]
    monkeypatch.setenv(fastpath.ENV, "turbo")
    with pytest.raises(ValueError, match=r"\$ADLIB_FAST: unknown fast path 'turbo'"):
        GLASSConfig.for_profile("paper")
    monkeypatch.delenv(fastpath.ENV)
    assert Job.make("glass", "mvtec", "bottle", "paper").key() == plain_paper
    assert cli_main(["reproduce", "--profile", "smoke", "--fast", "bf16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "adlib: error: --fast goes with --profile paper (the smoke profile's numbers are pinned to the fp32 path)"
    ]
