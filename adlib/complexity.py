"""Model complexity: parameter counts, FLOPs and inference time, measured the same way for every method.

Used by the complexity benchmarks (``benchmarks/bench_pouta.py``, POUTA Table VI).

FLOPs vs MACs
    :func:`count_flops` uses PyTorch's own counter, :class:`torch.utils.flop_counter.FlopCounterMode`
    (not hand formulas). It counts one multiply-add as **2** FLOPs: a convolution is
    ``2 * B * C_out * H_out * W_out * (C_in / groups) * k_h * k_w``, a linear layer
    ``2 * B * in * out``. Only the operators it knows are counted: convolutions, matrix products
    (``mm``, ``addmm``, ``bmm``, ...) and attention; biases, BatchNorm, activations, pooling and
    interpolation count 0 (they are a small fraction of a CNN's total). Profilers common in
    anomaly-detection papers (``thop``, ``ptflops``, ``fvcore``) report multiply-accumulates and call
    them "FLOPs"; :func:`flops_to_macs` (``FLOPs / 2``) gives the number to compare with those.

Timing
    :func:`time_inference` calls ``fn(x)`` ``warmup`` times (discarded: lazy initialisation, cuDNN
    autotuning, allocator growth), then ``repeats`` times, each call timed on its own with the
    device synchronised before every clock read, and returns the **median** per-batch time divided
    by the batch size, in milliseconds per image. The median (not the mean) keeps one slow batch on
    a shared machine from moving the result.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "count_flops",
    "count_parameters",
    "flops_by_operator",
    "flops_to_macs",
    "synchronize",
    "time_batches",
    "time_inference",
]


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``module``; buffers (BatchNorm running statistics) are not
    parameters. A parameter shared by several sub-modules counts once (``module.parameters()``
    deduplicates). ``trainable_only``: only those with ``requires_grad``."""
    return int(sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only))


def _flop_counts(fn: Callable[..., Any], inputs: tuple, kwargs: dict, no_grad: bool) -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    ctx = torch.no_grad() if no_grad else contextlib.nullcontext()
    with ctx, counter:
        fn(*inputs, **kwargs)
    return counter


def count_flops(fn: Callable[..., Any], *inputs: Any, no_grad: bool = True, **kwargs: Any) -> int:
    """Total FLOPs of one call ``fn(*inputs, **kwargs)`` as :class:`FlopCounterMode` counts them
    (a multiply-add = 2 FLOPs; see the module docstring for what is counted).

    ``fn``: an ``nn.Module`` or any callable (e.g. a method's inference path). The call runs under
    ``torch.no_grad()`` unless ``no_grad=False`` (then a backward inside ``fn`` is counted too).
    The count is for the inputs given: pass a batch of 1 for FLOPs per image.
    """
    return int(_flop_counts(fn, inputs, kwargs, no_grad).get_total_flops())


def flops_by_operator(fn: Callable[..., Any], *inputs: Any, no_grad: bool = True, **kwargs: Any) -> dict[str, int]:
    """As :func:`count_flops`, split by ATen operator (``{"aten.convolution": ..., "aten.addmm": ...}``)."""
    counts = _flop_counts(fn, inputs, kwargs, no_grad).get_flop_counts().get("Global", {})
    return {str(op): int(n) for op, n in counts.items()}


def flops_to_macs(flops: float) -> float:
    """Multiply-accumulates from :func:`count_flops`'s FLOPs: ``flops / 2`` (what ``thop`` / ``ptflops``
    print as "FLOPs")."""
    return flops / 2


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (CUDA, MPS); nothing to do on the CPU."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_batches(
    fn: Callable[[Any], Any],
    x: Any,
    device: torch.device | str | None = None,
    warmup: int = 1,
    repeats: int = 5,
    no_grad: bool = True,
) -> list[float]:
    """Seconds of each of ``repeats`` timed calls ``fn(x)``, after ``warmup`` discarded calls.

    The device is synchronised before every clock read, so a call's time includes its queued GPU
    work. Calls run under ``torch.no_grad()`` unless ``no_grad=False``. ``fn`` is called exactly
    ``warmup + repeats`` times.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    ctx = torch.no_grad() if no_grad else contextlib.nullcontext()
    times: list[float] = []
    with ctx:
        for _ in range(warmup):
            fn(x)
        for _ in range(repeats):
            synchronize(device)
            t0 = time.perf_counter()
            fn(x)
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return times


def time_inference(
    fn: Callable[[Any], Any],
    x: Any,
    device: torch.device | str | None = None,
    warmup: int = 1,
    repeats: int = 5,
    batch_size: int | None = None,
    no_grad: bool = True,
) -> float:
    """Milliseconds per image of ``fn(x)``: the median of ``repeats`` synchronised batch times
    (:func:`time_batches`, after ``warmup`` discarded calls) divided by the batch size.

    ``batch_size`` defaults to ``len(x)`` (``x.shape[0]`` for a tensor).
    """
    n = int(batch_size) if batch_size is not None else int(x.shape[0] if isinstance(x, torch.Tensor) else len(x))
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n}")
    times = time_batches(fn, x, device, warmup=warmup, repeats=repeats, no_grad=no_grad)
    ms = 1000.0 * statistics.median(times) / n
    if not math.isfinite(ms):
        raise RuntimeError(f"non-finite timing {ms} from batch times {times}")
    return ms
