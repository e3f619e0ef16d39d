"""Golden fixture for ADL from the authors' released code (github.com/anindyasdas/ADL4VAD).

Usage::

    python tools/golden/make_adl.py --reference /tmp/ref-ADL4VAD --out tests/golden/

Imports, unmodified, from the checkout: ``adl_train.SoftDeviationLoss`` (deviation loss with the
labels as target, soft deviation loss with the classifier's probability), ``utils.get_loss_weights``
(alpha-divergence instance weights, burn-in weights), ``utils.run_k_means`` (k-means pseudo-labels),
``loss.FocalLoss`` (segmentation loss) and ``modeling.netm1.PlainHead`` (top-K score), plus the
``torch.nn.BCELoss(reduce=False)`` the trainer builds. Runs them on a fixed batch and writes
``<out>/adl_released.npz`` / ``.json``.

Shims (none changes a computed number):
    - ``imgaug`` is not installed (it is imported by the released data sets, which are not used
      here): an empty stub module is registered when the import fails.
    - ``Tensor.cuda`` / ``Module.cuda`` are made no-ops while the reference code runs (it calls
      ``.cuda()`` unconditionally); everything is computed on the CPU in float32.
    - The released deviation loss draws its 5000 reference scores with ``torch.normal`` from the
      global torch RNG. The draws are recorded (a wrapper around ``torch.normal`` that returns the
      same tensor) and stored as ``ref_samples``, so adlib can be fed the same draws.

Inputs (all stored): ``scores`` (B = 16 top-K scores ``psi_K``, a normal-looking bulk and a few
large ones), ``labels`` (0/1), ``prob`` (classifier probabilities), segmentation logits
(2 x 2 x 32 x 32; the released model applies a softmax over the 2 channels) and a 0/1 mask,
and a feature map with a 1x1 scoring conv for the top-K head. Seeds in the JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

SEED = 20250716
REF_SEED = 7
B = 16
ALPHAS = (0.1, 0.0, 0.5, 1.0)
LAMBDA = 0.1
MARGIN = 10.0  # the released confidence_margin (hard-coded in SoftDeviationLoss)


def make_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(SEED)
    scores = torch.rand(B, generator=g) * 2.0  # the normal bulk, psi_K >= 0
    scores[[3, 8, 13]] = torch.tensor([6.5, 11.0, 14.5])  # a few large scores (pseudo-anomalies)
    scores[5] = 9.2
    labels = torch.zeros(B)
    labels[[3, 8, 11, 15]] = 1.0  # given labels (pseudo-anomaly half); 11 and 15 have low scores
    prob = torch.rand(B, generator=g) * 0.96 + 0.02
    seg_logits = torch.randn(2, 2, 32, 32, generator=g) * 2.0
    mask = (torch.rand(2, 1, 32, 32, generator=g) < 0.2).float()
    feat = torch.randn(4, 8, 10, 10, generator=g)
    return {"scores": scores, "labels": labels, "prob": prob, "seg_logits": seg_logits, "mask": mask, "features": feat}


def main() -> None:
    args = _common.parse_args(__doc__.splitlines()[0], "adl_released")
    ref = args.reference.resolve()
    commit = _common.commit_of(ref, args.commit)
    sys.path.insert(0, str(ref))
    _common.stub_module("imgaug.augmenters")
    import adl_train  # noqa: E402  (reference)
    import utils as ref_utils  # noqa: E402  (reference)
    from loss import FocalLoss  # noqa: E402  (reference)
    from modeling.netm1 import PlainHead  # noqa: E402  (reference)

    torch.set_num_threads(1)
    x = make_inputs()
    s2 = x["scores"].view(-1, 1)
    out: dict[str, object] = dict(x)

    recorded: list[torch.Tensor] = []
    normal = torch.normal

    def recording_normal(*a, **k):
        r = normal(*a, **k)
        recorded.append(r.detach().clone())
        return r

    with _common.cuda_is_identity():
        torch.normal = recording_normal
        try:
            crit = adl_train.SoftDeviationLoss()
            torch.manual_seed(REF_SEED)
            dev_hard = crit(s2, x["labels"].unsqueeze(1).float()).view(-1, 1)  # released burn-in call
            torch.manual_seed(REF_SEED)
            dev_soft = crit(s2, x["prob"].view(-1, 1).float()).view(-1, 1)  # released call after burn-in
        finally:
            torch.normal = normal
        assert len(recorded) == 2 and torch.equal(recorded[0], recorded[1])
        out["ref_samples"] = recorded[0]
        out["dev_loss"] = dev_hard[:, 0]
        out["soft_dev_loss"] = dev_soft[:, 0]

        bce = torch.nn.BCELoss(reduce=False)
        out["bce_loss"] = bce(x["prob"], x["labels"])
        cluster = ref_utils.run_k_means(s2)  # sklearn KMeans(n_clusters=2, random_state=0)
        combined = cluster + x["labels"]
        combined[np.argwhere(combined >= 1).flatten()] = 1  # released OR of k-means and labels
        out["kmeans_labels"] = cluster.float()
        out["pseudo_labels_or"] = combined.float()
        out["bce_loss_pseudo"] = bce(x["prob"], combined.float())

        sm = torch.softmax(x["seg_logits"], dim=1)
        out["seg_loss"] = FocalLoss()(sm, x["mask"])  # released criterion3 on the softmax output

        losses = {"dev": dev_soft.detach().numpy(), "bce": out["bce_loss_pseudo"].detach().numpy()}
        for name, lv in losses.items():
            for a in ALPHAS:
                w = ref_utils.get_loss_weights(lv, "alpha", a, LAMBDA, "normalized", 10, 5)
                out[f"w_{name}_alpha{a}"] = np.asarray(w).reshape(-1)
            w = ref_utils.get_loss_weights(lv, "alpha", 0.1, LAMBDA, "normalized", 5, 5)  # burn-in
            out[f"w_{name}_burnin"] = np.asarray(w).reshape(-1)
        # the released objective's two reweighted terms: torch.mean(losses * weights)
        w_dev = torch.from_numpy(np.asarray(out["w_dev_alpha0.1"]).reshape(-1, 1))
        w_bce = torch.from_numpy(np.asarray(out["w_bce_alpha0.1"]))
        out["term_dev"] = torch.mean(dev_soft * w_dev)
        out["term_bce"] = torch.mean(out["bce_loss_pseudo"] * w_bce)

        torch.manual_seed(SEED)
        head = PlainHead(None, 8, 0.1)
        out["head_weight"] = head.scoring.weight.detach()
        out["head_bias"] = head.scoring.bias.detach()
        out["topk_score"] = head(x["features"])[:, 0]

    meta = {
        "component": "ADL (Das, Pang, Bhuyan, WACV 2025), released code",
        "repo": "https://github.com/anindyasdas/ADL4VAD",
        "commit": commit,
        "generator": "tools/golden/make_adl.py",
        "versions": _common.versions("sklearn", "scipy"),
        "seeds": {
            "inputs_torch_generator": SEED,
            "reference_scores_torch_manual_seed": REF_SEED,
            "plainhead_init_torch_manual_seed": SEED,
        },
        "settings": {
            "batch": B,
            "margin": MARGIN,
            "alphas": list(ALPHAS),
            "lambda": LAMBDA,
            "weights_iteration_burnin": [10, 5],
            "burnin_weights_iteration_burnin": [5, 5],
            "topk_rate": 0.1,
            "focal": "loss.FocalLoss() defaults (gamma 2, smooth 1e-5, alpha None)",
        },
        "reference_functions": {
            "dev_loss": "adl_train.SoftDeviationLoss()(scores[:, None], labels[:, None])",
            "soft_dev_loss": "adl_train.SoftDeviationLoss()(scores[:, None], prob[:, None])",
            "bce_loss": "torch.nn.BCELoss(reduce=False)(prob, labels)",
            "kmeans_labels / pseudo_labels_or": "utils.run_k_means(scores[:, None]); OR with labels (adl_train)",
            "bce_loss_pseudo": "BCELoss(reduce=False)(prob, pseudo_labels_or)",
            "seg_loss": "loss.FocalLoss()(softmax(seg_logits, 1), mask)",
            "w_<dev|bce>_alpha<a>": "utils.get_loss_weights(L, 'alpha', a, 0.1, 'normalized', 10, 5)",
            "w_<dev|bce>_burnin": "utils.get_loss_weights(L, 'alpha', 0.1, 0.1, 'normalized', 5, 5)",
            "term_dev / term_bce": "torch.mean(L * w) as in Trainer.train (alpha 0.1)",
            "topk_score": "modeling.netm1.PlainHead(None, 8, 0.1)(features)",
        },
        "shims": [
            "imgaug stubbed (unused data-set import)",
            "Tensor/Module.cuda() no-ops",
            "torch.normal wrapped to record the reference draws (same tensor returned)",
        ],
    }
    _common.write(args.out, args.name, out, meta)


if __name__ == "__main__":
    main()
