"""Issue 18: masks that cannot be right are named: an image labelled anomalous with an empty mask,
and a test set whose defect masks are all empty (the pixel metrics are then left out, with a
warning saying so)."""

from __future__ import annotations

import logging

import numpy as np

from adlib.models.base import Prediction, evaluate


def _pred(masks, labels):
    n = len(labels)
    rng = np.random.default_rng(0)
    return Prediction(
        image_scores=rng.random(n),
        maps=rng.random((n, 8, 8)).astype(np.float32),
        labels=np.asarray(labels),
        masks=np.asarray(masks, np.uint8),
        paths=[f"test/{i}.png" for i in range(n)],
    )


def test_an_anomalous_image_with_an_empty_mask_is_named(caplog):
    masks = np.zeros((4, 8, 8), np.uint8)
    masks[2, 2:4, 2:4] = 1
    with caplog.at_level(logging.WARNING, logger="adlib.models.base"):
        m = evaluate(_pred(masks, [0, 0, 1, 1]))
    assert "pixel_auroc" in m and "au_pro" in m
    assert "1 image(s) labelled anomalous have an empty mask (test/3.png)" in caplog.text
    assert "test/2.png" not in caplog.text


def test_all_defect_masks_empty_leaves_the_pixel_metrics_out_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="adlib.models.base"):
        m = evaluate(_pred(np.zeros((4, 8, 8)), [0, 1, 1, 1]))
    assert set(m) == {"image_auroc", "image_ap"}
    assert "pixel AUROC, pixel AP and AU-PRO are left out" in caplog.text and "test/1.png" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adlib.models.base"):
        masks = np.zeros((4, 8, 8), np.uint8)
        masks[1:, 1, 1] = 1
        evaluate(_pred(masks, [0, 1, 1, 1]))
    assert caplog.text == ""  # every defect has its pixels: nothing to say
