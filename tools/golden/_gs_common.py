"""Shared helpers of the GLASS and SimpleNet golden-fixture generators (``make_glass.py``,
``make_simplenet.py``; the other generators in this folder have their own).

Nothing here is taken from the reference repositories: the helpers import the reference modules
from a checkout given on the command line, stub the optional third-party packages they import but
the fixtures never exercise, record what the reference code computes (forward hooks, a recording
stand-in for TensorBoard's ``SummaryWriter``) and write the numbers as float32 ``.npz`` files with
a JSON provenance record next to them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

MAX_FIXTURE_BYTES = 300_000


class RecordingWriter:
    """Stand-in for ``torch.utils.tensorboard.SummaryWriter``: keeps every ``add_scalar`` call."""

    instances: list[RecordingWriter] = []

    def __init__(self, *args, **kwargs) -> None:
        self.scalars: list[tuple[str, float, int]] = []
        RecordingWriter.instances.append(self)

    def add_scalar(self, tag, value, step=None, *args, **kwargs) -> None:
        v = value.detach().reshape(-1)[0].item() if torch.is_tensor(value) else float(value)
        self.scalars.append((str(tag), float(v), -1 if step is None else int(step)))

    def __getattr__(self, name):  # any other writer method: a no-op
        return lambda *a, **k: None


def install_stubs(stub_imgaug: bool) -> list[str]:
    """Stub the optional imports the fixtures do not exercise; return what was stubbed.

    - ``torch.utils.tensorboard`` needs the ``tensorboard`` package (not a project dependency): it
      is replaced by a module whose ``SummaryWriter`` is :class:`RecordingWriter` (the reference
      code only logs scalars through it; recording them gives us ``r_t``, ``r_g``, ``r_f``, ``loss``).
    - ``imgaug`` (GLASS's ``perlin.py``, only for rotating the Perlin field in ``generate_thr``):
      stubbed only when not installed; the stub's ``Sequential(...)(image=x)`` returns ``x``
      unchanged (no rotation). Only the fixtures that do not depend on the rotation use it.
    """
    stubbed = []
    tb = types.ModuleType("torch.utils.tensorboard")
    tb.SummaryWriter = RecordingWriter
    sys.modules["torch.utils.tensorboard"] = tb
    torch.utils.tensorboard = tb
    stubbed.append("torch.utils.tensorboard (SummaryWriter records scalars)")
    if stub_imgaug:
        try:
            import imgaug  # noqa: F401
        except ImportError:
            iaa = types.ModuleType("imgaug.augmenters")

            class _Identity:
                def __init__(self, *a, **k) -> None:
                    pass

                def __call__(self, image=None, **k):
                    return image

            iaa.Sequential = _Identity
            iaa.Affine = _Identity
            pkg = types.ModuleType("imgaug")
            pkg.augmenters = iaa
            sys.modules["imgaug"] = pkg
            sys.modules["imgaug.augmenters"] = iaa
            stubbed.append("imgaug (identity augmenters: Perlin fields are not rotated)")
    return stubbed


def import_reference(reference: Path) -> None:
    reference = Path(reference).resolve()
    if not reference.is_dir():
        raise SystemExit(f"--reference {reference} is not a directory")
    sys.path.insert(0, str(reference))


def git_commit(reference: Path) -> str:
    try:
        return subprocess.check_output(
            ["git", "-C", str(reference), "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL
        ).strip()
    except Exception:
        return "unknown (not a git work tree; pass --commit)"


def f32(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def save_npz(path: Path, arrays: dict[str, object]) -> dict[str, list[int]]:
    """Write ``arrays`` (float arrays as float32, integer/bool arrays as int64) compressed; check the size."""
    out = {}
    for k, v in arrays.items():
        a = v.detach().cpu().numpy() if torch.is_tensor(v) else np.asarray(v)
        if a.dtype.kind in "biu":
            out[k] = a.astype(np.int64)
        else:
            out[k] = a.astype(np.float32)
    np.savez_compressed(path, **out)
    size = Path(path).stat().st_size
    if size > MAX_FIXTURE_BYTES:
        raise SystemExit(f"{path} is {size} bytes (> {MAX_FIXTURE_BYTES}); make the shapes smaller")
    print(f"wrote {path} ({size} bytes)")
    return {k: list(a.shape) for k, a in out.items()}


def write_json(path: Path, record: dict) -> None:
    Path(path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")


def state_arrays(prefix: str, module: torch.nn.Module) -> dict[str, np.ndarray]:
    """A module's state dict as ``{prefix + key: float32 array}`` (keys as the reference names them)."""
    return {prefix + k: f32(v.float()) for k, v in module.state_dict().items()}


def smooth_images(seed: int, size: int, n: int) -> torch.Tensor:
    """``n`` smooth random images (low-resolution noise, bilinearly up-sampled, plus fine noise),
    roughly of ImageNet-normalised scale, from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn((n, 3, size // 8, size // 8), generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return x + 0.3 * torch.randn((n, 3, size, size), generator=g)


def random_resnet18(seed: int) -> torch.nn.Module:
    """torchvision's ResNet-18, random init after ``torch.manual_seed(seed)``, in eval mode.

    Handed over in eval mode: the released main.py files hand the backbone over in train mode, so
    the reference's feature_dimensions() forward of a ones image would update its BatchNorm running
    statistics once (and fail at 32 px, where layer4 is 1 x 1 for a batch of one); the stored maps
    make the fixtures independent of the backbone anyway."""
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).eval()
