"""The POUTA paper's experiment definitions: job grids (Tables I-V), the few-shot grid, relabelled
rows, the representations / discrepancy map of Figs. 2 and 10 against hand-made cases, the
separability number, and Grad-CAM through the grad-cam package."""

import numpy as np
import pandas as pd
import pytest
import torch

from adlib.data import get_dataset
from adlib.data.synth import generate_benchmark
from adlib.models import build
from adlib.papers import pouta as paper


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("pp_data")
    generate_benchmark(r, categories=["wood", "nut"], n_train=8, n_test_good=2, n_per_defect=1, size=64, progress=False)
    return r


def test_job_grids(root):
    p = paper.plan(["synth", "visa"], root)
    assert p.categories == {"synth": ["nut", "wood"]} and "visa" in p.missing
    jobs = paper.main_jobs(p, "smoke", seeds=(0, 1))
    assert len(jobs) == 2 * 3 * 2 and {j.label for j in jobs} == {"pouta", "vanilla", "patchcore"}
    ab = paper.ablation_jobs(p, "smoke")
    assert list(ab) == ["Vanilla", "POUTA-base", "POUTA-base+HSG", "POUTA-base+MSS", "POUTA"]
    cfg = {n: js[0].config() for n, js in ab.items()}
    assert (cfg["POUTA-base"]["hsg"], cfg["POUTA-base"]["mss"]) == (False, False)
    assert (cfg["POUTA-base+HSG"]["hsg"], cfg["POUTA-base+HSG"]["mss"]) == (True, False)
    assert (cfg["POUTA"]["hsg"], cfg["POUTA"]["mss"]) == (True, True)
    assert len({js[0].key()["config_hash"] for js in ab.values()}) == 5
    fs = paper.few_shot_jobs(p, "smoke", shots=(2, 4), seeds=(0, 1, 2))
    assert sorted(fs) == [2, 4] and all(len(js) == 2 * 3 for js in fs.values())
    assert {j.protocol for j in fs[4]} == {(("shots", 4),)}


def test_label_rows_picks_each_groups_runs():
    jobs = {"a": [paper.Job.make("pouta", "d", "c", hsg=False)], "b": [paper.Job.make("pouta", "d", "c")]}
    h = {n: js[0].key()["config_hash"] for n, js in jobs.items()}
    f = pd.DataFrame(
        {
            "config_hash": [h["a"], h["b"], "other"],
            "dataset": ["d"] * 3,
            "category": ["c"] * 3,
            "seed": [0, 0, 0],
            "label": ["pouta"] * 3,
            "image_auroc": [0.1, 0.2, 0.3],
        }
    )
    out = paper.label_rows(f, jobs)
    assert list(out.label) == ["a", "b"] and list(out.image_auroc) == [0.1, 0.2]


class _Fixed:
    """A stand-in model whose network returns fixed encoder/decoder maps."""

    def __init__(self, enc, dec):
        self.enc, self.dec = enc, dec
        self.net = torch.nn.Identity()

    def forward(self, x, side=True):
        return {"enc": [None, None, None, self.enc], "dec": [None, None, None, self.dec]}


def test_discrepancy_map_is_the_scaled_l2_distance():
    enc = torch.zeros(1, 2, 2, 2)
    dec = torch.zeros(1, 2, 2, 2)
    enc[0, :, 0, 0] = torch.tensor([3.0, 4.0])  # distance 5 at (0, 0)
    enc[0, 0, 1, 1] = 1.0  # distance 1 at (1, 1)
    m = paper.discrepancy_map(_Fixed(enc, dec), torch.zeros(1, 3, 2, 2))
    assert torch.allclose(m[0], torch.tensor([[1.0, 0.0], [0.0, 0.2]]))
    up = paper.discrepancy_map(_Fixed(enc, dec), torch.zeros(1, 3, 8, 8))
    assert up.shape == (1, 8, 8) and float(up.min()) == 0.0 and float(up.max()) == pytest.approx(1.0)


def test_representations_label_positions_by_mask_area():
    class _DS:
        def __init__(self):
            mask = torch.zeros(1, 4, 4)
            mask[0, 0, 0] = 1  # 1/4 of cell (0, 0)
            mask[0, 2:, 2:] = 1  # all of cell (1, 1)
            self.item = type("S", (), {"image": torch.zeros(3, 4, 4), "mask": mask})()

        def __getitem__(self, i):
            return self.item

    enc = torch.arange(8.0).reshape(1, 2, 2, 2)
    r = paper.representations(_Fixed(enc, -enc), _DS(), [0], max_normal=10, min_fraction=0.25)
    # positions in row-major order: (0,0) 1/4 anomalous -> 1, (0,1) 0, (1,0) 0, (1,1) 1; normal first
    assert list(r["labels"]) == [0, 0, 1, 1]
    assert np.array_equal(r["enc"], np.array([[1, 5], [2, 6], [0, 4], [3, 7]], dtype=np.float32))
    assert np.array_equal(r["dec"], -r["enc"])
    r = paper.representations(_Fixed(enc, -enc), _DS(), [0], max_normal=1, min_fraction=0.5)
    assert list(r["labels"]) == [0, 1]


def test_separability_auroc_by_hand():
    pts = np.array([[0.0], [1.0], [-1.0], [5.0], [0.5]])
    lab = np.array([0, 0, 0, 1, 1])
    # normal mean 0: distances 0, 1, 1 (normal) and 5, 0.5 (anomalous): pairs won 3 + 1 of 6
    assert paper.separability(pts, lab) == pytest.approx(4 / 6)
    assert np.isnan(paper.separability(pts, np.zeros(5, dtype=int)))


@pytest.mark.parametrize("name", ["pouta", "vanilla"])
def test_gradcam_maps_through_the_package(root, name):
    model = build(name, "smoke", image_size=32, epochs=1)
    ds = get_dataset("synth", "wood", "test", root=root, transform=model.transform)
    images = torch.stack([ds[i].image for i in range(2)])
    maps = paper.gradcam_maps(model, images)
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    layer = paper.gradcam_layer(model)
    assert layer is (
        model.net.discriminative.aggregate.body if name == "pouta" else model.net.discriminative.decoder[-1]
    )
