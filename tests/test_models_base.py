"""The shared model machinery: registry/build errors, Prediction checks, the prediction loop
every method uses, atomic checkpoint writes."""

import numpy as np
import pytest
import torch

from adlib.data.base import Sample
from adlib.models import Prediction, build
from adlib.models.base import atomic_torch_save, fingerprint, predict_dataset, resolve_device


class _ToyDataset(torch.utils.data.Dataset):
    """n images of 1x8x8; image i has value i everywhere; odd images are anomalous with a mask
    covering the top-left 2x2 pixels."""

    def __init__(self, n: int = 5, size: int = 8):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        img = torch.full((1, self.size, self.size), float(i))
        mask = torch.zeros(1, self.size, self.size)
        if i % 2:
            mask[:, :2, :2] = 1.0
        return Sample(img, mask, i % 2, "bad" if i % 2 else "good", f"img{i}.png")


def test_predict_dataset_assembles_in_order_with_ground_truth():
    ds = _ToyDataset(5)
    # score = the image value; map = the image itself
    pred = predict_dataset(
        ds, lambda b: (b.image.flatten(1).amax(1), b.image[:, 0].numpy()), batch_size=2, progress=False
    )
    assert pred.image_scores.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert pred.labels.tolist() == [0, 1, 0, 1, 0]
    assert pred.paths == [f"img{i}.png" for i in range(5)]
    assert pred.defect_types == ["good", "bad", "good", "bad", "good"]
    assert pred.maps.shape == (5, 8, 8) and pred.maps.dtype == np.float32
    assert pred.masks.dtype == np.uint8 and pred.masks.sum() == 2 * 4
    assert pred.masks[1, :2, :2].all() and not pred.masks[0].any()


def test_predict_dataset_rejects_maps_of_the_wrong_size_and_empty_sets():
    ds = _ToyDataset(3)
    with pytest.raises(ValueError, match=r"maps of shape \(4, 4\) for masks of shape \(8, 8\)"):
        predict_dataset(ds, lambda b: (b.label.float(), np.zeros((len(b.label), 4, 4))), batch_size=2, progress=False)
    with pytest.raises(ValueError, match="empty"):
        predict_dataset(_ToyDataset(0), lambda b: (b.label, b.image[:, 0]), batch_size=2, progress=False)


def test_prediction_names_the_image_with_nan_scores():
    with pytest.raises(ValueError, match="b.png"):
        Prediction(
            np.array([0.1, np.nan]),
            np.zeros((2, 2, 2)),
            np.array([0, 1]),
            np.zeros((2, 2, 2), np.uint8),
            paths=["a.png", "b.png"],
        )


def test_build_rejects_unknown_method_and_field():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        build("nope")
    with pytest.raises(ValueError, match="no_such_field"):
        build("patchcore", "smoke", no_such_field=1)


def test_atomic_torch_save_keeps_old_file_when_saving_fails(tmp_path):
    path = tmp_path / "m.pt"
    atomic_torch_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_torch_save({"a": Unpicklable()}, path)
    assert torch.load(path, weights_only=True)["a"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def test_fingerprint_changes_with_parameters_and_resolve_device():
    lin = torch.nn.Linear(2, 2)
    a = fingerprint(lin)
    with torch.no_grad():
        lin.weight[0, 0] += 1
    assert fingerprint(lin) != a and len(a) == 16
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def test_read_checkpoint_and_check_resumable(tmp_path):
    import torch

    from adlib.models.base import check_resumable, read_checkpoint

    p = tmp_path / "c.pt"
    torch.save({"name": "pouta", "config": {"epochs": 3, "widths": [8, 16]}}, p)
    assert read_checkpoint(p, "pouta")["config"]["epochs"] == 3
    with pytest.raises(ValueError, match=r"c\.pt is a 'pouta' checkpoint, not 'adl'"):
        read_checkpoint(p, "adl")
    torch.save([1, 2], tmp_path / "l.pt")
    with pytest.raises(ValueError, match="is a None checkpoint"):
        read_checkpoint(tmp_path / "l.pt", "pouta")
    check_resumable(
        p, {"epochs": 5, "widths": (8, 16)}, {"epochs": 3, "widths": [8, 16]}, {"epochs"}
    )  # tuples == lists
    with pytest.raises(ValueError, match=r"config differs in \['lr', 'widths'\]"):
        check_resumable(p, {"epochs": 3, "widths": (8, 32), "lr": 1.0}, {"epochs": 3, "widths": [8, 16]}, {"epochs"})


def test_recalibrate_batchnorm_averages_the_batches_and_restores_the_module():
    import torch

    from adlib.models.base import recalibrate_batchnorm

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    net.eval()
    bn = net[1]
    bn.running_mean.fill_(5.0)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(6, 3, generator=g) for _ in range(3)]
    recalibrate_batchnorm(net, iter(batches), net)
    with torch.no_grad():
        h = [net[0](x) for x in batches]
    # the plain average of the batch means / unbiased variances (momentum None), not an EMA
    assert torch.allclose(bn.running_mean, torch.stack([x.mean(0) for x in h]).mean(0), atol=1e-6)
    assert torch.allclose(bn.running_var, torch.stack([x.var(0, unbiased=True) for x in h]).mean(0), atol=1e-6)
    assert bn.momentum == 0.1 and not net.training and bn.num_batches_tracked.item() == 3
    # nothing to do without BatchNorm layers or batches
    plain = torch.nn.Linear(2, 2)
    recalibrate_batchnorm(plain, iter([torch.zeros(1, 2)]), plain)


