"""Golden fixture for FCDD's confetti noise from the released code (github.com/liznerski/fcdd).

Usage::

    python tools/golden/make_fcdd.py --reference /tmp/ref-fcdd --out tests/golden/

Imports, unmodified, from ``<checkout>/python``: ``fcdd.datasets.noise_modes.generate_noise``
(mode ``"confetti"``: two ``confetti_noise`` layers, summed, ``smooth_noise(.., 25, 5, 1.0)``),
``fcdd.datasets.noise.confetti_noise`` and ``OnlineSupervisor.__malformed_normal`` (adding the
noise to an image with the inversion rule; called as ``malformed_normal_gt``, ``use_gt=True``,
one image at a time as the supervisor does). Writes ``<out>/fcdd_confetti.npz`` / ``.json``.

Stored (fixed batch 4 x 3 x 64 x 64, ``torch.manual_seed`` / ``np.random.seed`` in the JSON):
    - ``noise``: the released ``generate_noise("confetti", ...)`` output (int, blurred);
    - ``pre_blur``: its input to kornia's ``gaussian_blur2d`` (recorded by a wrapper around the
      name in ``fcdd.datasets.noise`` that returns the same tensor) and ``blur_float`` / the
      ``near_int`` flags (blurred values within 1e-3 of an integer, where the truncation to int
      is decided by round-off);
    - the blob parameters FCDD drew for each layer (centre, side, rotation, colour) read from the
      function's locals at return (a ``sys.setprofile`` hook; rotations from a wrapper around
      ``numpy.random.uniform``), and each layer as the released function returns it;
    - images (dark, grey, bright, random) and the released ``__malformed_normal`` results.

Shims: ``kornia`` (pinned 0.5.3 in FCDD's requirements) is imported from ``--deps`` (a
``pip install --target`` folder) when given; ``np.infty`` (removed in NumPy 2, used as a default
argument by FCDD's outlier-exposure modules, which noise_modes imports) is aliased to ``np.inf``;
while the released noise runs, a 2-D integer numpy array used as a tensor index is read as a tuple
of index arrays, as torch <= 1.9 (FCDD pins 1.9.1) did and ``confetti_noise`` relies on (torch 2
reads it as one index into dimension 0 and fails).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SEED = 20250718
SHAPE = (4, 3, 64, 64)
LAYER_SHAPE = (8, 3, 160, 160)  # larger images for the blob-rendering comparison (fewer border blobs)
LAYER_SEED = 11


def _deps_arg() -> Path | None:
    if "--deps" in sys.argv:
        i = sys.argv.index("--deps")
        path = Path(sys.argv[i + 1])
        del sys.argv[i : i + 2]
        return path
    return None


class _Locals:
    """Capture the locals of every return from a function named ``name`` (sys.setprofile)."""

    def __init__(self, name: str):
        self.name, self.frames = name, []

    def __enter__(self):
        def prof(frame, event, arg):
            if event == "return" and frame.f_code.co_name == self.name:
                self.frames.append(dict(frame.f_locals))

        sys.setprofile(prof)
        return self

    def __exit__(self, *exc):
        sys.setprofile(None)


class _LegacyNumpyIndex:
    """Torch <= 1.9 read a 2-D integer numpy array used as an index as a tuple of index arrays, one
    per dimension (``res[idx.transpose(0, 1).numpy()]`` in ``confetti_noise``); torch 2 reads it as
    one index into dimension 0. This restores the old reading for such indices only, while the
    released code runs."""

    def __enter__(self):
        self.get, self.set = torch.Tensor.__getitem__, torch.Tensor.__setitem__
        get, set_ = self.get, self.set

        def fix(index):
            if isinstance(index, np.ndarray) and index.ndim == 2 and index.dtype.kind in "iu":
                return tuple(torch.from_numpy(np.ascontiguousarray(row)) for row in index)
            return index

        torch.Tensor.__getitem__ = lambda t, index: get(t, fix(index))
        torch.Tensor.__setitem__ = lambda t, index, value: set_(t, fix(index), value)
        return self

    def __exit__(self, *exc):
        torch.Tensor.__getitem__, torch.Tensor.__setitem__ = self.get, self.set


def _layer(noise_mod, size, **kw):
    """One released confetti_noise call; returns (output, blobs as an int array)."""
    rots: list[float] = []
    uniform = np.random.uniform

    def rec(*a, **k):
        r = uniform(*a, **k)
        rots.append(float(r))
        return r

    cols: list[np.ndarray] = []
    randint = torch.randint

    def rec_int(*a, **k):
        r = randint(*a, **k)
        cols.append(r.numpy().copy())
        return r

    np.random.uniform, torch.randint = rec, rec_int
    try:
        with _LegacyNumpyIndex(), _Locals("confetti_noise") as loc:
            res = noise_mod.confetti_noise(size, **kw)
    finally:
        np.random.uniform, torch.randint = uniform, randint
    f = loc.frames[-1]
    picks, shps, centres = f["picks"], f["all_shps"], f["mask"].nonzero()
    used = [n for n in range(len(shps)) if (picks == n).sum() >= 1]  # shapes in the colour-draw order
    rows = []
    for pick, c in zip(picks.tolist(), centres.tolist()):
        side = shps[pick][0]
        value = cols[used.index(pick)].tolist() if kw.get("colorrange") else [kw["fillval"]] * 3
        rows.append(
            [
                c[0],
                c[1],
                c[2],
                side,
                *value,
            ]
        )
    return res, np.array(rows, dtype=np.int64).reshape(-1, 7), np.array(rots, dtype=np.float64)


def main() -> None:
    deps = _deps_arg()
    args = _common.parse_args(__doc__.splitlines()[0], "fcdd_confetti")
    ref = args.reference.resolve()
    commit = _common.commit_of(ref, args.commit)
    if deps is not None:
        sys.path.insert(0, str(deps.resolve()))
    sys.path.insert(0, str(ref / "python"))
    if not hasattr(np, "infty"):
        np.infty = np.inf  # NumPy 2 removed the alias; FCDD uses it as a default argument
    import fcdd.datasets.noise as noise_mod  # noqa: E402  (reference)
    import kornia  # noqa: E402
    from fcdd.datasets.noise_modes import generate_noise  # noqa: E402  (reference)
    from fcdd.datasets.online_supervisor import OnlineSupervisor  # noqa: E402  (reference)

    torch.set_num_threads(1)
    out: dict[str, object] = {}

    # -- the released confetti noise and its blur -----------------------------------------------------
    blur_io = []
    blur = noise_mod.gaussian_blur2d

    def rec_blur(x, *a, **k):
        y = blur(x, *a, **k)
        blur_io.append((x.detach().clone(), y.detach().clone(), a, k))
        return y

    noise_mod.gaussian_blur2d = rec_blur
    try:
        torch.manual_seed(SEED)
        np.random.seed(SEED)
        with _LegacyNumpyIndex():
            noise = generate_noise("confetti", torch.Size(SHAPE), 0)
    finally:
        noise_mod.gaussian_blur2d = blur
    assert len(blur_io) == 1
    x_in, y_out, blur_args, blur_kwargs = blur_io[0]
    assert torch.equal(y_out.int(), noise)
    out["noise"] = noise.to(torch.int16)
    out["pre_blur"] = x_in.to(torch.int16)
    frac = (y_out - y_out.trunc()).abs()
    # blurred values within 1e-3 of an integer (but not exactly one): there the truncation to int
    # depends on float round-off (e.g. -254.99998 inside a uniform -255 blob)
    out["near_int"] = (((frac < 1e-3) | (frac > 1 - 1e-3)) & (y_out != y_out.round())).to(torch.uint8)

    # -- the two layers with their blob parameters (rendering comparison) ----------------------------
    torch.manual_seed(LAYER_SEED)
    np.random.seed(LAYER_SEED)
    common = dict(blobshaperange=((8, 8), (54, 54)), clamp=False, awgn=0, rotation=45)
    rgb, rgb_blobs, rgb_rot = _layer(
        noise_mod, torch.Size(LAYER_SHAPE), p=0.000018, fillval=255, colorrange=(-256, 0), **common
    )
    grey, grey_blobs, grey_rot = _layer(noise_mod, torch.Size(LAYER_SHAPE), p=0.000012, fillval=-255, **common)
    out.update(
        layer_colour=rgb.to(torch.int16),
        layer_grey=grey.to(torch.int16),
        blobs_colour=rgb_blobs,
        blobs_colour_angle=rgb_rot,
        blobs_grey=grey_blobs,
        blobs_grey_angle=grey_rot,
    )

    # -- adding the noise to images: __malformed_normal ----------------------------------------------
    g = torch.Generator().manual_seed(SEED)
    b, c, h, w = SHAPE
    images = torch.empty(SHAPE, dtype=torch.uint8)
    images[0] = 0  # black: the noise gets inverted
    _ = torch.rand(c, h, w, generator=g)  # (keeps the draws of image 2 as before)
    images[1] = 128
    images[2] = (torch.rand(c, h, w, generator=g) * 256).to(torch.uint8)
    images[3] = 250
    sup = OnlineSupervisor.__new__(OnlineSupervisor)
    malformed = sup._OnlineSupervisor__malformed_normal
    noisy, changed = [], []
    for i in range(b):
        anom, gt, t = malformed(
            images[i : i + 1].clone(), None, 0, object(), noise[i : i + 1].clone(), use_gt=True, invert_threshold=0.025
        )
        noisy.append(anom[0])
        changed.append(gt[0, 0] > 0)
    out.update(images=images, noisy=torch.stack(noisy), changed=torch.stack(changed).to(torch.uint8))
    nimg = noise.clone().int()
    x = images.int()
    d = ((x + nimg).clamp(0, 255) - x).reshape(b, -1).sum(1).float().div(c * h * w).abs()
    di = ((x - nimg).clamp(0, 255) - x).reshape(b, -1).sum(1).float().div(c * h * w).abs()
    out["inverted"] = ((d < 0.025) & (di > d)).to(torch.uint8)  # for the JSON / a sanity check

    meta = {
        "component": "FCDD (Liznerski et al., ICLR 2021) confetti noise, released code",
        "repo": "https://github.com/liznerski/fcdd",
        "commit": commit,
        "generator": "tools/golden/make_fcdd.py",
        "versions": {**_common.versions("scipy", "skimage"), "kornia": kornia.__version__},
        "seeds": {
            "generate_noise_torch_and_numpy": SEED,
            "layers_torch_and_numpy": LAYER_SEED,
            "images_torch_generator": SEED,
        },
        "shapes": {"batch": list(SHAPE), "layers": list(LAYER_SHAPE)},
        "blur": {
            "kernel": list(blur_args[0]) if blur_args else None,
            "sigma": list(blur_args[1]) if len(blur_args) > 1 else None,
        },
        "inverted": out["inverted"].tolist(),
        "blob_columns": ["sample", "row", "col", "side", "value_c0", "value_c1", "value_c2"],
        "reference_functions": {
            "noise": "fcdd.datasets.noise_modes.generate_noise('confetti', (4, 3, 64, 64), 0)",
            "pre_blur": "the int noise passed to kornia.gaussian_blur2d inside smooth_noise (as float)",
            "layer_colour": "noise.confetti_noise(size, 0.000018, ((8, 8), (54, 54)), fillval=255, clamp=False, "
            "awgn=0, rotation=45, colorrange=(-256, 0))",
            "layer_grey": "noise.confetti_noise(size, 0.000012, ((8, 8), (54, 54)), fillval=-255, clamp=False, "
            "awgn=0, rotation=45)",
            "noisy / changed": "OnlineSupervisor.__malformed_normal(img[None], None, 0, ds, noise[None], "
            "use_gt=True, invert_threshold=0.025)",
        },
        "shims": [
            "np.infty aliased to np.inf (NumPy 2)",
            "a 2-D integer numpy index into a tensor read as a tuple of index arrays (torch <= 1.9 "
            "semantics the released confetti_noise relies on)",
            "kornia 0.5.3 from a pip --target folder",
            "recording wrappers around kornia.gaussian_blur2d (module name), numpy.random.uniform and "
            "torch.randint; sys.setprofile to read confetti_noise's locals at return",
        ],
    }
    _common.write(args.out, args.name, out, meta)


if __name__ == "__main__":
    main()
