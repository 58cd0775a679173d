"""Tests of posegen.prior: the shipped pose-validity prior (AUC on real Market-1501 poses, few real
CUHK03 BlazePose poses flagged), invariances, gradients, loading, deterministic and weighted
training, per-source calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CUHK03, MARKET_KP, require, standing_pose
from posegen.prior import (
    PERTURBATIONS,
    PoseValidityPrior,
    calibrate_threshold,
    evaluate_auc,
    load_pose_bank,
    load_pose_prior,
    perturb_pose,
    save_pose_prior,
    train_pose_prior,
)
from posegen.prior.model import WEIGHTS_FILE, shipped_weights_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pose(seed=0):
    """The shared standing pose with 1.0 px jitter."""
    return standing_pose(noise=1.0, seed=seed)


@pytest.fixture(scope="module")
def prior():
    return load_pose_prior()


def test_shipped_weights_load_offline(prior):
    folder = shipped_weights_dir()
    assert (folder / "config.json").is_file()
    assert (folder / WEIGHTS_FILE).stat().st_size < 1_000_000
    assert isinstance(prior, PoseValidityPrior)
    assert np.isfinite(prior.config.threshold) and prior.config.threshold > 0
    e = prior.score(_pose())
    assert e.shape == (1,) and e.dtype == np.float32 and e[0] >= 0


def test_missing_weights_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pose_prior(tmp_path / "nowhere")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        load_pose_prior(tmp_path / "half")


def test_shipped_prior_separates_real_from_perturbed_market_poses(prior):
    test_csv = require(MARKET_KP / "market-annotation-test.csv")
    real = load_pose_bank(test_csv, min_joints=prior.config.min_joints)[:3000]
    res = evaluate_auc(prior, real, seed=1)
    assert res["overall"]["auc"] > 0.9, res
    for kind in PERTURBATIONS:
        assert res[kind]["n_perturbed"] > 2000
        assert res[kind]["auc"] > 0.85, (kind, res[kind])
    # the calibrated threshold lets few real poses through as implausible
    assert res["real_flagged_at_threshold"] < 0.05


def test_energy_invariant_to_translation_and_scale(prior):
    kp = np.stack([_pose(s) for s in range(4)])
    kp[1, [3, 4], 2] = 0.0  # some absent joints (moved far away: they must be ignored)
    kp[1, [3, 4], :2] = 1000.0
    e = prior.score(kp)
    moved = kp.copy()
    moved[..., :2] = moved[..., :2] * 3.7 + np.array([120.0, -55.0], dtype=np.float32)
    np.testing.assert_allclose(prior.score(moved), e, rtol=1e-3, atol=1e-6)
    kp2 = kp.copy()
    kp2[1, [3, 4], :2] = -7.0
    np.testing.assert_allclose(prior.score(kp2), e, rtol=1e-5, atol=1e-7)


def test_too_few_joints_is_nan(prior):
    kp = _pose()
    kp[prior.config.min_joints - 1 :, 2] = 0.0  # min_joints - 1 joints left
    assert np.isnan(prior.score(kp)[0])
    kp = _pose()
    kp[:, :2] = 5.0  # all at one point: no scale
    assert np.isnan(prior.score(kp)[0])
    assert not prior.is_plausible(kp)[0]


def test_energy_gradient_descends_back_to_plausible(prior):
    real = _pose(3)
    bad = perturb_pose(real, "jitter", np.random.default_rng(0))
    x = torch.from_numpy(bad[None]).clone().requires_grad_(True)
    e0 = prior.energy(x)
    assert e0.item() > prior.score(real)[0]
    e0.sum().backward()
    g = x.grad
    assert torch.isfinite(g).all()
    assert g[..., 2].abs().max() == 0  # scores are not moved
    # plain gradient steps in pixels; the energy is scale-free so its gradient ~ 1/scale^2 in pixels
    energies = [e0.item()]
    y = x.detach().clone()
    for _ in range(20):
        y.requires_grad_(True)
        e = prior.energy(y)
        (grad,) = torch.autograd.grad(e.sum(), y)
        with torch.no_grad():
            y = y - 500.0 * grad
        energies.append(prior.energy(y).item())
    assert energies[-1] < 0.5 * energies[0], energies


def test_perturb_pose_kinds_and_errors():
    real = _pose()
    for kind in PERTURBATIONS:
        a = perturb_pose(real, kind, np.random.default_rng(5))
        b = perturb_pose(real, kind, np.random.default_rng(5))
        np.testing.assert_array_equal(a, b)
        assert a.shape == (17, 3) and a.dtype == np.float32
        np.testing.assert_array_equal(a[:, 2], real[:, 2])
        assert not np.allclose(a[:, :2], real[:, :2])
    with pytest.raises(ValueError, match="kind"):
        perturb_pose(real, "rotate", np.random.default_rng(0))
    arms_only = real.copy()
    arms_only[7:, 2] = 0.0  # no limb joints: nothing to swap or scale
    for kind in ("swap", "bone"):
        with pytest.raises(ValueError):
            perturb_pose(arms_only, kind, np.random.default_rng(0))


def test_training_is_deterministic_for_a_seed(tmp_path):
    rng = np.random.default_rng(0)
    bank = np.stack([_pose(i) for i in range(300)])
    bank[:, :, :2] += rng.normal(0, 10, (300, 1, 2)).astype(np.float32)
    kw = dict(steps=15, batch_size=64, hidden=32, layers=2)
    a = train_pose_prior(bank, seed=3, **kw)
    b = train_pose_prior(bank, seed=3, **kw)
    c = train_pose_prior(bank, seed=4, **kw)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))
    # saved and reloaded from a local folder, it scores the same
    save_pose_prior(a, tmp_path / "prior")
    again = load_pose_prior(tmp_path / "prior")
    np.testing.assert_allclose(again.score(bank[:5]), a.score(bank[:5]), rtol=1e-6)
    assert again.config.training["seed"] == 3


def test_sample_weights_never_draw_zero_weight_poses():
    rng = np.random.default_rng(0)
    a = np.stack([_pose(i) for i in range(300)])
    a[:, :, :2] += rng.normal(0, 10, (300, 1, 2)).astype(np.float32)
    b = a[:200].copy()
    b[:, :, 1] *= -1.0  # upside-down poses: different data
    kw = dict(steps=15, batch_size=64, hidden=32, layers=2, seed=3)
    only_a = train_pose_prior(a, sample_weights=np.ones(300), **kw)
    mixed = train_pose_prior(np.concatenate([b, a]), sample_weights=np.r_[np.zeros(200), np.ones(300)], **kw)
    for (k, va), vb in zip(only_a.state_dict().items(), mixed.state_dict().values()):
        assert torch.equal(va, vb), k
    assert mixed.config.training["weighted_sampling"] is True
    assert mixed.config.training["n_train_poses"] == 500
    with pytest.raises(ValueError, match="sample_weights must be"):
        train_pose_prior(a, sample_weights=np.ones(10), **kw)
    with pytest.raises(ValueError, match=">= 0"):
        train_pose_prior(a, sample_weights=-np.ones(300), **kw)
    with pytest.raises(ValueError, match="zero"):
        train_pose_prior(a, sample_weights=np.zeros(300), **kw)


def test_calibrate_threshold_per_group_is_the_largest_quantile(prior, tmp_path):
    save_pose_prior(prior, tmp_path / "copy")
    model = load_pose_prior(tmp_path / "copy")  # calibrating changes the config: not the shared fixture
    rng = np.random.default_rng(2)
    tight = np.stack([_pose(i) for i in range(200)])
    loose = np.stack([perturb_pose(_pose(i), "jitter", rng) for i in range(50)])
    kp = np.concatenate([tight, loose])
    groups = np.r_[np.zeros(200), np.ones(50)]
    e = model.score(kp)
    thr = calibrate_threshold(model, kp, 0.9, groups=groups)
    assert thr == pytest.approx(max(np.quantile(e[:200], 0.9), np.quantile(e[200:], 0.9)))
    assert model.config.threshold == thr
    for g in (0, 1):
        assert np.mean(e[groups == g] > thr) <= 0.1 + 1e-9
    # pooled, the large tight group would set a threshold flagging most of the loose group
    pooled = calibrate_threshold(model, kp, 0.9)
    assert pooled < thr and pooled == pytest.approx(np.quantile(e, 0.9))
    with pytest.raises(ValueError, match="groups"):
        calibrate_threshold(model, kp, 0.9, groups=groups[:10])


@pytest.fixture(scope="module")
def cuhk03_val_poses(blazepose, tmp_path_factory):
    """Usable BlazePose-full poses ``float32 [N, 17, 3]`` of the first 15 identities of real CUHK03
    val (150 images; never used to train or calibrate the shipped prior)."""
    from posegen.data import load_dataset
    from posegen.pose.extract import extract_poses, usable_poses
    from posegen.pose.formats import keypoints_array

    root = require(CUHK03 / "val")
    manifest = load_dataset(root)
    manifest = manifest[manifest["pid"] < manifest["pid"].min() + 15].reset_index(drop=True)
    poses = extract_poses(manifest, root, blazepose, out=tmp_path_factory.mktemp("val") / "poses.parquet")
    return keypoints_array(poses[usable_poses(poses, min_score=0.5, min_keypoints=8)])


def test_shipped_prior_rarely_flags_real_blazepose_poses(prior, cuhk03_val_poses):
    # the Market-only prior flagged 28.5 % of all usable CUHK03 val poses (benchmarks/results/pose_prior.md)
    real = cuhk03_val_poses
    assert len(real) >= 100
    assert np.mean(~prior.is_plausible(real)) < 0.05
    res = evaluate_auc(prior, real, seed=1)
    assert res["overall"]["auc"] > 0.9, res
