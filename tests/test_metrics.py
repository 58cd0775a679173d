"""Tests of posegen.metrics: OKS/PCK hand cases, SSIM/PSNR, the ONNX re-ID embedder on real CUHK03
crops, and FID/LPIPS loading only from local files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import CUHK03, SHARED, require, standing_pose
from posegen.metrics import ReidEmbedder, cosine, fid, lpips, oks, oks_batch, pck, psnr, ssim
from posegen.pose.keypoints import COCO17_OKS_SIGMAS

pytestmark = pytest.mark.usefixtures("one_torch_thread")

OSNET = SHARED / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx"


def _pose(seed=0):
    """The shared standing pose with 0.5 px jitter."""
    return standing_pose(noise=0.5, seed=seed)


# --------------------------------------------------------------------------- OKS
def test_oks_identical_is_one():
    kp = _pose()
    assert oks(kp, kp) == pytest.approx(1.0)


def test_oks_one_joint_off_matches_formula():
    target = _pose()
    pred = target.copy()
    pred[9, 0] += 5.0  # left wrist 5 px to the right
    xy = target[:, :2]
    area = float(np.prod(xy.max(0) - xy.min(0)))
    k = 2 * float(COCO17_OKS_SIGMAS[9])
    expected = (16 + math.exp(-25.0 / (2 * area * k * k))) / 17
    assert oks(pred, target) == pytest.approx(expected, rel=1e-6)
    assert oks(pred, target, area=1000.0) == pytest.approx((16 + math.exp(-25.0 / (2000 * k * k))) / 17, rel=1e-6)


def test_oks_absent_target_joints_ignored_and_absent_pred_joint_counts_zero():
    target = _pose()
    target[[0, 1, 2], 2] = 0.0  # the target lacks nose and eyes
    pred = target.copy()
    pred[[0, 1, 2], :2] += 40.0  # wildly off, but ignored
    pred[[0, 1, 2], 2] = 1.0
    assert oks(pred, target) == pytest.approx(1.0)
    pred[5, 2] = 0.1  # a present target joint missing in the prediction scores 0
    assert oks(pred, target) == pytest.approx(13 / 14)
    assert math.isnan(oks(pred, np.zeros((17, 3), np.float32)))


def test_oks_batch_matches_single():
    t = np.stack([_pose(0), _pose(1)])
    p = t.copy()
    p[1, 3, 1] += 3
    out = oks_batch(p, t)
    assert out.shape == (2,)
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx(oks(p[1], t[1]))
    with pytest.raises(ValueError):
        oks_batch(p[:, :5], t[:, :5])


# --------------------------------------------------------------------------- PCK
def test_pck_hand_cases():
    target = _pose()
    assert pck(target, target, reference="head") == 1.0
    # head box of nose, eyes, ears and mid-shoulder point
    head = np.concatenate([target[:5, :2], ((target[5, :2] + target[6, :2]) / 2)[None]])
    w, h = head.max(0) - head.min(0)
    pred = target.copy()
    pred[15, 0] += 0.5 * w + 0.01  # just outside the tolerance in x
    pred[16, 1] += 0.5 * h - 0.01  # just inside in y
    pred[7, 2] = 0.0  # missing in prediction -> wrong
    assert pck(pred, target, reference="head") == pytest.approx(15 / 17)
    # torso: left shoulder - right hip distance
    torso = float(np.linalg.norm(target[5, :2] - target[12, :2]))
    pred = target.copy()
    pred[9, :2] += np.array([0.6, 0.8]) * (0.2 * torso + 0.05)  # distance just above 0.2 * torso
    assert pck(pred, target, alpha=0.2, reference="torso") == pytest.approx(16 / 17)
    assert pck(pred, target, alpha=0.25, reference="torso") == pytest.approx(1.0)
    # bbox: alpha * max(w, h) of the target's keypoint box; absent target joints are not counted
    size = float((target[:, :2].max(0) - target[:, :2].min(0)).max())
    target2 = target.copy()
    target2[0, 2] = 0.0
    pred = target2.copy()
    pred[3, 1] += 0.1 * size + 0.1
    assert pck(pred, target2, alpha=0.1, reference="bbox") == pytest.approx(15 / 16)
    with pytest.raises(ValueError):
        pck(pred, target, reference="elbow")


def test_pck_undefined_reference_is_nan():
    target = _pose()
    target[:5, 2] = 0.0
    target[5, 2] = 0.0  # one shoulder: no mid-shoulder point, no head point
    assert math.isnan(pck(target, target, reference="head"))
    target[[6, 11], 2] = 0.0  # neither torso diagonal
    assert math.isnan(pck(target, target, reference="torso"))


# --------------------------------------------------------------------------- SSIM / PSNR
def _images(n=3, seed=0, hw=(48, 24)):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, hw[0] * hw[1] * 3).reshape(*hw, 3)
    return np.stack([np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8) for _ in range(n)])


def test_ssim_psnr_identical():
    a = _images()
    s = ssim(a, a)
    p = psnr(a, a)
    assert s.dtype == np.float32 and s.shape == (3,)
    np.testing.assert_allclose(s, 1.0, atol=1e-6)
    assert np.isinf(p).all() and (p > 0).all()
    assert ssim(a[0], a[0]).shape == (1,)


def test_ssim_psnr_decrease_with_noise():
    a = _images(1)[0]
    rng = np.random.default_rng(1)
    prev_s, prev_p = 1.0, np.inf
    for sigma in (5, 20, 60):
        b = np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)
        s, p = float(ssim(a, b)[0]), float(psnr(a, b)[0])
        assert s < prev_s and p < prev_p
        prev_s, prev_p = s, p
    # PSNR by hand: 10 log10(1 / MSE) on [0, 1]
    mse = np.mean(((a.astype(np.float64) - b.astype(np.float64)) / 255) ** 2)
    assert prev_p == pytest.approx(10 * np.log10(1 / mse), rel=1e-4)
    with pytest.raises(ValueError):
        ssim(a, a[:-1])
    with pytest.raises(ValueError):
        psnr(a.astype(np.float32), a.astype(np.float32))


# --------------------------------------------------------------------------- identity
def test_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[3.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(cosine(a, b), [[1, 1 / np.sqrt(2), 0], [0, 1 / np.sqrt(2), 0]], atol=1e-6)


def test_reid_embedder_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        ReidEmbedder(tmp_path / "nope.onnx")
    src = require(OSNET)
    lonely = tmp_path / src.name
    lonely.write_bytes(src.read_bytes())  # the graph without its .onnx.data beside it
    with pytest.raises(FileNotFoundError, match=r"onnx\.data"):
        ReidEmbedder(lonely)


def test_reid_embedder_same_pid_scores_higher_on_real_cuhk03():
    val = require(CUHK03 / "val")
    emb = ReidEmbedder(require(OSNET))
    assert emb.batch_size == 1 and emb.dim == 512
    pids, views, images = [], [], []
    for pid in range(10):
        for k in (0, 1, 5, 6):  # two images of view A, two of view B
            images.append(np.asarray(Image.open(val / f"{pid:04d}_{k:02d}.jpg").convert("RGB")))
            pids.append(pid)
            views.append(k // 5)
    f = emb.embed(images)
    assert f.shape == (40, 512) and f.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, atol=1e-5)
    s = cosine(f, f)
    pids, views = np.array(pids), np.array(views)
    same = pids[:, None] == pids[None]
    cross = views[:, None] != views[None]
    off = ~np.eye(len(f), dtype=bool)
    # same view: the same person vs other people seen from the same camera
    assert s[same & ~cross & off].mean() > s[~same & ~cross].mean() + 0.05
    # across views (mostly front vs back): still above other people across the same views
    assert s[same & cross].mean() > s[~same & cross].mean()


# --------------------------------------------------------------------------- FID / LPIPS
def test_fid_needs_local_weights(tmp_path):
    a = _images(3)
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05"):
        fid(a, a, inception_weights=None)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        fid(a, a, inception_weights=tmp_path / "missing.pth")
    bogus = tmp_path / "bogus.pth"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception) as info:  # torch.load fails on the file itself; nothing is fetched
        fid(a, a, inception_weights=bogus)
    assert not isinstance(info.value, AssertionError)  # not the network guard


def test_lpips_local_weights(tmp_path):
    import torchvision

    a = _images(2, seed=0, hw=(64, 32))
    b = _images(2, seed=1, hw=(64, 32))
    with pytest.raises(FileNotFoundError, match="alexnet-owt"):
        lpips(a, b, weights=None)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        lpips(a, b, weights=tmp_path / "missing.pth")
    # a torchvision AlexNet state dict (random weights here; the real file is alexnet-owt-7be5be79.pth)
    torch.manual_seed(0)
    backbone = tmp_path / "alexnet.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), backbone)
    same = lpips(a, a, weights=backbone)
    diff = lpips(a, b, weights=backbone)
    assert same.shape == (2,) and same.dtype == np.float32
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
    assert (diff > 0).all()
    # a file with only the linear layers is refused (the backbone would be random)
    import torchmetrics.functional.image.lpips as tm_lpips
    from pathlib import Path

    lin_only = Path(tm_lpips.__file__).parent / "lpips_models" / "alex.pth"
    with pytest.raises(ValueError, match="missing"):
        lpips(a, b, weights=lin_only)
    with pytest.raises(ValueError, match="net must be"):
        lpips(a, b, weights=backbone, net="squeeze")
    with pytest.raises(ValueError, match="32 x 32"):
        lpips(a[:, :20], a[:, :20], weights=backbone)
