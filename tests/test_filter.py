"""The quality filter: OKS against hand computations, the reasons on planted bad outputs (blank,
near-copy, wrong pose, other identity), and implausible target poses rejected before generation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED, require

from posegen.augment import choose_targets
from posegen.data.images import read_image
from posegen.filter import FILTER_COLUMNS, IMPLAUSIBLE_TARGET, REASON_ORDER, filter_batch, oks, score_output
from posegen.pose.keypoints import empty_keypoints
from posegen.recipe import FilterConfig


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


# --------------------------------------------------------------------------- filter v2
OSNET = SHARED / "weights" / "osnet" / "osnet_x0_25_msmt17.onnx"


def _other_pose(own: np.ndarray, height: int) -> np.ndarray:
    """The same skeleton turned upside down: a clearly different pose in the same image."""
    wrong = own.copy()
    wrong[:, 1] = height - 1 - wrong[:, 1]
    return wrong


def test_near_copy_of_source_is_caught_first(cuhk03_train, blazepose):
    image = read_image(cuhk03_train / "0000_00.jpg")
    own = blazepose.estimate(image)
    cfg = FilterConfig()
    # the output is the source itself although the target pose differs: a near-copy, whatever the
    # pose checks would say (the copy also fails pose fidelity, but "near-copy" is reported)
    target = _other_pose(own, image.shape[0])
    res = score_output(image, target, blazepose, min_oks=0.5, min_std=0.02, source=image, source_keypoints=own, frame_hw=(64, 32))
    assert not res.kept and res.reason == f"near-copy of source (SSIM >= {cfg.max_source_ssim:g})"
    assert res.source_ssim > 0.99 and res.source_pose_oks < cfg.copy_pose_oks
    assert res.oks < 0.5  # computed and stored although not the reason
    # the same copy for a target pose equal to the source's is no copy problem: kept
    same = score_output(image, own, blazepose, min_oks=0.5, min_std=0.02, source=image, source_keypoints=own, frame_hw=(64, 32))
    assert same.kept and same.source_pose_oks >= cfg.copy_pose_oks and same.source_ssim > 0.99


def test_wrong_pose_is_low_pose_fidelity_not_copy(cuhk03_train, blazepose):
    source = read_image(cuhk03_train / "0000_00.jpg")
    output = read_image(cuhk03_train / "0000_01.jpg")  # the same person, another photo
    kp_src, kp_out = blazepose.estimate(source), blazepose.estimate(output)
    bad = score_output(
        output, _other_pose(kp_out, output.shape[0]), blazepose, min_oks=0.5, min_std=0.02,
        source=source, source_keypoints=kp_src, frame_hw=(64, 32),
    )  # fmt: skip
    assert not bad.kept and bad.reason == "low pose fidelity (OKS < 0.5)"
    assert bad.source_ssim < 0.7 and bad.n_keypoints >= 8


def test_mirror_oks_accepts_a_pose_read_with_left_and_right_exchanged(cuhk03_train, blazepose):
    from posegen.pose.keypoints import COCO17_FLIP_INDEX
    from posegen.recipe import FilterConfig

    image = read_image(cuhk03_train / "0001_00.jpg")
    own = blazepose.estimate(image)
    swapped = own[list(COCO17_FLIP_INDEX)]  # the same skeleton, its left and right labels exchanged
    plain = score_output(image, swapped, blazepose, min_oks=0.5, min_std=0.02)
    assert not plain.kept and plain.reason == "low pose fidelity (OKS < 0.5)"
    assert plain.oks < 0.5 and plain.oks_mirrored > 0.99  # stored whatever the decision
    tolerant = score_output(image, swapped, blazepose, min_oks=0.5, min_std=0.02, config=FilterConfig(mirror_oks=True))
    assert tolerant.kept and tolerant.oks == plain.oks
    # a wrong skeleton stays wrong either way round
    wrong = score_output(image, _other_pose(own, image.shape[0]), blazepose, min_oks=0.5, min_std=0.02,
                         config=FilterConfig(mirror_oks=True))  # fmt: skip
    assert not wrong.kept and wrong.reason == "low pose fidelity (OKS < 0.5)"


def test_different_identity_is_rejected(cuhk03_train, blazepose):
    from posegen.metrics import ReidEmbedder

    require(OSNET)
    emb = ReidEmbedder(OSNET)
    names = ["0000_00.jpg", "0000_01.jpg", "0002_00.jpg", *[f"0000_{k:02d}.jpg" for k in range(2, 10)]]
    imgs = {n: read_image(cuhk03_train / n) for n in names}
    e = dict(zip(names, emb.embed(list(imgs.values()))))
    source = imgs["0000_00.jpg"]
    others = np.stack([e[f"0000_{k:02d}.jpg"] for k in range(2, 10)])  # pid 0's other images (not the outputs)
    outs = ["0000_01.jpg", "0002_00.jpg"]  # the same person / a different person, each in its own pose
    targets = np.stack([blazepose.estimate(imgs[n]) for n in outs])
    cfg = FilterConfig(min_identity=0.75, min_identity_others=-1.0)
    df = filter_batch(
        [imgs[n] for n in outs], [source, source], np.stack([blazepose.estimate(source)] * 2), targets, cfg, blazepose,
        embedder=emb, others_embeddings=[others, others], frame_hw=(64, 32),
    )  # fmt: skip
    same, other = df.iloc[0], df.iloc[1]
    assert same["kept"], same["reason"]
    assert same["identity_sim"] > 0.8 > 0.7 > other["identity_sim"]
    assert not other["kept"] and other["reason"] == "low identity (source similarity < 0.75)"
    assert other["oks"] > 0.9  # the right pose: identity is what fails
    # the check against the pid's other images, alone
    assert same["identity_sim_others"] > other["identity_sim_others"]
    cut = (same["identity_sim_others"] + other["identity_sim_others"]) / 2
    cfg2 = FilterConfig(min_identity=-1.0, min_identity_others=round(float(cut), 3))
    df2 = filter_batch(
        [imgs[n] for n in outs], None, None, targets, cfg2, blazepose, embedder=emb,
        source_embeddings=np.stack([e["0000_00.jpg"]] * 2), others_embeddings=[others, np.zeros((0, others.shape[1]))],
    )  # fmt: skip
    assert df2["kept"].tolist() == [True, True]  # no other images for the second row: NaN, not applied
    assert math.isnan(df2.iloc[1]["identity_sim_others"])
    df3 = filter_batch(
        [imgs[n] for n in outs], None, None, targets, cfg2, blazepose, embedder=emb,
        source_embeddings=np.stack([e["0000_00.jpg"]] * 2), others_embeddings=[others, others],
    )  # fmt: skip
    assert df3["kept"].tolist() == [True, False]
    assert df3.iloc[1]["reason"].startswith("low identity (similarity to other images")


def test_every_rejection_has_one_reason_and_scores_are_kept(cuhk03_train, blazepose):
    image = read_image(cuhk03_train / "0000_00.jpg")
    own = blazepose.estimate(image)
    nan = image.astype(np.float32) / 255.0
    nan[0, 0, 0] = np.nan
    outputs = [image, np.full_like(image, 128), nan, image]
    targets = np.stack([own, own, own, empty_keypoints()])
    df = filter_batch(outputs, None, None, targets, FilterConfig(), blazepose, prior_energy=[1.0, 2.0, 3.0, 4.0])
    assert list(df.columns) == FILTER_COLUMNS
    assert df["reason"].tolist() == ["", "blank output", "non-finite output", "target pose empty"]
    assert df["kept"].tolist() == [True, False, False, False]
    assert df["prior_energy"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert df.loc[1, "std"] < 1e-9 and df.loc[1, "oks"] == 0.0  # a blank image: no person, OKS 0, stored
    assert math.isnan(df.loc[2, "std"]) and df.loc[2, "n_keypoints"] == -1
    assert math.isnan(df.loc[0, "identity_sim"])  # no embedder: identity not computed
    for r in df["reason"]:
        assert r == "" or any(r.startswith(p) for p in REASON_ORDER)


# --------------------------------------------------------------------------- target plausibility
def _bank(paths_pids, energies):
    return pd.DataFrame({"path": [p for p, _ in paths_pids], "pid": [q for _, q in paths_pids], "prior_energy": energies})


def test_choose_targets_skips_implausible_poses_deterministically():
    bank = _bank([(f"{p:04d}_{k:02d}.jpg", p) for p in range(4) for k in range(3)], [0.0] * 12)
    sources = bank[bank["pid"] == 0][["path", "pid"]]
    base = choose_targets(sources, bank, k=3, seed=1)
    assert (base["reason"] == "").all() and len(base) == 9
    assert base.equals(choose_targets(sources, bank, k=3, seed=1))  # deterministic
    # make the first drawn target of the first source implausible: it is replaced, the others stay
    first = base.iloc[0]["target"]
    bad = bank.assign(prior_energy=np.where(bank["path"] == first, 10.0, 0.0))
    redrawn = choose_targets(sources, bad, k=3, seed=1, max_energy=5.0)
    assert first not in set(redrawn["target"]) and (redrawn["reason"] == "").all()
    src0 = base.iloc[0]["source"]
    assert set(base[base["source"] == src0]["target"]) - {first} <= set(redrawn[redrawn["source"] == src0]["target"])
    assert redrawn["seed"].tolist() == base["seed"].tolist()  # noise seeds do not move
    # NaN energy (unknown) is not implausible; no threshold accepts everything
    assert choose_targets(sources, bank.assign(prior_energy=np.nan), k=3, seed=1, max_energy=5.0).equals(base.assign(prior_energy=np.nan))
    assert choose_targets(sources, bad, k=3, seed=1).equals(base.assign(prior_energy=np.where(base["target"] == first, 10.0, 0.0)))


def test_choose_targets_rejects_when_no_plausible_candidate_is_left():
    bank = _bank([("0000_00.jpg", 0), ("0001_00.jpg", 1), ("0001_01.jpg", 1), ("0002_00.jpg", 2)], [0.0, 9.0, 9.0, 1.0])
    t = choose_targets(bank[bank["pid"] == 0][["path", "pid"]], bank, k=3, seed=0, max_energy=5.0)
    assert len(t) == 3
    assert t.iloc[0]["target"] == "0002_00.jpg" and t.iloc[0]["reason"] == ""
    assert (t.iloc[1:]["reason"] == IMPLAUSIBLE_TARGET).all()
    assert set(t.iloc[1:]["target"]) == {"0001_00.jpg", "0001_01.jpg"} and (t.iloc[1:]["prior_energy"] == 9.0).all()


def _stretch_forearm(kp: np.ndarray) -> np.ndarray:
    """A bone 3x too long: the left wrist moved out along the forearm."""
    out = kp.copy()
    out[9, :2] = out[7, :2] + 3.0 * (out[9, :2] - out[7, :2])
    out[9, 2] = out[7, 2] = 1.0
    return out


def _swap_limbs(kp: np.ndarray) -> np.ndarray:
    """Ankles and shoulders exchanged: the person upside down inside an upright head."""
    out = kp.copy()
    out[[5, 6, 15, 16]] = kp[[15, 16, 5, 6]]
    return out


def test_implausible_target_pose_is_rejected_before_generation(cuhk03_small):
    from posegen.augment.run import _generate_batch
    from posegen.prior import load_pose_prior

    root, manifest, poses = cuhk03_small
    prior = load_pose_prior()
    ok = poses[poses["status"] == "ok"].reset_index(drop=True)
    good = np.stack(ok["keypoints"].to_list())[:8]
    planted = np.stack([_stretch_forearm(good[0]), _swap_limbs(good[1])])
    e_good, e_bad = prior.score(good), prior.score(planted)
    thr = prior.config.threshold
    assert (e_bad > thr).all(), (e_bad, thr)
    assert np.nanmedian(e_good) <= thr
    # a bank where the only other identity's poses are the planted ones
    bank = pd.DataFrame({"path": ["0000_00.jpg", "0001_00.jpg", "0001_01.jpg"], "pid": [0, 1, 1], "prior_energy": [e_good[0], *e_bad]})
    tasks = choose_targets(bank.iloc[:1], bank, k=2, seed=0, max_energy=thr)
    assert (tasks["reason"] == IMPLAUSIBLE_TARGET).all() and len(tasks) == 2
    # ... and augment's batch step writes their rows without generating (the pipeline is not called)
    meta = manifest.set_index("path")
    rows = _generate_batch(tasks, None, root, None, None, meta, None, 4, {})
    assert [r["reason"] for r in rows] == [IMPLAUSIBLE_TARGET] * 2
    assert all(r["path"] == "" and not r["kept"] and r["prior_energy"] > thr for r in rows)


def test_pose_only_reason_checks_copied_parts_then_invented_background():
    from posegen.filter.scores import pose_only_reason
    from posegen.recipe import FilterConfig

    cfg = FilterConfig(max_foreign_fraction=0.04, max_invented_fraction=0.2)
    assert pose_only_reason({"foreign_fraction": 0.01, "invented_fraction": 0.1}, cfg) == ""
    assert pose_only_reason({"foreign_fraction": 0.05, "invented_fraction": 0.3}, cfg).startswith("copied body parts")
    assert pose_only_reason({"foreign_fraction": float("nan"), "invented_fraction": 0.3}, cfg).startswith("invented background")
    off = FilterConfig(max_foreign_fraction=None, max_invented_fraction=None)
    assert pose_only_reason({"foreign_fraction": 0.9, "invented_fraction": 0.9}, off) == ""
