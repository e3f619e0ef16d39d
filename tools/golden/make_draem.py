"""Golden fixture for DRAEM's losses and anomaly synthesis from the released code (github.com/VitjanZ/DRAEM).

Usage::

    python tools/golden/make_draem.py --reference /tmp/ref-DRAEM --out tests/golden/

Imports, unmodified, from the checkout: ``loss.FocalLoss``, ``loss.SSIM`` / ``loss.ssim`` /
``loss.create_window``, ``perlin.rand_perlin_2d_np`` and ``data_loader.MVTecDRAEMTrainDataset``
(its ``augment_image``: Perlin noise, threshold, blend), plus the ``torch.nn.MSELoss`` the
trainer uses for the L2 term. Writes ``<out>/draem_released.npz`` / ``.json``.

What is driven deterministically and stored:
    - losses on fixed tensors: focal loss of a 2-channel softmax against a 0/1 mask, SSIM loss
      (``SSIM()(rec, img)``, window 11, sigma 1.5, zero padding), the full SSIM map
      (``loss.ssim``), and the MSE;
    - Perlin noise ``rand_perlin_2d_np(shape, res)`` for several lattices, each after
      ``np.random.seed(k)``; the gradient angles it draws with ``np.random.rand`` are recorded
      (a wrapper that returns the same array) and stored, so adlib's ``perlin_noise_batch`` can be
      fed the same angles; the thresholded mask ``noise > 0.5`` as the released code writes it;
    - one call of ``MVTecDRAEMTrainDataset.augment_image`` on a fixed image and a fixed texture
      (written to a temporary PNG that ``cv2.imread`` reads back), with fixed torch and numpy
      seeds: the released blend ``I (1 - M) + (1 - b) M T + b M I`` with its drawn ``b``.

Shims (stated because they change what runs):
    - ``imgaug`` is not installed: a stub ``imgaug.augmenters`` whose augmenters and
      ``Sequential`` are the identity. So the texture augmenters and the 90-degree rotation of the
      Perlin noise are NOT part of this fixture (they are imgaug's, not comparable bit for bit);
      only the Perlin noise (unrotated), the threshold and the blend arithmetic are.
    - ``Tensor.cuda`` is a no-op while ``SSIM()`` is built (it calls ``.cuda()``).
    - The draws are recorded by wrappers around ``numpy.random.rand``, ``torch.rand`` and
      ``torch.randint`` that return the drawn values unchanged.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SEED = 20250717
PERLIN_CASES = (  # (H, W), (res_y, res_x), numpy seed
    ((64, 64), (1, 1), 101),
    ((64, 64), (2, 4), 102),
    ((64, 64), (8, 2), 103),
    ((64, 64), (16, 16), 104),
    ((64, 64), (32, 32), 105),
    ((32, 64), (4, 8), 106),
)
BLEND_HW = (32, 64)
BLEND_SEED0 = 300


class _Identity:
    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, image=None, **kwargs):
        return image


def _stub_imgaug() -> None:
    names = [
        "GammaContrast",
        "MultiplyAndAddToBrightness",
        "AddToHueAndSaturation",
        "Solarize",
        "Posterize",
        "Invert",
        "Affine",
        "Sequential",
    ]
    pillike = _common.stub_module(
        "imgaug.augmenters.pillike", EnhanceSharpness=_Identity, Autocontrast=_Identity, Equalize=_Identity
    )
    iaa = _common.stub_module("imgaug.augmenters", **{n: _Identity for n in names})
    if getattr(iaa, "__golden_stub__", False):
        iaa.pillike = pillike
    else:
        raise SystemExit(
            "imgaug is installed: this generator stubs it on purpose (identity augmenters); "
            "run it in an environment without imgaug"
        )


class _Recorder:
    def __init__(self, owner, name):
        self.owner, self.name, self.orig, self.calls = owner, name, getattr(owner, name), []

    def __enter__(self):
        def wrapper(*a, **k):
            r = self.orig(*a, **k)
            self.calls.append(np.array(r.detach().numpy() if isinstance(r, torch.Tensor) else r, copy=True))
            return r

        setattr(self.owner, self.name, wrapper)
        return self

    def __exit__(self, *exc):
        setattr(self.owner, self.name, self.orig)


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "draem_released")
    ref = args.reference.resolve()
    commit = _common.commit_of(ref, args.commit)
    sys.path.insert(0, str(ref))
    _stub_imgaug()
    import cv2  # noqa: E402
    import data_loader  # noqa: E402  (reference)
    import loss as ref_loss  # noqa: E402  (reference)
    import perlin as ref_perlin  # noqa: E402  (reference)

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(SEED)
    out: dict[str, object] = {}

    # -- losses ---------------------------------------------------------------------------------
    logits = torch.randn(2, 2, 16, 16, generator=g) * 2.0
    mask = (torch.rand(2, 1, 16, 16, generator=g) < 0.2).float()
    out.update(focal_logits=logits, focal_mask=mask)
    out["focal_loss"] = ref_loss.FocalLoss()(torch.softmax(logits, dim=1), mask)
    img = torch.rand(2, 3, 32, 32, generator=g)
    rec = (img + 0.15 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    rec[1] = torch.nn.functional.avg_pool2d(img[1:2], 5, 1, 2)[0]  # a blurred reconstruction
    out.update(ssim_img=img, ssim_rec=rec)
    with _common.cuda_is_identity():
        out["ssim_loss"] = ref_loss.SSIM()(rec, img)  # as train_DRAEM: loss_ssim(gray_rec, gray_batch)
    _, ssim_map = ref_loss.ssim(rec, img, window=ref_loss.create_window(11, 3), window_size=11)
    out["ssim_map"] = ssim_map
    out["l2_loss"] = torch.nn.modules.loss.MSELoss()(rec, img)

    # -- Perlin noise and threshold -----------------------------------------------------------------
    for i, (shape, res, seed) in enumerate(PERLIN_CASES):
        np.random.seed(seed)
        with _Recorder(np.random, "rand") as r:
            noise = ref_perlin.rand_perlin_2d_np(shape, res)
        assert len(r.calls) == 1
        out[f"perlin{i}_angles"] = (2 * np.pi * r.calls[0]).astype(np.float64)  # stored in float64
        out[f"perlin{i}_noise"] = noise.astype(np.float32)
        thr = np.where(noise > 0.5, np.ones_like(noise), np.zeros_like(noise))  # as augment_image
        out[f"perlin{i}_mask"] = thr.astype(np.uint8)
        out[f"perlin{i}_margin"] = np.float32(np.abs(noise - 0.5).min())

    # -- blend (augment_image with identity augmenters) ---------------------------------------------
    h, w = BLEND_HW
    image = torch.rand(h, w, 3, generator=g).numpy().astype(np.float32)  # HWC in [0, 1], as transform_image
    tex = (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy()
    ds = data_loader.MVTecDRAEMTrainDataset("/nonexistent", "/nonexistent", resize_shape=[h, w])
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "texture.png")
        cv2.imwrite(path, tex)
        tex_read = cv2.imread(path)
        assert np.array_equal(tex_read, tex)
        for seed in range(BLEND_SEED0, BLEND_SEED0 + 200):
            torch.manual_seed(seed)
            np.random.seed(seed)
            with (
                _Recorder(torch, "rand") as tr,
                _Recorder(torch, "randint") as ti,
                _Recorder(data_loader, "rand_perlin_2d_np") as pn,
            ):
                aug, msk, has = ds.augment_image(image, path)
            frac = float(msk.mean())
            if has[0] == 1.0 and 0.03 < frac < 0.5:
                break
        else:
            raise SystemExit("no seed gave an anomalous sample")
    b = tr.calls[0][0] * 0.8  # the released beta (texture weight 1 - b)
    out.update(
        blend_image=image,
        blend_texture=tex_read,
        blend_noise=pn.calls[0].astype(np.float32),
        blend_mask=msk[..., 0],
        blend_out=aug,
        blend_b=np.float32(b),
        blend_scales=np.array([2 ** int(ti.calls[0][0]), 2 ** int(ti.calls[1][0])], dtype=np.int64),
    )

    meta = {
        "component": "DRAEM (Zavrtanik, Kristan, Skocaj, ICCV 2021), released code",
        "repo": "https://github.com/VitjanZ/DRAEM",
        "commit": commit,
        "generator": "tools/golden/make_draem.py",
        "versions": _common.versions("cv2"),
        "seeds": {
            "inputs_torch_generator": SEED,
            "perlin_numpy_seeds": [c[2] for c in PERLIN_CASES],
            "blend_torch_and_numpy_seed": seed,
        },
        "perlin_cases": [{"shape": list(s), "res": list(r), "numpy_seed": k} for s, r, k in PERLIN_CASES],
        "blend": {
            "shape": [h, w],
            "b": float(b),
            "scales": out["blend_scales"].tolist(),
            "mask_fraction": frac,
            "channels": "BGR as cv2 reads (image and texture alike)",
        },
        "reference_functions": {
            "focal_loss": "loss.FocalLoss()(softmax(focal_logits, 1), focal_mask)",
            "ssim_loss": "loss.SSIM()(ssim_rec, ssim_img)  (1 - mean SSIM, zero-padded window)",
            "ssim_map": "loss.ssim(ssim_rec, ssim_img, window=create_window(11, 3))[1]",
            "l2_loss": "torch.nn.MSELoss()(ssim_rec, ssim_img)",
            "perlin<i>_noise": "perlin.rand_perlin_2d_np(shape, res) after np.random.seed(seed)",
            "perlin<i>_angles": "2 pi * the np.random.rand draw it made (float64)",
            "perlin<i>_mask": "noise > 0.5 (np.where as in augment_image)",
            "blend_out": "data_loader.MVTecDRAEMTrainDataset.augment_image(blend_image, texture.png) "
            "with identity imgaug stubs",
        },
        "shims": [
            "imgaug stubbed with identity augmenters (texture augmentation and noise rotation not covered)",
            "Tensor.cuda() no-op while SSIM() is built",
            "numpy.random.rand, torch.rand, torch.randint, data_loader.rand_perlin_2d_np wrapped to record "
            "their outputs (unchanged)",
        ],
    }
    _common.write(args.out, args.name, out, meta)


if __name__ == "__main__":
    main()
