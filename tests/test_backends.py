"""Pose backends beyond BlazePose: MoveNet, BlazePose heavy, RTMPose/DWPose (ONNX), mmpose.

Real backends run on real CUHK03 crops (skipped with a reason when weights or runtime are absent).
No real RTMPose weights exist here: its pre/post-processing is checked against hand-computed
values, and the onnxruntime path end to end on a tiny ONNX model built in the test whose SimCC
outputs are the column/row profiles of its input (so a bright cross in the image must come back
at its pixel position through the affine crop, SimCC decoding and back-projection).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from posegen.data.images import read_image
from posegen.pose.backends import BACKENDS, NoPersonFound, get_backend
from posegen.pose.keypoints import COCO17_FLIP_INDEX, flip_keypoints

from conftest import CUHK03, SHARED, require

WEIGHTS = SHARED / "weights"
MOVENET = WEIGHTS / "movenet" / "lite-model_movenet_singlepose_lightning_tflite_int8_4.tflite"
BLAZEPOSE_HEAVY = WEIGHTS / "mediapipe" / "pose_landmark_heavy.tflite"
L_SHOULDER, R_SHOULDER = 5, 6

#: View-A CUHK03 train crops (camera pair 1) checked by eye to show the person's front (face and
#: chest towards the camera). Many view-A crops are side or three-quarter views, where the
#: shoulders' left/right order in x is not determined, so the left/right check uses these.
FRONT_FACING = (
    "0001_00 0005_00 0013_00 0017_00 0019_00 0020_00 0022_00 0025_00 0034_00 0039_00 "
    "0048_02 0050_02 0051_02 0052_02 0059_02 0067_02 0069_02 0081_02 0092_02"
).split()
SAMPLE = ["0000_00", "0003_07", "0100_02", "0250_08", "0400_01", "0700_06"]  # both views, several sizes


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _file_backend(name: str, path):
    if not _has("ai_edge_litert"):
        pytest.skip(f"the {name} backend needs ai-edge-litert (not installed)")
    return get_backend(name, str(require(path)))


@pytest.fixture(scope="module")
def movenet():
    be = _file_backend("movenet", MOVENET)
    yield be
    be.close()


@pytest.fixture(scope="module")
def blazepose_heavy():
    be = _file_backend("blazepose-heavy", BLAZEPOSE_HEAVY)
    yield be
    be.close()


@pytest.fixture(scope="module")
def front_images():
    root = require(CUHK03 / "train")
    return [read_image(root / f"{n}.jpg") for n in FRONT_FACING]


@pytest.mark.parametrize("fixture", ["movenet", "blazepose_heavy", "blazepose"])
def test_real_backend_on_cuhk03(fixture, request, front_images):
    be = request.getfixturevalue(fixture)
    root = CUHK03 / "train"
    n_confident = []
    for name in SAMPLE:
        image = read_image(root / f"{name}.jpg")
        h, w = image.shape[:2]
        kp = be.estimate(image)
        assert kp.shape == (17, 3) and kp.dtype == np.float32
        present = kp[:, 2] > 0
        assert (kp[present, 0] >= -0.5).all() and (kp[present, 0] < w - 0.5).all()
        assert (kp[present, 1] >= -0.5).all() and (kp[present, 1] < h - 0.5).all()
        assert ((kp[:, 2] >= 0) & (kp[:, 2] <= 1)).all()
        n_confident.append(int((kp[:, 2] >= 0.3).sum()))
    assert np.mean(n_confident) >= 10, n_confident
    # left/right not swapped: on front-facing crops the person's left shoulder is on the image right
    order = []
    for image in front_images:
        kp = be.estimate(image)
        if min(kp[L_SHOULDER, 2], kp[R_SHOULDER, 2]) >= 0.3:
            order.append(bool(kp[L_SHOULDER, 0] > kp[R_SHOULDER, 0]))
    assert len(order) >= 15 and np.mean(order) >= 0.7, (be.name, order)
    # a mirrored crop gives the mirrored pose (joints swap names, positions mirror)
    image = front_images[0]
    kp, kp_flip = be.estimate(image), be.estimate(np.ascontiguousarray(image[:, ::-1]))
    both = (kp[:, 2] >= 0.5) & (flip_keypoints(kp_flip, image.shape[1])[:, 2] >= 0.5)
    d = np.abs(flip_keypoints(kp_flip, image.shape[1])[both, :2] - kp[both, :2])
    assert both.sum() >= 8 and np.median(d) < 0.05 * image.shape[0], (be.name, d)


def test_movenet_whole_frame_fallback(movenet):
    """A crop pasted small into a larger frame: the two-pass crop region finds it again."""
    crop = read_image(require(CUHK03 / "train") / "0017_00.jpg")
    h, w = crop.shape[:2]
    frame = np.full((2 * h, 4 * w, 3), 90, dtype=np.uint8)
    x0, y0 = 2 * w, h // 2
    frame[y0 : y0 + h, x0 : x0 + w] = crop
    ref = movenet.estimate(crop)
    whole = get_backend("movenet", str(MOVENET), crop="keypoints").estimate(frame)
    ok = (ref[:, 2] >= 0.4) & (whole[:, 2] >= 0.4)
    assert ok.sum() >= 10
    dist = np.linalg.norm(whole[ok, :2] - (ref[ok, :2] + [x0, y0]), axis=1)
    assert np.median(dist) < 0.05 * h, dist


@pytest.mark.parametrize("name,suffix", [("movenet", ".tflite"), ("blazepose-heavy", ".tflite"), ("rtmpose", ".onnx"), ("dwpose", ".onnx"), ("mmpose", ".pth")])
def test_missing_weights_is_a_clear_error(name, suffix, tmp_path, monkeypatch):
    missing = tmp_path / f"nowhere{suffix}"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        get_backend(name, str(missing))
    if name == "movenet":  # no path: the default path, named when missing (never a download)
        monkeypatch.setenv("POSEGEN_MOVENET", str(tmp_path / "default-missing.tflite"))
        with pytest.raises(FileNotFoundError, match="default-missing.tflite.*--backend blazepose"):
            get_backend(name)
    else:
        with pytest.raises(ValueError, match="--weights"):
            get_backend(name)  # no path at all: never a download


def test_auto_backend_prefers_movenet_and_falls_back_to_blazepose(tmp_path, monkeypatch):
    """The default ``auto``: MoveNet from $POSEGEN_MOVENET; BlazePose (bundled) with a warning naming
    the path when that file is missing."""
    if not _has("ai_edge_litert"):
        pytest.skip("the movenet backend needs ai-edge-litert (not installed)")
    monkeypatch.setenv("POSEGEN_MOVENET", str(require(MOVENET)))
    with get_backend() as be:
        assert be.name == "movenet-lightning" and be.weights == str(MOVENET)
    monkeypatch.setenv("POSEGEN_MOVENET", str(tmp_path / "missing.tflite"))
    with pytest.warns(UserWarning, match="missing.tflite"):
        be = get_backend("auto")
    with be:
        assert be.name == "blazepose-full"


def test_movenet_score_calibration():
    """Raw MoveNet scores map piecewise-linearly: 0 -> 0, present_score -> 0.5, 1 -> 1, increasing."""
    from posegen.pose.movenet import calibrate_scores

    raw = np.linspace(0, 1, 101, dtype=np.float32)
    cal = calibrate_scores(raw, 0.3)
    assert cal[0] == 0 and cal[-1] == pytest.approx(1.0) and cal[30] == pytest.approx(0.5)
    assert cal[15] == pytest.approx(0.25) and cal[65] == pytest.approx(0.75)
    assert (np.diff(cal) > 0).all() and cal.dtype == np.float32
    np.testing.assert_allclose(calibrate_scores(raw, 0.5), raw, atol=1e-6)  # 0.5 keeps the raw scores


def test_movenet_scores_are_calibrated_on_real_crops(movenet):
    """The backend returns calibrated scores: the same crop through present_score=0.5 (raw scores)
    gives the same joints with scores that map onto the calibrated ones."""
    from posegen.pose.movenet import calibrate_scores

    image = read_image(require(CUHK03 / "train") / "0017_00.jpg")
    raw_be = get_backend("movenet", str(MOVENET), present_score=0.5)
    raw, cal = raw_be.estimate(image), movenet.estimate(image)
    np.testing.assert_allclose(cal[:, :2], raw[:, :2])
    np.testing.assert_allclose(cal[:, 2], calibrate_scores(raw[:, 2], movenet.present_score), atol=1e-6)
    assert (cal[:, 2] >= 0.5).sum() > (raw[:, 2] >= 0.5).sum()


def test_importing_backends_stays_light():
    import subprocess

    code = "import sys, posegen.pose.backends; print(sorted(m for m in ('onnxruntime', 'ai_edge_litert', 'mmpose') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert {"auto", "movenet", "rtmpose", "dwpose", "mmpose", "blazepose-heavy"} <= set(BACKENDS)


# --------------------------------------------------------------------------- RTMPose pre/post
from posegen.pose.rtmpose import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    box_center_scale,
    decode_simcc,
    get_warp_matrix,
    input_to_image,
)


def test_rtmpose_box_and_affine_by_hand():
    # a 30 x 100 box at (0, 0): padded 1.25 -> 37.5 x 125, widened to w/h = 192/256 -> 93.75 x 125
    center, scale = box_center_scale((0, 0, 30, 100), 192 / 256, 1.25)
    np.testing.assert_allclose(center, [15, 50])
    np.testing.assert_allclose(scale, [93.75, 125])
    # a wide box is heightened instead: 200 x 20 -> 250 x 25 -> 250 x 333.33
    np.testing.assert_allclose(box_center_scale((10, 0, 210, 20), 0.75)[1], [250, 250 / 0.75])
    m = get_warp_matrix(center, scale, (192, 256))

    def warp(x, y):
        return m @ [x, y, 1.0]

    # padded box corners -> input corners, centre -> input centre (mmpose's convention)
    np.testing.assert_allclose(warp(15 - 93.75 / 2, 50 - 62.5), [0, 0], atol=1e-9)
    np.testing.assert_allclose(warp(15 + 93.75 / 2, 50 + 62.5), [192, 256], atol=1e-9)
    np.testing.assert_allclose(warp(15, 50), [96, 128], atol=1e-9)
    # the original box's corners: x = 0 -> (0 - 15) * 192 / 93.75 + 96 = 65.28
    np.testing.assert_allclose(warp(0, 0), [65.28, 128 - 50 * 256 / 125], atol=1e-9)
    np.testing.assert_allclose(warp(30, 100), [126.72, 128 + 50 * 256 / 125], atol=1e-9)
    # input_to_image is the inverse
    for x, y in [(0, 0), (30, 100), (7.25, 81.5)]:
        np.testing.assert_allclose(input_to_image(np.array([warp(x, y)]), center, scale, (192, 256))[0], [x, y], atol=1e-9)


def test_rtmpose_simcc_decoding_by_hand():
    k = 17
    sx, sy = np.zeros((1, k, 384), np.float32), np.zeros((1, k, 512), np.float32)
    sx[0, :, 192], sy[0, :, 0] = 0.9, 0.6  # joint 0..16: x bin 192 -> u = 96, y bin 0 -> v = 0
    sx[0, 3, 192], sx[0, 3, 101] = 0.0, 0.8  # joint 3: x bin 101 -> u = 50.5
    locs, scores = decode_simcc(sx, sy, split_ratio=2.0)
    np.testing.assert_allclose(locs[0], [96, 0])
    np.testing.assert_allclose(locs[3], [50.5, 0])
    np.testing.assert_allclose(scores[0], 0.6)  # min(max_x, max_y), as mmpose
    # through the box (0, 0, 30, 100): u = 96 is the box centre x = 15; v = 0 is the padded top
    # y = 50 - 62.5 = -12.5; u = 50.5 -> x = 50.5 / 192 * 93.75 + 15 - 46.875 = -7.2168
    center, scale = np.array([15.0, 50.0]), np.array([93.75, 125.0])
    xy = input_to_image(locs, center, scale, (192, 256))
    np.testing.assert_allclose(xy[0], [15, -12.5], atol=1e-5)
    np.testing.assert_allclose(xy[3], [50.5 / 192 * 93.75 + 15 - 46.875, -12.5], atol=1e-5)


# --------------------------------------------------------------------------- RTMPose via onnxruntime
def _profile_model(path, k: int = 17, w: int = 192, h: int = 256):
    """An ONNX SimCC model: simcc_x[j] = upsampled column means of the input, simcc_y[j] = row
    means (sigmoid(. + 1)), for every joint j. Its argmax is a bright cross's position."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def up(n):  # [n, 2n] with U[i, 2i] = U[i, 2i + 1] = 1: bin 2i (first max) <-> pixel i
        u = np.zeros((n, 2 * n), np.float32)
        u[np.arange(n), 2 * np.arange(n)] = u[np.arange(n), 2 * np.arange(n) + 1] = 1
        return u

    inits = [
        numpy_helper.from_array(up(w), "up_x"),
        numpy_helper.from_array(up(h), "up_y"),
        numpy_helper.from_array(np.ones((1, k, 1), np.float32), "ones"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "ax_cols"),
        numpy_helper.from_array(np.array([1, 3], np.int64), "ax_rows"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["input", "ax_cols"], ["cols"], keepdims=0),  # [1, w]
        helper.make_node("ReduceMean", ["input", "ax_rows"], ["rows"], keepdims=0),  # [1, h]
        helper.make_node("MatMul", ["cols", "up_x"], ["cx"]),
        helper.make_node("MatMul", ["rows", "up_y"], ["cy"]),
        helper.make_node("Add", ["cx", "one"], ["cx1"]),
        helper.make_node("Add", ["cy", "one"], ["cy1"]),
        helper.make_node("Sigmoid", ["cx1"], ["sx"]),
        helper.make_node("Sigmoid", ["cy1"], ["sy"]),
        helper.make_node("Mul", ["sx", "ones"], ["simcc_x"]),  # [1, k, 2w]
        helper.make_node("Mul", ["sy", "ones"], ["simcc_y"]),  # [1, k, 2h]
    ]
    graph = helper.make_graph(
        nodes,
        "simcc_profile",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])],
        [
            helper.make_tensor_value_info("simcc_x", TensorProto.FLOAT, [1, k, 2 * w]),
            helper.make_tensor_value_info("simcc_y", TensorProto.FLOAT, [1, k, 2 * h]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def profile_onnx(tmp_path_factory):
    if not (_has("onnxruntime") and _has("onnx")):
        pytest.skip("the rtmpose backend test needs onnxruntime and onnx (pip install 'posegen[rtmpose]' onnx)")
    return _profile_model(tmp_path_factory.mktemp("onnx") / "simcc_profile.onnx")


def _cross(w, h, x, y):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, x] = 255
    img[y, :] = 255
    return img


@pytest.mark.parametrize("w,h,x,y", [(60, 150, 23, 101), (93, 282, 70, 12), (200, 120, 150, 60)])
def test_rtmpose_onnx_end_to_end(profile_onnx, w, h, x, y):
    be = get_backend("rtmpose", str(profile_onnx))
    assert be.name == "rtmpose" and be.weights == str(profile_onnx) and be.input_size == (192, 256)
    kp = be.estimate(_cross(w, h, x, y))
    assert kp.shape == (17, 3) and kp.dtype == np.float32
    # the input pixel nearest to the cross maps back within ~half an input pixel (< 0.75 image px)
    np.testing.assert_allclose(kp[:, 0], x, atol=0.75)
    np.testing.assert_allclose(kp[:, 1], y, atol=0.75)
    assert (kp[:, 2] > 0.3).all()
    be.close()


def test_rtmpose_preprocess_normalises_rgb(profile_onnx):
    be = get_backend("rtmpose", str(profile_onnx))
    img = np.zeros((100, 30, 3), np.uint8)
    img[..., 0] = 255  # pure red
    x, center, scale = be.preprocess(img, (-0.5, -0.5, 29.5, 99.5))
    assert x.shape == (1, 3, 256, 192) and x.dtype == np.float32
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    np.testing.assert_allclose(x[0, :, 128, 96], (np.array([255, 0, 0]) - mean) / std, rtol=1e-5)  # inside: RGB order
    np.testing.assert_allclose(x[0, :, 0, 0], -mean / std, rtol=1e-5)  # padding is black
    np.testing.assert_allclose(center, [14.5, 49.5])


def test_rtmpose_whole_frame_and_dwpose(profile_onnx, tmp_path):
    # crop="keypoints" re-centres on the confident joints and still finds the cross
    kp = get_backend("rtmpose", str(profile_onnx), crop="keypoints").estimate(_cross(300, 200, 40, 170))
    np.testing.assert_allclose(kp[:, :2], np.tile([40, 170], (17, 1)), atol=0.75)
    # a whole-body (133-joint) model: the first 17 are COCO-17 body joints
    wb = _profile_model(tmp_path / "wholebody.onnx", k=133, w=288, h=384)
    be = get_backend("dwpose", str(wb))
    assert be.name == "dwpose" and be.input_size == (288, 384)
    np.testing.assert_allclose(be.estimate(_cross(90, 250, 30, 200))[:, :2], np.tile([30, 200], (17, 1)), atol=0.75)
    # a model with no person-like response: NoPersonFound from the score threshold
    with pytest.raises(NoPersonFound):
        get_backend("rtmpose", str(profile_onnx), min_person_score=0.99).estimate(_cross(60, 150, 23, 101))


def test_rtmpose_rejects_a_non_simcc_onnx(tmp_path):
    if not (_has("onnxruntime") and _has("onnx")):
        pytest.skip("needs onnxruntime and onnx")
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.save(m, str(tmp_path / "id.onnx"))
    with pytest.raises(ValueError, match="not a SimCC"):
        get_backend("rtmpose", str(tmp_path / "id.onnx"))


# --------------------------------------------------------------------------- mmpose (optional)
def test_mmpose_result_mapping():
    from posegen.pose.mmpose_backend import mmpose_result_to_coco17

    kp = np.arange(133 * 2, dtype=np.float32).reshape(1, 133, 2)
    sc = np.linspace(-0.5, 1.5, 133, dtype=np.float32)[None]
    out = mmpose_result_to_coco17(kp, sc)
    assert out.shape == (17, 3)
    np.testing.assert_array_equal(out[:, :2], kp[0, :17])
    assert out[0, 2] == 0 and out[:, 2].max() <= 1
    with pytest.raises(ValueError):
        mmpose_result_to_coco17(kp[:, :5], sc[:, :5])


def test_mmpose_adapter_with_rtmpose_config():
    """An RTMPose config built without weights (random init): the adapter's output contract."""
    if not _has("mmpose"):
        pytest.skip("mmpose is not installed (optional extra posegen[mmpose])")
    from pathlib import Path

    import mmpose

    from posegen.pose.mmpose_backend import MMPoseBackend

    cfgs = sorted((Path(mmpose.__file__).parent / ".mim" / "configs").glob("body_2d_keypoint/rtmpose/coco/rtmpose-t_*256x192.py"))
    if not cfgs:
        pytest.skip("mmpose's bundled configs (.mim/configs) are absent")
    be = MMPoseBackend(cfgs[0], None, min_person_score=0.0)
    be._model.head.test_cfg["flip_test"] = False  # compare one pass with one pass below
    image = read_image(require(CUHK03 / "train") / "0017_00.jpg")
    h, w = image.shape[:2]
    seen = {}
    real = be._inference

    def spy(model, img, bboxes=None, bbox_format="xyxy"):
        seen.update(img=img, bboxes=bboxes)
        return real(model, img, bboxes=bboxes, bbox_format=bbox_format)

    be._inference = spy
    kp = be.estimate(image)
    assert kp.shape == (17, 3) and kp.dtype == np.float32
    present = kp[:, 2] > 0
    assert (kp[present, 0] >= -0.5).all() and (kp[present, 0] < w - 0.5).all()
    assert (kp[present, 1] >= -0.5).all() and (kp[present, 1] < h - 0.5).all()
    np.testing.assert_array_equal(seen["img"], image[..., ::-1])  # mmpose gets BGR
    np.testing.assert_allclose(seen["bboxes"], [[-0.5, -0.5, w - 0.5, h - 0.5]])  # the crop is the box
    # posegen adds no transform of its own: its raw output is mmpose's own top-down result for
    # the same box (image pixels), mapped to COCO-17. (Comparing against posegen's SimCC decoding
    # of a random-init model is ill-conditioned: its near-flat logits flip argmax on rounding.)
    box = np.asarray([[-0.5, -0.5, w - 0.5, h - 0.5]], dtype=np.float32)
    inst = real(be._model, image[..., ::-1].copy(), bboxes=box, bbox_format="xyxy")[0].pred_instances
    raw = be.estimate_box(image, (-0.5, -0.5, w - 0.5, h - 0.5))
    np.testing.assert_allclose(raw[:, :2], np.asarray(inst.keypoints[0])[:17], atol=1e-4)


def test_flip_index_sanity():
    # the left/right test above relies on COCO-17 joint 5 = left shoulder, 6 = right shoulder
    assert COCO17_FLIP_INDEX[L_SHOULDER] == R_SHOULDER
