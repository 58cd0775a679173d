"""Image-artifact checks of the filter (posegen.filter.artifacts): black holes and smears on the
person are rejected with their own reason, in the documented order; real same-person photos pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from conftest import CUHK03, require, standing_pose

from posegen.filter import FILTER_COLUMNS, REASON_ORDER, filter_batch
from posegen.filter.artifacts import ARTIFACT_COLUMNS, artifact_scores, person_box, person_mask
from posegen.pose.backends import NoPersonFound
from posegen.pose.keypoints import empty_keypoints
from posegen.recipe import FilterConfig


class _FixedPose:
    """A pose backend that returns a fixed pose (the artifact checks run before the pose checks)."""

    name, weights = "fixed", None

    def __init__(self, kp):
        self.kp = kp

    def estimate(self, image):
        if self.kp is None:
            raise NoPersonFound("none")
        return self.kp.copy()


def _person(seed: int = 0, hw=(128, 64)) -> np.ndarray:
    """A textured "photo": grey noisy background and a noisy coloured figure along the standing pose."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(140, 18, (*hw, 3)), 0, 255)
    kp = standing_pose()
    m = person_mask(kp, hw)
    img[m] = np.clip(rng.normal((60, 70, 150), 25, (int(m.sum()), 3)), 0, 255)
    return img.astype(np.uint8)


def test_person_regions():
    kp = standing_pose()
    m, b = person_mask(kp, (128, 64)), person_box(kp, (128, 64))
    assert m[60, 32] and m[80, 27] and not m[5, 2] and not m[120, 60]  # torso and thigh in, corners out
    assert b[60, 32] and b.sum() > m.sum() and not b[127, 0]
    assert person_mask(empty_keypoints()) is None and person_box(empty_keypoints()) is None


def test_black_hole_on_person_is_rejected_and_real_looking_image_passes():
    kp = standing_pose()
    source, output = _person(0), _person(1)
    holed = output.copy()
    holed[60:80, 20:44] = 0  # a black hole on the hips / thighs (the warp had no source pixel)
    smeared = np.asarray(Image.fromarray(output).resize((16, 32)).resize((64, 128)))
    outs = [output, holed, smeared]
    cfg = FilterConfig()
    df = filter_batch(outs, [source] * 3, np.stack([kp] * 3), np.stack([kp] * 3), cfg, _FixedPose(kp))
    assert list(df.columns) == FILTER_COLUMNS
    assert df["reason"].tolist()[0] == "" and df["kept"].tolist() == [True, False, False]
    assert df.loc[1, "reason"] == f"holes in output (hole fraction > {cfg.max_hole_fraction:g})"
    assert df.loc[2, "reason"] == f"smeared output (sharpness ratio < {cfg.min_sharpness_ratio:g})"
    assert df.loc[1, "hole_fraction"] > 0.05 and abs(df.loc[0, "hole_fraction"]) < 1e-9
    assert df.loc[2, "sharpness_ratio"] < 0.5 < df.loc[0, "sharpness_ratio"]
    for c in ARTIFACT_COLUMNS:  # every score stored whatever the decision
        assert df[c].notna().all()
    assert all(r == "" or any(r.startswith(p) for p in REASON_ORDER) for r in df["reason"])


def test_artifact_checks_order_and_switches():
    kp = standing_pose()
    source, holed = _person(0), _person(1)
    holed[60:80, 20:44] = 0
    # artifacts come before the pose checks: no person found, but "holes" is the reason
    df = filter_batch([holed], [source], kp[None], kp[None], FilterConfig(), _FixedPose(None))
    assert df.loc[0, "reason"].startswith("holes in output") and df.loc[0, "oks"] == 0.0
    # ... and after "blank output"
    df = filter_batch([np.zeros_like(holed)], [source], kp[None], kp[None], FilterConfig(), _FixedPose(kp))
    assert df.loc[0, "reason"] == "blank output" and df.loc[0, "hole_fraction"] > 0.9
    # None switches a check off (the score is still stored); without a source nothing is computed
    off = FilterConfig(max_hole_fraction=None)
    df = filter_batch([holed], [source], kp[None], kp[None], off, _FixedPose(kp))
    assert not df.loc[0, "reason"].startswith("holes") and df.loc[0, "hole_fraction"] > 0.05
    df = filter_batch([holed], None, None, kp[None], FilterConfig(), _FixedPose(kp))
    assert df.loc[0, "kept"] and math.isnan(df.loc[0, "hole_fraction"])
    # a target pose with < 2 joints has no region: NaN scores, then "target pose empty"
    df = filter_batch([holed], [source], kp[None], empty_keypoints()[None], FilterConfig(), _FixedPose(kp))
    assert df.loc[0, "reason"] == "target pose empty" and math.isnan(df.loc[0, "sharpness_ratio"])


