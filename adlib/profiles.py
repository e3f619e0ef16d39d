"""The two profiles every notebook and command accepts.

- ``smoke``: the built-in benchmark (``synth``, ``synth-weak``), CPU, randomly initialised
  backbones (no download), short schedules; minutes on 2 CPU cores.
- ``paper``: the real datasets under the data root, the papers' settings, pretrained weights,
  a GPU.

Profile, data root and device are papermill parameters of every notebook and options of every
command; a result records the profile that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Profile:
    name: str
    datasets: tuple[str, ...]  # datasets a notebook uses by default, in order
    pretrained: bool  # backbones with pretrained weights
    device: str  # default device ("auto" picks cuda when available)
    description: str


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        "smoke",
        ("synth", "synth-weak"),
        pretrained=False,
        device="cpu",
        description="built-in synthetic benchmark, CPU, random-init backbones, short schedules",
    ),
    "paper": Profile(
        "paper",
        ("mvtec", "visa", "mpdd", "wfdd", "mad-man", "mad-sys", "dagm"),
        pretrained=True,
        device="auto",
        description="real datasets, the papers' settings, pretrained backbones, a GPU",
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


def resolve_device(device: str | None, profile: str = "smoke") -> torch.device:
    """``auto``/None -> the profile's default, with ``auto`` meaning CUDA when available."""
    dev = device or get_profile(profile).device
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {dev!r} requested but CUDA is not available on this machine")
    return torch.device(dev)
