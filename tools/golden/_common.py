"""Shared helpers of the golden-fixture generators in ``tools/golden/`` (provenance, writing).

The generators run a reference checkout's own code (imported unmodified from ``--reference``) on
fixed inputs and write the numbers it produces to ``tests/golden/``: an ``.npz`` of arrays and a
``.json`` with the provenance (repository, commit, package versions, seeds, shapes). Only numbers
leave the reference code; the tests compare adlib's functions with them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import platform
import subprocess
import sys
import types
from pathlib import Path

import numpy as np


def parse_args(description: str, default_name: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--reference", required=True, type=Path, help="checkout of the reference repository")
    ap.add_argument("--out", required=True, type=Path, help="output folder (tests/golden/)")
    ap.add_argument(
        "--commit", default=None, help="commit of the checkout (default: git rev-parse HEAD in --reference)"
    )
    ap.add_argument("--name", default=default_name, help="file stem of the fixture (.npz/.json)")
    return ap.parse_args()


def commit_of(reference: Path, given: str | None) -> str:
    if given:
        return given
    try:
        return subprocess.run(
            ["git", "-C", str(reference), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
    except Exception as exc:  # an exported checkout has no .git
        raise SystemExit(f"cannot read the commit of {reference} ({exc}); pass --commit") from None


def versions(*modules: str) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "torch", *modules):
        try:
            out[name] = str(importlib.import_module(name).__version__)
        except Exception:  # noqa: BLE001
            out[name] = "not installed"
    return out


def stub_module(name: str, **attrs) -> types.ModuleType:
    """Register an empty module ``name`` (and its parents) in ``sys.modules`` if it cannot be imported."""
    existing = sys.modules.get(name)
    if existing is None or not getattr(existing, "__golden_stub__", False):
        try:
            return importlib.import_module(name)
        except ImportError:
            pass
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            mod = types.ModuleType(sub)
            mod.__dict__["__golden_stub__"] = True
            sys.modules[sub] = mod
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], mod)
    mod = sys.modules[name]
    for k, v in attrs.items():
        setattr(mod, k, v)
    return mod


@contextlib.contextmanager
def cuda_is_identity():
    """Make ``Tensor.cuda()`` / ``Module.cuda()`` no-ops (the reference code calls them
    unconditionally; the fixtures are computed on the CPU)."""
    import torch

    t_cuda, m_cuda = torch.Tensor.cuda, torch.nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda = t_cuda, m_cuda


def to_np(x) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:
        pass
    a = np.asarray(x)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    return a


def write(out: Path, name: str, arrays: dict, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: to_np(v) for k, v in arrays.items()}
    npz = out / f"{name}.npz"
    np.savez_compressed(npz, **arrays)
    meta = dict(meta)
    meta["arrays"] = {k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in sorted(arrays.items())}
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")
    size = npz.stat().st_size
    if size > 300_000:
        raise SystemExit(f"{npz} is {size} bytes (> 300 KB): shrink the inputs")
    print(f"wrote {npz} ({size} bytes) and {name}.json")