def _side_walker(arm_over_torso: bool) -> np.ndarray:
    """A 64x128 side-view pose; the near arm hangs across the torso, or swings forward away from it."""
    kp = standing_pose()
    kp[5, :2] = kp[6, :2] = (32, 26)  # side view: shoulders together
    kp[11, :2] = kp[12, :2] = (32, 58)
    kp[[1, 3], 2] = 0  # one eye and ear hidden
    if arm_over_torso:
        kp[7, :2], kp[9, :2] = (33, 40), (33, 58)
        kp[8, :2], kp[10, :2] = (31, 40), (31, 58)
    else:
        kp[7, :2], kp[9, :2] = (40, 38), (48, 48)  # swung forward
        kp[8, :2], kp[10, :2] = (24, 38), (18, 48)  # swung back
    for j, (x, y) in {13: (36, 80), 15: (38, 102), 14: (28, 80), 16: (26, 102)}.items():
        kp[j, :2] = (x, y)
    return kp


def test_foreign_fraction_flags_a_warp_that_copies_an_arm_onto_the_torso():
    """Source: arms hanging across the torso (side view). Target: arms swung away. The warp fills the
    target's torso partly from source pixels that are the arm: a ghost arm. The reverse pair, and
    the pose onto itself, copy nothing foreign."""
    from posegen.filter.artifacts import foreign_fraction
    from posegen.pose.keypoints import scale_keypoints

    over, away = (scale_keypoints(_side_walker(a), (64, 128), (128, 256)) for a in (True, False))
    ghost = foreign_fraction(over, away)
    assert ghost > 0.045, ghost  # measured 0.050
    assert foreign_fraction(over, over) == 0.0 and foreign_fraction(away, away) == 0.0
    assert foreign_fraction(away, over) < ghost
    # the batched form (augment's target choice) gives the same shares, one source against several
    from posegen.filter.artifacts import foreign_fractions

    batch = foreign_fractions(over, np.stack([away, over]))
    assert batch[0] == pytest.approx(ghost) and batch[1] == 0.0
    with pytest.raises(ValueError, match="one per target"):
        foreign_fractions(np.stack([over, over]), np.stack([away, over, away]))
    # the filter check: switched on by max_foreign_fraction, after the smear check, before the pose checks
    source, output = _person(0), _person(1)
    on, off = FilterConfig(max_foreign_fraction=0.04), FilterConfig()
    kp_over, kp_away = _side_walker(True), _side_walker(False)
    df = filter_batch([output], [source], kp_over[None], kp_away[None], on, _FixedPose(None))
    assert df.loc[0, "reason"] == "copied body parts (foreign-part fraction > 0.04)", df.loc[0, "reason"]
    assert df.loc[0, "foreign_fraction"] > 0.04
    df = filter_batch([output], [source], kp_over[None], kp_away[None], off, _FixedPose(None))
    assert df.loc[0, "reason"] == "no person found in output" and df.loc[0, "foreign_fraction"] > 0.04


