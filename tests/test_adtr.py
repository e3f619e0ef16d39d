"""ADTR: Eq. 6-9 against hand-computed values, the identical-shortcut argument, the push-pull
gradients, the network variants, persistence and resume, and training on a built-in category."""

import math

import numpy as np
import pytest
import torch

from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.models import build, evaluate, load
from adlib.models.adtr import (
    ADTR,
    RECONSTRUCTORS,
    ADTRConfig,
    ADTRNet,
    image_score,
    pixel_score,
    pseudo_huber,
    push_pull_image_loss,
    push_pull_pixel_loss,
    query_attention,
    reconstruction_loss,
    topk_score,
)
from adlib.protocols import apply_protocol

#: a small smoke model: a few epochs, enough to exercise every path in seconds
TINY = dict(epochs=3, lr_milestones=(2,), adapt_epochs=2, batch_size=8)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("adtr_data")
    generate_benchmark(root, categories=["wood"], n_train=16, n_test_good=6, n_per_defect=4, size=128, progress=False)
    return root


def _splits(model, root, protocol=None, seed=0):
    tr = get_dataset("synth", "wood", "train", root=root, transform=model.transform)
    te = get_dataset("synth", "wood", "test", root=root, transform=model.transform)
    return apply_protocol(protocol, tr, te, seed)[:2]


# ----------------------------------------------------------------------------------------------
# Equations


def test_pseudo_huber_eq6_by_hand():
    # one position with d = (3, -1): channel mean of |d| = 2 -> sqrt(5) - 1; d = 0 -> 0
    d = torch.tensor([[3.0, 0.0], [-1.0, 0.0]]).view(1, 2, 1, 2)
    phi = pseudo_huber(d)
    assert phi.shape == (1, 1, 2)
    assert torch.allclose(phi, torch.tensor([[[math.sqrt(5) - 1, 0.0]]]))


def test_push_pull_pixel_loss_eq7_by_hand():
    phi = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    y = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    # pull: (1 + 3) / 4; push: -log(1 - exp(-(2 + 4) / 4)), weighted by alpha
    want = 1.0 + 0.1 * -math.log(1 - math.exp(-1.5))
    assert push_pull_pixel_loss(phi, y, alpha=0.1).item() == pytest.approx(want, rel=1e-6)
    # all-anomalous sample: no pull; both sums divide by all H*W positions
    ones = torch.ones_like(y)
    assert push_pull_pixel_loss(phi, ones, alpha=0.1).item() == pytest.approx(
        0.1 * -math.log(1 - math.exp(-2.5)), rel=1e-6
    )
    # batch mean over samples
    both = push_pull_pixel_loss(torch.cat([phi, phi]), torch.cat([y, ones]), alpha=0.1).item()
    assert both == pytest.approx((want + 0.1 * -math.log(1 - math.exp(-2.5))) / 2, rel=1e-6)


def test_push_pull_pixel_loss_guard_for_an_all_normal_label_map():
    phi = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    zero = torch.zeros_like(phi)
    # "skip" (FCDD): no push term, the loss is the pull term alone, finite
    assert push_pull_pixel_loss(phi, zero, alpha=0.1, guard="skip").item() == pytest.approx(2.5)
    # "eps": the push term is the constant -alpha log(1e-31) (log 0 would be inf), with no gradient
    p = phi.clone().requires_grad_(True)
    loss = push_pull_pixel_loss(p, zero, alpha=0.1, guard="eps")
    assert loss.item() == pytest.approx(2.5 + 0.1 * -math.log(1e-31), rel=1e-5)
    loss.backward()
    assert torch.allclose(p.grad, torch.full_like(phi, 0.25))
    with pytest.raises(ValueError, match="guard"):
        push_pull_pixel_loss(phi, zero, guard="clamp")
    with pytest.raises(ValueError, match="B x H x W"):
        push_pull_pixel_loss(phi, zero[0])


