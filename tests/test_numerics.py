"""The reference CPU numerics (adlib.numerics): set before torch loads, inherited by child processes,
overriding the machine's capability underneath, recorded with every result."""

import json
import os
import subprocess
import sys

import pytest

from adlib import numerics

# A small training step through the kernels that decide the numbers (convolution forward and
# backward in ATen + MKL, oneDNN being off; linear layers in MKL, ATen's element-wise and reduction kernels, numpy's
# OpenBLAS); prints a digest of the weights and what was in force.
PROBE = r"""
import hashlib, json, adlib, numpy as np, torch
from adlib import numerics
numerics.configure_torch("cpu")
g = torch.Generator().manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                          torch.nn.Conv2d(16, 32, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                          torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
for p in net.parameters():
    p.data = torch.randn(p.shape, generator=g) * 0.2
opt = torch.optim.Adam(net.parameters(), 1e-2)
x = torch.randn(8, 3, 24, 24, generator=g)
for _ in range(5):
    loss = torch.nn.functional.softplus(net(x)).mean() + torch.logsumexp(net(x * 0.5), 0).sum()
    opt.zero_grad(); loss.backward(); opt.step()
w = torch.cat([p.detach().flatten() for p in net.parameters()]).numpy().astype(np.float64)
m = np.random.default_rng(0).standard_normal((64, 64))
blob = w.tobytes() + (m @ m.T).tobytes() + np.exp(np.linspace(-5, 5, 257)).tobytes()
d = numerics.describe("cpu")
print(json.dumps({"digest": hashlib.sha256(blob).hexdigest()[:16], "cap": d["aten_capability"], "mode": d["mode"],
                  "threads": d["torch_threads"], "env": d["env"]}))
"""


