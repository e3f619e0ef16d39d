"""Smoke-profile bands: GLASS-m and SimpleNet stay inside a measured image-AUROC band over training
seeds and CPU numerics settings, and a broken variant of each falls outside it.

What runs: the ``smoke`` profile of each method as shipped (``build(method, "smoke")``: random-init
ResNet-18, 128 px, 256-D features; GLASS 6 epochs with 10 GAS steps, SimpleNet 60, see :mod:`adlib.models.glass`), trained
and tested on one generated built-in category (``wood``, benchmark seed 0, 8 train / 8 good /
3 per defect, 128 px) for training seeds 0, 1, 2 under both numerics settings of
:mod:`adlib.numerics`: ``reference`` (the pinned AVX2 kernels, MKL CBWR) and ``native``
(``ADLIB_NUMERICS=native``, the machine's own kernels). The settings are read when torch loads, so
each runs in its own process (the two processes run side by side, one torch thread each).

Broken variants (the config test hook ``swap_labels=True``): GLASS with the normal and synthetic
targets exchanged in all three losses (``L_n`` and ``L_gas`` targets 1 / 0, ``L_las`` against
``1 - m``), trained with seed 0 under the native numerics; SimpleNet with its two score sets
exchanged in the truncated l1 loss, seed 0 under the reference numerics (one broken run per
process keeps the two processes about equally long).

How the bands were derived (measured on this bench, 2 CPU cores shared with other work):

============================ ============================================ ==================
run                          image AUROC, seeds 0/1/2, reference | native  band (inclusive)
============================ ============================================ ==================
GLASS-m (smoke)              0.875 0.885 0.885 | 0.875 0.896 0.875        [0.82, 0.95]
GLASS-m, labels swapped      native seed 0: 0.344                         outside (below)
SimpleNet (smoke)            0.823 0.646 0.906 | 0.823 0.656 0.906        [0.59, 0.96]
SimpleNet, labels swapped    reference seed 0: 0.417                      outside (below)
============================ ============================================ ==================

Each band is [min - 0.05, max + 0.05] of the six measured values, clipped to [0, 1]: the seeds
spread GLASS-m over 0.02 and SimpleNet over 0.26, the numerics settings changed GLASS-m by at most
0.021 and SimpleNet by at most 0.01 (the margin covers a drift of about twice that). GLASS-m's
values were re-measured (2026-12-05) after its smoke budget became 6 epochs with 10 GAS steps
(before: 8 epochs, 20 steps, 0.927 0.781 1.000 under both settings, band [0.73, 1.00]). SimpleNet's values
were re-measured (2026-12-05) after its smoke budget went back to 60 epochs at the papers' rates;
at GLASS's 8-epoch budget it scored 0.33-0.39, below chance (undertrained; see
``_SIMPLENET_SMOKE_BUDGET``).

Runtime: about 55-100 s for the module (two processes side by side, one torch thread each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from adlib.data.synth import generate_benchmark

pytestmark = pytest.mark.slow  # minutes: trainings over seeds and numerics (make test-fast skips them)

CATEGORY = "wood"
BENCH = dict(n_train=8, n_test_good=8, n_per_defect=3, size=128)
SEEDS = (0, 1, 2)

#: image AUROC band (inclusive) for each method's 3 seeds x 2 numerics settings
BANDS: dict[str, tuple[float, float]] = {"glass": (0.82, 0.95), "simplenet": (0.59, 0.96)}

SCRIPT = r"""
import json, sys, time
import torch
import adlib
from adlib import numerics
from adlib.data import get_dataset
from adlib.models import build, evaluate


numerics.configure_torch("cpu")
torch.set_num_threads(1)  # both settings share the 2 cores side by side
root, category, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
out = []
for method, seed, kw in jobs:
    t0 = time.perf_counter()
    model = build(method, "smoke", seed=seed, data_root=root, **kw)
    train = get_dataset("synth", category, "train", root=root, transform=model.transform)
    test = get_dataset("synth", category, "test", root=root, transform=model.transform)
    model.fit(train, progress=False)
    m = evaluate(model.predict(test, progress=False))
    out.append(dict(method=method, seed=seed, kw=kw, image_auroc=m["image_auroc"], numerics=numerics.mode(),
                    seconds=round(time.perf_counter() - t0, 1)))
print("RESULT " + json.dumps(out))
"""


#: broken variants: one per process, so that the two processes take about the same time
BROKEN = {
    "native": ["glass", 0, {"variant": "m", "swap_labels": True}],
    "reference": ["simplenet", 0, {"swap_labels": True}],
}


def _jobs(mode: str) -> list:
    jobs = [[method, s, kw] for method, kw in (("glass", {"variant": "m"}), ("simplenet", {})) for s in SEEDS]
    return jobs + [BROKEN[mode]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bands-bench")
    generate_benchmark(root, seed=0, categories=[CATEGORY], progress=False, **BENCH)
    procs = {}
    for mode in ("reference", "native"):
        env = {**os.environ, "ADLIB_NUMERICS": mode}
        args = [sys.executable, "-c", SCRIPT, str(root), CATEGORY, json.dumps(_jobs(mode))]
        procs[mode] = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    for p in procs.values():
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        line = [l for l in stdout.splitlines() if l.startswith("RESULT ")][-1]
        out += json.loads(line[len("RESULT ") :])
    for r in out:  # shown with pytest -s
        print(
            f"{r['numerics']:9s} {r['method']:9s} seed {r['seed']} {r['kw']}: image AUROC {r['image_auroc']:.3f} ({r['seconds']} s)"
        )
    return out


def _auroc(runs, method, broken=False):
    return [r["image_auroc"] for r in runs if r["method"] == method and bool(r["kw"].get("swap_labels")) == broken]


def test_both_numerics_settings_ran(runs):
    assert {r["numerics"] for r in runs} == {"reference", "native"}


@pytest.mark.parametrize("method", ["glass", "simplenet"])
def test_smoke_metric_stays_in_band_over_seeds_and_numerics(runs, method):
    lo, hi = BANDS[method]
    values = _auroc(runs, method)
    assert len(values) == len(SEEDS) * 2
    assert all(lo <= v <= hi for v in values), (method, values, BANDS[method])


@pytest.mark.parametrize("method", ["glass", "simplenet"])
def test_broken_variant_falls_outside_the_band(runs, method):
    lo, hi = BANDS[method]
    (value,) = _auroc(runs, method, broken=True)
    assert not lo <= value <= hi, (method, value, BANDS[method])
