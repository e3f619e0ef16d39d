"""``adlib export``: a trained model as one ONNX (or TorchScript) graph, with its metadata.

::

    adlib export RUN [--format onnx|torchscript] [--out DIR] [--opset N] [--name NAME]

``RUN`` is a run folder holding ``model.pt`` (``adlib train``, the results store; as for
``adlib predict``) or a ``.pt`` checkpoint. Written to ``--out`` (default ``RUN/export``), each
atomically: ``<name>.onnx`` and ``<name>.json``, the metadata (TorchScript: ``<name>.ts`` and
``<name>.ts.json``). The command prints the input size, the threshold carried and the parity; its exit
status is 1 when the parity check fails (the files are written, their metadata says ``"ok": false``).

The graph (:class:`ExportedModel`)
    input ``image``: ``B x 3 x H x W`` **uint8**, RGB, NCHW, at the model's input size ``(H, W)``
    (the transform's crop, else its resize: :func:`adlib.models.core.input_hw`), i.e. the image
    after the method's resize and centre crop (PIL bilinear, :class:`adlib.data.ImageTransform`),
    before any scaling. Inside the graph: ``x / 255`` and, for the methods whose transform
    normalises (GLASS, SimpleNet, PatchCore), ``(x - mean) / std`` with ImageNet's mean and std;
    ADL and ADTR normalise inside their networks, POUTA, Vanilla and DRAEM take [0, 1]. The batch
    axis is dynamic.
    outputs ``score`` (``B``, float32): the method's image score; ``map`` (``B x H x W``,
    float32): its anomaly map at the input size, as the method's ``predict`` computes them --
    bilinear up-sampling, and the Gaussian smoothing of GLASS, SimpleNet, PatchCore and ADTR
    (SciPy's ``gaussian_filter`` as a fixed convolution in the graph,
    :class:`adlib.models.smoothing.GaussianFilter`). Each method builds the module from its own
    parts (:meth:`adlib.models.core.Method.export_module`).
    Outside the graph, documented in the metadata: the resize / centre crop to ``(H, W)`` and the
    way back of a map to the original image's size (:func:`adlib.models.core.map_to_input`).

Exporter (the open choice): ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based
exporter. It exports every method here with a working dynamic batch axis, in 0.4-1.7 s for the
test models; ``dynamo=True`` exported GLASS, PatchCore and ADTR with a working batch axis too, but
took 8-11 s each (2026-12-06, torch 2.14), so it is not used. Should a later torch drop the
TorchScript-based exporter, the modules need no change for ``dynamo=True``. Opset 17 by default
(``--opset``: 17 or later). ONNX expresses every method of the library (GLASS and its variants,
SimpleNet, PatchCore, POUTA, Vanilla, ADL and its variants, ADTR and its variants, DRAEM), so no
method falls back to TorchScript; ``--format torchscript`` writes a traced TorchScript module of
the same graph (``torch.jit.load``) for users who prefer it.

PatchCore: the memory bank is a constant of the graph and the nearest-neighbour search matrix
products (:class:`adlib.models.patchcore.PatchCoreExport`): the largest intermediate is
``B x patches x bank`` and the graph holds no TopK or sort.

Metadata (``<name>.json``): method, variant, registry name; input name, shape, dtype, range,
channel order; the pre-processing inside and outside the graph (resize, crop, resize mode, mean,
std); outputs and their meanings; the decision threshold of ``RUN/threshold.json`` (value and
rule; anomalous when ``score >= threshold``) when there is one; the model's ``info()`` (weights,
configuration); adlib, torch, onnx versions; opset; export date; and ``parity``: the exported
model run (onnxruntime; ``torch.jit.load`` for TorchScript) against the method's own ``predict`` on
``check`` images (random uint8 images unless given): the largest absolute and relative (to the
largest absolute reference value) differences of the scores and maps, and whether the decisions
at the threshold agree.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .io import atomic_write_json

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".ts"}
#: the metadata file beside the model: ``<name>.json`` (ONNX), ``<name>.ts.json`` (TorchScript)
META_SUFFIX = {"onnx": ".json", "torchscript": ".ts.json"}
DEFAULT_OPSET = 17
MIN_OPSET = 17
INPUT = "image"
OUTPUTS = ("score", "map")
#: the parity the metadata's ``ok`` asks for: max |diff| <= TOLERANCE * max(1, max |reference|)
TOLERANCE = 1e-4


class ExportedModel(nn.Module):
    """The exported graph: uint8 images ``B x 3 x H x W`` -> ``(score B, map B x H x W)``: scaling
    to [0, 1] and, with ``mean`` / ``std``, normalisation, then the method's ``module``
    (:meth:`~adlib.models.core.Method.export_module`). The operations are those of
    :meth:`adlib.data.ImageTransform.image`, in its order, so the prepared images are the same."""

    def __init__(self, module: nn.Module, mean=None, std=None) -> None:
        super().__init__()
        self.module = module
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.to(torch.float32) / 255.0
        if self.normalize:
            x = (x - self.mean) / self.std
        score, amap = self.module(x)
        return score.to(torch.float32), amap.to(torch.float32)


def reference_outputs(model, arrays: np.ndarray, transform=None) -> tuple[np.ndarray, np.ndarray]:
    """The method's own ``predict`` on uint8 images ``N x H x W x 3`` already at its input size:
    ``(scores N float64, maps N x H x W float32)``, what the exported graph must reproduce."""
    from .data.base import ImageTransform
    from .models.core import _ImageList

    tf = transform if transform is not None else model.transform
    # the transform's own scaling and normalisation; no geometry: the images are at the input size
    prepared = _ImageList(list(arrays), ImageTransform(resize=None, crop=None, normalize=bool(tf.normalize)))
    pred = model.predict(prepared, progress=False)
    return np.asarray(pred.image_scores, dtype=np.float64), np.asarray(pred.maps, dtype=np.float32)


def onnx_session(path, threads: int | None = None):
    """An onnxruntime CPU session of ``path`` (``threads``: intra-op threads, default torch's)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_exported(path, images: np.ndarray, fmt: str = "onnx", session=None) -> tuple[np.ndarray, np.ndarray]:
    """Run an exported model on uint8 images ``N x H x W x 3`` (NHWC, as images are read):
    ``(scores N, maps N x H x W)``."""
    x = np.ascontiguousarray(np.asarray(images, dtype=np.uint8).transpose(0, 3, 1, 2))
    if fmt == "onnx":
        sess = session if session is not None else onnx_session(path)
        score, amap = sess.run(list(OUTPUTS), {INPUT: x})
        return np.asarray(score), np.asarray(amap)
    if session is None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notice
            session = torch.jit.load(str(path))
    module = session
    with torch.no_grad():
        score, amap = module(torch.from_numpy(x))
    return score.numpy(), amap.numpy()


def parity(ref: tuple[np.ndarray, np.ndarray], got: tuple[np.ndarray, np.ndarray], threshold=None) -> dict[str, Any]:
    """The differences of an exported model's ``(scores, maps)`` from the reference: largest
    absolute and relative (to the largest absolute reference value) difference of each, ``ok`` when
    both are within :data:`TOLERANCE` (relative where the scale exceeds 1), and with a threshold
    whether every decision (``score >= threshold``) agrees."""
    out: dict[str, Any] = {"images": int(len(ref[0])), "tolerance": TOLERANCE}
    ok = True
    for key, r, g in (("score", ref[0], got[0]), ("map", ref[1], got[1])):
        r, g = np.asarray(r, dtype=np.float64), np.asarray(g, dtype=np.float64)
        if r.shape != g.shape:
            raise ValueError(f"exported {key} has shape {g.shape}, PyTorch's {r.shape}")
        diff = float(np.max(np.abs(r - g))) if r.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        out[f"{key}_max_abs_diff"] = diff
        out[f"{key}_max_rel_diff"] = diff / scale if scale > 0 else diff
        ok = ok and diff <= TOLERANCE * max(1.0, scale)
    if threshold is not None:
        out["threshold"] = float(threshold)
        out["same_decisions"] = bool(np.array_equal(ref[0] >= threshold, got[0] >= threshold))
        ok = ok and out["same_decisions"]
    out["ok"] = bool(ok)
    return out


@dataclass
class ExportResult:
    """What :func:`export` wrote: the model file, the metadata file and the metadata."""

    path: Path
    metadata_path: Path
    metadata: dict[str, Any]


def load_run(run):
    """``(model, transform, threshold, run folder or None)`` of a run folder holding ``model.pt``
    or of a ``.pt`` checkpoint. ``FileNotFoundError`` naming the path when neither."""
    from .models import load
    from .predict import read_threshold, run_transform

    run = Path(run)
    if run.is_file():
        folder, path = run.parent, run
    else:
        folder, path = run, run / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no trained model: {path} not found (train one with `adlib train`)")
    model = load(path)
    return model, run_transform(folder, model), read_threshold(folder), folder


def _export_file(wrapper: nn.Module, example: torch.Tensor, path: Path, fmt: str, opset: int) -> None:
    """Write the graph of ``wrapper`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # shapes read while tracing become constants: intended, the input size is fixed (the batch stays dynamic)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            # the TorchScript-based exporter and torch.jit.trace are chosen on purpose (module docstring):
            # their deprecation notices are not the user's to act on
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            if fmt == "onnx":
                torch.onnx.export(
                    wrapper,
                    (example,),
                    str(tmp),
                    input_names=[INPUT],
                    output_names=list(OUTPUTS),
                    dynamic_axes={INPUT: {0: "batch"}, OUTPUTS[0]: {0: "batch"}, OUTPUTS[1]: {0: "batch"}},
                    opset_version=int(opset),
                    do_constant_folding=True,
                    dynamo=False,
                )
            else:
                traced = torch.jit.trace(wrapper, (example,), check_trace=False)
                torch.jit.save(traced, str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _versions() -> dict[str, str]:
    from . import __version__

    out = {"adlib": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("onnx", "onnxruntime"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            pass
    return out


def export(
    run_or_model,
    out=None,
    *,
    fmt: str = "onnx",
    opset: int = DEFAULT_OPSET,
    name: str = "model",
    check_images: np.ndarray | None = None,
    n_check: int = 3,
    seed: int = 0,
    threshold=None,
) -> ExportResult:
    """Export a trained model (a run folder / checkpoint path, or a model object) as ``fmt``
    (``"onnx"`` or ``"torchscript"``) to ``out/<name>.onnx`` (``.ts``) and ``out/<name>.json``
    (module docstring). ``out`` defaults to ``RUN/export`` (required for a model object).
    ``check_images``: uint8 ``N x H x W x 3`` images at the input size for the parity check (default
    ``n_check`` random ones drawn with ``seed``); ``threshold``: a value or
    :class:`~adlib.thresholds.Threshold` for a model object (a run's ``threshold.json`` otherwise).
    The export runs on the CPU: a model object is moved there."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx" and int(opset) < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET}, got {opset}")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file name, got {name!r}")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401  (the exporter's dependency)
            import onnxruntime  # noqa: F401  (the parity check)
        except ImportError as exc:
            raise RuntimeError(f"ONNX export needs the export extra (pip install 'adlib[export]'): {exc}") from None
    from .models.core import Method, input_hw

    if isinstance(run_or_model, Method):
        model, folder = run_or_model, None
        transform = model.transform
        if out is None:
            raise ValueError("export of a model object needs out=DIR")
    else:
        model, transform, stored, folder = load_run(run_or_model)
        threshold = stored if threshold is None else threshold
    out = Path(out) if out is not None else folder / "export"
    model.to("cpu")
    model.eval()
    hw = input_hw(transform)
    if hw != input_hw(model.transform):
        raise ValueError(f"the run's transform gives {hw}, the model's input is {input_hw(model.transform)}")
    try:
        module = model.export_module()
    except NotImplementedError as exc:
        raise ValueError(f"{model.label} cannot be exported: {exc}") from None
    from .data.base import IMAGENET_MEAN, IMAGENET_STD

    mean, std = (list(IMAGENET_MEAN), list(IMAGENET_STD)) if transform.normalize else (None, None)
    wrapper = ExportedModel(module, mean, std).eval()
    rng = np.random.default_rng(seed)
    inputs = "given images" if check_images is not None else f"random uint8 images (seed {seed})"
    if check_images is None:
        check_images = rng.integers(0, 256, size=(int(n_check), *hw, 3), dtype=np.uint8)
    check_images = np.asarray(check_images)
    if check_images.dtype != np.uint8 or check_images.ndim != 4 or check_images.shape[1:] != (*hw, 3):
        raise ValueError(f"check images must be uint8 N x {hw[0]} x {hw[1]} x 3, got {check_images.shape}")
    example = torch.from_numpy(rng.integers(0, 256, size=(2, 3, *hw), dtype=np.uint8))
    path = out / f"{name}{SUFFIX[fmt]}"
    t0 = datetime.datetime.now(datetime.timezone.utc)
    _export_file(wrapper, example, path, fmt, opset)
    seconds = (datetime.datetime.now(datetime.timezone.utc) - t0).total_seconds()
    log.info("%s exported as %s to %s in %.1f s", model.label, fmt, path, seconds)

    value = getattr(threshold, "value", threshold)
    ref = reference_outputs(model, check_images, transform)
    got = run_exported(path, check_images, fmt)
    check = parity(ref, got, value)
    if not check["ok"]:
        log.warning("%s: the exported model differs from PyTorch beyond %g: %s", model.label, TOLERANCE, check)

    meta = {
        "format": fmt,
        "file": path.name,
        "opset": int(opset) if fmt == "onnx" else None,
        "exporter": "torch.onnx.export(dynamo=False)" if fmt == "onnx" else "torch.jit.trace",
        "method": model.name,
        "variant": model.variant,
        "registry_name": model.label,
        "run": str(folder) if folder is not None else None,
        "input": {
            "name": INPUT,
            "shape": ["batch", 3, hw[0], hw[1]],
            "size_hw": list(hw),
            "dtype": "uint8",
            "range": [0, 255],
            "channel_order": "RGB",
            "layout": "NCHW",
        },
        "preprocessing": {
            "inside_graph": "x / 255" + (", then (x - mean) / std per channel" if mean else ""),
            "mean": mean,
            "std": std,
            "outside_graph": {
                "resize": transform.resize,
                "crop": transform.crop,
                "resize_mode": transform.resize_mode,
                "resample": "PIL bilinear",
                "how": "convert to RGB, resize (resize_mode: squash = to resize exactly; shorter_side = "
                "the shorter side to resize), then centre-crop to crop (if any), as adlib.data.ImageTransform",
            },
        },
        "outputs": {
            "score": "B float32: the image anomaly score (higher = more anomalous), as the method's predict",
            "map": f"B x {hw[0]} x {hw[1]} float32: the anomaly map at the input size, as the method's predict "
            "(up-sampling and smoothing inside the graph)",
        },
        "map_to_original": "outside the graph: undo the crop (the border the model never saw gets the map's "
        "minimum), then resize bilinearly to the image's size (adlib.models.core.map_to_input)",
        "threshold": (
            threshold.as_dict()
            if hasattr(threshold, "as_dict")
            else ({"value": float(value), "rule": "given"} if value is not None else None)
        ),
        "decision": "anomalous when score >= threshold.value",
        "info": model.info(),
        "versions": _versions(),
        "export_date": t0.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "export_seconds": round(seconds, 3),
        "parity": {"reference": "the method's own predict (PyTorch, CPU)", "inputs": inputs, **check},
    }
    meta_path = atomic_write_json(out / f"{name}{META_SUFFIX[fmt]}", meta)
    return ExportResult(path, meta_path, meta)


def export_onnx(run_or_model, out=None, *, opset: int = DEFAULT_OPSET, **kw) -> ExportResult:
    """:func:`export` as ONNX (opset ``opset``, at least 17)."""
    return export(run_or_model, out, fmt="onnx", opset=opset, **kw)


def export_torchscript(run_or_model, out=None, **kw) -> ExportResult:
    """:func:`export` as a traced TorchScript module (``torch.jit.load``; no method needs it, ONNX
    expresses them all: an alternative for users who prefer TorchScript)."""
    return export(run_or_model, out, fmt="torchscript", **kw)


__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "ExportResult",
    "ExportedModel",
    "export",
    "export_onnx",
    "export_torchscript",
    "load_run",
    "onnx_session",
    "parity",
    "reference_outputs",
    "run_exported",
]
