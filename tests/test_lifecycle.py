"""The shared method lifecycle (adlib.models.core): one resume test for every method, checkpoints
written before the lifecycle was shared, config validation, seeding, the score functions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import adlib.models as M
from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.models import adl, adtr, build, glass, load, patchcore, pouta
from adlib.models import adtr as adtr_module
from adlib.models.core import EpochMethod, Method, MethodConfig, seed_for
from adlib.models.scores import max_score, mean_pool_max_same, mean_pool_max_valid, top_k_mean

CATEGORY = "wood"
OLD = Path(__file__).parent / "data" / "old_checkpoints"

_GLASS = dict(
    backbone="resnet18",
    pretrained=False,
    resize=64,
    crop=64,
    pretrain_embed_dim=32,
    target_embed_dim=32,
    dsc_hidden=32,
    batch_size=4,
    samples_per_epoch=4,
    epochs=3,
    cache_features=False,
)
_POUTA = dict(
    image_size=32,
    widths=(4, 8, 8, 8),
    mapping_width=8,
    batch_size=4,
    epochs=3,
    lr=2e-3,
    lr_milestones=(2,),
    anomaly_prob=0.5,
    score_pool=7,
    bn_recalibration=2,
)
#: label -> (method, smoke-profile overrides): a tiny model of every method (3 or 4 epochs)
TINY = {
    "glass-m": ("glass", dict(_GLASS, variant="m")),
    "glass-h": ("glass", dict(_GLASS, variant="h")),
    "simplenet": ("simplenet", dict(_GLASS)),
    "patchcore": ("patchcore", dict(resize=64, crop=64, pretrain_embed_dim=32, target_embed_dim=32, coreset_ratio=0.2)),
    "pouta": ("pouta", dict(_POUTA, fcm_widths=(4, 4, 8, 8), aggregate_width=4)),
    "vanilla": ("vanilla", dict(_POUTA, disc_widths=(4, 4, 8, 8), disc_bottleneck=8)),
    "adl": (
        "adl",
        dict(
            resize=32,
            encoder_width=0.0625,
            seg_width=4,
            batch_size=2,
            steps_per_epoch=2,
            epochs=3,
            lr=1e-3,
            lr_step=2,
            burn_in=0.34,
            bn_recalibration=2,
        ),
    ),
    "draem": (
        "draem",
        dict(
            image_size=32, rec_width=4, seg_width=4, batch_size=4, epochs=3, lr=2e-3, score_pool=7, bn_recalibration=2
        ),
    ),
    "adtr-pixel": (
        "adtr",
        dict(
            variant="pixel",
            image_size=64,
            grid=4,
            k=4,
            width=16,
            heads=2,
            ffn=32,
            epochs=2,
            lr_milestones=(1,),
            adapt_epochs=2,
            batch_size=4,
            dropout=0.1,
        ),
    ),
}
EPOCH_METHODS = [k for k in TINY if k != "patchcore"]
#: the methods with a checkpoint of the per-method code (tests/data/old_checkpoints; DRAEM came later)
FORMER = [k for k in TINY if k != "draem"]


def make_bench(root) -> Path:
    generate_benchmark(
        root,
        seed=0,
        categories=[CATEGORY],
        n_train=8,
        n_test_good=4,
        n_per_defect=2,
        size=64,
        progress=False,
        workers=1,
    )
    return Path(root)


def tiny(label: str, root, **kw):
    method, ov = TINY[label]
    return build(method, "smoke", **{**ov, "data_root": str(root), **kw})


def _ds(root, split, model):
    return get_dataset("synth", CATEGORY, split, root=root, transform=model.transform)


@pytest.fixture(scope="module")
def bench(benchmark):
    """The shared benchmark (tests/conftest.py): its wood category is :func:`make_bench`'s (each
    category is drawn on its own), on which the former checkpoints' predictions were recorded."""
    return benchmark


