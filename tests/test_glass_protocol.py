"""GLASS / SimpleNet protocol options (issue 17): test-set selection with the released rules, the
released geometry, mask resampling, images per epoch and texture sizing, through the run pipeline.

Hand-made cases: a square mask resized by a factor 2 (pixels each rule keeps, counted by hand from
PIL's bilinear taps), a non-square image (shorter side then centre crop, torchvision's offsets), the
released training loop's image count simulated; scripted test scores for the two selection rules;
and the bitwise equality of a selection run's last epoch with a plain run's.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from test_glass import TINY  # the tiny GLASS / SimpleNet config of the GLASS tests

from adlib.cli import main, parse_overrides
from adlib.data import get_dataset
from adlib.data.base import MASK_RULES, ImageTransform, released_mask_rule
from adlib.data.synth import generate_benchmark
from adlib.data.textures import draw_texture, texture_size
from adlib.models import build
from adlib.models.glass import GLASS, SELECTION_LABEL, GLASSConfig, SimpleNet, SimpleNetConfig
from adlib.results import ADDED_FIELDS, Job, ResultsStore, config_hash, flatten

NEW_FIELDS = (
    "select_every",
    "eval_masks",
    "eval_pro",
    "resize_mode",
    "category_resize",
    "texture_resize_mode",
    "samples_cap",
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny built-in benchmark (wood), also exposed under the name ``mvtec``."""
    r = tmp_path_factory.mktemp("proto-data")
    generate_benchmark(
        r, seed=1, categories=["wood"], n_train=8, n_test_good=4, n_per_defect=2, size=64, progress=False
    )
    shutil.copytree(r / "synth", r / "mvtec")
    return r


def _tiny(cls, **kw):
    cfg = (GLASSConfig if cls is GLASS else SimpleNetConfig).for_profile("smoke", **{**TINY, **kw})
    return cls(cfg)


def _ds(root, split, model, dataset="synth"):
    return get_dataset(dataset, "wood", split, root=root, transform=model.transform)


# ----------------------------------------------------------------------------------------------
# geometry and masks (hand-made)


def test_shorter_side_then_centre_crop_on_a_non_square_image():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)  # H 40, W 60
    img = Image.fromarray(arr)
    released = ImageTransform(resize=20, crop=17, normalize=False, resize_mode="shorter_side")
    squash = ImageTransform(resize=20, crop=17, normalize=False)
    # shorter side 40 -> 20, longer int(20 * 60 / 40) = 30; crop offsets round(3 / 2) = 2, round(13 / 2) = 6
    assert released.resized_hw((40, 60)) == (20, 30) and released.resized_hw((60, 40)) == (30, 20)
    by_hand = np.asarray(img.resize((30, 20), Image.BILINEAR), dtype=np.float32)[2:19, 6:23] / 255.0
    out = released.image(img).permute(1, 2, 0).numpy()
    assert out.shape == (17, 17, 3) and np.array_equal(out, by_hand)
    squashed = np.asarray(img.resize((20, 20), Image.BILINEAR), dtype=np.float32)[1:18, 1:18] / 255.0
    assert np.array_equal(squash.image(img).permute(1, 2, 0).numpy(), squashed)
    assert not np.array_equal(out, squashed)
    # a square image gives the same pixels under both modes (MVTec AD is unaffected)
    sq = Image.fromarray(arr[:, :40])
    a = ImageTransform(resize=24, crop=20, resize_mode="shorter_side").image(sq)
    assert torch.equal(a, ImageTransform(resize=24, crop=20).image(sq))
    # the mask goes through the same window
    m = np.zeros((40, 60), np.uint8)
    m[20, 30] = 255
    assert released.mask(Image.fromarray(m)).shape == (1, 17, 17)
    with pytest.raises(ValueError, match="resize_mode"):
        ImageTransform(resize_mode="stretch")


