"""Smoke-profile image AUROC of POUTA, Vanilla (DRAEM-style) and ADL stays inside a stated band over
training seeds *and* CPU numerics, and a broken variant of each method falls outside it.

What is run (in three worker processes, started in parallel, one torch thread each: the reference
runs split over two of them):

- data: the built-in benchmark generated with seed 7 (as ``adlib data synth --seed 7``: draws that
  no notebook uses and that no smoke setting was chosen on), category ``wood``, at the generator's
  default size and counts (32 training images, 30 test images of which 10 good);
- configs: the ``smoke`` profile of each method, unchanged;
- numerics: the two settings of :mod:`adlib.numerics`, ``reference`` (the pinned AVX2 kernels, the
  default) and ``native`` (``ADLIB_NUMERICS=native``, the machine's own kernels); they are read
  when torch loads, so each setting has its own process;
- seeds 0, 1, 2 of each method in each setting (18 runs), and one broken run per method:
  POUTA and Vanilla with the discriminator disconnected from the image (``disconnect=True``: zeros
  in place of the reconstructive representations / of ``concat(I_in, I_r)``, so every image gets
  the same heat map) and ADL with the labels of every training batch shuffled
  (``shuffle_labels=True``, the scoring head learns nothing about anomalies).

How the bands were derived: see :data:`BANDS`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # minutes: trainings over seeds and numerics (make test-fast skips them)

CATEGORY = "wood"
BENCH_SEED = 7
#: the generator's default category size (32 training images): a smaller one would halve POUTA's
#: and Vanilla's Adam steps (their epochs are passes over the training images), i.e. test a
#: different schedule than the notebooks run (with 16 images, 80 steps, POUTA seed 1 fell to 0.585)
N_TRAIN = None
SEEDS = (0, 1, 2)
#: worker processes run at once (1: one after the other). The reference runs are split over two
#: processes: without oneDNN (adlib.numerics) they take about twice as long as the native ones.
WORKERS = int(os.environ.get("ADLIB_BAND_WORKERS", "3"))
#: worker processes per numerics setting
SPLIT = {"reference": 2, "native": 1}
MODES = ("reference", "native")
#: one broken variant per method: (method, overrides, numerics setting it runs in)
#: The disconnected discriminators see zeros whatever the image, so their heat map is the same for
#: every image after any number of epochs: one epoch shows it (and saves two full trainings);
#: the shuffled-label ADL needs its full schedule.
BROKEN = {
    "pouta": ({"disconnect": True, "epochs": 1}, "reference"),
    "vanilla": ({"disconnect": True, "epochs": 1}, "native"),
    "adl": ({"shuffle_labels": True}, "reference"),
}
#: Image AUROC band ``[low, 1]`` per method (smoke profile, held-out benchmark seed 7, wood).
#:
#: Measured with this test's runs before the bands were set (AMD EPYC, 2 cores, torch 1 thread),
#: seeds 0 / 1 / 2, reference | native numerics:
#:
#:   ======== ========================== ========================== ====================
#:   method   reference                  native                     broken (seed 0)
#:   ======== ========================== ========================== ====================
#:   POUTA    0.985  1.0    0.995        1.0    1.0    1.0          disconnected 0.5
#:   Vanilla  0.985  1.0    1.0          1.0    0.97   0.99         disconnected 0.5
#:   ADL      0.95   0.96   0.805        0.855  0.865  0.93         shuffled 0.555
#:   ======== ========================== ========================== ====================
#:
#: Each band's lower end is the smallest measured value less its measured spread (rounded down
#: to 0.05; the spread is the max - min of the six runs): POUTA 0.985 - 0.015 -> 0.95, Vanilla
#: 0.97 - 0.03 -> 0.90 (0.94 rounded down), ADL 0.805 - 0.155 -> 0.65. Every broken variant lies
#: below its band: the disconnected discriminators give one heat map for every image (0.5
#: exactly), the shuffled-label ADL 0.555 (the shuffled runs of ``tests/test_adl.py``, another
#: benchmark: 0.34 - 0.69; a tighter ADL band is not supported by the measured spread).
#:
#: Before the smoke changes of this round (``anomaly_prob=0.5`` and no BatchNorm recalibration
#: for POUTA / Vanilla; burn-in 75 % and no recalibration for ADL) the same benchmark gave at
#: seed 0 (reference): ADL 0.45 (every image scored near the margin), and on synth/nut Vanilla's
#: heat map was inverted (pixel AUROC 0.20); see the "Smoke profile" sections of
#: :mod:`adlib.models.pouta` and :mod:`adlib.models.adl`.
BANDS = {"pouta": 0.95, "vanilla": 0.90, "adl": 0.65}

WORKER = r"""
import json, sys, time
import adlib
import torch
from adlib import numerics
from adlib.data import get_dataset
from adlib.models import build, evaluate