def _tensors(obj, path=""):
    """Every tensor of a checkpoint state, by path (dict keys sorted)."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k], f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{path}[{i}]")


def _same_state(a: dict, b: dict) -> bool:
    ta, tb = dict(_tensors(a)), dict(_tensors(b))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def _losses(model) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in model.history]


# ----------------------------------------------------------------------------------------------
# Exact resume, every method


@pytest.mark.parametrize("label", EPOCH_METHODS)
def test_resume_after_a_crash_equals_an_uninterrupted_fit(label, bench, tmp_path):
    adtr_module._NORMAL_STAGES.clear()  # ADTR: train the normal-only stage, not take it from the cache
    ref = tiny(label, bench)
    assert isinstance(ref, EpochMethod) and ref.total_epochs >= 3
    train = _ds(bench, "train", ref)
    ref.fit(train, device="cpu", progress=False)

    adtr_module._NORMAL_STAGES.clear()
    crashed = tiny(label, bench)
    calls, run_epoch = [0], crashed._run_epoch

    def crash_in_epoch_3(*a, **k):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("simulated crash")
        return run_epoch(*a, **k)

    crashed._run_epoch = crash_in_epoch_3
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 2

    # a fresh process would build exactly this; data_root may differ (where the data lives, not what is trained)
    adtr_module._NORMAL_STAGES.clear()
    resumed = tiny(label, bench, data_root=str(bench) + "/.")
    resumed.fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)
    assert resumed.epoch == ref.epoch == ref.total_epochs
    assert _losses(resumed) == _losses(ref)
    assert _same_state(resumed.state(), ref.state())
    te = _ds(bench, "test", ref)
    a, b = ref.predict(te, progress=False), resumed.predict(te, progress=False)
    np.testing.assert_array_equal(a.image_scores, b.image_scores)
    np.testing.assert_array_equal(a.maps, b.maps)

    # another training configuration is refused, naming the field
    other = tiny(label, bench, seed=1)
    with pytest.raises(ValueError, match=r"config differs in \['seed'\]"):
        other.fit(train, device="cpu", progress=False, checkpoint_dir=tmp_path)


# ----------------------------------------------------------------------------------------------
# Checkpoints written before the lifecycle was shared


@pytest.mark.parametrize("label", FORMER)
def test_checkpoints_of_the_former_code_load(label, bench, tmp_path):
    """``tests/data/old_checkpoints/<label>.pt`` were written by the per-method code (commit
    d8dc1d4) with :data:`TINY` trained for its epochs on :func:`make_bench`; they load, save back
    the same tensors and predict what that code predicted (``expected.json``)."""
    path = OLD / f"{label}.pt"
    model = load(path)
    assert model.name == TINY[label][0]
    again = model.save(tmp_path / "again.pt")
    assert _same_state(torch.load(again, weights_only=True), torch.load(path, weights_only=True))
    expected = json.loads((OLD / "expected.json").read_text())[label]
    pred = model.predict(_ds(bench, "test", model), progress=False)
    np.testing.assert_allclose(pred.image_scores, expected["image_scores"], rtol=1e-5, atol=1e-7)
    roundtrip = lambda d: json.loads(json.dumps(d))  # noqa: E731  (tuples and lists alike)
    # the same config, up to fields added since at their former-behaviour value (results.ADDED_FIELDS)
    from adlib.results import ADDED_FIELDS

    stored = roundtrip(torch.load(path, weights_only=True)["config"])
    now = {
        k: v
        for k, v in roundtrip(model.info()["config"]).items()
        if not (k not in stored and k in ADDED_FIELDS and roundtrip(ADDED_FIELDS[k]) == v)
    }
    assert now == stored


def test_a_former_patchcore_fingerprint_key_is_read(bench, tmp_path):
    state = torch.load(OLD / "patchcore.pt", weights_only=True)
    state["backbonefingerprint"] = state.pop("backbone_fingerprint")[::-1]  # another backbone, under the old spelling
    torch.save(state, tmp_path / "pc.pt")
    with pytest.raises(ValueError, match="differs"):
        patchcore.PatchCore.load(tmp_path / "pc.pt")
    assert patchcore.PatchCore.load(tmp_path / "pc.pt", strict=False).fitted


def test_a_checkpoint_of_another_format_is_refused(tmp_path):
    state = torch.load(OLD / "pouta.pt", weights_only=True)
    state["format"] = 99
    torch.save(state, tmp_path / "p.pt")
    with pytest.raises(ValueError, match="unsupported checkpoint format 99"):
        load(tmp_path / "p.pt")


# ----------------------------------------------------------------------------------------------
# Configuration, seeding, provenance


@pytest.mark.parametrize(
    "method, field, bad",
    [
        ("glass", "epochs", -1),
        ("glass", "radius_quantile", 0.0),
        ("simplenet", "noise_std", -0.1),
        ("patchcore", "coreset_ratio", 0.0),
        ("patchcore", "nn_query_chunk", 0),
        ("pouta", "score_pool", 4),
        ("vanilla", "bn_recalibration", -1),
        ("adl", "top_k", 0.0),
        ("adtr", "guard", "never"),
        ("draem", "ssim_range", "auto"),
    ],
)
def test_config_validation_at_construction_names_the_field(method, field, bad):
    cls = M.MODELS[method].Config
    assert issubclass(cls, MethodConfig)
    with pytest.raises(ValueError, match=field):
        cls.for_profile("smoke", **{field: bad})
    with pytest.raises(ValueError, match=field):
        cls(**{field: bad})  # a config that exists is valid: checked in __post_init__
    cfg = cls.for_profile("smoke")
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(cfg, **{field: bad})
    with pytest.raises(ValueError, match="unknown profile"):
        cls.for_profile("huge")
    with pytest.raises(ValueError, match="no_such_field"):
        cls.for_profile("smoke", no_such_field=1)


def test_seed_for_is_the_former_per_method_rule():
    ss = lambda *e: int(np.random.SeedSequence(list(e)).generate_state(1, dtype=np.uint64)[0] >> 1)  # noqa: E731
    for seed in (0, 3):
        for stream in (0, 1, 1004):
            assert seed_for(seed, stream) == ss(seed, stream)
            assert seed_for(seed, stream, 0xAD7) == ss(seed, stream, 0xAD7)
    assert M.MODELS["adtr"].SEED_SALT == 0xAD7
    assert all(
        M.MODELS[m].SEED_SALT is None for m in ("glass", "simplenet", "patchcore", "pouta", "vanilla", "adl", "draem")
    )
    g = build("adtr", "smoke").generators["mix"]
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(ss(0, 1, 0xAD7)).get_state())


def test_every_method_shares_the_lifecycle_and_records_provenance(bench):
    for label, (method, _) in TINY.items():
        model = tiny(label, bench)
        assert isinstance(model, Method) and model.label == (method + (f"-{model.variant}" if model.variant else ""))
        info = model.info()
        assert info["name"] == method and info["variant"] == model.variant and info["config"] == model.cfg.as_dict()
        json.dumps(info)
        assert model.to("cpu") is model and model.device == torch.device("cpu")
        if isinstance(model, EpochMethod):
            assert info["selection"] == {"mode": "last-epoch", "epoch": 0} and info["epochs_trained"] == 0
            assert model.RESUME_FREE_FIELDS >= {"epochs", "data_root"}


@pytest.mark.parametrize("label", list(TINY))
def test_one_module_holds_every_part_of_a_method(label, bench):
    """``model.network``: one nn.Module with every trainable parameter (those the optimisers step)
    and every frozen one (the backbone); moving it moves the whole method; training mode never
    reaches the frozen backbone."""
    model = tiny(label, bench)
    net = model.network
    assert isinstance(net, torch.nn.Module) and model.modules() == {"net": net}
    held = {id(p) for p in net.parameters()}
    stepped = [p for opt in model.optimizers() if opt is not None for g in opt.param_groups for p in g["params"]]
    assert all(id(p) in held for p in stepped) and (stepped or label == "patchcore")
    backbone = model._backbone()
    if backbone is not None:
        frozen = list(backbone.parameters())
        assert frozen and all(id(p) in held for p in frozen) and not any(p.requires_grad for p in frozen)
    net.double()
    parts = [*stepped, *(backbone.parameters() if backbone is not None else ())]
    assert all(p.dtype == torch.float64 for p in parts)
    net.train()
    if backbone is not None:
        assert not any(m.training for m in backbone.modules())


# ----------------------------------------------------------------------------------------------
# Score functions


def test_score_functions_by_hand():
    m = torch.zeros(2, 4, 4)
    m[0, 1, 1] = 8.0
    m[1] = 1.0
    assert max_score(m).tolist() == [8.0, 1.0]
    assert top_k_mean(m, 1).tolist() == [8.0, 1.0] and top_k_mean(m, 2).tolist() == [4.0, 1.0]
    with pytest.raises(ValueError, match="k must be in"):
        top_k_mean(m, 17)
    assert mean_pool_max_valid(m, 2).tolist() == [2.0, 1.0]  # no padding
    assert mean_pool_max_same(m, 3).tolist() == pytest.approx([8 / 9, 1.0])  # zero padding counted: corners 4/9
    assert torch.equal(mean_pool_max_same(m, 1), max_score(m)) and torch.equal(mean_pool_max_valid(m, 1), max_score(m))
    # the methods' names for them
    assert torch.equal(glass.image_score(m), max_score(m))
    assert torch.equal(pouta.image_score(m, 3), mean_pool_max_same(m, 3))
    assert torch.equal(adtr.image_score(m, 2), mean_pool_max_valid(m, 2))
    assert torch.equal(adtr.topk_score(m, 2), top_k_mean(m, 2))
    assert torch.equal(adl.top_k_score(m, 0.125), top_k_mean(m, 2))