def test_mask_rules_count_the_pixels_of_a_resized_square():
    """A 10 x 10 square at rows/columns 10..19 of a 40 x 40 mask, resized to 20 x 20. PIL's bilinear
    taps of output pixel j are input pixels 2j-1 .. 2j+2 (weights 1, 3, 3, 1 / 8); nearest samples
    2j+1. Per axis: nearest keeps j = 5..9 (5), truncate (all four taps inside) j = 6..8 (3), positive
    (any tap inside) j = 4..10 (7): 25, 9 and 49 pixels."""
    m = np.zeros((40, 40), np.uint8)
    m[10:20, 10:20] = 255
    tf = ImageTransform(resize=20, crop=None, normalize=False)
    got = {rule: tf.mask_resampled(Image.fromarray(m), rule) for rule in MASK_RULES}
    assert {k: int(v.sum()) for k, v in got.items()} == {
        "nearest": 25,
        "bilinear_truncate": 9,
        "bilinear_positive": 49,
    }
    assert np.array_equal(np.argwhere(got["bilinear_truncate"]).min(0), [6, 6])
    assert np.array_equal(np.argwhere(got["bilinear_positive"]).max(0), [10, 10])
    assert np.array_equal(got["nearest"], tf.mask(Image.fromarray(m))[0].numpy().astype(np.uint8))
    # truncate within nearest within positive: eroded and dilated
    assert (got["bilinear_truncate"] <= got["nearest"]).all() and (got["nearest"] <= got["bilinear_positive"]).all()
    # VisA class ids (1, 2): every non-zero pixel counts
    ids = (m > 0).astype(np.uint8) * 2
    assert int(tf.mask_resampled(Image.fromarray(ids), "bilinear_positive").sum()) == 49
    assert released_mask_rule("visa") == "bilinear_positive"
    assert {released_mask_rule(d) for d in ("mvtec", "mpdd", "wfdd", "MVTEC")} == {"bilinear_truncate"}
    with pytest.raises(ValueError, match="mask rule"):
        tf.mask_resampled(Image.fromarray(m), "bicubic")


def test_geometry_and_mask_rules_match_the_released_torchvision_pipeline():
    """The released loaders' transforms, rebuilt from torchvision (the library they call):
    ``Resize(int)``, ``CenterCrop``, ``ToTensor``; MVTec masks as ``L`` then ``astype(int)`` in the
    metrics, VisA masks as ``F`` (defect-class ids) then ``> 0``. A non-square image and mask."""
    from torchvision import transforms as T

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8))
    yy, xx = np.mgrid[0:45, 0:70]
    blob = ((yy - 20) / 9.0) ** 2 + ((xx - 40) / 13.0) ** 2 <= 1.0
    ids = (blob * 1 + ((yy - 30) ** 2 + (xx - 12) ** 2 <= 16) * 3).astype(np.uint8)  # class ids 1 and 3
    mask_l = Image.fromarray((ids > 0).astype(np.uint8) * 255)
    for resize, crop in [(20, 17), (24, 24), (31, 20), (45, 44)]:
        tf = ImageTransform(resize, crop, normalize=False, resize_mode="shorter_side")
        pipe = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor()])
        assert torch.equal(tf.image(img), pipe(img)), (resize, crop)
        mvtec = pipe(mask_l).numpy()[0].astype(int)
        assert np.array_equal(tf.mask_resampled(mask_l, "bilinear_truncate"), mvtec), (resize, crop)
        visa = (pipe(Image.fromarray(ids).convert("F")) > 0).numpy()[0]
        assert np.array_equal(tf.mask_resampled(Image.fromarray(ids), "bilinear_positive"), visa), (resize, crop)
        n_nearest = int(tf.mask_resampled(mask_l, "nearest").sum())
        if resize == 45:  # no resize, only the crop: every rule keeps the same pixels
            assert mvtec.sum() == n_nearest == visa.sum()
        else:  # eroded, dilated
            assert mvtec.sum() < n_nearest < visa.sum()


