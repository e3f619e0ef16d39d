"""Side by side: adlib against its peers (anomalib's PatchCore and GLASS, the GLASS authors' code).

Every measurement runs in a fresh subprocess (one per peer and repeat, peers interleaved: A, B, C,
A, B, C, ...), on the same random batches (drawn from one seed in each process), at the same torch
thread count and under the same numerics environment; each process times its batches after one
discarded warm-up batch and reports medians; the parent prints the median over repeats per peer and
the ratios to adlib (absolute times on a shared machine are noisy, ratios much less). Weights are
random (the speed does not depend on them): WideResNet-50 ``layer2`` + ``layer3``.

What is timed (images per second; the fit in seconds)

PatchCore (``--size`` px images fed as they are, no resize; batch ``--batch-size``)
    - fit: patch features of ``--fit-images`` images and the 10 % greedy coreset (adlib
      ``PatchCore.fit``; anomalib ``PatchcoreModel`` in train mode over the batches, then
      ``subsample_embedding(0.1)``);
    - scoring: image scores and the patch-score grid (adlib ``PatchCore.score``; anomalib the
      steps of ``PatchcoreModel.forward`` before its anomaly map: backbone, 3 x 3 pooling,
      embedding, nearest neighbours, ``compute_anomaly_score``);
    - end to end: plus the up-sampled, sigma-4 smoothed map (adlib ``score`` +
      ``anomaly_maps``; anomalib ``PatchcoreModel.forward`` in eval mode).
    adlib runs five times: its default path (``adlib``), its fused patch features with the
    default float32 search (``adlib-fused``: the shared fast path ``fast=("features",)``, all float32), with the
    ``--fast-nn`` search (``adlib-fast``; default ``bf16``: bf16 candidates, exact re-ranking), plus the
    float32 backbone channels-last and compiled (``adlib-fast-cl-compile``: the fastest inside the 0.1-point
    rule), and with the
    backbone in bf16 + channels-last too (``adlib-fastest``: outside the 0.1-point goal for PatchCore on the
    built-in benchmark, see ``tests/test_fastpath.py``). GLASS: fp32, ``fast=features``,
    ``fast=bf16,channels_last,features,smoothing`` (``adlib-fast``) and that plus ``bf16_heads``
    (``adlib-fastest``: the adaptor and discriminator in bf16, each image's top positions rescored
    in fp32). The peers do not
    compute the same features: anomalib's PatchCore describes a position by the 3 x 3 average of
    each layer (1536-D), adlib by the released two-stage reduction to 1024-D (the paper's setting).

GLASS (``--glass``; 288 px, batch ``--batch-size``)
    - forward: backbone + patch features + adaptor + discriminator, image score = max of the grid
      (adlib ``GLASS.score_grid``; the authors' ``GLASS._predict`` steps before their map
      post-processing; anomalib ``GlassModel`` in eval mode).

GLASS training (``--glass-train``; GLASS-m at 288 px, batch ``--batch-size``, the paper's 20 ascent steps)
    - one training step per batch: adlib ``GLASS.train_step`` as ``fit`` runs it (normal and LAS
      features, GAS, the three losses, the updates) on fp32, ``features``, ``features`` with the normal
      images' features cached once per fit (``cache_features``), ``bf16,channels_last,features`` cached
      and ``+ bf16_ascent``; the authors' ``GLASS._train_discriminator`` on the same batches (their
      logger a no-op). LAS synthesis and data loading are left out on both sides.

Peers are optional; one that cannot be imported is skipped with a line saying how to install it:

- anomalib (2.7.0 was used for RESULTS.md), in a separate virtual environment that reuses this
  project's torch (do not let pip replace torch, torchvision or numpy)::

      .venv/bin/python -m venv /work/peers-venv --system-site-packages
      .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \\
          > /work/peers-venv/lib/python3.11/site-packages/adlib-main-venv.pth
      printf 'torch==2.14.1\\ntorchvision==0.29.1\\nnumpy==2.4.6\\n' > /tmp/pins.txt
      /work/peers-venv/bin/pip install -c /tmp/pins.txt anomalib==2.7.0

  and ``--peers-python /work/peers-venv/bin/python`` (the default when that file exists);
- the GLASS authors' code (https://github.com/cqylunlun/GLASS), a checkout anywhere:
  ``--glass-repo PATH`` (default ``/work/peers/GLASS`` when present). Nothing of it is copied
  into adlib; it is imported from its checkout by the worker process only.

Numerics (``--numerics``): ``native`` (default: every peer with the machine's own kernels --
AVX-512, AMX -- which is how anomalib and the authors' code run) or ``reference`` (every peer,
anomalib included, under adlib's pinned environment, :data:`adlib.numerics.REFERENCE_ENV`: AVX2
kernels, MKL's compatible branch). ``--avx2-only``: native, as on a CPU without AVX-512 and bf16 units
(ATen's AVX2 kernels, oneDNN capped at AVX2: bf16 is emulated there). The thread count ``--threads`` is set
in every process.

    .venv/bin/python benchmarks/bench_peers.py --quick               # about 3 minutes on 2 cores
    .venv/bin/python benchmarks/bench_peers.py --repeats 3 --glass   # the full comparison
    .venv/bin/python benchmarks/bench_peers.py --numerics reference
    .venv/bin/python benchmarks/bench_peers.py --no-patchcore --glass --avx2-only   # a CPU without bf16 units
    .venv/bin/python benchmarks/bench_peers.py --no-patchcore --glass-train   # about 15 minutes

Results are recorded in benchmarks/RESULTS.md (issue 22 sections).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
#: the environment adlib pins under its reference numerics (adlib/numerics.py REFERENCE_ENV); read
#: from the module's source without importing adlib (importing it would pin this process)
PINNED_KEYS = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_CBWR",
    "OPENBLAS_CORETYPE",
    "NPY_DISABLE_CPU_FEATURES",
)
PEERS_VENV_PYTHON = Path("/work/peers-venv/bin/python")
GLASS_REPO_DEFAULT = Path("/work/peers/GLASS")
INSTALL_HINT = {
    "anomalib": "install anomalib 2.x in a separate venv (see this script's docstring) and pass --peers-python",
    "authors-glass": "check out https://github.com/cqylunlun/GLASS and pass --glass-repo PATH",
}


# ------------------------------------------------------------------------------------------------
# worker side (runs in a fresh process per measurement)


def _batches(n: int, batch_size: int, size: int, seed: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch_size, 3, size, size, generator=g) for _ in range(n)]


def _time_batches(fn, batches) -> float:
    """Median seconds per batch of ``fn`` over ``batches[1:]`` (``batches[0]`` is the warm-up)."""
    fn(batches[0])
    ts = []
    for x in batches[1:]:
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _worker_patchcore_adlib(a, options: dict) -> dict:
    import torch

    from adlib.data.base import Sample
    from adlib.models import build
    from adlib.models.patchcore import anomaly_maps

    class Images(torch.utils.data.Dataset):
        def __init__(self, images):
            self.images = images

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return Sample(self.images[i], torch.zeros(1, a.size, a.size), 0, "good", f"<random {i}>")

    torch.manual_seed(0)
    m = build("patchcore", "paper", pretrained=False, device="cpu", batch_size=a.batch_size, **options)
    train = torch.cat(_batches(a.fit_images // a.batch_size, a.batch_size, a.size, 1))
    t = time.perf_counter()
    m.fit(Images(train), progress=False)
    fit_s = time.perf_counter() - t
    test = _batches(a.batches + 1, a.batch_size, a.size, 2)
    score = _time_batches(lambda x: m.score(x), test)
    e2e = _time_batches(
        lambda x: anomaly_maps(m.score(x)[1], (a.size, a.size), m.cfg.smooth_sigma, m.speed.smoothing), test
    )
    return {
        "fit_s": fit_s,
        "score_s": score,
        "e2e_s": e2e,
        "bank": list(m.memory_bank.shape),
        "path": m.scoring_path(),
    }


def _worker_patchcore_anomalib(a) -> dict:
    import torch
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    torch.manual_seed(0)
    m = PatchcoreModel(layers=["layer2", "layer3"], backbone="wide_resnet50_2", pre_trained=False, num_neighbors=9)
    train = _batches(a.fit_images // a.batch_size, a.batch_size, a.size, 1)
    t = time.perf_counter()
    m.train()
    with torch.no_grad():
        for x in train:
            m(x)
    m.subsample_embedding(0.1)
    fit_s = time.perf_counter() - t
    m.eval()

    @torch.no_grad()
    def score(x):  # PatchcoreModel.forward's steps before its anomaly map
        feats = m.feature_extractor(x)
        feats = {k: m.feature_pooler(v) for k, v in feats.items()}
        emb = m.generate_embedding(feats)
        b = emb.shape[0]
        emb = m.reshape_embedding(emb)
        ps, loc = m.nearest_neighbors(embedding=emb, n_neighbors=1)
        return m.compute_anomaly_score(ps.reshape(b, -1), loc.reshape(b, -1), emb), ps

    @torch.no_grad()
    def e2e(x):
        return m(x)

    test = _batches(a.batches + 1, a.batch_size, a.size, 2)
    import anomalib

    return {
        "fit_s": fit_s,
        "score_s": _time_batches(score, test),
        "e2e_s": _time_batches(e2e, test),
        "bank": list(m.memory_bank.shape),
        "path": f"anomalib {anomalib.__version__} PatchcoreModel",
    }


def _worker_glass_adlib(a, fast=()) -> dict:
    import torch

    from adlib.models import build
    from adlib.models.glass import image_score, smooth_map

    torch.manual_seed(0)
    m = build("glass", "paper", variant="m", pretrained=False, fast=fast)
    m.to(torch.device("cpu"))
    m.eval()

    def fwd(x):
        return image_score(m.score_grid(x))

    def e2e(x):
        grid = m.score_grid(x)
        return image_score(grid), smooth_map(grid, (a.glass_size, a.glass_size), m.cfg.smooth_sigma, m.speed.smoothing)

    test = _batches(a.batches + 1, a.batch_size, a.glass_size, 3)
    path = "adlib GLASS" + (f" fast={'+'.join(fast)}" if fast else "")
    return {"forward_s": _time_batches(fwd, test), "e2e_s": _time_batches(e2e, test), "path": path}


def _authors_glass(a):
    """The authors' GLASS (their ``glass.GLASS`` from their checkout, their defaults) on a random-init
    torchvision WideResNet-50, layer2 + layer3, 1536-D, at ``--glass-size``."""
    import types

    import torch
    import torchvision

    try:
        import torch.utils.tensorboard  # noqa: F401 - their glass.py imports it for training logs
    except ImportError:  # not needed for inference: a stand-in module, so that their code imports
        stub = types.ModuleType("torch.utils.tensorboard")
        stub.SummaryWriter = object
        sys.modules["torch.utils.tensorboard"] = stub
    sys.path.insert(0, str(a.glass_repo))
    import glass as glass_module  # the authors' module, from their checkout

    torch.manual_seed(0)
    dev = torch.device("cpu")
    model = glass_module.GLASS(dev)
    model.load(
        backbone=torchvision.models.wide_resnet50_2(weights=None),  # their backbones.load, without the download
        layers_to_extract_from=["layer2", "layer3"],
        device=dev,
        input_shape=(3, a.glass_size, a.glass_size),
        pretrain_embed_dimension=1536,
        target_embed_dimension=1536,
        patchsize=3,
    )
    return model


def _worker_glass_authors(a) -> dict:
    import torch

    model = _authors_glass(a)

    @torch.no_grad()
    def fwd(x):  # the steps of their GLASS._predict before its map post-processing
        model.forward_modules.eval()
        model.pre_projection.eval()
        model.discriminator.eval()
        feats, _ = model._embed(x, provide_patch_shapes=True, evaluation=True)
        feats = model.pre_projection(feats)
        scores = model.discriminator(feats)
        return scores.reshape(x.shape[0], -1).max(dim=1).values

    test = _batches(a.batches + 1, a.batch_size, a.glass_size, 3)
    return {
        "forward_s": _time_batches(fwd, test),
        "e2e_s": _time_batches(model._predict, test),
        "path": f"authors' GLASS ({a.glass_repo})",
    }


def _train_batches(a):
    """The training batches: normal images, their LAS images and the LAS grid labels (about 10 %
    anomalous positions), drawn from fixed seeds (the same in every process)."""
    import torch

    n = a.batches + 1
    images = _batches(n, a.batch_size, a.glass_size, 3)
    augs = _batches(n, a.batch_size, a.glass_size, 4)
    return images, augs, torch.Generator().manual_seed(5)


def _worker_glass_train_adlib(a, fast=(), cached=False) -> dict:
    """One GLASS-m training step per batch (adlib ``GLASS.train_step``: the normal images' patch
    features, the LAS images' features, GAS, the three losses, the update), as ``fit`` runs it.
    ``cached``: the normal images' features computed once before the timed batches (the config's
    ``cache_features``: once per fit, not per epoch; that once is reported as ``cache_s``)."""
    import torch

    from adlib.models import build

    torch.manual_seed(0)
    m = build("glass", "paper", variant="m", pretrained=False, fast=fast)
    m.to(torch.device("cpu"))
    images, augs, g = _train_batches(a)
    h, w = m.grid_size((a.glass_size, a.glass_size))
    labels = [(torch.rand(a.batch_size, h, w, generator=g) < 0.1).float() for _ in images]
    t = time.perf_counter()
    cache = [m.patch_features(x) for x in images] if cached else None
    cache_s = (time.perf_counter() - t) / len(images)
    if m.cfg.radii_unit == "feature_spread":
        m.measure_feature_spread(feats=cache[0] if cached else m.patch_features(images[0]))
    m.train()
    ts = []
    for i in range(len(images)):
        t = time.perf_counter()
        feats = cache[i] if cached else m.patch_features(images[i])
        m.train_step(feats, augs[i], labels[i])
        ts.append(time.perf_counter() - t)
    path = "adlib GLASS-m train_step" + (f" fast={'+'.join(fast)}" if fast else "") + (" cached" if cached else "")
    out = {"train_s": statistics.median(ts[1:]), "path": path}
    if cached:
        out["cache_s"] = cache_s
    return out


def _worker_glass_train_authors(a) -> dict:
    """One step of the authors' ``GLASS._train_discriminator`` per batch (their manifold variant,
    ``svd=0``, their defaults: 20 ascent steps, pre-projection, focal loss), fed the same batches as
    a list of their data items; their tensorboard logger and progress bar replaced by no-ops."""
    import types

    import torch

    model = _authors_glass(a)
    images, augs, g = _train_batches(a)
    n_pos = (a.glass_size // 8) * (a.glass_size // 8)
    items = [
        {"image": x, "aug": y, "mask_s": (torch.rand(a.batch_size, n_pos, generator=g) < 0.1).float()}
        for x, y in zip(images, augs, strict=True)
    ]
    model.c = torch.zeros(n_pos, 1536)  # their per-position centre (computed by their trainer)
    model.svd = 0
    model.logger = types.SimpleNamespace(logger=types.SimpleNamespace(add_scalar=lambda *a, **k: None), g_iter=0)
    model.logger.step = lambda: None
    bar = types.SimpleNamespace(set_description_str=lambda s: None)
    ts = []
    for item in items:
        t = time.perf_counter()
        model._train_discriminator([item], 0, bar, "")
        ts.append(time.perf_counter() - t)
    return {"train_s": statistics.median(ts[1:]), "path": f"authors' GLASS _train_discriminator ({a.glass_repo})"}


def _worker_glass_anomalib(a) -> dict:
    import torch
    from anomalib.models.image.glass.torch_model import GlassModel

    torch.manual_seed(0)
    m = GlassModel(
        input_shape=(a.glass_size, a.glass_size),
        backbone="wide_resnet50_2",
        pre_trained=False,
        layers=["layer2", "layer3"],
    )
    m.eval()

    @torch.no_grad()
    def e2e(x):
        return m(x)

    test = _batches(a.batches + 1, a.batch_size, a.glass_size, 3)
    import anomalib

    return {"e2e_s": _time_batches(e2e, test), "path": f"anomalib {anomalib.__version__} GlassModel.forward"}


WORKERS = {
    "patchcore/adlib": lambda a: _worker_patchcore_adlib(a, {}),
    "patchcore/adlib-fused": lambda a: _worker_patchcore_adlib(a, dict(fast=("features",))),
    "patchcore/adlib-fast": lambda a: _worker_patchcore_adlib(a, dict(fast=("features",), nn_backend=a.fast_nn)),
    "patchcore/anomalib": _worker_patchcore_anomalib,
    "patchcore/adlib-fast-cl": lambda a: _worker_patchcore_adlib(
        a, dict(fast=("channels_last", "features"), nn_backend=a.fast_nn)
    ),
    "patchcore/adlib-fast-cl-compile": lambda a: _worker_patchcore_adlib(
        a, dict(fast=("channels_last", "features", "compile"), nn_backend=a.fast_nn)
    ),
    "patchcore/adlib-fastest": lambda a: _worker_patchcore_adlib(
        a, dict(fast=("bf16", "channels_last", "features", "smoothing"), nn_backend=a.fast_nn)
    ),
    "glass/adlib": _worker_glass_adlib,
    "glass/adlib-features": lambda a: _worker_glass_adlib(a, ("features",)),
    "glass/adlib-fast": lambda a: _worker_glass_adlib(a, ("bf16", "channels_last", "features", "smoothing")),
    "glass/adlib-fastest": lambda a: _worker_glass_adlib(
        a, ("bf16", "channels_last", "features", "smoothing", "bf16_heads")
    ),
    "glass/authors": _worker_glass_authors,
    "glass/anomalib": _worker_glass_anomalib,
    "glass-train/adlib": _worker_glass_train_adlib,
    "glass-train/adlib-features": lambda a: _worker_glass_train_adlib(a, ("features",)),
    "glass-train/adlib-features-cached": lambda a: _worker_glass_train_adlib(a, ("features",), cached=True),
    "glass-train/adlib-fast-cached": lambda a: _worker_glass_train_adlib(
        a, ("bf16", "channels_last", "features"), cached=True
    ),
    "glass-train/adlib-fastest-cached": lambda a: _worker_glass_train_adlib(
        a, ("bf16", "channels_last", "features", "bf16_ascent"), cached=True
    ),
    "glass-train/authors": _worker_glass_train_authors,
}


def worker(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    out = WORKERS[a.worker](a)
    out["threads"] = torch.get_num_threads()
    out["env"] = {k: os.environ.get(k) for k in PINNED_KEYS if os.environ.get(k)}
    print("RESULT " + json.dumps(out))


# ------------------------------------------------------------------------------------------------
# parent side


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    units = [f for f in flags if f.startswith("amx") or f in ("avx512f", "avx512_bf16", "avx2")]
    return f"{name} ({', '.join(units) or 'no avx2'})"


def _child_env(numerics: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in (*PINNED_KEYS, "ADLIB_NUMERICS_SAVED"):
        env.pop(k, None)
    env["ADLIB_NUMERICS"] = numerics
    if numerics == "reference":
        env.update(
            ATEN_CPU_CAPABILITY="avx2",
            ONEDNN_MAX_CPU_ISA="AVX2",
            MKL_CBWR="COMPATIBLE,STRICT",
            OPENBLAS_CORETYPE="Haswell",
            NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR",
        )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _available(python: str, module: str, env) -> bool:
    r = subprocess.run([python, "-c", f"import {module}"], capture_output=True, env=env)
    return r.returncode == 0


def _run(python: str, name: str, a, env) -> dict | None:
    cmd = [python, str(HERE), "--worker", name, *a.worker_args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if r.returncode != 0 or line is None:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        print(f"  {name}: failed ({' | '.join(tail)})", flush=True)
        return None
    return json.loads(line[len("RESULT ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="224 px, 16 fit images, 2 timed batches, 1 repeat (~3 min)")
    ap.add_argument("--size", type=int, default=288, help="PatchCore input side (288: the issue's setting)")
    ap.add_argument("--glass-size", type=int, default=288)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4, help="timed batches per process (after one warm-up)")
    ap.add_argument("--fit-images", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2, help="fresh processes per peer, interleaved")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--numerics", choices=("native", "reference"), default="native")
    ap.add_argument(
        "--avx2-only",
        action="store_true",
        help="native numerics as on a CPU without AVX-512 and bf16 units: ATen's AVX2 kernels, oneDNN capped at AVX2",
    )
    ap.add_argument("--fast-nn", choices=("torch", "faiss", "bf16"), default="bf16", help="adlib-fast's nn_backend")
    ap.add_argument("--glass", action="store_true", help="also compare GLASS's forward")
    ap.add_argument(
        "--glass-train",
        action="store_true",
        help="also compare GLASS-m's training step (the work of an epoch per batch)",
    )
    ap.add_argument("--no-patchcore", action="store_true")
    ap.add_argument("--peers-python", help="python of the venv with anomalib (default /work/peers-venv/bin/python)")
    ap.add_argument("--glass-repo", type=Path, help="checkout of the GLASS authors' code (default /work/peers/GLASS)")
    ap.add_argument(
        "--only",
        help="comma-separated peers to run (e.g. patchcore/adlib-fast-cl-compile,patchcore/anomalib); default: all",
    )
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.size, a.glass_size, a.fit_images, a.batches, a.repeats = 224, 224, 16, 2, 1
    if a.glass_repo is None and GLASS_REPO_DEFAULT.is_dir():
        a.glass_repo = GLASS_REPO_DEFAULT
    if a.worker:
        worker(a)
        return

    a.worker_args = [
        f"--size={a.size}",
        f"--glass-size={a.glass_size}",
        f"--batch-size={a.batch_size}",
        f"--batches={a.batches}",
        f"--fit-images={a.fit_images}",
        f"--threads={a.threads}",
        f"--fast-nn={a.fast_nn}",
        *([f"--glass-repo={a.glass_repo}"] if a.glass_repo else []),
    ]
    env = _child_env(a.numerics)
    if a.avx2_only:
        if a.numerics != "native":
            ap.error("--avx2-only goes with --numerics native (the reference numerics are AVX2 already)")
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    me = sys.executable
    peers_py = a.peers_python or (str(PEERS_VENV_PYTHON) if PEERS_VENV_PYTHON.exists() else me)
    has_anomalib = _available(peers_py, "anomalib", env)
    jobs: list[tuple[str, str]] = []
    if not a.no_patchcore:
        jobs += [(me, f"patchcore/adlib{s}") for s in ("", "-fused", "-fast", "-fast-cl-compile", "-fastest")]
        if has_anomalib:
            jobs.append((peers_py, "patchcore/anomalib"))
    if a.glass:
        jobs += [(me, f"glass/adlib{s}") for s in ("", "-features", "-fast", "-fastest")]
        if a.glass_repo and (Path(a.glass_repo) / "glass.py").is_file():
            jobs.append((peers_py if has_anomalib else me, "glass/authors"))
        else:
            print(f"skipped authors' GLASS: no checkout ({INSTALL_HINT['authors-glass']})")
        if has_anomalib:
            jobs.append((peers_py, "glass/anomalib"))
    if a.glass_train:
        jobs += [
            (me, f"glass-train/adlib{s}")
            for s in ("", "-features", "-features-cached", "-fast-cached", "-fastest-cached")
        ]
        if a.glass_repo and (Path(a.glass_repo) / "glass.py").is_file():
            jobs.append((peers_py if has_anomalib else me, "glass-train/authors"))
        else:
            print(f"skipped authors' GLASS training: no checkout ({INSTALL_HINT['authors-glass']})")
    if not has_anomalib:
        print(f"skipped anomalib: `import anomalib` fails with {peers_py} ({INSTALL_HINT['anomalib']})")
    if a.only:
        wanted = {n.strip() for n in a.only.split(",") if n.strip()}
        unknown = sorted(wanted - set(WORKERS))
        if unknown:
            ap.error(f"--only: unknown peer(s) {', '.join(unknown)}; known: {', '.join(sorted(WORKERS))}")
        jobs = [(py, n) for py, n in jobs if n in wanted]

    print(
        f"machine: {_cpu_model()}, {os.cpu_count()} CPUs; threads {a.threads}; numerics {a.numerics}"
        f"{' (AVX2 only: ATen avx2, oneDNN capped at AVX2)' if a.avx2_only else ''}; "
        f"PatchCore {a.size} px, fit {a.fit_images} images, coreset 10 %; batch {a.batch_size}; "
        f"{a.batches} timed batches after 1 warm-up per process; {a.repeats} repeat(s), interleaved; fp32 (adlib-fast: {a.fast_nn} search); "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        flush=True,
    )
    results: dict[str, list[dict]] = {name: [] for _, name in jobs}
    for rep in range(a.repeats):
        for python, name in jobs:
            r = _run(python, name, a, env)
            if r is not None:
                results[name].append(r)
                shown = {k: round(v, 3) for k, v in r.items() if k.endswith("_s")}
                print(f"  repeat {rep + 1} {name}: {shown} {r.get('path', '')}", flush=True)

    def med(name, key):
        vals = [r[key] for r in results.get(name, []) if key in r]
        return statistics.median(vals) if vals else None

    rows = []
    for name in results:
        if name.startswith("patchcore/"):
            fit, sc, e2e = med(name, "fit_s"), med(name, "score_s"), med(name, "e2e_s")
            if sc is None:
                continue
            bank = results[name][0].get("bank")
            rows.append((name, fit, a.batch_size / sc, a.batch_size / e2e, bank))
    if rows:
        print("\nPatchCore (medians): fit s | scoring img/s | end to end img/s | bank")
        for name, fit, sc, e2e, bank in rows:
            print(f"  {name:24s} {fit:8.1f} | {sc:6.2f} | {e2e:6.2f} | {bank}")
        ref = {n: (f, s, e) for n, f, s, e, _ in rows}
        if "patchcore/anomalib" in ref:
            fa, sa, ea = ref["patchcore/anomalib"]
            for n in (
                "patchcore/adlib",
                "patchcore/adlib-fused",
                "patchcore/adlib-fast",
                "patchcore/adlib-fast-cl-compile",
                "patchcore/adlib-fastest",
            ):
                if n in ref:
                    f, s, e = ref[n]
                    print(
                        f"  {n} / anomalib: fit {fa / f:.2f}x faster, scoring {s / sa:.2f}x, end to end {e / ea:.2f}x"
                    )
        for n in (
            "patchcore/adlib-fused",
            "patchcore/adlib-fast",
            "patchcore/adlib-fast-cl-compile",
            "patchcore/adlib-fastest",
        ):
            if "patchcore/adlib" in ref and n in ref:
                print(f"  {n} / adlib scoring: {ref[n][1] / ref['patchcore/adlib'][1]:.2f}x")
    glass = [n for n in results if n.startswith("glass/")]
    if glass:
        print("\nGLASS (medians), img/s: forward (backbone + features + adaptor + discriminator) | end to end (+ map)")
        base = {k: med("glass/adlib", k) for k in ("forward_s", "e2e_s")}
        for n in glass:
            cells = []
            for k in ("forward_s", "e2e_s"):
                t = med(n, k)
                ratio = f" (time / adlib fp32 time: {t / base[k]:.2f}x)" if t and base[k] and n != "glass/adlib" else ""
                cells.append(f"{a.batch_size / t:6.2f}{ratio}" if t else "     -")
            print(f"  {n:24s} {' | '.join(cells)}")
        for mine in ("glass/adlib-fast", "glass/adlib-fastest"):
            fast = {k: med(mine, k) for k in ("forward_s", "e2e_s")}
            for n in ("glass/authors", "glass/anomalib"):
                if n in results and fast["e2e_s"]:
                    t_f, t_e = med(n, "forward_s"), med(n, "e2e_s")
                    fwd = f"forward {t_f / fast['forward_s']:.2f}x, " if t_f and fast["forward_s"] else ""
                    e2e = f"end to end {t_e / fast['e2e_s']:.2f}x" if t_e else ""
                    print(f"  {mine} / {n.split('/')[1]}: {fwd}{e2e}")

    train = [n for n in results if n.startswith("glass-train/") and med(n, "train_s")]
    if train:
        print(
            f"\nGLASS-m training (medians), seconds per batch of {a.batch_size} "
            f"(an epoch of N images: N / {a.batch_size} of these, data loading not included)"
        )
        t_auth = med("glass-train/authors", "train_s")
        for n in train:
            t = med(n, "train_s")
            ratio = f"  (authors' time / this: {t_auth / t:.2f}x)" if t_auth and n != "glass-train/authors" else ""
            cache = med(n, "cache_s")
            once = f"  + {cache:.2f} s per batch once per fit (the cache)" if cache else ""
            print(f"  {n:34s} {t:7.2f}{ratio}{once}")


if __name__ == "__main__":
    main()
