"""Golden fixtures from the authors' released SimpleNet code (DonaldRR/SimpleNet), for tests/test_golden_simplenet.py.

Usage (the reference checkout lives outside this repository; nothing of it is copied here)::

    git clone https://github.com/DonaldRR/SimpleNet /tmp/ref-simplenet
    .venv/bin/python tools/golden/make_simplenet.py --reference /tmp/ref-simplenet --out tests/golden/

The script imports the reference modules (``simplenet``, ``common``) unmodified from
``--reference``, builds them with fixed random-init weights on fixed small random inputs, runs
them, and writes the numbers (inputs, weights, outputs) as float32 ``.npz`` files plus
``simplenet_reference.json`` (repository, commit, versions, seeds, shapes).

How the reference is driven (instrumentation only; its source is not changed):

- Backbone: torchvision ``resnet18(weights=None)`` under ``torch.manual_seed(SEEDS["backbone"])``,
  handed over in eval mode (see ``make_glass.py``), layers ``layer2`` + ``layer3``; the maps the
  reference extracts are stored, so the tests need no backbone weights.
- The training step is the reference's own ``SimpleNet._train_discriminator`` on one batch (one
  discriminator epoch), with the released options of ``run.sh`` (``pre_proj 1``, ``dsc_layers 2``,
  ``dsc_margin 0.5``, ``noise_std 0.015``, ``mix_noise 1``) and main.py's default ``lr`` (so the
  projection's AdamW runs at ``lr * 0.1 = 1e-4``). Forward hooks on the discriminator and the
  projection record every call; ``loss`` is the scalar the reference logs (recorded by a stand-in
  ``SummaryWriter``). Inference is the reference's ``SimpleNet._predict``.
- Stub: ``torch.utils.tensorboard`` (needs ``tensorboard``, not a project dependency) is replaced
  by a recording ``SummaryWriter``. Nothing else is stubbed.

Shapes as in ``make_glass.py``: 2 images, 72 px (patch embedding) / 32 px (training step), 80-D
per-layer pooling, 48-D features, discriminator hidden 40.
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

SEEDS = dict(backbone=0, images=1, modules=2, train=3, postprocess=4)
LAYERS = ["layer2", "layer3"]
PRETRAIN_DIM, TARGET_DIM, HIDDEN = 80, 48, 40
EMBED_SIZE, STEP_SIZE, BATCH = 72, 32, 2


def _images(seed: int, size: int, n: int = BATCH) -> torch.Tensor:
    return G.smooth_images(seed, size, n)


def _backbone():
    return G.random_resnet18(SEEDS["backbone"])


def _reference_simplenet(ref, size: int):
    net = ref.SimpleNet("cpu")
    torch.manual_seed(SEEDS["modules"])
    net.load(
        _backbone(),
        LAYERS,
        "cpu",
        (3, size, size),
        PRETRAIN_DIM,
        TARGET_DIM,
        patchsize=3,
        patchstride=1,
        embedding_size=256,
        meta_epochs=40,
        aed_meta_epochs=1,
        gan_epochs=1,
        noise_std=0.015,
        mix_noise=1,
        noise_type="GAU",
        dsc_layers=2,
        dsc_hidden=HIDDEN,
        dsc_margin=0.5,
        dsc_lr=0.0002,
        train_backbone=False,
        auto_noise=0,
        cos_lr=False,
        lr=1e-3,
        pre_proj=1,
        proj_layer_type=0,
    )
    return net


def _maps(net, images: torch.Tensor) -> dict[str, torch.Tensor]:
    fa = net.forward_modules["feature_aggregator"]
    fa.eval()
    with torch.no_grad():
        out = fa(images)
    return {k: out[k].detach().clone() for k in LAYERS}


def patch_embedding(ref, out: Path) -> dict:
    net = _reference_simplenet(ref, EMBED_SIZE)
    images = _images(SEEDS["images"], EMBED_SIZE)
    maps = _maps(net, images)
    emb, shapes = net._embed(images, evaluation=True)
    arrays = {"layer2": maps["layer2"], "layer3": maps["layer3"], "embedding": emb, "patch_shapes": np.array(shapes)}
    return G.save_npz(out / "simplenet_patch_embed.npz", arrays)


def training_step(ref, out: Path) -> dict:
    net = _reference_simplenet(ref, STEP_SIZE)
    images = _images(SEEDS["images"], STEP_SIZE)
    maps = _maps(net, images)
    init_proj = copy.deepcopy(net.pre_projection.state_dict())
    init_dsc = copy.deepcopy(net.discriminator.state_dict())
    calls, proj_calls = [], []
    net.discriminator.register_forward_hook(
        lambda m, i, o: calls.append((i[0].detach().clone(), o.detach().clone(), m.training))
    )
    net.pre_projection.register_forward_hook(lambda m, i, o: proj_calls.append(o.detach().clone()))

    with tempfile.TemporaryDirectory() as tmp:
        net.set_model_dir(os.path.join(tmp, "models"), "golden")
        torch.manual_seed(SEEDS["train"])
        net._train_discriminator([{"image": images}])
    scalars = {k: v for k, v, _ in net.logger.logger.scalars}
    assert len(calls) == 1 and calls[0][2]
    x, scores = calls[0][0], calls[0][1]
    n = len(x) // 2
    q = proj_calls[0]
    assert torch.equal(x[:n], q)

    image_scores, masks, _ = net._predict(images)
    assert len(calls) == 2 and not calls[1][2]
    arrays = {
        "image_layer2": maps["layer2"],
        "image_layer3": maps["layer3"],
        **G.state_arrays("proj.", _from_state(net.pre_projection, init_proj)),
        **G.state_arrays("dsc.", _from_state(net.discriminator, init_dsc)),
        "q": q,
        "q_minus": x[n:],
        "scores": scores,
        "loss": scalars["loss"],
        "p_true": scalars["p_true"],
        "p_fake": scalars["p_fake"],
        **G.state_arrays("after.proj.", net.pre_projection),
        **G.state_arrays("after.dsc.", net.discriminator),
        "eval_scores": calls[1][1],
        "image_scores": np.array(image_scores),
        "masks": np.stack(masks),
    }
    return G.save_npz(out / "simplenet_step.npz", arrays)


def _from_state(module: torch.nn.Module, state: dict) -> torch.nn.Module:
    m = copy.deepcopy(module)
    m.load_state_dict(state)
    return m


def postprocess(ref, common, out: Path) -> dict:
    gen = torch.Generator().manual_seed(SEEDS["postprocess"])
    arrays = {}
    for name, (grid, target) in {"square": ((8, 8), (64, 64)), "rect": ((6, 10), (48, 80))}.items():
        scores = torch.rand((BATCH, *grid), generator=gen)
        feats = torch.rand((BATCH, *grid, 2), generator=gen)  # the segmentor also up-samples features
        seg = common.RescaleSegmentor(device="cpu", target_size=target)
        masks, _ = seg.convert_to_segmentation(scores.numpy().copy(), feats.numpy().copy())
        pm = ref.PatchMaker(3, stride=1)
        img = pm.score(pm.unpatch_scores(scores.reshape(-1, 1).numpy(), batchsize=BATCH).reshape(BATCH, -1, 1))
        arrays.update({f"{name}_scores": scores, f"{name}_masks": np.stack(masks), f"{name}_image_scores": img})
    return G.save_npz(out / "simplenet_postprocess.npz", arrays)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, type=Path, help="checkout of github.com/DonaldRR/SimpleNet")
    ap.add_argument("--out", required=True, type=Path, help="fixture folder (tests/golden/)")
    ap.add_argument("--commit", default=None, help="commit of the checkout (default: git rev-parse HEAD)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    stubbed = G.install_stubs(stub_imgaug=False)
    G.import_reference(args.reference)
    torch.set_num_threads(1)
    import common  # noqa: E402  (reference modules)
    import simplenet as ref  # noqa: E402

    shapes = {
        "simplenet_patch_embed.npz": patch_embedding(ref, args.out),
        "simplenet_step.npz": training_step(ref, args.out),
        "simplenet_postprocess.npz": postprocess(ref, common, args.out),
    }
    import torchvision

    G.write_json(
        args.out / "simplenet_reference.json",
        {
            "reference": "https://github.com/DonaldRR/SimpleNet",
            "commit": args.commit or G.git_commit(args.reference),
            "generator": "tools/golden/make_simplenet.py",
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
                "proj_layer_type": 0,
                "noise_std": 0.015,
                "mix_noise": 1,
                "dsc_margin": 0.5,
                "dsc_lr": 2e-4,
                "lr": 1e-3,
                "embed_image_size": EMBED_SIZE,
                "step_image_size": STEP_SIZE,
                "batch": BATCH,
            },
            "shapes": shapes,
        },
    )


if __name__ == "__main__":
    main()
