"""Pose extraction on real CUHK03 crops with BlazePose, resumability, and per-image failures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from posegen.data import load_dataset
from posegen.pose.backends import get_backend
from posegen.pose.extract import extract_poses, pose_summary
from posegen.pose.formats import read_poses
from posegen.pose.keypoints import (
    COCO17_NAMES,
    coco17_to_openpose18,
    flip_keypoints,
    openpose18_to_coco17,
    scale_keypoints,
)

NOSE, L_HIP, R_HIP = 0, 11, 12


@pytest.fixture(scope="module")
def cuhk03_60(cuhk03_train, blazepose, tmp_path_factory):
    """Poses of 60 real CUHK03 images: 6 identities x 10 images (both camera views)."""
    manifest = load_dataset(cuhk03_train)
    manifest = manifest[manifest["pid"].isin([0, 50, 100, 200, 400, 700])].reset_index(drop=True)
    assert len(manifest) == 60
    out = tmp_path_factory.mktemp("poses") / "poses.parquet"
    return manifest, extract_poses(manifest, cuhk03_train, blazepose, out=out), out


def test_extract_real_cuhk03(cuhk03_60):
    manifest, poses, out = cuhk03_60
    assert list(poses["path"]) == list(manifest["path"])
    s = pose_summary(poses)
    # most crops are found, with most joints confident
    assert s["ok"] >= 50, s
    assert s["share_ge12"] >= 0.75, s
    ok = poses[poses["status"] == "ok"]
    for kp, w, h in zip(ok["keypoints"], ok["width"], ok["height"]):
        assert kp.shape == (17, 3) and kp.dtype == np.float32
        present = kp[:, 2] > 0
        assert (kp[present, 0] >= -0.5).all() and (kp[present, 0] < w - 0.5).all()
        assert (kp[present, 1] >= -0.5).all() and (kp[present, 1] < h - 0.5).all()
    # upright pedestrians: the nose is above the hips (y grows downwards)
    above = [
        kp[NOSE, 1] < min(kp[L_HIP, 1], kp[R_HIP, 1])
        for kp in ok["keypoints"]
        if kp[NOSE, 2] >= 0.5 and kp[L_HIP, 2] >= 0.5 and kp[R_HIP, 2] >= 0.5
    ]
    assert len(above) >= 40 and np.mean(above) >= 0.95
    assert set(poses["backend"]) == {"blazepose-full"}
    assert read_poses(out)["path"].tolist() == poses["path"].tolist()


def test_extract_resumes(cuhk03_60, cuhk03_train, blazepose):
    manifest, poses, out = cuhk03_60
    calls = []

    class Counting:
        name, weights = blazepose.name, blazepose.weights

        def estimate(self, image):
            calls.append(1)
            return blazepose.estimate(image)

    again = extract_poses(manifest, cuhk03_train, Counting(), out=out)
    assert calls == []  # everything was already done
    assert again["path"].tolist() == poses["path"].tolist()
    # a partial file resumes with only the missing images
    partial = out.parent / "partial.parquet"
    extract_poses(manifest.head(10), cuhk03_train, blazepose, out=partial)
    extract_poses(manifest, cuhk03_train, Counting(), out=partial)
    assert len(calls) == len(manifest) - 10
    assert len(read_poses(partial)) == len(manifest)
    # resuming a Parquet pose table with another backend would mix two estimators: refused, untouched
    class Other(Counting):
        name = "movenet-lightning"

    before = partial.read_bytes()
    with pytest.raises(ValueError, match=f"made with {blazepose.name}; this run uses movenet-lightning"):
        extract_poses(manifest, cuhk03_train, Other(), out=partial)
    assert partial.read_bytes() == before and len(calls) == len(manifest) - 10


def test_bad_images_get_a_reason_and_the_run_goes_on(tmp_path, cuhk03_train, blazepose):
    root = tmp_path / "data"
    ident = root / "alice"
    ident.mkdir(parents=True)
    good = (cuhk03_train / "0000_00.jpg").read_bytes()
    (ident / "good.jpg").write_bytes(good)
    (ident / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (ident / "text.jpg").write_text("this is not an image")
    rgba = Image.open(cuhk03_train / "0000_01.jpg").convert("RGBA")
    rgba.save(ident / "rgba.png")
    Image.open(cuhk03_train / "0000_02.jpg").convert("L").save(ident / "grey.png")
    Image.new("RGB", (1, 1)).save(ident / "tiny.png")
    before = {p.name: p.read_bytes() for p in ident.iterdir()}
    manifest = load_dataset(root)
    poses = extract_poses(manifest, root, blazepose, out=tmp_path / "p.json").set_index("path")
    reasons = poses["reason"].to_dict()
    assert poses.loc["alice/good.jpg", "status"] == "ok"
    assert reasons["alice/truncated.jpg"].startswith("unreadable")
    assert reasons["alice/text.jpg"].startswith("unreadable")
    assert reasons["alice/tiny.png"].startswith("too small")
    # RGBA and greyscale files are decoded (to RGB) and reach the pose model
    for name in ("alice/rgba.png", "alice/grey.png"):
        assert poses.loc[name, "width"] > 0 and poses.loc[name, "reason"] in ("", "no person found"), reasons
    assert poses.loc["alice/rgba.png", "status"] == "ok"
    assert {p.name: p.read_bytes() for p in ident.iterdir()} == before  # inputs untouched


def test_backend_errors():
    with pytest.raises(ValueError, match="unknown pose backend"):
        get_backend("nope")
    with pytest.raises(ValueError, match="bundled"):
        get_backend("blazepose", weights="/x.tflite")


def test_keypoint_conversions_roundtrip():
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 60, (17, 2)), rng.uniform(0.6, 1, (17, 1))], axis=1).astype(np.float32)
    back, neck = openpose18_to_coco17(coco17_to_openpose18(kp))
    np.testing.assert_array_equal(back, kp)
    np.testing.assert_allclose(neck[:2], (kp[5, :2] + kp[6, :2]) / 2)
    flipped = flip_keypoints(kp, 64)
    assert COCO17_NAMES[5] == "left_shoulder"
    np.testing.assert_allclose(flipped[5, 0], 63 - kp[6, 0])  # new left = mirrored old right
    np.testing.assert_allclose(flip_keypoints(flipped, 64), kp, atol=1e-5)
    scaled = scale_keypoints(kp, (64, 128), (32, 64))
    np.testing.assert_allclose(scale_keypoints(scaled, (32, 64), (64, 128)), kp, atol=1e-4)