root, specs = sys.argv[1], json.loads(sys.argv[2])
numerics.configure_torch("cpu")
torch.set_num_threads(1)  # native too: only the kernels differ between the two settings
for method, seed, overrides in specs:
    t0 = time.perf_counter()
    model = build(method, "smoke", **{**overrides, "seed": seed, "data_root": root})
    train = get_dataset("synth", %(category)r, "train", root=root, transform=model.transform)
    test = get_dataset("synth", %(category)r, "test", root=root, transform=model.transform)
    model.fit(train, device="cpu", progress=False)
    r = evaluate(model.predict(test, progress=False), pixel=False)
    print("RESULT " + json.dumps({"method": method, "seed": seed, "overrides": overrides, "mode": numerics.mode(),
                                  "threads": torch.get_num_threads(),
                                  "capability": torch.backends.cpu.get_cpu_capability(),
                                  "image_auroc": r["image_auroc"], "seconds": time.perf_counter() - t0}), flush=True)
""" % {"category": CATEGORY}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from adlib.data.synth import generate_benchmark

    root = tmp_path_factory.mktemp("bands")
    generate_benchmark(root, seed=BENCH_SEED, categories=[CATEGORY], n_train=N_TRAIN, progress=False, workers=1)
    jobs = {mode: [[m, s, {}] for m in ("pouta", "vanilla", "adl") for s in SEEDS] for mode in MODES}
    for method, (overrides, mode) in BROKEN.items():
        jobs[mode].append([method, 0, overrides])
    from adlib import numerics

    # each setting's runs dealt round-robin to its processes
    chunks = [(mode, jobs[mode][i :: SPLIT[mode]]) for mode in MODES for i in range(SPLIT[mode])]

    def start(mode, specs):
        env = {**os.environ, "ADLIB_NUMERICS": mode, "OMP_NUM_THREADS": "1"}
        if mode == "native":  # importing adlib here wrote the reference variables into os.environ
            for k in numerics.REFERENCE_ENV:
                env.pop(k, None)
        return subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), json.dumps(specs)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    out = []
    t0 = time.perf_counter()
    running = {}
    for i, chunk in enumerate(chunks):  # at most WORKERS at once, each waited for in order
        if len(running) >= max(1, WORKERS):
            out += _collect(*running.pop(min(running)))
        running[i] = (*chunk, start(*chunk))
    for i in sorted(running):
        out += _collect(*running[i])
    assert sorted((r["mode"], r["method"], r["seed"]) for r in out) == sorted(
        (mode, m, s) for mode in MODES for m, s, _ in jobs[mode]
    )
    print(f"bands: {len(out)} runs in {time.perf_counter() - t0:.0f} s")
    for r in out:
        print(r)
    return out


def _collect(mode, specs, p):
    stdout, stderr = p.communicate(timeout=1800)  # generous: a hang, not a slow shared machine, should fail it
    assert p.returncode == 0, stderr[-3000:]
    rows = [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert len(rows) == len(specs) and all(r["mode"] == mode and r["threads"] == 1 for r in rows), (mode, rows)
    if mode == "reference":  # the pinned kernels were in force (AVX2, or the default ones on a CPU without it)
        assert all(r["capability"] in ("AVX2", "DEFAULT") for r in rows), rows
    return rows


def _auroc(results, method, broken):
    return [r["image_auroc"] for r in results if r["method"] == method and bool(r["overrides"]) == broken]


@pytest.mark.parametrize("method", ["pouta", "vanilla", "adl"])
def test_smoke_auroc_inside_band_over_seeds_and_numerics(results, method):
    got = {(r["mode"], r["seed"]): r["image_auroc"] for r in results if r["method"] == method and not r["overrides"]}
    assert sorted(got) == sorted((m, s) for m in MODES for s in SEEDS)
    low = BANDS[method]
    assert all(v >= low for v in got.values()), (method, low, got)


@pytest.mark.parametrize("method", ["pouta", "vanilla", "adl"])
def test_broken_variant_falls_outside_band(results, method):
    (broken,) = _auroc(results, method, broken=True)
    assert broken < BANDS[method], (method, broken)
