"""Shared test set-up.

- Importing adlib first pins the reference CPU numerics (adlib.numerics) before torch or numpy load
  in the test process and in every process the tests start.
- Every test runs with one torch intra-op thread (restored afterwards): the tests run many small
  ops, which OpenMP barriers slow down badly when the cores are shared (``make test`` runs two
  pytest-xdist workers on two cores), and one thread is what the reference numerics use anyway.
- ``slow`` marks the long tests (the smoke-band trainings over seeds and numerics); ``make
  test-fast`` leaves them out.
"""

# ruff: noqa: I001  (adlib first: its numerics must be in the environment before torch loads)
import adlib  # noqa: F401  (side effect: adlib.numerics.apply_env)
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