def test_topk_score_eq8_with_ties():
    phi = torch.tensor([[[5.0, 1.0], [5.0, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert torch.allclose(topk_score(phi, 1), torch.tensor([5.0, 0.0]))
    assert torch.allclose(topk_score(phi, 2), torch.tensor([5.0, 0.0]))  # the two tied 5s
    assert torch.allclose(topk_score(phi, 3), torch.tensor([4.0, 0.0]))
    assert torch.allclose(topk_score(phi, 4), phi.flatten(1).mean(1))  # k = HW: the plain mean
    for bad in (0, 5):
        with pytest.raises(ValueError, match="k must be in"):
            topk_score(phi, bad)


def test_push_pull_image_loss_eq9_by_hand():
    q = torch.tensor([0.5, 2.0])
    y = torch.tensor([0.0, 1.0])
    want = (0.5 + 0.1 * -math.log(1 - math.exp(-2.0))) / 2
    assert push_pull_image_loss(q, y, alpha=0.1).item() == pytest.approx(want, rel=1e-6)
    # all-normal batch: the mean q; an anomalous sample with q = 0 stays finite (1e-31 in the log)
    assert push_pull_image_loss(q, torch.zeros(2), alpha=0.1).item() == pytest.approx(1.25)
    z = push_pull_image_loss(torch.zeros(1), torch.ones(1), alpha=0.1).item()
    assert z == pytest.approx(0.1 * -math.log(1e-31), rel=1e-5)


def test_reconstruction_loss_and_scores_by_hand():
    f = torch.zeros(2, 3, 2, 2)
    f_hat = torch.ones(2, 3, 2, 2)
    assert reconstruction_loss(f, f_hat, "sum").item() == pytest.approx(3.0)  # 12 per sample / (H W = 4)
    assert reconstruction_loss(f, f_hat, "mse").item() == pytest.approx(1.0)
    d = torch.zeros(1, 2, 2, 2)
    d[0, :, 1, 0] = torch.tensor([3.0, 4.0])
    assert torch.allclose(pixel_score(d), torch.tensor([[[0.0, 0.0], [5.0, 0.0]]]))
    m = torch.zeros(1, 4, 4)
    m[0, 1, 1] = 8.0
    assert image_score(m, 1).item() == pytest.approx(8.0)  # plain max
    assert image_score(m, 2).item() == pytest.approx(2.0)  # 2x2 box mean around the hot pixel
    assert image_score(m, 9).item() == pytest.approx(0.5)  # window clipped to the 4x4 map


# ----------------------------------------------------------------------------------------------
# The identical shortcut (Sec. 3.2) and the push-pull gradients


def test_query_attention_is_a_strict_convex_combination_unlike_the_linear_shortcut():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, generator=g)
    for q in (torch.randn(6, 4, generator=g), 3 * x):  # any query, even one aligned with x
        out = query_attention(q, x)
        w = torch.softmax(q @ x.T / 2.0, dim=-1)
        assert torch.allclose(out, w @ x, atol=1e-6) and (w > 0).all()
    # with finite logits every output row mixes all inputs: never the input itself
    assert (query_attention(torch.randn(6, 4, generator=g), x) - x).norm() > 0.1
    # a linear reconstructor has the exact identity solution, anomalies included
    lin = torch.nn.Linear(4, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4))
        lin.bias.zero_()
    anomaly = 50 * torch.randn(6, 4, generator=g)
    assert torch.allclose(lin(anomaly), anomaly)


def test_the_query_reconstructor_does_not_pass_its_input_through_at_initialisation():
    f = torch.randn(4, 32, 4, 4, generator=torch.Generator().manual_seed(1))
    net = ADTRNet(32, 4, width=32, heads=4, ffn=64, enc_layers=1, dec_layers=1, dropout=0.0)
    net.eval()
    with torch.no_grad():
        rel = ((net(f) - f).norm() / f.norm()).item()
    assert rel > 0.8


def _train_reconstructor(kind, normal, steps=300, seed=0):
    torch.manual_seed(seed)
    net = ADTRNet(
        normal.shape[1],
        normal.shape[-1],
        width=32,
        heads=4,
        ffn=64,
        enc_layers=1,
        dec_layers=1,
        dropout=0.0,
        reconstructor=kind,
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = normal[torch.randint(len(normal), (16,), generator=g)]
        loss = reconstruction_loss(batch, net(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_after_training_the_query_model_fails_to_rebuild_anomalies_that_a_linear_model_rebuilds():
    """Sec. 3.2: trained on normal features only, a linear reconstructor drifts to the identity
    and rebuilds an anomalous feature too; the query reconstructor rebuilds it poorly."""
    g = torch.Generator().manual_seed(0)
    c, grid = 8, 4
    pattern = torch.randn(1, c, grid, grid, generator=g)
    normal = pattern + 0.3 * torch.randn(256, c, grid, grid, generator=g)
    test = pattern + 0.3 * torch.randn(8, c, grid, grid, generator=g)
    anomalous = test.clone()
    anomalous[:, :, 1, 2] += 3.0 * torch.randn(8, c, generator=g)

    def anomaly_error(net):
        with torch.no_grad():
            return (
                pixel_score(anomalous - net(anomalous))[:, 1, 2].mean().item()
                / pixel_score(anomalous - test)[:, 1, 2].mean().item()
            )

    err = {kind: anomaly_error(_train_reconstructor(kind, normal, steps=600)) for kind in RECONSTRUCTORS}
    assert err["linear"] < 0.35 and err["cnn"] < 0.35, err  # the shortcut: most of the anomaly comes back
    assert err["query"] > 0.8, err  # the query model leaves the anomaly in d
    # Table 4(a)'s ordering of the argument: every variant without the query rebuilds more of it
    assert all(err["query"] > 1.4 * v for k, v in err.items() if k != "query"), err


def test_push_pull_gradients_push_anomalous_phi_up_and_pull_normal_phi_down():
    g = torch.Generator().manual_seed(0)
    phi = (torch.rand(2, 3, 3, generator=g) + 0.1).requires_grad_(True)
    y = torch.zeros(2, 3, 3)
    y[0, 0, :2] = 1
    push_pull_pixel_loss(phi, y, alpha=0.5).backward()
    # gradient descent moves phi against its gradient
    assert (phi.grad[y == 1] < 0).all() and (phi.grad[y == 0] > 0).all()
    # one SGD step of a reconstructor on L_px: phi rises where y = 1, falls where y = 0
    torch.manual_seed(0)
    net = ADTRNet(16, 4, width=16, heads=2, ffn=32, enc_layers=1, dec_layers=1, dropout=0.0)
    f = torch.randn(4, 16, 4, 4, generator=g)
    y = torch.zeros(4, 4, 4)
    y[:2, 1:3, 1:3] = 1
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)

    def phis():
        with torch.no_grad():
            p = pseudo_huber(f - net(f))
        return p[y == 1].mean().item(), p[y == 0].mean().item()

    up0, down0 = phis()
    for _ in range(5):
        loss = push_pull_pixel_loss(pseudo_huber(f - net(f)), y, alpha=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    up1, down1 = phis()
    assert up1 > up0 and down1 < down0


# ----------------------------------------------------------------------------------------------
# Network variants and configuration


@pytest.mark.parametrize("kind", RECONSTRUCTORS)
def test_every_reconstructor_maps_features_to_their_shape(kind):
    f = torch.randn(2, 12, 4, 4)
    net = ADTRNet(12, 4, width=8, heads=2, ffn=16, enc_layers=1, dec_layers=2, dropout=0.0, reconstructor=kind)
    out = net(f)
    assert out.shape == f.shape and torch.isfinite(out).all()
    out.sum().backward()
    with pytest.raises(ValueError, match="expected B x 12 x 4 x 4"):
        net(torch.randn(2, 12, 5, 5))


def test_query_placement_and_positional_embedding_options():
    base = dict(width=8, heads=2, ffn=16, enc_layers=1, dec_layers=3, dropout=0.0)
    one = ADTRNet(12, 4, **base)
    layerwise = ADTRNet(12, 4, query="layerwise", **base)
    assert len(one.queries) == 1 and len(layerwise.queries) == 3 and one.queries[0].shape == (16, 8)
    table = ADTRNet(12, 4, pos_embed="table", **base)
    assert table.pos().shape == one.pos().shape == (16, 8)
    # row/column tables: positions in one row share their first half
    pos = one.pos().view(4, 4, 8)
    assert torch.equal(pos[1, 0, :4], pos[1, 3, :4]) and torch.equal(pos[0, 2, 4:], pos[3, 2, 4:])
    f = torch.randn(2, 12, 4, 4)
    assert layerwise(f).shape == table(f).shape == f.shape
    # the no-query decoder starts from the encoder output: no query parameters at all
    assert not hasattr(ADTRNet(12, 4, reconstructor="no-query", **base), "queries")


def test_config_profiles_and_validation():
    paper = ADTRConfig.for_profile("paper")
    assert (paper.backbone, paper.layers, paper.image_size, paper.grid, paper.width) == (
        "efficientnet_b4",
        (0, 1, 2, 3, 4),
        256,
        16,
        256,
    )
    assert (paper.epochs, paper.lr_milestones, paper.batch_size, paper.alpha, paper.k, paper.adapt_epochs) == (
        500,
        (400,),
        16,
        0.003,
        20,
        300,
    )
    assert paper.total_epochs == 500 and ADTRConfig.for_profile("paper", variant="pixel").total_epochs == 800
    assert ADTRConfig.for_profile("paper", variant="pixel", adapt_from="scratch").total_epochs == 300
    for field, bad in (("variant", "both"), ("reconstructor", "mlp"), ("anomalies", "cutpaste"), ("grid_label", "max")):
        with pytest.raises(ValueError, match=field):
            build("adtr", "smoke", **{field: bad})
    with pytest.raises(ValueError, match="multiple of grid"):
        build("adtr", "smoke", image_size=100)
    with pytest.raises(ValueError, match="k must be in"):
        build("adtr", "smoke", k=65)
    with pytest.raises(ValueError, match="unknown ADTRConfig field"):
        build("adtr", "smoke", alpah=0.1)


def test_feature_and_pixel_targets():
    model = build("adtr", "smoke")
    x = torch.rand(2, 3, 128, 128)
    f = model.extract(x)
    assert f.shape == (2, 64 + 128 + 256, 8, 8) and model.features.channels == 448
    pix = build("adtr", "smoke", target="pixels")
    p = pix.extract(x)
    assert p.shape == (2, 3 * 16 * 16, 8, 8) and pix.features.backbone is None
    # each position holds its own 16 x 16 cell of the normalised image
    norm = (x - pix.features.mean) / pix.features.std
    assert torch.allclose(p[:, :, 2, 5].view(2, 3, 16, 16), norm[:, :, 32:48, 80:96])
    assert pix.info()["weights"].startswith("none")


# ----------------------------------------------------------------------------------------------
# Training, mixing, persistence


def test_mix_batch_replaces_samples_with_labelled_anomalies(data_root):
    model = build("adtr", "smoke", variant="pixel", anomaly_prob=0.5, **TINY)
    tr, _ = _splits(model, data_root)
    images = torch.stack([tr[i].image for i in range(len(tr))])
    f = model.extract(images)
    uint8 = (images * 255).round().to(torch.uint8)
    shares, ok = [], True
    for _ in range(10):
        fb, yg, yi = model.mix_batch(torch.arange(16), f, uint8, None)
        shares.append(yi.mean().item())
        rep = yi.bool()
        ok &= bool(torch.equal(fb[~rep], f[~rep]))  # untouched samples keep their features
        ok &= bool((yg[~rep] == 0).all() and (yg[rep].flatten(1).amax(1) == 1).all())
        ok &= bool((fb[rep] != f[rep]).any())
    assert ok
    assert 0.3 < np.mean(shares) < 0.7  # 160 Bernoulli(0.5) draws
    assert len(set(shares)) > 1  # the share varies from batch to batch
    fixed = build("adtr", "smoke", variant="pixel", anomaly_prob=0.25, mix="fixed", **TINY)
    assert {fixed.mix_batch(torch.arange(16), f, uint8, None)[2].sum().item() for _ in range(5)} == {4.0}


def test_fit_needs_labelled_anomalies_for_real_sources(data_root):
    model = build("adtr", "smoke", variant="image", anomalies="real", **TINY)
    tr, _ = _splits(model, data_root)
    with pytest.raises(ValueError, match="needs labelled anomalies"):
        model.fit(tr, progress=False)


def test_save_load_and_exact_resume_across_the_two_stages(data_root, tmp_path):
    proto = {"real_anomalies": 1, "real_holdout": 2}
    full = build("adtr", "smoke", variant="pixel", anomalies="real", **TINY)
    tr, te = _splits(full, data_root, proto)
    full.fit(tr, progress=False)
    ref = full.predict(te, progress=False)
    assert full.epoch == 5 and [h["stage"] for h in full.history] == [False] * 3 + [True] * 2
    assert full.train_counts == {"normal": 16, "labelled_anomalies": 4}
    # interrupted inside the normal stage, then inside the adaptation, resumed each time
    ck = tmp_path / "ck"
    for stop in (dict(epochs=2, adapt_epochs=0), dict(adapt_epochs=1)):
        part = build("adtr", "smoke", variant="pixel", anomalies="real", **{**TINY, **stop})
        part.fit(tr, progress=False, checkpoint_dir=ck)
        assert part.epoch == part.cfg.total_epochs
    rest = build("adtr", "smoke", variant="pixel", anomalies="real", **TINY)
    rest.fit(tr, progress=False, checkpoint_dir=ck)
    assert rest.epoch == 5
    got = rest.predict(te, progress=False)
    np.testing.assert_array_equal(got.maps, ref.maps)
    # save / load gives the same predictions
    full.save(tmp_path / "m.pt")
    again = load(tmp_path / "m.pt")
    assert isinstance(again, ADTR) and again.cfg == full.cfg
    np.testing.assert_array_equal(again.predict(te, progress=False).image_scores, ref.image_scores)
    with pytest.raises(ValueError, match="config differs"):
        build("adtr", "smoke", variant="pixel", anomalies="real", **{**TINY, "alpha": 0.1}).fit(
            tr, progress=False, checkpoint_dir=ck
        )


def test_the_normal_stage_cache_gives_exactly_the_uncached_numbers(data_root):
    from adlib.models import adtr as mod

    kw = dict(TINY, dropout=0.1, variant="pixel")  # dropout: the epoch-seeded global RNG matters too
    mod._NORMAL_STAGES.clear()
    cold = build("adtr", "smoke", **kw)
    tr, te = _splits(cold, data_root)
    cold.fit(tr, progress=False)
    ref = cold.predict(te, progress=False)
    assert not cold.normal_stage_cached
    mod._NORMAL_STAGES.clear()
    build("adtr", "smoke", **{**kw, "variant": "normal"}).fit(tr, progress=False)  # trains and caches the stage
    warm = build("adtr", "smoke", **kw)
    warm.fit(tr, progress=False)
    assert warm.normal_stage_cached and warm.info()["normal_stage_cached"]
    np.testing.assert_array_equal(warm.predict(te, progress=False).maps, ref.maps)
    # a different normal-stage setting is a different entry
    other = build("adtr", "smoke", **{**kw, "lr": 1e-4})
    other.fit(tr, progress=False)
    assert not other.normal_stage_cached


# ----------------------------------------------------------------------------------------------
# Training on a built-in category


def _fit_real(root, seed=0, **kw):
    """Smoke ADTR on synth/wood with 2 real labelled anomalies per defect type (2 held out)."""
    model = build("adtr", "smoke", seed=seed, anomalies="real", **kw)
    tr, te = _splits(model, root, {"real_anomalies": 2, "real_holdout": 2}, seed)
    model.fit(tr, progress=False)
    anomalies = [tr[i] for i in range(len(tr)) if tr[i].label == 1]
    x = torch.stack([s.image for s in anomalies])
    y = model._grid_labels(torch.stack([s.mask[0] > 0 for s in anomalies])).flatten().numpy()
    from adlib.metrics import image_auroc

    seen = image_auroc(y, pixel_score(model.difference(x)).flatten().numpy())  # on the anomalies it was given
    return seen, evaluate(model.predict(te, progress=False))


def test_adtr_separates_defects_and_pixel_push_pull_with_real_anomalies_helps(data_root):
    """Calibrated on seeds 0-3 (smoke profile, this 128-px fixture): normal-only ADTR gives pixel
    AUROC 0.971-0.981 and image AUROC 0.88-1.0 on the held-out test set; pixel-label adaptation
    with 2 real anomalies per type raises the held-out pixel AUROC on all four seeds (+0.005 to
    +0.012) and, on three of them, the separation of the given anomalies' grid cells (+0.02 to
    +0.05; seed 2: -0.001); with the push term removed (alpha = 0) the held-out pixel AUROC does
    not rise (-0.005 to -0.001) nor does the in-sample separation. On a larger built-in split with
    4 anomalies per type the held-out gain did not appear (see the closing note of issue 9)."""
    seen_n, normal = _fit_real(data_root, variant="normal")
    seen_p, pixel = _fit_real(data_root, variant="pixel")
    seen_0, no_push = _fit_real(data_root, variant="pixel", alpha=0.0)
    assert normal["image_auroc"] > 0.75 and normal["pixel_auroc"] > 0.9  # better than chance
    assert seen_p > seen_n + 0.015 and seen_0 < seen_n + 0.005
    assert pixel["pixel_auroc"] > normal["pixel_auroc"] + 0.004
    assert no_push["pixel_auroc"] < normal["pixel_auroc"] + 0.002


# ----------------------------------------------------------------------------------------------
# Command line and results store


def test_cli_train_and_test_adtr_on_builtin_and_mvtec_layouts(data_root, tmp_path):
    import json
    import shutil

    from adlib.cli import main

    mv = tmp_path / "data"
    shutil.copytree(data_root / "synth", mv / "mvtec")
    sets = ["--set", "epochs=2", "--set", "adapt_epochs=1", "--set", "lr_milestones=(1,)"]
    runs = [
        ("synth", data_root, [], "adtr-normal", None),
        ("synth", data_root, ["--labels", "image"], "adtr-image", None),
        (
            "mvtec",
            mv,
            ["--labels", "pixel", "--anomalies", "real:1", "--real-holdout", "2"],
            "adtr-pixel",
            {"real_anomalies": 1, "real_holdout": 2},
        ),
    ]
    for dataset, root, extra, label, sub in runs:
        args = [
            "adtr",
            "--dataset",
            dataset,
            "--category",
            "wood",
            "--data-root",
            str(root),
            "--out",
            str(tmp_path / "runs"),
            *sets,
            *extra,
        ]
        assert main(["train", *args]) == 0
        assert main(["test", *args]) == 0
        runs_of = sorted((tmp_path / "runs" / label / dataset / "wood").glob("s0-*"))
        run = (
            runs_of[-1]
            if sub is None
            else next(r for r in runs_of if json.loads((r / "train.json").read_text())["protocol"] == sub)
        )
        rec = json.loads((run / "record.json").read_text())
        assert rec["model"]["variant"] == label.split("-")[1] and "random-init" in rec["model"]["weights"]
        assert 0.0 <= rec["metrics"]["pixel_auroc"] <= 1.0
    train = json.loads((run / "train.json").read_text())
    # real:1 with holdout 2: 4 defect types -> 4 labelled anomalies trained on, 8 left the test set
    assert train["protocol_detail"]["n_real_anomalies"] == 4 and train["model"]["train_counts"] == {
        "normal": 16,
        "labelled_anomalies": 4,
    }
    assert rec["test_images"] == 6 + 4 * 2
    bad = ["adtr", "--dataset", "synth", "--category", "wood", "--data-root", str(data_root), "--anomalies", "real:0"]
    assert main(["train", *bad]) == 2


def test_methods_that_ignore_training_labels_refuse_real_anomalies(data_root, tmp_path):
    from adlib.results import Job, ResultsStore

    store = ResultsStore(tmp_path / "store", data_root=str(data_root), progress=False)
    job = Job.make("patchcore", "synth", "wood", "smoke", 0, protocol={"real_anomalies": 1, "real_holdout": 2})
    with pytest.raises(Exception, match="does not read training labels"):
        store.run(job)
