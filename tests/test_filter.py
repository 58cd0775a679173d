"""The quality filter: OKS against hand computations, and the reasons on planted bad outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posegen.data.images import read_image
from posegen.filter import oks, score_output
from posegen.pose.keypoints import empty_keypoints


def _pose(points: dict[int, tuple[float, float]]) -> np.ndarray:
    kp = empty_keypoints()
    for j, (x, y) in points.items():
        kp[j] = (x, y, 1.0)
    return kp


def test_oks_hand_computed():
    target = _pose({0: (0.0, 0.0), 15: (10.0, 20.0)})  # keypoint box 10 x 20 -> area 200
    pred = target.copy()
    pred[[0, 15], :2] += (3.0, 4.0)  # every joint 5 px away
    # exp(-d^2 / (2 * area * (2 sigma)^2)), sigma_nose = 0.026, sigma_left_ankle = 0.089
    expected = 0.5 * (math.exp(-25 / (2 * 200 * 0.052**2)) + math.exp(-25 / (2 * 200 * 0.178**2)))
    assert oks(pred, target) == pytest.approx(expected, rel=1e-5)
    assert oks(target, target) == pytest.approx(1.0)
    assert oks(pred, target, area=800) == pytest.approx(
        0.5 * (math.exp(-25 / (2 * 800 * 0.052**2)) + math.exp(-25 / (2 * 800 * 0.178**2))), rel=1e-5
    )


def test_oks_missing_joints():
    target = _pose({5: (10.0, 10.0), 6: (30.0, 10.0), 11: (12.0, 50.0), 12: (28.0, 50.0)})
    pred = target.copy()
    pred[12, 2] = 0.0  # the prediction misses one of the four target joints
    assert oks(pred, target) == pytest.approx(0.75)
    extra = target.copy()
    extra[0] = (20.0, 0.0, 1.0)  # joints absent from the target are not scored
    assert oks(extra, target) == pytest.approx(1.0)
    assert math.isnan(oks(target, empty_keypoints()))


def test_filter_reasons_on_planted_outputs(cuhk03_train, blazepose):
    image = read_image(cuhk03_train / "0000_00.jpg")
    own = blazepose.estimate(image)
    kw = dict(min_oks=0.5, min_std=0.02)

    real = score_output(image, own, blazepose, **kw)  # a real photo in its own pose: kept
    assert real.kept and real.reason == "" and real.oks > 0.9

    blank = score_output(np.full_like(image, 128), own, blazepose, **kw)
    assert not blank.kept and blank.reason == "blank output"

    nan = image.astype(np.float32) / 255.0
    nan[0, 0, 0] = np.nan
    assert score_output(nan, own, blazepose, **kw).reason == "non-finite output"

    wrong = own.copy()  # the same skeleton turned upside down
    wrong[:, 1] = image.shape[0] - 1 - wrong[:, 1]
    bad = score_output(image, wrong, blazepose, **kw)
    assert not bad.kept and bad.reason.startswith("low pose fidelity") and bad.oks < 0.5

    noise = np.random.default_rng(0).integers(0, 256, image.shape, dtype=np.uint8)
    res = score_output(noise, own, blazepose, **kw)
    assert not res.kept
    assert res.reason == "no person found in output" or res.reason.startswith("low pose fidelity")

    assert score_output(image, empty_keypoints(), blazepose, **kw).reason == "target pose empty"
