"""Shared test set-up. Importing adlib first pins the reference CPU numerics (adlib.numerics) before
torch or numpy load in the test process and in every process the tests start."""

import adlib  # noqa: F401  (side effect: adlib.numerics.apply_env)