def test_dataset_masks_nearest_are_the_prediction_masks(root):
    ds = get_dataset("synth", "wood", "test", root=root, transform=ImageTransform(resize=32, crop=None))
    nearest = ds.masks("nearest")
    assert np.array_equal(nearest, np.stack([ds[i].mask[0].numpy() for i in range(len(ds))]).astype(np.uint8))
    trunc, pos = ds.masks("bilinear_truncate"), ds.masks("bilinear_positive")
    assert trunc.shape == pos.shape == nearest.shape and nearest.any()
    assert trunc.sum() < nearest.sum() < pos.sum()


def test_textures_shorter_side_then_crop():
    assert texture_size((300, 400), 288, "shorter_side") == (288, 384)
    assert texture_size((300, 400), 288, "squash") == (288, 288)
    tex = torch.randint(0, 256, (3, 30, 40), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    drawn = draw_texture(None, 20, torch.Generator(), tex, resize=20, resize_mode="shorter_side")
    from torchvision.transforms.v2 import functional as TF

    resized = TF.resize(tex, [20, 26], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    assert tuple(drawn.raw.shape) == (3, 20, 26) and torch.equal(drawn.image, TF.center_crop(resized, [20, 20]))
    squashed = draw_texture(None, 20, torch.Generator(), tex, resize=20)
    assert tuple(squashed.raw.shape) == (3, 20, 20)


def test_released_images_per_epoch_simulate_the_released_loop():
    """The released loop adds each batch's size and breaks once the count exceeds the limit."""

    def released(n, limit, bs):
        count = 0
        for start in range(0, n, bs):
            count += min(bs, n - start)
            if count > limit:
                break
        return count

    m = build("glass-m", "smoke")
    for n, limit, bs in [(1000, 392, 8), (395, 392, 8), (400, 392, 8), (100, 10, 4), (30, 12, 4), (7, 3, 2)]:
        m.cfg.samples_per_epoch, m.cfg.batch_size, m.cfg.samples_cap = limit, bs, "released"
        assert min(n, m.images_per_epoch_cap) == released(n, limit, bs), (n, limit, bs)
        assert sum(len(b) for b in m._batches(n)) == released(n, limit, bs)
        m.cfg.samples_cap = "exact"
        assert sum(len(b) for b in m._batches(n)) == min(n, limit)
    assert build("glass-m", "paper", pretrained=False, backbone="resnet18").images_per_epoch_cap == 400


# ----------------------------------------------------------------------------------------------
# selection rules


def _scripted(model, monkeypatch, scores):
    seq = iter(scores)
    monkeypatch.setattr(model, "_test_scores", lambda ds: next(seq))
    for e in range(1, len(scores) + 1):
        model.epoch = e
        model._select_on_test(None, {})
    return model.best["epoch"]


@pytest.mark.parametrize(
    "scores,glass_epoch,simplenet_epoch",
    [
        ([(0.8, 0.9), (0.9, 0.8)], 1, 2),  # equal sums: GLASS keeps the first; SimpleNet the higher I-AUROC
        ([(0.9, 0.5), (0.9, 0.6)], 2, 2),  # SimpleNet: equal I-AUROC, P-AUROC breaks the tie
        ([(0.9, 0.9), (0.95, 0.5)], 1, 2),  # the rules disagree
        ([(0.9, 0.5), (0.95, 0.1), (0.95, 0.1), (0.7, 0.99)], 4, 2),  # SimpleNet: a tie keeps the earlier epoch
    ],
)
def test_the_released_selection_rules(monkeypatch, scores, glass_epoch, simplenet_epoch):
    assert _scripted(_tiny(GLASS, select_best_on_test=True), monkeypatch, scores) == glass_epoch
    assert _scripted(_tiny(SimpleNet, select_best_on_test=True), monkeypatch, scores) == simplenet_epoch


def test_evaluation_cadence(monkeypatch):
    calls = []
    for cls, every in ((GLASS, 1), (SimpleNet, 4)):
        model = _tiny(cls, select_best_on_test=True)
        assert model.select_every == every
        monkeypatch.setattr(model, "_select_on_test", lambda ds, stats, c=cls, m=model: calls.append((c, m.epoch)))
        for e in range(1, 9):
            model.epoch = e
            model._epoch_end(None, {})
    assert [e for c, e in calls if c is GLASS] == list(range(1, 9))
    assert [e for c, e in calls if c is SimpleNet] == [4, 8]
    assert _tiny(SimpleNet, select_best_on_test=True, select_every=2).select_every == 2


# ----------------------------------------------------------------------------------------------
# same trajectory: the per-epoch test evaluation touches no random stream


@pytest.mark.parametrize("cls", [GLASS, SimpleNet])
def test_selection_run_last_epoch_equals_plain_run_bitwise(root, cls):
    extra = {"select_every": 1} if cls is SimpleNet else {}
    plain = _tiny(cls)
    sel = _tiny(cls, select_best_on_test=True, **extra)
    train, test = _ds(root, "train", plain), _ds(root, "test", plain)
    plain.fit(train, progress=False)
    before = torch.get_rng_state()
    np_before = np.random.get_state()[1].copy()
    sel._test_scores(test)  # the test loader draws from torch's global generator: restored
    assert torch.equal(torch.get_rng_state(), before) and np.array_equal(np.random.get_state()[1], np_before)
    sel.fit(train, test_ds=test, progress=False)
    last = sel.last_state
    assert last["epoch"] == plain.epoch == 3
    for part in ("adaptor", "discriminator"):
        mine = getattr(plain, part).state_dict()
        assert mine.keys() == last[part].keys()
        assert all(torch.equal(mine[k].cpu(), last[part][k]) for k in mine), part
    p_plain = plain.predict(test, progress=False)
    with sel.epoch_weights("last"):
        p_last = sel.predict(test, progress=False)
    assert np.array_equal(p_plain.image_scores, p_last.image_scores) and np.array_equal(p_plain.maps, p_last.maps)
    info = sel.info()["selection"]
    assert info["label"] == SELECTION_LABEL and info["last_epoch"] == 3 and info["epoch"] in (1, 2, 3)
    assert [h["epoch"] for h in sel.history if "test_image_auroc" in h] == [1, 2, 3]
    # the model holds the selected epoch; epoch_weights restores it after the block
    sel_scores = sel.predict(test, progress=False).image_scores
    best = sel.best
    assert all(
        torch.equal(sel.discriminator.state_dict()[k].cpu(), best["discriminator"][k]) for k in best["discriminator"]
    )
    assert np.array_equal(sel.predict(test, progress=False).image_scores, sel_scores)


# ----------------------------------------------------------------------------------------------
# the pipeline: store, CLI, records


def test_pipeline_records_both_protocols_from_one_training(root, tmp_path, monkeypatch):
    from adlib import metrics as metrics_mod

    seen = {}

    def fake_pro_released(masks, maps):  # stands in for adlib.metrics.pro_released (branch s9-metrics)
        seen["masks"] = np.asarray(masks).copy()
        return float(np.asarray(masks).mean())

    monkeypatch.setattr(metrics_mod, "pro_released", fake_pro_released, raising=False)
    store = ResultsStore(tmp_path / "runs", data_root=str(root), progress=False)
    plain = store.run(Job.make("glass", "mvtec", "wood", "smoke", 0, variant="m", **TINY))
    assert "metrics_released" not in plain and "released_protocol" not in plain
    job = Job.make(
        "glass",
        "mvtec",
        "wood",
        "smoke",
        0,
        variant="m",
        select_best_on_test=True,
        eval_masks="released",
        eval_pro="released",
        **TINY,
    )
    rec = store.run(job)
    assert rec["metrics"] == plain["metrics"]  # the standard column: the last epoch, bitwise
    rp = rec["released_protocol"]
    assert rp["selection"] == SELECTION_LABEL and rp["masks"] == "bilinear_truncate" and rp["pro"] == "released"
    assert rp["selected_epoch"] == rec["model"]["selection"]["epoch"]
    model = store.model(job)
    test = get_dataset("mvtec", "wood", "test", root=root, transform=model.transform)
    assert np.array_equal(seen["masks"], test.masks("bilinear_truncate"))
    assert rec["metrics_released"]["pro_released"] == pytest.approx(float(seen["masks"].mean()))
    row = flatten(rec)
    assert row["released_image_auroc"] == rec["metrics_released"]["image_auroc"]
    assert SELECTION_LABEL in row["released_protocol"]
    assert (
        job.key()["config_hash"]
        != Job.make("glass", "mvtec", "wood", "smoke", 0, variant="m", **TINY).key()["config_hash"]
    )


def test_cli_selection_true_then_test(root, tmp_path):
    out = tmp_path / "runs"
    args = ["glass", "--variant", "m", "--dataset", "synth", "--category", "wood", "--data-root", str(root)]
    args += ["--out", str(out), "--epochs", "2", "--set", "select_best_on_test=true", "--set", "resize=64"]
    args += ["--set", "crop=64", "--set", "pretrain_embed_dim=32", "--set", "target_embed_dim=32"]
    assert main(["train", *args]) == 0 and main(["test", *args]) == 0
    (run,) = sorted((out / "glass-m" / "synth" / "wood").glob("s*-*"))
    rec = json.loads((run / "record.json").read_text())
    assert rec["model"]["config"]["select_best_on_test"] is True
    assert rec["model"]["selection"]["label"] == SELECTION_LABEL
    assert rec["released_protocol"]["selection"] == SELECTION_LABEL and "image_auroc" in rec["metrics_released"]
    assert parse_overrides(["a=true", "b=False", "c=TRUE", "d=x"]) == {"a": True, "b": False, "c": True, "d": "x"}
    with pytest.raises(ValueError, match="select_best_on_test"):
        GLASSConfig(select_best_on_test="yes")


def test_category_resize_goes_through_the_pipeline(root):
    from adlib.results import _datasets

    job = Job.make(
        "glass", "mvtec", "wood", "smoke", 0, variant="m", category_resize="released", resize_mode="shorter_side"
    )
    model = build("glass-m", "smoke", **dict(job.options))
    train, test, _ = _datasets(job, model, root)
    # released: round(crop * 329 / 288) before the crop, shorter side
    assert train.transform == test.transform == ImageTransform(146, 128, True, "shorter_side")
    assert model.transform_for("synth", "wood").resize == 128  # only MVTec AD's wood and toothbrush
    assert build("glass-m", "smoke").transform_for("mvtec", "wood").resize == 128  # smoke: unchanged
    paper = build("glass-m", "paper", pretrained=False, backbone="resnet18")
    assert paper.transform_for("mvtec", "toothbrush") == ImageTransform(329, 288, True, "shorter_side")
    assert paper.transform_for("mvtec", "bottle").resize == 288


# ----------------------------------------------------------------------------------------------
# profiles and keys


def test_profiles_defaults_and_unchanged_smoke_keys():
    paper, smoke = GLASSConfig.for_profile("paper"), GLASSConfig.for_profile("smoke")
    released = dict(
        select_best_on_test=True,
        eval_masks="released",
        eval_pro="released",
        resize_mode="shorter_side",
        category_resize="released",
        texture_resize_mode="shorter_side",
        samples_cap="released",
        j_rule="released",
    )
    assert {k: getattr(paper, k) for k in released} == released
    assert {k: getattr(smoke, k) for k in released} == {k: getattr(GLASSConfig(), k) for k in released}
    assert smoke.select_best_on_test is False and smoke.j_rule == "spectrogram"
    sn = SimpleNetConfig.for_profile("paper")
    assert (sn.select_best_on_test, sn.eval_masks, sn.eval_pro, sn.resize_mode) == (
        True,
        "released",
        "released",
        "shorter_side",
    )
    assert SimpleNetConfig.for_profile("smoke").select_best_on_test is False
    # smoke keys: the new fields at their smoke values are left out of the hash (records stay valid)
    for name in ("glass-m", "glass-h", "simplenet"):
        job = Job.make(name, "synth", "wood", "smoke", 0)
        cfg = job.config()
        assert all(cfg[f] == ADDED_FIELDS[f] for f in NEW_FIELDS)
        assert job.key()["config_hash"] == config_hash({k: v for k, v in cfg.items() if k not in NEW_FIELDS})
    assert build("glass-m", "smoke").evaluation_protocol("synth") is None


# ----------------------------------------------------------------------------------------------
# the tables (adlib.papers.glass), from hand-made records


def test_protocol_table_puts_released_beside_standard():
    import pandas as pd

    from adlib.papers import glass as paper

    rows = []
    for label, cat, seed, std, rel in [
        ("glass-m", "wood", 0, 0.90, 0.95),
        ("glass-m", "wood", 1, 0.80, 0.85),
        ("glass-m", "tile", 0, 0.70, 0.70),
        ("simplenet", "wood", 0, 0.60, 0.65),
        ("patchcore", "wood", 0, 0.99, None),
    ]:
        r = {"label": label, "dataset": "mvtec", "category": cat, "seed": seed, "au_pro": std}
        if rel is not None:
            r.update(released_au_pro=0.0, released_pro_released=rel)
        rows.append(r)
    t = paper.protocol_table(pd.DataFrame(rows), "au_pro")
    assert list(t.columns) == ["SimpleNet released", "SimpleNet standard", "GLASS-m released", "GLASS-m standard"]
    assert t.loc[("mvtec", "wood"), "GLASS-m released"] == pytest.approx(90.0)  # pro_released preferred
    assert t.loc[("mvtec", "wood"), "GLASS-m standard"] == pytest.approx(85.0)
    assert t.loc[("mvtec", "average"), "GLASS-m released"] == pytest.approx(80.0)
    assert list(t.index)[-1] == ("mvtec", "average")
    assert paper.protocol_table(
        pd.DataFrame(rows).drop(columns=["released_au_pro", "released_pro_released"]), "au_pro"
    ).empty


def test_selection_bias_from_records():
    import pandas as pd

    from adlib.papers import glass as paper
    from adlib.papers.common import Plan

    jobs = paper.selection_jobs(Plan({"synth": ["wood"]}), "smoke", seeds=(0, 1, 2))
    assert all(j.options["select_best_on_test"] is True and j.label == "glass-m" for j in jobs)
    last = {0: 0.80, 1: 0.70, 2: 0.75}
    selected = {0: 0.85, 1: 0.80, 2: 0.80}

    class Store:
        def run_many(self, js):
            return pd.DataFrame(
                [
                    flatten(
                        {
                            "label": "glass-m",
                            "dataset": "synth",
                            "category": "wood",
                            "seed": j.seed,
                            "profile": "smoke",
                            "config_hash": "x",
                            "metrics": {"image_auroc": last[j.seed], "pixel_auroc": 0.5},
                            "metrics_released": {"image_auroc": selected[j.seed], "pixel_auroc": 0.6},
                            "released_protocol": {"selection": SELECTION_LABEL, "masks": "nearest", "pro": "standard"},
                        }
                    )
                    for j in js
                ]
            )

        def get(self, job):  # the plain runs: the same last-epoch metrics
            return {"metrics": {"image_auroc": last[job.seed], "pixel_auroc": 0.5}}

    res = paper.selection_bias(Store(), jobs)
    row = res.table.loc["image_auroc"]
    assert row["test-set selection (optimistic)"] == pytest.approx(81.6666667)
    assert row["last epoch"] == pytest.approx(75.0) and row["difference"] == pytest.approx(6.6666667)
    assert row["difference sd"] == pytest.approx(float(np.std([5.0, 10.0, 5.0], ddof=1)))
    assert res.table.loc["pixel_auroc", "difference"] == pytest.approx(10.0)
    assert res.same_as_plain == 0.0 and res.verdict.verdict == "holds" and "optimistic" in res.caption


def test_released_pro_without_the_metric_is_refused_before_training(root, monkeypatch):
    from adlib import metrics as metrics_mod

    monkeypatch.delattr(metrics_mod, "pro_released", raising=False)
    model = _tiny(GLASS, eval_pro="released")
    with pytest.raises(RuntimeError, match="pro_released"):
        model.fit(_ds(root, "train", model), progress=False)
    assert model.epoch == 0
