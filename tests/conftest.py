"""Shared test set-up.

- Importing adlib first pins the reference CPU numerics (adlib.numerics) before torch or numpy load
  in the test process and in every process the tests start.
- Every test runs with one torch intra-op thread (restored afterwards): the tests run many small
  ops, which OpenMP barriers slow down badly when the cores are shared (``make test`` runs two
  pytest-xdist workers on two cores), and one thread is what the reference numerics use anyway.
- ``benchmark``: the small built-in benchmark the tests share (wood, grass, nut at 64 px; 8 training
  images, 4 good and 2 per defect type in the test split), generated once per test process
  (:data:`BENCHMARK`); tests that need another size or seed generate their own. Tests must not
  change its files.
- ``slow`` marks the long tests (the smoke-band trainings over seeds and numerics); ``make
  test-fast`` leaves them out.
"""

# ruff: noqa: I001  (adlib first: its numerics must be in the environment before torch loads)
import adlib  # noqa: F401  (side effect: adlib.numerics.apply_env)
from pathlib import Path

import pytest
import torch

# the reference numerics' CPU kernels (no oneDNN, no NNPACK) for everything the tests compute
adlib.numerics.pin_backends()

#: the shared built-in benchmark (:func:`adlib.data.synth.generate_benchmark` arguments)
BENCHMARK = dict(seed=0, categories=["wood", "grass", "nut"], n_train=8, n_test_good=4, n_per_defect=2, size=64)


@pytest.fixture(scope="session")
def benchmark(tmp_path_factory) -> Path:
    from adlib.data.synth import generate_benchmark

    root = tmp_path_factory.mktemp("benchmark")
    generate_benchmark(root, **BENCHMARK, progress=False, workers=1)
    return root


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
