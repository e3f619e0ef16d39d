"""Golden fixture for DRAEM's networks, training step and losses from the released code (github.com/VitjanZ/DRAEM).

Usage::

    python tools/golden/make_draem_model.py --reference /tmp/ref-DRAEM --out tests/golden/ [--commit <sha>]

Imports, unmodified, from the checkout: ``model_unet.ReconstructiveSubNetwork`` /
``DiscriminativeSubNetwork``, ``train_DRAEM.weights_init``, ``loss.SSIM`` / ``loss.ssim`` /
``loss.create_window`` / ``loss.FocalLoss``. Writes ``<out>/draem_model.npz`` / ``.json``.

What is driven and stored:
    - the parameter counts of the released classes at the released sizes, built as
      ``train_DRAEM.train_on_device`` builds them (``ReconstructiveSubNetwork(in_channels=3,
      out_channels=3)``, ``DiscriminativeSubNetwork(in_channels=6, out_channels=2)``): JSON only;
    - narrow networks (``base_width = 1`` / ``base_channels = 2``) built and initialised as the
      trainer does (``torch.manual_seed(SEED)``, then ``model.apply(weights_init)`` after each
      sub-network), their initial state dicts (``init_rec``, ``init_seg``: flat, layout in the JSON);
    - one training step of the trainer's loop body on a fixed 32 x 32 batch of 2 (``gray_rec =
      model(aug)``, ``model_seg(cat(gray_rec, aug))``, softmax, ``MSELoss + SSIM() + FocalLoss()``,
      Adam with the two parameter groups at lr 1e-4): the loss terms, every BatchNorm running
      statistic and the first and last convolutions after the step (``after_*``); then, in eval mode, the
      released test's forward on the clean images of the batch (``cat(gray_rec.detach(), image)``),
      the reconstruction, the softmax's anomaly channel and the image score
      ``max(avg_pool2d(M, 21, 1, 10))``;
    - SSIM losses and maps of ``loss.SSIM()`` / ``loss.ssim`` (``val_range=None``: the range read
      from the first argument) for reconstructions whose range gives ``L = 2`` (values below -0.5),
      ``L = 255`` (values above 128) and ``L = 256``; the focal loss of ``FocalLoss()`` on confident
      logits.

Shims (stated because they change what runs):
    - ``imgaug`` is not installed: stubbed with identity augmenters (``train_DRAEM`` imports
      ``data_loader``, which imports it; nothing here uses it);
    - ``tensorboard`` is not installed: ``torch.utils.tensorboard`` is stubbed with an inert
      ``SummaryWriter`` (``train_DRAEM`` imports ``tensorboard_visualizer``; nothing here uses it);
    - ``Tensor.cuda`` / ``Module.cuda`` are no-ops while ``SSIM()`` is built.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from make_draem import _stub_imgaug  # noqa: E402

SEED = 20251206
REC_WIDTH, SEG_WIDTH = 1, 2  # narrow (and different: a swap of the two is seen)
HW = (32, 32)
LR = 1e-4


class _Writer:
    def __init__(self, *a, **k):
        pass


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "draem_model")
    ref = args.reference.resolve()
    commit = _common.commit_of(ref, args.commit)
    sys.path.insert(0, str(ref))
    _stub_imgaug()
    _common.stub_module("torch.utils.tensorboard", SummaryWriter=_Writer)
    import loss as ref_loss  # noqa: E402  (reference)
    import model_unet  # noqa: E402  (reference)
    import train_DRAEM  # noqa: E402  (reference)

    torch.set_num_threads(1)
    out: dict[str, object] = {}

    # -- parameter counts at the released sizes ---------------------------------------------------
    count = lambda m: int(sum(p.numel() for p in m.parameters()))  # noqa: E731
    rec_full = model_unet.ReconstructiveSubNetwork(in_channels=3, out_channels=3)
    seg_full = model_unet.DiscriminativeSubNetwork(in_channels=6, out_channels=2)
    params = {"reconstructive": count(rec_full), "discriminative": count(seg_full)}
    params["total"] = params["reconstructive"] + params["discriminative"]
    del rec_full, seg_full

    # -- narrow networks, initialised as the trainer does ---------------------------------------------
    torch.manual_seed(SEED)
    model = model_unet.ReconstructiveSubNetwork(in_channels=3, out_channels=3, base_width=REC_WIDTH)
    model.apply(train_DRAEM.weights_init)
    model_seg = model_unet.DiscriminativeSubNetwork(in_channels=6, out_channels=2, base_channels=SEG_WIDTH)
    model_seg.apply(train_DRAEM.weights_init)
    layout: dict[str, list] = {}  # state dicts stored flat (one array each: fewer zip entries)

    def flat(name: str, items) -> None:
        items = [(k, v.detach().clone()) for k, v in items]
        layout[name] = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in items]
        out[name] = torch.cat([v.float().flatten() for _, v in items])  # float32 exact (the int64 counters are 0 or 1)

    flat("init_rec", model.state_dict().items())
    flat("init_seg", model_seg.state_dict().items())

    g = torch.Generator().manual_seed(SEED + 1)
    h, w = HW
    gray = torch.rand(2, 3, h, w, generator=g)
    mask = torch.zeros(2, 1, h, w)
    mask[0, :, 6:20, 9:25] = 1.0
    mask[1, :, 20:30, 2:12] = 1.0
    tex = torch.rand(2, 3, h, w, generator=g)
    aug = mask * (0.4 * gray + 0.6 * tex) + (1 - mask) * gray
    test_img = gray  # the released test's forward after the step, on the clean images
    out.update(step_image=gray, step_augmented=aug, step_mask=mask)

    # -- one step of the trainer's loop body -------------------------------------------------------------
    optimizer = torch.optim.Adam(
        [{"params": model.parameters(), "lr": LR}, {"params": model_seg.parameters(), "lr": LR}]
    )
    loss_l2 = torch.nn.modules.loss.MSELoss()
    with _common.cuda_is_identity():
        loss_ssim = ref_loss.SSIM()
    loss_focal = ref_loss.FocalLoss()
    model.train()
    model_seg.train()
    gray_rec = model(aug)
    joined_in = torch.cat((gray_rec, aug), dim=1)
    out_mask = model_seg(joined_in)
    out_mask_sm = torch.softmax(out_mask, dim=1)
    l2_loss = loss_l2(gray_rec, gray)
    ssim_loss = loss_ssim(gray_rec, gray)
    segment_loss = loss_focal(out_mask_sm, mask)
    total = l2_loss + ssim_loss + segment_loss
    optimizer.zero_grad()
    total.backward()
    optimizer.step()
    # after the step: every BatchNorm running statistic (the train-mode forward's batch statistics)
    # and the first and last convolutions of both sub-networks (the Adam update)
    for prefix, net in (("rec", model), ("seg", model_seg)):
        keep = lambda k: k.endswith(("running_mean", "running_var")) or ".block1.0." in k or ".fin_out." in k  # noqa: E731
        flat(f"after_{prefix}", [(k, v) for k, v in net.state_dict().items() if keep(k)])
    out.update(
        step_l2=l2_loss.detach(),
        step_ssim=ssim_loss.detach(),
        step_focal=segment_loss.detach(),
        step_loss=total.detach(),
    )

    # -- the released test's forward after the step ----------------------------------------------------
    model.eval()
    model_seg.eval()
    with torch.no_grad():
        rec = model(test_img)
        sm = torch.softmax(model_seg(torch.cat((rec.detach(), test_img), dim=1)), dim=1)
        pooled = torch.nn.functional.avg_pool2d(sm[:, 1:, :, :], 21, stride=1, padding=21 // 2)
        scores = pooled.flatten(1).amax(1)  # np.max per image, as test_DRAEM with batch size 1
    out.update(test_reconstruction=rec, test_anomaly_probs=sm[:, 1], test_scores=scores)

    # -- SSIM with the released dynamic range ------------------------------------------------------------
    img = torch.rand(1, 3, 16, 16, generator=g)
    cases = {
        "range2": (img * 2 - 1) * 0.8 + 0.2 * torch.randn(1, 3, 16, 16, generator=g),  # min < -0.5 -> L = 2
        "range255": (img * 255 + 8 * torch.randn(1, 3, 16, 16, generator=g)).clamp_min(0),  # max > 128 -> L = 255
        "range256": img * 255 - 1,  # both -> L = 256
    }
    ranges = {}
    for name, rec_c in cases.items():
        tgt = img * (255 if name != "range2" else 1)
        with _common.cuda_is_identity():
            out[f"ssim_{name}_loss"] = ref_loss.SSIM()(rec_c, tgt)
        _, m = ref_loss.ssim(rec_c, tgt, window=ref_loss.create_window(11, 3), window_size=11)
        out[f"ssim_{name}_rec"], out[f"ssim_{name}_img"], out[f"ssim_{name}_map"] = rec_c, tgt, m
        ranges[name] = {"min": float(rec_c.min()), "max": float(rec_c.max())}

    # -- focal loss on confident logits ---------------------------------------------------------------------
    logits = torch.randn(2, 2, 12, 12, generator=g) * 8.0
    fmask = (torch.rand(2, 1, 12, 12, generator=g) < 0.5).float()
    out.update(focal_logits=logits, focal_mask=fmask, focal_loss=ref_loss.FocalLoss()(torch.softmax(logits, 1), fmask))

    meta = {
        "component": "DRAEM (Zavrtanik, Kristan, Skocaj, ICCV 2021), released networks, training step and losses",
        "repo": "https://github.com/VitjanZ/DRAEM",
        "commit": commit,
        "generator": "tools/golden/make_draem_model.py",
        "versions": _common.versions(),
        "seeds": {"init_torch_manual_seed": SEED, "inputs_torch_generator": SEED + 1},
        "parameters": params,
        "narrow": {"base_width": REC_WIDTH, "base_channels": SEG_WIDTH, "image": list(HW), "batch": 2, "lr": LR},
        "ssim_case_ranges": ranges,
        "flat_layout": layout,
        "reference_functions": {
            "parameters": "sum of numel over ReconstructiveSubNetwork(in_channels=3, out_channels=3).parameters() and "
            "DiscriminativeSubNetwork(in_channels=6, out_channels=2).parameters()",
            "init_rec, init_seg": "state dicts after torch.manual_seed(seed); model.apply(weights_init) per "
            "sub-network, flattened in state-dict order as float32 (exact; the int64 counters are 0 or 1), layout in flat_layout",
            "step_*": "train_DRAEM loop body on (step_augmented, step_image, step_mask): MSELoss, SSIM(), FocalLoss() "
            "on the softmax, Adam([rec, seg] groups, lr 1e-4) one step",
            "after_rec, after_seg": "state-dict entries after the step (BatchNorm running statistics, block1.0, "
            "fin_out), flat as init_*",
            "test_*": "test_DRAEM forward after the step on step_image: eval mode, cat(rec.detach(), image), "
            "softmax (channel 1 stored), max of avg_pool2d(M[:, 1:], 21, stride 1, padding 10)",
            "ssim_<case>_loss": "loss.SSIM()(rec, img) (val_range None: from rec)",
            "ssim_<case>_map": "loss.ssim(rec, img, window=create_window(11, 3), window_size=11)[1]",
            "focal_loss": "loss.FocalLoss()(softmax(focal_logits, 1), focal_mask)",
        },
        "shims": [
            "imgaug stubbed with identity augmenters (imported by data_loader via train_DRAEM; unused here)",
            "torch.utils.tensorboard stubbed with an inert SummaryWriter (imported via tensorboard_visualizer; unused)",
            "Tensor.cuda() / Module.cuda() no-ops while SSIM() is built",
        ],
    }
    _common.write(args.out, args.name, out, meta)


if __name__ == "__main__":
    main()
