"""Helpers of the golden-fixture tests (tests/test_golden_glass.py, tests/test_golden_simplenet.py).

The fixtures in ``tests/golden/`` hold numbers computed by the authors' released code
(``tools/golden/make_*.py``, see ``tests/golden/README.md``); these helpers load them and hand the
same inputs and weights to adlib's modules.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

GOLDEN = Path(__file__).resolve().parent / "golden"


def load(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / name) as z:
        return {k: z[k] for k in z.files}


def reference_record(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


def t(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())


def max_diff(actual, expected) -> float:
    a = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    e = expected.detach().cpu().numpy() if torch.is_tensor(expected) else np.asarray(expected)
    assert a.shape == e.shape, f"shape {a.shape} != reference {e.shape}"
    return float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0


def assert_matches(actual, expected, rel: float = 1e-5, what: str = "") -> float:
    """``max |actual - expected| <= rel * max(1, max |expected|)`` (float32 round-off); returns the max difference."""
    e = expected.detach().cpu().numpy() if torch.is_tensor(expected) else np.asarray(expected)
    d = max_diff(actual, expected)
    scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
    if os.environ.get("GOLDEN_REPORT"):  # GOLDEN_REPORT=1 pytest -s ...: print the measured differences
        print(f"\n[golden] {what}: max diff {d:.3g} (scale {scale:.3g}, tolerance {rel * scale:.3g})")
    assert d <= rel * scale, f"{what}: max |adlib - reference| = {d:.3g} > {rel * scale:.3g}"
    return d


def differs(actual, expected, rel: float = 1e-5) -> bool:
    """The negation of :func:`assert_matches`'s criterion (for the negative controls)."""
    e = expected.detach().cpu().numpy() if torch.is_tensor(expected) else np.asarray(expected)
    return max_diff(actual, expected) > rel * max(1.0, float(np.max(np.abs(e))))


class StubBackbone(nn.Module):
    """Returns stored backbone maps instead of running a backbone: ``maps["image"]`` for an input whose
    first value is <= 0.5 (use zeros), ``maps["aug"]`` otherwise (use ones)."""

    def __init__(self, maps: dict[str, dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.maps = maps

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        key = "aug" if float(x.reshape(-1)[0]) > 0.5 else "image"
        return {k: v.clone() for k, v in self.maps[key].items()}


def adaptor_state(z: dict, prefix: str = "proj.") -> dict[str, torch.Tensor]:
    """Reference ``Projection`` (one ``layers.0fc`` Linear) -> adlib ``Adaptor`` state dict."""
    return {"linear.weight": t(z[prefix + "layers.0fc.weight"]), "linear.bias": t(z[prefix + "layers.0fc.bias"])}


def discriminator_state(z: dict, prefix: str = "dsc.", tail: str = "tail.0.weight") -> dict[str, torch.Tensor]:
    """Reference ``Discriminator`` (``body.block1`` = Linear, BatchNorm1d, LeakyReLU; ``tail``) -> adlib's."""
    b = prefix + "body.block1."
    return {
        "body.0.weight": t(z[b + "0.weight"]),
        "body.0.bias": t(z[b + "0.bias"]),
        "body.1.weight": t(z[b + "1.weight"]),
        "body.1.bias": t(z[b + "1.bias"]),
        "body.1.running_mean": t(z[b + "1.running_mean"]),
        "body.1.running_var": t(z[b + "1.running_var"]),
        "body.1.num_batches_tracked": torch.tensor(int(np.asarray(z[b + "1.num_batches_tracked"]).reshape(-1)[0])),
        "tail.weight": t(z[prefix + tail]),
    }