# ----------------------------------------------------------------------------------------------
# Variants are registry names (one source for the results' labels, the CLI and the tables)


def test_variants_are_registry_names_with_display_names():
    from adlib.models import NAMES, available_names, display_name, resolve_name

    names = available_names()
    for name in ("glass", "glass-m", "glass-h", "glass-j", "simplenet", "patchcore", "pouta", "vanilla", "draem"):
        assert name in names
    assert {n for n in names if n.startswith("adl-")} == {
        "adl-proposed", "adl-dl", "adl-wt-dl", "adl-dl-ce", "adl-softdl-ce", "adl-wt-softdl-ce"
    }  # fmt: skip
    assert {n for n in names if n.startswith("adtr-")} == {"adtr-normal", "adtr-image", "adtr-pixel"}
    e = resolve_name("adl-wt-softdl-ce")
    assert (e.method, e.variant, e.overrides, e.display) == (
        "adl",
        "wt-softdl-ce",
        {"variant": "wt-softdl-ce"},
        "Wt-SoftDL-CE",
    )
    assert (
        display_name("glass-m") == "GLASS-m"
        and display_name("adl-proposed") == "ADL"
        and display_name("adtr-pixel") == "ADTR+"
    )
    assert display_name("not-a-name") == "not-a-name"
    assert all(NAMES[n].method in NAMES for n in names)
    with pytest.raises(ValueError, match=r"unknown method 'glass-x'; available: .*glass-m"):
        resolve_name("glass-x")


def test_a_variant_name_builds_and_keys_like_the_method_with_its_variant():
    from adlib.results import Job

    assert build("glass-h", "smoke").cfg.variant == "h" and build("adtr-pixel", "smoke").cfg.variant == "pixel"
    assert build("glass-h", "smoke", variant="h").cfg.variant == "h"
    with pytest.raises(ValueError, match=r"'glass-h' is variant 'h' of 'glass', but variant='m' was given"):
        build("glass-h", "smoke", variant="m")
    by_name = Job.make("adl-dl-ce", "synth", "wood", "smoke", 1, epochs=2)
    by_option = Job.make("adl", "synth", "wood", "smoke", 1, variant="dl-ce", epochs=2)
    assert by_name == by_option and by_name.key() == by_option.key() and by_name.label == "adl-dl-ce"


def test_the_papers_labels_are_registry_names():
    """Every results label a notebook trains (the papers' TRAINED / STUDY_METHODS tables) is a
    registry name: the label a table shows for a run is the name `adlib train` accepts."""
    from adlib.models import NAMES
    from adlib.papers import adl, adtr, glass, pouta
    from adlib.results import Job

    specs = [*glass.TRAINED.values(), *adl.TRAINED.values(), *adl.STUDY_METHODS.values(), *adtr.TRAINED.values()]
    specs += [*pouta.TRAINED.values(), *pouta.ABLATIONS.values()]
    assert len(specs) >= 12
    for method, opts in specs:
        assert Job.make(method, "synth", "wood", **opts).label in NAMES
    for label in glass.TRAINED:
        assert label in NAMES and Job.make(label, "synth", "wood").label == label
