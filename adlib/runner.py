"""Train and test one method on one category: what ``adlib train`` / ``adlib test`` run.

A run lives in ``<out>/<method>[-<variant>]/<dataset>/<category>/``:

- ``checkpoints/last.pt``: written after every epoch; an interrupted ``train`` resumes from it;
- ``model.pt``: the trained model (``adlib.models.load`` restores it);
- ``train.json``: what was trained, with which weights, profile and settings, how long it took;
- ``metrics.json``: the test metrics with the same provenance.

JSON files are written atomically. The default ``out`` is ``<repo>/runs/<profile>/models``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import numerics
from .data import get_dataset
from .io import atomic_write_json
from .models import build, evaluate, load
from .paths import repo_root
from .profiles import get_profile, resolve_device
from .protocols import apply_protocol, check_method_accepts

log = logging.getLogger(__name__)


@dataclass
class RunSpec:
    method: str
    dataset: str
    category: str
    profile: str = "smoke"
    data_root: str | None = None
    out: str | None = None
    device: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    #: training protocol (:mod:`adlib.protocols`), e.g. ``{"shots": 4}``; empty = full-shot
    protocol: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``<method>-<variant>`` when the resolved config has a variant (GLASS's default ``m``,
        ADL's ``proposed``), else the method: the same label as the results store's."""
        from .results import Job

        opts = {k: v for k, v in self.overrides.items() if k != "seed"}
        try:
            return Job.make(
                self.method, self.dataset, self.category, self.profile, self.overrides.get("seed", 0), **opts
            ).label
        except (ValueError, TypeError):  # unknown method or field: build() names it when it runs
            v = self.overrides.get("variant")
            return f"{self.method}-{v}" if v else self.method

    def run_dir(self) -> Path:
        base = Path(self.out) if self.out else repo_root() / "runs" / self.profile / "models"
        d = base / self.label / self.dataset / self.category
        parts = []
        if self.protocol.get("shots"):
            parts.append(f"shots{self.protocol['shots']}")
        if self.protocol.get("contamination"):
            proto = self.protocol.get("contamination_protocol", "leak-free")
            parts.append(f"eps{self.protocol['contamination']:g}" + ("-released" if proto == "released" else ""))
        if self.protocol.get("real_anomalies") or self.protocol.get("real_holdout"):
            n = int(self.protocol.get("real_anomalies") or 0)
            m = n if self.protocol.get("real_holdout") is None else int(self.protocol["real_holdout"])
            parts.append(f"real{n}" + (f"-of{m}" if m != n else ""))
        if self.protocol.get("outliers"):
            parts.append(f"oe-{self.protocol['outliers']}")
        if parts:
            d = d / "-".join(parts + [f"seed{self.overrides.get('seed', 0)}"])
        return d


def environment(device=None) -> dict[str, Any]:
    """Versions, machine, device and numerics of a run (the results store's, one definition)."""
    from .results import environment as _environment

    return _environment(device)


def _provenance(spec: RunSpec, model, device=None) -> dict[str, Any]:
    return {
        "method": spec.method,
        "dataset": spec.dataset,
        "category": spec.category,
        "profile": spec.profile,
        "data_root": str(spec.data_root) if spec.data_root else None,
        "model": model.info(),
        "environment": environment(device),
    }


def train(spec: RunSpec, progress: bool = True) -> dict[str, Any]:
    """Build, fit (resuming from ``checkpoints/last.pt`` if present) and save; returns ``train.json``."""
    get_profile(spec.profile)
    device = resolve_device(spec.device, spec.profile)
    numerics.configure_torch(device)
    model = build(spec.method, spec.profile, **{"data_root": spec.data_root, **spec.overrides})
    check_method_accepts(spec.protocol, model)
    train_ds = get_dataset(spec.dataset, spec.category, "train", root=spec.data_root, transform=model.transform)
    test_ds = get_dataset(spec.dataset, spec.category, "test", root=spec.data_root, transform=model.transform)
    train_ds, _, protocol = apply_protocol(spec.protocol, train_ds, test_ds, int(model.cfg.seed))
    d = spec.run_dir()
    d.mkdir(parents=True, exist_ok=True)
    log.info(
        "training %s on %s/%s (%d images, profile %s, %s) -> %s",
        spec.label,
        spec.dataset,
        spec.category,
        len(train_ds),
        spec.profile,
        device,
        d,
    )
    t0 = time.perf_counter()
    model.fit(train_ds, device=device, progress=progress, checkpoint_dir=d / "checkpoints")
    seconds = time.perf_counter() - t0
    model.save(d / "model.pt")
    record = {
        **_provenance(spec, model, device),
        "protocol": protocol,
        "train_images": len(train_ds),
        "train_seconds": round(seconds, 3),
        "device": str(device),
    }
    atomic_write_json(d / "train.json", record)
    return record


def test(spec: RunSpec, progress: bool = True) -> dict[str, Any]:
    """Load ``model.pt``, predict the test split, evaluate; returns and writes ``metrics.json``."""
    d = spec.run_dir()
    path = d / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no trained model at {path}: run `adlib train {spec.method} --dataset {spec.dataset} --category {spec.category}` first"
        )
    device = resolve_device(spec.device, spec.profile)
    numerics.configure_torch(device)
    model = load(path)
    test_ds = get_dataset(spec.dataset, spec.category, "test", root=spec.data_root, transform=model.transform)
    if spec.protocol:  # the same draw as in training (it depends on the seed only): e.g. leak-free test set
        train_ds = get_dataset(spec.dataset, spec.category, "train", root=spec.data_root, transform=model.transform)
        _, test_ds, _ = apply_protocol(spec.protocol, train_ds, test_ds, int(model.cfg.seed))
    t0 = time.perf_counter()
    pred = model.predict(test_ds, device=device, progress=progress)
    seconds = time.perf_counter() - t0
    metrics = evaluate(pred)
    record = {
        **_provenance(spec, model, device),
        "metrics": metrics,
        "protocol": spec.protocol,
        "test_images": len(test_ds),
        "predict_seconds": round(seconds, 3),
        "device": str(device),
    }
    atomic_write_json(d / "metrics.json", record)
    log.info(
        "%s %s/%s: %s", spec.label, spec.dataset, spec.category, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
    )
    return record


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["epochs=3", "variant=h", "lr=1e-4"]`` -> typed dict (Python literals, else strings)."""
    import ast

    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


__all__ = ["RunSpec", "train", "test", "parse_overrides", "environment"]
