"""MCLD-style focal regions (posegen.repose.focal): boxes from hand-made and real poses, and crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import standing_pose
from posegen.repose.focal import REGIONS, crop_regions, focal_boxes

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACE, UPPER, LOWER = range(3)


def test_hand_made_pose_gives_the_expected_boxes():
    assert REGIONS == ("face", "upper", "lower")
    boxes, valid = focal_boxes(standing_pose()[None], (64, 128))
    assert isinstance(boxes, np.ndarray) and boxes.dtype == np.float32 and boxes.shape == (1, 3, 4)
    assert isinstance(valid, np.ndarray) and valid.dtype == bool and valid.tolist() == [[True, True, True]]
    # face: joints x 27..37, y 12..14 -> spread 10 -> side max(16, 0.5*16, 0.4*32) = 16, centre
    # (32, 12.8) moved up by 0.05*16; padded by 0.15*16 each side
    np.testing.assert_allclose(boxes[0, FACE], [21.6, 1.6, 42.4, 22.4], atol=1e-4)
    # upper: shoulders..hips x 18..46, y 26..58 -> padded by 0.15*32
    np.testing.assert_allclose(boxes[0, UPPER], [13.2, 21.2, 50.8, 62.8], atol=1e-4)
    # lower: hips..ankles x 27..37, y 58..102 -> padded by 0.15*44
    np.testing.assert_allclose(boxes[0, LOWER], [20.4, 51.4, 43.6, 108.6], atol=1e-4)
    # torch in, torch out; margin 0 gives the joints' own box
    b_t, v_t = focal_boxes(torch.from_numpy(standing_pose())[None], margin=0.0)
    assert isinstance(b_t, torch.Tensor) and b_t.dtype == torch.float32 and v_t.dtype == torch.bool
    np.testing.assert_allclose(b_t[0, UPPER].numpy(), [18, 26, 46, 58], atol=1e-5)
    np.testing.assert_allclose(b_t[0, LOWER].numpy(), [27, 58, 37, 102], atol=1e-5)


def test_face_box_falls_back_on_body_size():
    kp = standing_pose()
    kp[[2, 3, 4], 2] = 0.0  # only nose + left eye: spread 2 px
    boxes, valid = focal_boxes(kp[None], margin=0.0)
    assert valid[0, FACE]
    side = boxes[0, FACE, 2] - boxes[0, FACE, 0]
    assert side == pytest.approx(0.4 * 32, abs=1e-4)  # 0.4 x torso length beats 1.6 x spread
    assert boxes[0, FACE, 3] - boxes[0, FACE, 1] == pytest.approx(side, abs=1e-4)  # square
    kp[[11, 12], 2] = 0.0  # no hips: torso length unknown -> 0.5 x shoulder width
    boxes, _ = focal_boxes(kp[None], margin=0.0)
    assert boxes[0, FACE, 2] - boxes[0, FACE, 0] == pytest.approx(0.5 * 16, abs=1e-4)


def test_missing_joints_make_a_region_invalid_with_a_zero_crop():
    kp = standing_pose()
    kp[:5, 2] = 0.2  # no head joint reaches min_score
    kp[[13, 14, 15, 16], 2] = 0.0  # lower body: only the two hips left
    kp2 = standing_pose()
    kp2[[7, 8, 9, 10, 11, 12], 2] = 0.0  # upper: only the two shoulders (< 3)
    kp2[[15, 16], 2] = 0.0
    boxes, valid = focal_boxes(np.stack([kp, kp2]), (64, 128))
    assert valid.tolist() == [[False, True, True], [True, False, True]]
    assert (boxes[0, FACE] == 0).all() and (boxes[1, UPPER] == 0).all()
    _, v3 = focal_boxes(kp[None], min_joints=(2, 3, 3))
    assert v3.tolist() == [[False, True, False]]
    images = torch.rand(2, 3, 128, 64) + 0.5  # strictly positive, so a zero crop is not an accident
    crops = crop_regions(images, boxes, valid, (16, 16))
    assert crops.shape == (2, 3, 3, 16, 16)
    assert (crops[0, FACE] == 0).all() and (crops[1, UPPER] == 0).all()
    assert (crops[0, UPPER] > 0).all() and (crops[1, FACE] > 0).all()
    none, vnone = focal_boxes(np.zeros((1, 17, 3), np.float32))
    assert not vnone.any() and (none == 0).all()


def test_boxes_are_clipped_to_the_image():
    kp = standing_pose()
    kp[:, 0] -= 25.0  # the person partly out of the left edge
    kp[:, 1] -= 5.0
    raw, _ = focal_boxes(kp[None])
    assert raw[0, FACE, 0] < -0.5 and raw[0, FACE, 1] < -0.5  # without sizes nothing is clipped
    boxes, valid = focal_boxes(kp[None], (64, 128))
    assert valid.all()
    assert (boxes[..., [0, 2]] >= -0.5).all() and (boxes[..., [0, 2]] <= 63.5).all()
    assert (boxes[..., [1, 3]] >= -0.5).all() and (boxes[..., [1, 3]] <= 127.5).all()
    np.testing.assert_allclose(boxes[0, FACE, 2:], raw[0, FACE, 2:])  # the inside edges stay
    # a box squeezed to nothing by clipping is invalid (the legs below the bottom of a short image)
    _, v = focal_boxes(standing_pose()[None], (64, 40))
    assert v.tolist() == [[True, True, False]]
    with pytest.raises(ValueError):
        focal_boxes(standing_pose()[None], [[64, 0]])
    with pytest.raises(ValueError):
        focal_boxes(standing_pose())


def test_crop_of_a_known_region_equals_its_resize():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 64, 48, generator=g)
    # rows 8..39 and columns 4..19 (pixel-index box edges are half a pixel outside the centres)
    box = np.array([3.5, 7.5, 19.5, 39.5], np.float32)
    boxes = np.tile(box, (2, 3, 1))
    boxes[1, 1] = [23.5, 31.5, 47.5, 63.5]  # rows 32..63, columns 24..47 (touches the edges)
    valid = np.ones((2, 3), bool)
    region = images[:, :, 8:40, 4:20]
    same = crop_regions(images, boxes, valid, (32, 16))
    assert torch.allclose(same[:, 0], region, atol=1e-5)  # 1:1 is the region itself
    half = crop_regions(images, boxes, valid, (16, 8))
    want_half = F.interpolate(region, size=(16, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(half[:, 0], want_half, atol=1e-5)
    quarter = crop_regions(images, boxes, valid, (8, 4))
    assert torch.allclose(quarter[:, 2], F.interpolate(region, size=(8, 4), mode="area"), atol=1e-5)
    up = crop_regions(images, boxes, valid, (64, 32))  # 2x up: bilinear, edges clamped like interpolate
    want_up = F.interpolate(region, size=(64, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(up[:, 0, :, 1:-1, 1:-1], want_up[:, :, 1:-1, 1:-1], atol=1e-5)
    corner = crop_regions(images, boxes, valid, (16, 12))[1, 1]
    assert torch.allclose(corner, F.interpolate(images[1:, :, 32:64, 24:48], size=(16, 12), mode="area")[0], atol=1e-5)


def test_crop_dtypes_devices_and_gradients():
    boxes, valid = focal_boxes(np.stack([standing_pose(), standing_pose()]), (64, 128))
    valid[1, FACE] = False
    images = torch.rand(2, 3, 128, 64, dtype=torch.float64, requires_grad=True)
    crops = crop_regions(images, torch.from_numpy(boxes), torch.from_numpy(valid), (8, 8))
    assert crops.dtype == torch.float64 and crops.shape == (2, 3, 3, 8, 8)
    crops.sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    # pixels only inside sample 1's face box get no gradient (the region is invalid there)
    assert images.grad[1, :, 5:15, 27:37].abs().sum() == 0
    assert images.grad[0, :, 5:15, 27:37].abs().sum() > 0
    for dt in (torch.float16, torch.bfloat16):
        c = crop_regions(images.detach().to(dt), boxes, valid)
        assert c.dtype == dt and c.shape == (2, 3, 3, 16, 16)
        ref = crop_regions(images.detach().float(), boxes, valid)
        assert torch.allclose(c.float(), ref, atol=0.02)
    # batch items are independent
    one = crop_regions(images.detach()[1:], boxes[1:], valid[1:], (8, 8))
    assert torch.allclose(one[0], crops.detach()[1])
    with pytest.raises(ValueError):
        crop_regions(images, boxes[:1], valid)
    with pytest.raises(ValueError):
        crop_regions(images, boxes, valid[:, :2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda():
    kp = torch.from_numpy(standing_pose())[None].cuda()
    boxes, valid = focal_boxes(kp, torch.tensor([64, 128]).cuda())
    assert boxes.is_cuda and valid.is_cuda
    img = torch.rand(1, 3, 128, 64, device="cuda", dtype=torch.float16)
    c = crop_regions(img, boxes, valid)
    assert c.is_cuda and c.dtype == torch.float16
    ref = crop_regions(img.float().cpu(), boxes.cpu(), valid.cpu())
    assert torch.allclose(c.float().cpu(), ref, atol=0.01)


def test_real_view_a_crops_are_ordered_top_to_bottom(cuhk03_small):
    _, manifest, poses = cuhk03_small
    rows = poses[(manifest["camid"].to_numpy() == 0) & (poses["status"] == "ok").to_numpy()]
    assert len(rows) >= 15
    kp = np.stack(rows["keypoints"].to_list())
    sizes = rows[["width", "height"]].to_numpy()
    boxes, valid = focal_boxes(kp, sizes)
    good = valid.all(1)
    assert good.mean() >= 0.8, valid
    b = boxes[good]
    cy = (b[..., 1] + b[..., 3]) / 2
    face_above = (cy[:, FACE] < cy[:, UPPER]) & (b[:, FACE, 1] < b[:, UPPER, 1])
    # the upper box lies mostly above the lower one: more than half its height above the lower top
    upper_h = b[:, UPPER, 3] - b[:, UPPER, 1]
    mostly = (np.clip(b[:, LOWER, 1] - b[:, UPPER, 1], 0, None) / upper_h > 0.5) & (cy[:, UPPER] < cy[:, LOWER])
    assert face_above.mean() >= 0.9 and mostly.mean() >= 0.9, (face_above, mostly)
    # inside the image, and the face narrower than the upper body
    assert (b[..., 0] >= -0.5).all() and (b[..., 2] <= sizes[good][:, None, 0] - 0.5).all()
    assert np.median((b[:, FACE, 2] - b[:, FACE, 0]) / (b[:, UPPER, 2] - b[:, UPPER, 0])) < 1.0
    # crops of the real images in a model frame: boxes scaled with the keypoints
    from PIL import Image

    from posegen.repose.render import image_to_tensor
    from posegen.repose.warp import keypoints_to_frame

    root = cuhk03_small[0]
    paths = rows["path"].to_list()[:4]
    imgs = torch.stack([image_to_tensor(np.asarray(Image.open(root / p).convert("RGB")), (128, 64)) for p in paths])
    kpm = keypoints_to_frame(kp[:4], sizes[:4], (128, 64))
    bm, vm = focal_boxes(kpm, (64, 128))
    crops = crop_regions(imgs, bm, vm, (16, 16))
    assert crops.shape == (4, 3, 3, 16, 16) and torch.isfinite(crops).all()
    assert (crops.abs().flatten(2).amax(-1) > 0).eq(vm).all()
