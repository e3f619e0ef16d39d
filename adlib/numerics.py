"""Pinned CPU numerics: the same smoke-profile numbers on any x86-64 machine with AVX2.

Float results of a CPU training depend on which kernels run: ATen's vectorised kernels are
compiled once per instruction set (default / AVX2 / AVX-512) and chosen at run time, oneDNN's
convolutions are generated for the best instruction set it finds (AVX-512, AMX), MKL's BLAS picks
a code path per processor, numpy and its OpenBLAS dispatch on the processor too, and reductions
split by the thread count. Two machines with the same code and seed therefore train slightly
different models, and a short training on a small benchmark can turn that round-off into a
different AUROC. This module pins all of it to one *reference* numerics.

Modes (``$ADLIB_NUMERICS``):

``reference`` (default)
    The settings of :data:`REFERENCE_ENV`, written into the environment when :mod:`adlib` is
    imported (:func:`apply_env`), so before torch, numpy, MKL or oneDNN read them, and inherited by
    every process adlib starts (papermill kernels, results-store workers, ``adlib reproduce``):

    - ``ATEN_CPU_CAPABILITY=avx2``: ATen's AVX2 kernels, the same machine code on every AVX2 CPU;
    - ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN generates AVX2 convolutions (no AVX-512, no AMX);
    - ``MKL_CBWR=COMPATIBLE,STRICT``: MKL's conditional numerical reproducibility on the branch that
      MKL documents as giving the same results on Intel and Intel-compatible (AMD) processors;
      STRICT makes it independent of array alignment;
    - ``OPENBLAS_CORETYPE=Haswell`` and ``NPY_DISABLE_CPU_FEATURES``: numpy's OpenBLAS and its own
      SIMD loops on their AVX2 paths;

    and, for every CPU run (:func:`configure_torch`, and :func:`pin_backends` wherever a model
    is put on the CPU), one torch thread (:data:`REFERENCE_THREADS`),
    ``torch.use_deterministic_algorithms(True, warn_only=True)``, and no oneDNN or NNPACK
    (:data:`REFERENCE_BACKENDS`): convolutions run as ATen's own im2col + MKL GEMM, the GEMM under
    ``MKL_CBWR``. The last is why the reference holds on a second vendor (below).
    One thread in each of ``jobs`` worker processes is also how the results store used a 2-core
    machine before; a single CLI run is slower than with two threads
    (``benchmarks/RESULTS.md`` records the cost).
``native``
    Nothing is pinned: the machine's own dispatch, ``cpu_count // workers`` threads. Fastest, and
    numbers may differ between machines in the last digits of a metric (or more, for a short
    training that is sensitive to round-off).

Why oneDNN and NNPACK are off under the reference: neither has a reproducibility mode. At a fixed
instruction set their kernels are fixed code, but they size their blocks from the cache sizes they
detect (oneDNN's AVX2 backward convolutions query the L2 size, and its maintainers guarantee equal
results only on the same CPU: uxlfoundation/oneDNN#1443), so the summation order, and the round-off,
follow the cache. Capping oneDNN at AVX2 was not enough: emulating another ISA on one machine
(``benchmarks/numerics_emulation.py``) cannot change its caches, and on the first Intel machine after
AMD ones a 3-epoch POUTA smoke training gave an image-score sum of 11.0407 where oneDNN was on and
10.9676 where it was off, and the trained POUTA and ADL smoke numbers left their ±8-point bands of
references made on AMD. Without oneDNN, CPU training costs about 1.3-2x more time
(``benchmarks/RESULTS.md``); ``native`` keeps it.

What cannot be pinned, and why:
- A machine without AVX2 cannot run the reference kernels; ATen then falls back to its default
  kernels and :func:`describe` records the capability actually in force.
- GPUs: the ``paper`` profile on CUDA is not pinned (cuDNN and cuBLAS choose algorithms per GPU).
- When torch has already run an operation before ``import adlib`` (a notebook that imported torch
  and computed something first), the ISA caps can no longer take effect: :func:`check` says so,
  and :func:`describe` records what was in force.

Every results record carries :func:`describe` (mode, capability in force, the pinned variables,
threads, the numerics-relevant package versions), and tables built from records made under
different numerics or versions say so (:func:`adlib.tables.provenance`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

ENV_MODE = "ADLIB_NUMERICS"
#: the user's own values of the pinned variables, kept for child processes that ask for ``native``
ENV_SAVED = "ADLIB_NUMERICS_SAVED"
MODES = ("reference", "native")

#: environment of the reference numerics (read by ATen, oneDNN, MKL, OpenBLAS, numpy at load time)
REFERENCE_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
#: torch threads of every CPU run under the reference numerics
REFERENCE_THREADS = 1
#: torch CPU back-ends switched off under the reference numerics (their blocking follows the cache sizes)
REFERENCE_BACKENDS: dict[str, bool] = {"mkldnn": False, "nnpack": False}
#: packages whose versions change numbers (recorded with every result)
NUMERIC_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "timm",
    "pandas",
    "pytorch-msssim",
    "pillow",
)

_applied: dict[str, Any] = {}


def mode() -> str:
    """The numerics mode in force (``$ADLIB_NUMERICS``, default ``reference``)."""
    m = os.environ.get(ENV_MODE, "reference").strip().lower() or "reference"
    if m not in MODES:
        raise ValueError(f"{ENV_MODE}={m!r}: expected one of {', '.join(MODES)}")
    return m


def apply_env() -> dict[str, str]:
    """Write the reference environment (mode ``reference``); returns what was overridden.

    Called by ``import adlib``. A variable the user set to another value is overridden (and named in
    the log): the reference numerics are one setting, not a floor. The user's own values are kept in
    ``$ADLIB_NUMERICS_SAVED``, so that a child process started with ``ADLIB_NUMERICS=native`` gets
    the machine's settings back rather than the inherited reference (a variable such a child sets to
    exactly the reference value is taken for inherited; drop ``$ADLIB_NUMERICS_SAVED`` from its
    environment to keep it)."""
    saved = os.environ.get(ENV_SAVED)
    if mode() != "reference":
        if saved:  # inherited from a reference parent: give this process the machine's own settings back
            for k, v in json.loads(saved).items():
                if os.environ.get(k) != REFERENCE_ENV.get(k):
                    continue  # set anew for this process: keep it
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            os.environ.pop(ENV_SAVED, None)
        _applied.update(mode="native", overridden={})
        return {}
    before = json.loads(saved) if saved else {k: os.environ.get(k) for k in REFERENCE_ENV}
    os.environ[ENV_SAVED] = json.dumps(before)
    overridden = {}
    for k, v in REFERENCE_ENV.items():
        old = before.get(k)
        if old is not None and old != v:
            overridden[k] = old
        os.environ[k] = v
    torch_loaded = "torch" in sys.modules
    _applied.update(mode="reference", overridden=overridden, torch_loaded_before=torch_loaded)
    if overridden:
        log.info(
            "reference numerics override %s (set %s=native to keep them)",
            ", ".join(f"{k}={v}" for k, v in overridden.items()),
            ENV_MODE,
        )
    return overridden


def check() -> list[str]:
    """Problems with the numerics in force (empty when the reference is fully in force)."""
    if mode() != "reference":
        return []
    import torch

    problems = []
    cap = torch.backends.cpu.get_cpu_capability()
    if cap != "AVX2":
        problems.append(
            f"ATen runs {cap} kernels, not AVX2: torch computed something before adlib was imported, or the "
            "CPU lacks AVX2 (restart the kernel and import adlib first)"
        )
    for k, v in REFERENCE_ENV.items():
        if os.environ.get(k) != v:
            problems.append(f"{k} is {os.environ.get(k)!r}, not {v!r}")
    for name, on in backends().items():
        if on != REFERENCE_BACKENDS[name]:
            problems.append(f"torch.backends.{name} is {'on' if on else 'off'} (call adlib.numerics.pin_backends())")
    return problems


def backends() -> dict[str, bool]:
    """Whether each of :data:`REFERENCE_BACKENDS` is switched on in this process."""
    import torch

    return {"mkldnn": bool(torch.backends.mkldnn.enabled), "nnpack": bool(torch._C._get_nnpack_enabled())}


def pin_backends() -> None:
    """Switch off oneDNN and NNPACK for torch's CPU operations under the reference numerics
    (:data:`REFERENCE_BACKENDS`; native mode changes nothing). Process-wide and cheap: called by
    :func:`configure_torch` and by the lifecycle's device placement (``Method.to``, which every
    ``fit`` and ``predict`` passes through: :mod:`adlib.models.core`), so a model used outside the
    results store gets the same kernels."""
    if mode() != "reference":
        return
    import torch

    if torch.backends.mkldnn.enabled != REFERENCE_BACKENDS["mkldnn"]:
        torch.backends.mkldnn.enabled = REFERENCE_BACKENDS["mkldnn"]
    if torch._C._get_nnpack_enabled() != REFERENCE_BACKENDS["nnpack"]:
        torch.backends.nnpack.set_flags(REFERENCE_BACKENDS["nnpack"])


def configure_torch(device: Any = "cpu") -> int:
    """Threads and deterministic algorithms for one run on ``device`` (reference mode, CPU only).

    Returns the torch thread count in force. Native mode changes nothing."""
    import torch

    if mode() != "reference" or not str(device).startswith("cpu"):
        return torch.get_num_threads()
    if torch.get_num_threads() != REFERENCE_THREADS:
        torch.set_num_threads(REFERENCE_THREADS)
    torch.use_deterministic_algorithms(True, warn_only=True)
    pin_backends()
    for p in check():
        log.warning("reference numerics not fully in force: %s", p)
    return REFERENCE_THREADS


def run_threads(workers: int = 1) -> int:
    """Torch threads of one run of a batch: the reference's one thread, else the cores this process
    may use divided by ``workers``. Those cores are ``cpu_count``, or fewer where ``$OMP_NUM_THREADS``
    says so (notebooks side by side get cores // N: :func:`adlib.results.side_by_side_env`)."""
    if mode() == "reference":
        return REFERENCE_THREADS
    cores = os.cpu_count() or 1
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:
        cores = min(cores, int(omp))
    return max(1, cores // max(1, int(workers)))


def versions() -> dict[str, str]:
    """Installed versions of :data:`NUMERIC_PACKAGES` (``missing`` where not installed)."""
    from importlib import metadata

    out = {}
    for name in NUMERIC_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def describe(device: Any = "cpu") -> dict[str, Any]:
    """The numerics of this process, for a results record: mode, ATen capability in force, the
    pinned variables, threads, deterministic flag, and :func:`versions`."""
    import torch

    env_keys = (*REFERENCE_ENV, "MKL_NUM_THREADS", "OMP_NUM_THREADS")
    return {
        "mode": mode(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {k: os.environ[k] for k in env_keys if k in os.environ},
        "torch_threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "backends": backends(),
        "device": str(device),
        "versions": versions(),
    }


def signature(numerics: dict[str, Any] | None) -> str:
    """A short text that is equal for records made under the same numerics and versions
    (``unrecorded`` for records written before numerics were recorded)."""
    if not numerics:
        return "unrecorded"
    v = numerics.get("versions", {})
    dev = str(numerics.get("device", "cpu"))
    where = "cuda" if dev.startswith("cuda") else "cpu"
    # records written before the back-ends were recorded ran with oneDNN on
    on = [k for k, o in (numerics.get("backends") or {"mkldnn": True}).items() if o]
    kernels = "+".join(sorted(on)) if on else "aten"
    if where == "cuda":
        kernels = "cuda"
    return (
        f"{numerics.get('mode')}/{numerics.get('aten_capability')}/{where}/{numerics.get('torch_threads')}t/{kernels} "
        f"torch {v.get('torch')} numpy {v.get('numpy')}"
    )


__all__ = [
    "ENV_MODE",
    "MODES",
    "NUMERIC_PACKAGES",
    "REFERENCE_BACKENDS",
    "REFERENCE_ENV",
    "REFERENCE_THREADS",
    "apply_env",
    "backends",
    "check",
    "configure_torch",
    "describe",
    "mode",
    "pin_backends",
    "run_threads",
    "signature",
    "versions",
]