def test_invented_fraction_grows_with_the_background_the_warp_must_invent():
    """Source: the standing person. A target shifted sideways by a third of the image leaves the
    source's place to the fill: a large invented share; the pose onto itself invents little. The
    keypoint-only prediction augment uses to choose targets agrees with the exact value."""
    import torch

    from posegen.filter.artifacts import invented_fraction
    from posegen.latent import letterbox_params, to_frame_keypoints
    from posegen.repose.latent import FRAME_HW, predicted_repair_share

    source, kp = _person(0), standing_pose()
    moved = kp.copy()
    moved[:, 0] += 22.0
    same, shifted = invented_fraction(source, kp, kp), invented_fraction(source, kp, moved)
    assert same < 0.1 and shifted > 0.2 and shifted > 2 * same, (same, shifted)
    assert math.isnan(invented_fraction(source, kp, empty_keypoints()))
    box = letterbox_params((64, 128), FRAME_HW)
    inside = torch.from_numpy(np.ascontiguousarray(box.inside_mask()))[None, None]
    for t_kp, exact in ((kp, same), (moved, shifted)):
        pred = predicted_repair_share(torch.from_numpy(to_frame_keypoints(kp, box))[None],
                                      torch.from_numpy(to_frame_keypoints(t_kp, box))[None], inside)  # fmt: skip
        assert abs(float(pred[0]) - exact) < 0.03, (float(pred[0]), exact)
    # the filter check: switched on by max_invented_fraction, after the copied-parts check
    on = FilterConfig(max_invented_fraction=0.2)
    df = filter_batch([_person(1)], [source], kp[None], moved[None], on, _FixedPose(None))
    assert df.loc[0, "reason"] == "invented background (invented fraction > 0.2)", df.loc[0, "reason"]
    df = filter_batch([_person(1)], [source], kp[None], moved[None], FilterConfig(), _FixedPose(None))
    assert df.loc[0, "reason"] == "no person found in output" and df.loc[0, "invented_fraction"] > 0.2


def test_old_recipes_stay_valid():
    cfg = FilterConfig.model_validate({"min_oks": 0.4, "min_std": 0.01})
    assert cfg.max_hole_fraction is not None and cfg.min_sharpness_ratio is not None and cfg.max_seam_fraction is None


def test_real_same_person_images_pass(blazepose):
    """Real CUHK03 crops scored against another real photo of the same person pass the artifact checks."""
    from posegen.data.images import read_image

    train = require(CUHK03 / "train")
    cfg = FilterConfig()
    pairs = [("0000_00", "0000_01"), ("0000_02", "0000_06"), ("0003_05", "0003_07"), ("0012_01", "0012_08"), ("0020_00", "0020_03")]
    n = 0
    for s, o in pairs:
        src, out = read_image(train / f"{s}.jpg"), read_image(train / f"{o}.jpg")
        try:
            ks, ko = blazepose.estimate(src), blazepose.estimate(out)
        except NoPersonFound:
            continue
        sc = artifact_scores(out, src, ko, ks)
        assert sc["hole_fraction"] <= cfg.max_hole_fraction, (s, o, sc)
        assert sc["sharpness_ratio"] >= cfg.min_sharpness_ratio, (s, o, sc)
        n += 1
    assert n >= 3


def test_invented_texture_tells_a_smooth_fill_from_real_texture():
    """``benchmarks/repose_quality.py``'s invented-texture ratio: on a textured (noise) scene
    where a stride leaves the legs' old place to invent, the real target scores 1, a flat grey
    fill there near 0, and too small a region is NaN."""
    import importlib.util
    import sys

    from conftest import REPO, standing_pose
    from posegen.filter.artifacts import invented_mask
    from posegen.latent import letterbox_params

    spec = importlib.util.spec_from_file_location("repose_quality", REPO / "benchmarks" / "repose_quality.py")
    rq = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "benchmarks"))  # its `from _common import ...`
    try:
        spec.loader.exec_module(rq)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    scene = np.random.default_rng(0).integers(0, 256, size=(128, 64, 3), dtype=np.uint8)
    src_kp = standing_pose()
    used = src_kp.copy()
    used[[13, 15], 0] -= 8  # the legs spread
    used[[14, 16], 0] += 8
    assert rq.invented_texture(scene, scene, src_kp, used, scene, (64, 128)) == pytest.approx(1.0)
    repair, _ = invented_mask(scene, src_kp, used)
    box = letterbox_params((64, 128), (256, 128))
    frame = box.image_to_frame(scene)
    frame[repair >= 0.3] = 128
    assert rq.invented_texture(box.frame_to_image(frame), scene, src_kp, used, scene, (64, 128)) < 0.2
    assert np.isnan(rq.invented_texture(scene, scene, src_kp, src_kp, scene, (64, 128)))  # nothing invented
