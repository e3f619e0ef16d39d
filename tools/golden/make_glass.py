"""Golden fixtures from the authors' released GLASS code (cqylunlun/GLASS), for tests/test_golden_glass.py.

Usage (the reference checkout lives outside this repository; nothing of it is copied here)::

    git clone https://github.com/cqylunlun/GLASS /tmp/ref-glass
    .venv/bin/python tools/golden/make_glass.py --reference /tmp/ref-glass --out tests/golden/

The script imports the reference modules (``glass``, ``model``, ``loss``, ``common``, ``perlin``)
unmodified from ``--reference``, builds them with fixed random-init weights on fixed small random
inputs, runs them, and writes the numbers (inputs, weights, outputs) as float32 ``.npz`` files plus
``glass_reference.json`` (repository, commit, versions, seeds, shapes). The tests load adlib's
modules with the stored weights and inputs and compare.

How the reference is driven (instrumentation only; its source is not changed):

- Backbone: torchvision ``resnet18(weights=None)`` under ``torch.manual_seed(SEEDS["backbone"])``
  (no download), layers ``layer2`` + ``layer3``. The backbone maps the reference extracts are
  stored, so the tests need no backbone weights: adlib's ``PatchFeatures`` gets them through a
  stub backbone.
- The GAS/LAS step is the reference's own ``GLASS.trainer`` for one epoch of one batch (normal
  images, LAS images and their grid labels given directly, ``distribution`` 2 = manifold,
  3 = hypersphere). Forward hooks on the discriminator, the projection (adaptor) and the focal
  loss record the inputs and outputs of every call; the hypersphere centre is ``GLASS.c`` after
  the epoch; ``r_t``, ``r_g``, ``r_f`` and ``loss`` are the scalars the reference logs (recorded by a
  stand-in ``SummaryWriter``). ``trainer`` also runs its own evaluation on two images in a
  temporary directory (the files it writes there are discarded).
- Stubs (only where the package is missing): ``torch.utils.tensorboard`` needs ``tensorboard``,
  which is not a project dependency; it is replaced by a recording ``SummaryWriter``. ``imgaug``
  (only for rotating Perlin fields in ``perlin.generate_thr``) is replaced by identity augmenters
  when absent; the Perlin *noise* fixture does not go through it, and the feature-label fixture
  (``perlin_mask``'s max-pool to the feature grid) does not depend on the rotation.

Shapes are small (2 images, 72 px for the patch embedding, 32 px for the training step; 80-D
per-layer pooling, 48-D features, discriminator hidden 40) so that every file stays < 300 KB.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _gs_common as G  # noqa: E402

SEEDS = dict(backbone=0, images=1, modules=2, train=3, postprocess=4, perlin_noise=5, perlin_mask=6)
LAYERS = ["layer2", "layer3"]
PRETRAIN_DIM, TARGET_DIM, HIDDEN = 80, 48, 40
EMBED_SIZE, STEP_SIZE, BATCH = 72, 32, 2
PERLIN_CASES = [((64, 64), (4, 4)), ((64, 64), (2, 8)), ((32, 64), (1, 4)), ((64, 64), (16, 16))]
PERLIN_MASK_SEEDS = [0, 1, 2, 3, 4, 5]


def _images(seed: int, size: int, n: int = BATCH) -> torch.Tensor:
    return G.smooth_images(seed, size, n)


def _backbone():
    return G.random_resnet18(SEEDS["backbone"])


def _reference_glass(ref_glass, size: int):
    g = ref_glass.GLASS("cpu")
    torch.manual_seed(SEEDS["modules"])
    g.load(
        _backbone(),
        LAYERS,
        "cpu",
        (3, size, size),
        PRETRAIN_DIM,
        TARGET_DIM,
        patchsize=3,
        patchstride=1,
        meta_epochs=1,
        eval_epochs=1,
        dsc_layers=2,
        dsc_hidden=HIDDEN,
        dsc_margin=0.5,
        pre_proj=1,
        mining=1,
        noise=0.015,
        radius=0.75,
        p=0.5,
        lr=1e-4,
        step=20,
        limit=392,
    )
    return g


def _maps(g, images: torch.Tensor) -> dict[str, torch.Tensor]:
    fa = g.forward_modules["feature_aggregator"]
    fa.eval()
    with torch.no_grad():
        out = fa(images)
    return {k: out[k].detach().clone() for k in LAYERS}


def patch_embedding(ref_glass, out: Path) -> dict:
    g = _reference_glass(ref_glass, EMBED_SIZE)
    images = _images(SEEDS["images"], EMBED_SIZE)
    maps = _maps(g, images)
    emb, shapes = g._embed(images, evaluation=True)
    arrays = {"layer2": maps["layer2"], "layer3": maps["layer3"], "embedding": emb, "patch_shapes": np.array(shapes)}
    return G.save_npz(out / "glass_patch_embed.npz", arrays)


class _Loader(list):
    """A list of batches with the ``dataset.distribution`` attribute ``GLASS.trainer`` reads."""

    def __init__(self, batches, distribution: int = 0) -> None:
        super().__init__(batches)
        self.dataset = type("D", (), {"distribution": distribution})()


def _grid_labels(b: int, h: int, w: int) -> torch.Tensor:
    m = torch.zeros(b, h, w)
    m[0, 1, 1] = m[0, 1, 2] = m[0, 2, 1] = 1
    m[1, 0, 3] = m[1, 3, 0] = m[1, 2, 2] = m[1, 3, 3] = 1
    return m


def training_step(ref_glass, out: Path, distribution: str) -> tuple[dict, dict]:
    code = {"manifold": 2, "hypersphere": 3}[distribution]
    g = _reference_glass(ref_glass, STEP_SIZE)
    images = _images(SEEDS["images"], STEP_SIZE)
    gen = torch.Generator().manual_seed(SEEDS["images"] + 100)
    aug = images.clone()
    aug[:, :, 4:20, 6:22] = torch.randn((BATCH, 3, 16, 16), generator=gen)  # a pasted "defect"
    maps_img, maps_aug = _maps(g, images), _maps(g, aug)
    gh, gw = maps_img["layer2"].shape[-2:]
    mask_s = _grid_labels(BATCH, gh, gw)
    mask_gt = torch.zeros(BATCH, 1, STEP_SIZE, STEP_SIZE)
    mask_gt[1, :, 8:16, 8:16] = 1

    init_proj = copy.deepcopy(g.pre_projection.state_dict())
    init_dsc = copy.deepcopy(g.discriminator.state_dict())

    calls, proj_calls, focal_calls = [], [], []
    g.discriminator.register_forward_hook(
        lambda m, i, o: calls.append((i[0].detach().clone(), o.detach().clone(), m.training))
    )
    g.pre_projection.register_forward_hook(lambda m, i, o: proj_calls.append(o.detach().clone()))
    g.focal_loss.register_forward_hook(
        lambda m, i, o: focal_calls.append((i[0].detach().clone(), i[1].detach().clone(), o.detach().clone()))
    )

    train = _Loader([{"image": images, "aug": aug, "mask_s": mask_s}], distribution=code)
    val = _Loader(
        [
            {
                "image": images,
                "is_anomaly": torch.tensor([0, 1]),
                "mask_gt": mask_gt,
                "image_path": ["normal.png", "anomalous.png"],
            }
        ]
    )
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            g.set_model_dir(os.path.join(tmp, "models"), "golden")
            torch.manual_seed(SEEDS["train"])
            g.trainer(train, val, f"golden_{distribution}")
        finally:
            os.chdir(cwd)
    scalars = {k: v for k, v, _ in g.logger.logger.scalars}

    n = BATCH * gh * gw
    assert len(calls) >= 22 and all(c[2] for c in calls[:22]), "unexpected discriminator call sequence"
    true_half = calls[0][0][:n]
    assert all(torch.equal(c[0][:n], true_half) for c in calls[:21]), "normal half changed during the ascent"
    gas_inputs = torch.stack([c[0][n:] for c in calls[:21]])  # g before step 1, ..., after step 20 (projected)
    # pre_projection calls: centre (images), LAS images, normal images, then evaluation
    u_center, u_plus, u = proj_calls[0], proj_calls[1], proj_calls[2]
    assert torch.equal(u, true_half)
    p_focal, t_focal, focal = focal_calls[0]
    arrays = {
        "image_layer2": maps_img["layer2"],
        "image_layer3": maps_img["layer3"],
        "aug_layer2": maps_aug["layer2"],
        "aug_layer3": maps_aug["layer3"],
        "mask_s": mask_s,
        **G.state_arrays("proj.", _module_from_state(g.pre_projection, init_proj)),
        **G.state_arrays("dsc.", _module_from_state(g.discriminator, init_dsc)),
        "u": u,
        "u_center": u_center,
        "u_plus": u_plus,
        "center": g.c,
        "gas_inputs": gas_inputs,
        "scores_first": calls[0][1],
        "scores_last": calls[20][1],
        "las_input": calls[21][0],
        "las_scores": calls[21][1],
        "focal_output": p_focal,
        "focal_target": t_focal,
        "focal_loss": focal,
        "r_t": scalars["r_t"],
        "r_g": scalars["r_g"],
        "r_f": scalars["r_f"],
        "loss": scalars["loss"],
        # after the step: one Adam (projection) / AdamW (discriminator) update, 22 BatchNorm updates
        **G.state_arrays("after.proj.", g.pre_projection),
        **G.state_arrays("after.dsc.", g.discriminator),
    }
    shapes = G.save_npz(out / f"glass_step_{distribution}.npz", arrays)

    predict_shapes = {}
    if distribution == "manifold":
        n_before = len(calls)
        scores, masks = g._predict(images)
        raw = calls[n_before][1]
        assert not calls[n_before][2]
        predict = {
            "image_layer2": maps_img["layer2"],
            "image_layer3": maps_img["layer3"],
            **G.state_arrays("proj.", g.pre_projection),
            **G.state_arrays("dsc.", g.discriminator),
            "raw_scores": raw,
            "image_scores": np.array(scores),
            "masks": np.stack(masks),
        }
        predict_shapes = G.save_npz(out / "glass_predict.npz", predict)
    return shapes, predict_shapes


def _module_from_state(module: torch.nn.Module, state: dict) -> torch.nn.Module:
    m = copy.deepcopy(module)
    m.load_state_dict(state)
    return m


def postprocess(common, model, out: Path) -> dict:
    gen = torch.Generator().manual_seed(SEEDS["postprocess"])
    arrays = {}
    for name, (grid, target) in {"square": ((8, 8), (64, 64)), "rect": ((6, 10), (48, 80))}.items():
        scores = torch.rand((BATCH, *grid), generator=gen)
        seg = common.RescaleSegmentor(device="cpu", target_size=target)
        masks = seg.convert_to_segmentation(scores.clone())
        pm = model.PatchMaker(3, stride=1)
        img = pm.score(pm.unpatch_scores(scores.reshape(-1, 1), batchsize=BATCH))
        arrays.update({f"{name}_scores": scores, f"{name}_masks": np.stack(masks), f"{name}_image_scores": img})
    return G.save_npz(out / "glass_postprocess.npz", arrays)


def perlin_fixtures(perlin, out: Path) -> dict:
    arrays = {}
    real_rand = np.random.rand
    for i, (shape, res) in enumerate(PERLIN_CASES):
        drawn = []

        def rec(*a, **k):
            r = real_rand(*a, **k)
            drawn.append(np.array(r, copy=True))  # noqa: B023 - called within this iteration only
            return r

        np.random.seed(SEEDS["perlin_noise"] + i)
        np.random.rand = rec
        try:
            field = perlin.rand_perlin_2d_np(shape, res)
        finally:
            np.random.rand = real_rand
        assert len(drawn) == 1
        arrays.update({f"noise{i}_field": field, f"noise{i}_uniform": drawn[0], f"noise{i}_res": np.array(res)})
    for j, s in enumerate(PERLIN_MASK_SEEDS):
        np.random.seed(SEEDS["perlin_mask"] + s)
        torch.manual_seed(SEEDS["perlin_mask"] + s)
        fg = torch.ones(64, 64, dtype=torch.float64)
        mask_s, mask_l = perlin.perlin_mask((3, 64, 64), 8, 0, 6, fg, flag=1)
        arrays.update({f"mask{j}_grid": mask_s, f"mask{j}_pixel": mask_l})
    return G.save_npz(out / "glass_perlin.npz", arrays)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, type=Path, help="checkout of github.com/cqylunlun/GLASS")
    ap.add_argument("--out", required=True, type=Path, help="fixture folder (tests/golden/)")
    ap.add_argument("--commit", default=None, help="commit of the checkout (default: git rev-parse HEAD)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stubbed = G.install_stubs(stub_imgaug=True)
    G.import_reference(args.reference)
    torch.set_num_threads(1)
    import common  # noqa: E402  (reference modules)
    import glass as ref_glass  # noqa: E402
    import model  # noqa: E402
    import perlin  # noqa: E402

    shapes = {"glass_patch_embed.npz": patch_embedding(ref_glass, args.out)}
    for dist in ("manifold", "hypersphere"):
        s, p = training_step(ref_glass, args.out, dist)
        shapes[f"glass_step_{dist}.npz"] = s
        if p:
            shapes["glass_predict.npz"] = p
    shapes["glass_postprocess.npz"] = postprocess(common, model, args.out)
    shapes["glass_perlin.npz"] = perlin_fixtures(perlin, args.out)

    import torchvision

    G.write_json(
        args.out / "glass_reference.json",
        {
            "reference": "https://github.com/cqylunlun/GLASS",
            "commit": args.commit or G.git_commit(args.reference),
            "generator": "tools/golden/make_glass.py",
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "stubbed_imports": stubbed,
            "seeds": SEEDS,
            "settings": {
                "backbone": "torchvision resnet18(weights=None), random init under seeds.backbone",
                "layers": LAYERS,
                "patchsize": 3,
                "pretrain_embed_dimension": PRETRAIN_DIM,
                "target_embed_dimension": TARGET_DIM,
                "dsc_hidden": HIDDEN,
                "dsc_layers": 2,
                "pre_proj": 1,
                "noise": 0.015,
                "step": 20,
                "radius": 0.75,
                "p": 0.5,
                "mining": 1,
                "lr": 1e-4,
                "embed_image_size": EMBED_SIZE,
                "step_image_size": STEP_SIZE,
                "batch": BATCH,
                "perlin_noise_cases": [{"shape": list(s), "res": list(r)} for s, r in PERLIN_CASES],
                "perlin_mask": {
                    "img_shape": [3, 64, 64],
                    "feat_size": 8,
                    "min": 0,
                    "max": 6,
                    "seeds": PERLIN_MASK_SEEDS,
                },
            },
            "shapes": shapes,
        },
    )


if __name__ == "__main__":
    main()