def _probe(**env):
    full = {
        k: v
        for k, v in os.environ.items()
        if k not in numerics.REFERENCE_ENV and k not in (numerics.ENV_MODE, numerics.ENV_SAVED)
    }
    full.update(env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=full, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_reference_numerics_are_in_force_in_this_process():
    # tests/conftest.py imports adlib before torch: the caps took effect
    assert numerics.mode() == "reference"
    assert numerics.check() == []
    import torch

    assert torch.backends.cpu.get_cpu_capability() == "AVX2"


def test_reference_overrides_the_capability_underneath_and_gives_identical_numbers():
    """The machine's own capability switched underneath (as another CPU would have it) changes
    nothing under the reference numerics: the same digest, AVX2 kernels, one thread."""
    runs = [
        _probe(),
        _probe(ATEN_CPU_CAPABILITY="avx512", ONEDNN_MAX_CPU_ISA="AVX512_CORE_AMX", MKL_CBWR="AUTO"),
        _probe(
            ATEN_CPU_CAPABILITY="default", ONEDNN_MAX_CPU_ISA="SSE41", OPENBLAS_CORETYPE="Prescott", OMP_NUM_THREADS="2"
        ),
    ]
    assert {r["digest"] for r in runs} == {runs[0]["digest"]}
    assert all(r["cap"] == "AVX2" and r["mode"] == "reference" and r["threads"] == 1 for r in runs)
    assert all(r["env"]["MKL_CBWR"] == "COMPATIBLE,STRICT" for r in runs)


def test_native_mode_leaves_the_machine_alone():
    r = _probe(ADLIB_NUMERICS="native", ATEN_CPU_CAPABILITY="default")
    assert r["mode"] == "native" and r["cap"] == "DEFAULT" and "MKL_CBWR" not in r["env"]


def test_bad_mode_is_named():
    bad = subprocess.run(
        [sys.executable, "-c", "import adlib"],
        env={**os.environ, "ADLIB_NUMERICS": "fast"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "ADLIB_NUMERICS='fast'" in bad.stderr


def test_signature_separates_modes_and_versions():
    d = {
        "mode": "reference",
        "aten_capability": "AVX2",
        "torch_threads": 1,
        "device": "cpu",
        "versions": {"torch": "2.14.1", "numpy": "2.4.6"},
    }
    assert numerics.signature(d) == numerics.signature(dict(d))
    assert numerics.signature(d) != numerics.signature({**d, "mode": "native", "aten_capability": "AVX512"})
    assert numerics.signature(d) != numerics.signature({**d, "versions": {"torch": "2.14.1", "numpy": "2.5.0"}})
    assert numerics.signature(None) == "unrecorded"
    # oneDNN off (this reference) and on (records of before: no "backends" key) are different numerics
    aten = {**d, "backends": {"mkldnn": False, "nnpack": False}}
    assert "/aten " in numerics.signature(aten)
    assert numerics.signature(aten) != numerics.signature(d) == numerics.signature({**d, "backends": {"mkldnn": True}})


@pytest.mark.parametrize("workers", [1, 2, 8])
def test_run_threads_do_not_depend_on_the_machine(workers):
    assert numerics.run_threads(workers) == numerics.REFERENCE_THREADS


def test_native_run_threads_share_the_cores_the_process_was_given(monkeypatch):
    """Native numerics: cores // workers, the cores capped by $OMP_NUM_THREADS (two notebooks side
    by side on two cores: one thread each, not two)."""
    monkeypatch.setenv("ADLIB_NUMERICS", "native")
    monkeypatch.setattr(numerics.os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [numerics.run_threads(w) for w in (1, 2, 16)] == [8, 4, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert [numerics.run_threads(w) for w in (1, 2, 8)] == [4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert numerics.run_threads(1) == 8


def test_a_native_child_of_a_reference_process_gets_the_machine_back():
    """A reference process (this one) wrote its pins into os.environ; a child asking for native
    numerics must not inherit them (the two settings of a comparison would be the same)."""
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2"  # pinned here, by tests/conftest.py
    code = (
        "import os, adlib, torch; print(torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR'), "
        "os.environ.get('ADLIB_NUMERICS_SAVED'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "ADLIB_NUMERICS": "native"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    import torch

    machine = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env={k: v for k, v in os.environ.items() if k not in numerics.REFERENCE_ENV},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == [machine, "None", "None"]
    assert torch.backends.cpu.get_cpu_capability() == "AVX2"


def _conv_ops() -> set[str]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3)
    x = torch.randn(16, 3, 12, 12, generator=g, requires_grad=True)  # batch 16: where NNPACK would take over
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        conv(x).square().sum().backward()
    return {e.key for e in prof.key_averages()}


def test_reference_convolutions_run_without_onednn_or_nnpack():
    """oneDNN and NNPACK block by the cache sizes they detect (different on Intel and AMD): under
    the reference numerics a model put on the CPU (``Method.to``, which every fit and predict
    passes through) runs ATen's own convolutions, forward and backward, and the record says which
    back-ends were on."""
    import torch

    from adlib.models import build

    model = build("patchcore", "smoke")

    before = torch.backends.mkldnn.enabled, torch._C._get_nnpack_enabled()
    try:
        torch.backends.mkldnn.enabled = True
        torch.backends.nnpack.set_flags(True)
        assert any("mkldnn" in n for n in _conv_ops())  # the probe sees oneDNN where it runs
        assert any("mkldnn" in p for p in numerics.check())
        assert model.to("cpu").device.type == "cpu"
        ops = _conv_ops()
        assert not any("mkldnn" in n or "nnpack" in n for n in ops), ops
        assert any("slow_conv2d" in n for n in ops)
        assert numerics.backends() == numerics.REFERENCE_BACKENDS == {"mkldnn": False, "nnpack": False}
        assert numerics.describe("cpu")["backends"] == numerics.REFERENCE_BACKENDS
        assert numerics.check() == []
    finally:
        torch.backends.mkldnn.enabled = before[0]
        torch.backends.nnpack.set_flags(before[1])
        numerics.pin_backends()


def test_native_numerics_leave_the_back_ends_alone(monkeypatch):
    import torch

    monkeypatch.setenv("ADLIB_NUMERICS", "native")
    before = torch.backends.mkldnn.enabled
    try:
        torch.backends.mkldnn.enabled = True
        numerics.pin_backends()
        assert torch.backends.mkldnn.enabled
    finally:
        torch.backends.mkldnn.enabled = before
