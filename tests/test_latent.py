"""The default model family: TAEF2 latents, the letterbox frame, the constrained warp, latent
training (bit-identical resume on a tiny config) and the shipped default model on a real pair."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import CUHK03, SHARED, require, standing_pose
from posegen.latent import from_frame_keypoints, letterbox_params, load_taef2, to_frame_keypoints
from posegen.repose.warp import align_pose, body_mask, cut_leg_mask, fill_masked, limb_flow, person_scale

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TAEF2_DIR = SHARED / "weights" / "taef2"


# --------------------------------------------------------------------------- frame
def test_letterbox_keeps_aspect_and_round_trips_keypoints():
    box = letterbox_params((93, 282), (256, 128))
    assert box.inner[1] == 256 and box.inner[0] == round(93 * 256 / 282)  # fits the height, not stretched
    assert box.pad[1] == 0 and box.pad[0] == (128 - box.inner[0]) // 2
    kp = standing_pose()
    back = from_frame_keypoints(to_frame_keypoints(kp, box), box)
    np.testing.assert_allclose(back, kp, atol=1e-4)
    img = np.random.default_rng(0).integers(0, 255, (282, 93, 3), dtype=np.uint8)
    frame = box.image_to_frame(img)
    assert frame.shape == (256, 128, 3)
    assert box.frame_to_image(frame).shape == img.shape
    with pytest.raises(ValueError):
        box.image_to_frame(img[:10])


# --------------------------------------------------------------------------- autoencoder
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_taef2_reconstructs_real_crops(precision):
    """Both precisions reconstruct real crops (SSIM >= 0.9); bfloat16 decodes the same latents
    within a grey level of float32 on average."""
    from posegen.data.images import read_image
    from posegen.metrics import ssim

    require(TAEF2_DIR)
    files = sorted((require(CUHK03 / "val")).glob("*.jpg"))[:8]
    ae = load_taef2(TAEF2_DIR, precision=precision)
    assert ae.precision == precision
    frames = []
    for f in files:
        im = read_image(f)
        frames.append(letterbox_params((im.shape[1], im.shape[0]), (256, 128)).image_to_frame(im))
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        z = ae.encode(x)
        y = ae.decode(z)
    assert z.shape == (8, 32, 32, 16)
    assert y.dtype == torch.float32 and z.dtype == torch.float32
    rec = (y.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert float(np.mean(ssim(rec, np.stack(frames)))) >= 0.9
    if precision != "float32":
        with torch.no_grad():
            y32 = ae.set_precision("float32").decode(z)
        assert 0.0 < float((y - y32).abs().mean()) * 255 < 1.0  # it did run in bfloat16, and stays close


def test_taef2_precision_choice(monkeypatch):
    """``auto`` is bfloat16 exactly where the CPU computes it natively; an unknown precision is an
    error naming the choices; the default model's sampling takes ``$POSEGEN_TAEF2_PRECISION``."""
    from posegen.latent import taef2

    require(TAEF2_DIR)
    ae = load_taef2(TAEF2_DIR)
    assert ae.precision == "float32"  # training and the latent cache: float32
    for native, expect in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(taef2, "native_bf16", lambda native=native: native)
        assert ae.set_precision("auto").precision == expect
    monkeypatch.undo()
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():  # the CPU's own flags, read independently of torch
        flags = set(cpuinfo.read_text().split())
        assert taef2.native_bf16() == bool({"avx512_bf16", "amx_tile"} & flags)
    with pytest.raises(ValueError, match="float32, bfloat16, auto"):
        ae.set_precision("fp16")
    from posegen.repose import default_model_dir, load_latent_pipeline

    monkeypatch.setenv("POSEGEN_TAEF2_PRECISION", "bfloat16")
    assert load_latent_pipeline(default_model_dir(), TAEF2_DIR).autoencoder.precision == "bfloat16"
    assert load_latent_pipeline(default_model_dir(), TAEF2_DIR, autoencoder_precision="float32").autoencoder.precision == "float32"


def test_taef2_one_image_at_a_time_matches_the_batch():
    """On a CPU encode/decode run the networks image by image: each output belongs to its own input
    (a batch of distinct inputs, compared with the networks run on the whole batch)."""
    require(TAEF2_DIR)
    ae = load_taef2(TAEF2_DIR)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 32, generator=g)
    x[1] = 1.0 - x[1]
    with torch.no_grad():
        z = ae.encode(x)
        torch.testing.assert_close(z, ae.encoder(x.contiguous(memory_format=torch.channels_last)), atol=1e-4, rtol=1e-4)
        y = ae.decode(z)
        torch.testing.assert_close(y, ae.decoder(z.contiguous(memory_format=torch.channels_last)).clamp(0, 1), atol=1e-4, rtol=1e-4)
    assert z.shape == (3, 32, 8, 4) and y.shape == (3, 3, 64, 32)
    assert float((y[0] - y[1]).abs().mean()) > 0.05  # distinct inputs, distinct outputs


def test_taef2_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="taef2_encoder.pth"):
        load_taef2(tmp_path)
    (tmp_path / "taef2_encoder.pth").write_bytes(b"not a checkpoint")
    (tmp_path / "taef2_decoder.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="taef2_encoder.pth"):
        load_taef2(tmp_path)
    torch.save({"weight": torch.zeros(3)}, tmp_path / "taef2_encoder.pth")
    with pytest.raises(ValueError, match="not a TAEF2 state dict"):
        load_taef2(tmp_path)


# --------------------------------------------------------------------------- constrained warp
def _tilted(kp, deg):
    out = kp.copy()
    c = kp[5:7, :2].mean(0)
    a = np.deg2rad(deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    out[:, :2] = (kp[:, :2] - c) @ r.T + c
    return out


def test_clamped_part_transforms_never_zoom():
    src = standing_pose()[None]
    tgt = src.copy()
    tgt[0, 9, 1] += 30  # a forearm 2.5x longer in the target
    grid, _ = limb_flow(src, tgt, (128, 64), max_part_scale=1.25, scale_mode="clamp")
    free, _ = limb_flow(src, tgt, (128, 64), max_part_scale=4.0)
    # sampling step along the forearm: the clamped flow moves <= 1.25x slower than the target moves
    col = int(round(float(tgt[0, 9, 0])))
    ys = np.arange(int(tgt[0, 7, 1]) + 3, int(tgt[0, 9, 1]) - 3)
    for g, bound in ((grid, 1.0 / 1.25 - 0.02), (free, None)):
        sy = (g[0, ys, col, 1].numpy() + 1) * 128 / 2 - 0.5
        step = float(np.median(np.diff(sy)))
        if bound is not None:
            assert step >= bound  # not compressed below 1/1.25: the forearm is not stretched 2.5x
        else:
            assert step < 0.6  # the free fit does stretch it


def test_view_robust_head_stays_upright():
    """A profile source (face ahead of the neck) warped to a frontal target: the free head fit
    rotates the head (the top of the head samples 11 px sideways); the view-robust head stays
    upright (the top of the head samples straight above the source's neck)."""
    tgt = standing_pose()[None]
    src = tgt.copy()
    src[0, :5, 0] -= 8  # face points ahead of the neck: a profile
    src[0, :5, 1] += 4
    x, y = 32, 4  # above the target's head; the neck is at x = 32
    kw = dict(max_part_scale=1.25, scale_mode="clamp", torso_max_anisotropy=1.5)
    for robust, upright in ((True, True), (False, False)):
        grid, _ = limb_flow(src, tgt, (128, 64), view_robust=robust, **kw)
        sx, sy = ((grid[0, y, x] + 1) * torch.tensor([64, 128]) / 2 - 0.5).tolist()
        assert (abs(sx - 32) < 1.0 and sy < 12) is upright, (robust, sx, sy)


def test_align_pose_puts_the_target_on_the_source_person():
    src = standing_pose()
    tgt = src.copy()
    tgt[:, :2] = tgt[:, :2] * 0.5 + 5  # smaller person elsewhere
    al = align_pose(tgt, src)
    np.testing.assert_allclose(al[[5, 6, 11, 12], :2].mean(0), src[[5, 6, 11, 12], :2].mean(0), atol=1e-3)
    s_src = float(person_scale(src[None], (128, 64))[0])
    assert abs(float(person_scale(al[None], (128, 64))[0]) - s_src) < 1e-3 * s_src + 1e-3


def test_fill_masked_removes_the_person():
    x = torch.zeros(1, 3, 128, 64)
    x[:, 1] = 0.5  # a green background
    mask = body_mask(standing_pose()[None], (128, 64))
    person = x.clone()
    person[:, 0] += (mask[:, 0] > 0.1).float()  # a red person, inside the mask's rim
    filled = fill_masked(person, mask)
    inside = mask[0, 0] > 0.99
    assert float((filled - x)[0, :, inside].abs().amax()) < 0.05  # the person is gone
    assert float((filled - person)[0, :, mask[0, 0] < 1e-3].abs().amax()) < 2e-3  # the rest untouched


def test_fill_ignores_the_letterbox_padding_and_never_leaves_black():
    """A light backdrop whose bottom rows are the edge padding of a letterboxed close-up (the shirt's
    last row repeated, dark): with ``known`` the padding is no background sample, and a filled region
    wider than the coarsest pyramid cell takes the samples' mean instead of black."""
    x = torch.full((1, 3, 256, 128), 0.9)
    x[:, :, 200:] = 0.1  # the padding: a dark shirt row repeated
    known = torch.ones(1, 1, 256, 128)
    known[:, :, 200:] = 0.0
    mask = torch.zeros(1, 1, 256, 128)
    mask[:, :, 60:200] = 1.0  # the whole width: no sample beside the region
    without = fill_masked(x, mask)
    filled = fill_masked(x, mask, known=known)
    assert float(without[0, :, 150:200].mean()) < 0.7  # the dark padding bleeds in
    assert float((filled[0, :, 60:200] - 0.9).abs().amax()) < 1e-4
    assert float((filled - x)[0, :, mask[0, 0] < 1e-3].abs().amax()) < 1e-6  # outside the mask: untouched


def test_cut_leg_mask_follows_a_hip_without_its_knee_down_past_the_frame():
    kp = standing_pose()[None].copy()
    assert float(cut_leg_mask(kp, (128, 64)).amax()) == 0.0  # every present hip has its knee
    kp[0, [13, 14, 15, 16], 2] = 0.0  # an upper-body photo: the knees leave the frame
    m = cut_leg_mask(kp, (128, 64))[0, 0]
    for hip in (11, 12):
        x, y = int(round(kp[0, hip, 0])), int(round(kp[0, hip, 1]))
        assert float(m[y:, x].amin()) > 0.99  # straight down from the hip to the bottom edge
    assert float(m[:40].amax()) < 1e-3 and float(m[:, :10].amax()) < 1e-3  # not the chest, not the side


def test_fashion_close_up_on_a_plain_backdrop_is_filled_with_the_backdrop():
    """A real DeepFashion close-up (a dark shirt, legs out of frame) re-posed to its full-body pair
    (ground-truth keypoints): the backdrop counts as plain, the shirt and the trousers below it are
    removed and filled with the backdrop's colour (not the dark blob the shirt's edges and the
    repeated bottom row used to leave), and the repair model is kept off the plain fill."""
    from posegen.data.images import read_image
    from posegen.pose.backends import get_backend
    from posegen.pose.formats import keypoints_array, read_poses
    from posegen.repose.latent import FRAME_HW, PLAIN_BACKGROUND, background_texture, warp_inputs
    from posegen.repose.warp import CONSTRAINED_WARP

    root = require(SHARED / "data" / "deepfashion-samples")
    src_name, tgt_name = "fashionMENShirts_Polosid0000679009_3back.jpg", "fashionMENShirts_Polosid0000679009_1front.jpg"
    poses = read_poses(root / "annotations.csv").set_index("path")
    kp = {n: keypoints_array(poses.loc[[n]].reset_index())[0] for n in (src_name, tgt_name)}
    src = read_image(root / "images" / src_name)
    box = letterbox_params((src.shape[1], src.shape[0]), FRAME_HW)
    assert box.pad[1] > 20  # a 176x256 photo leaves padding rows in the 256x128 frame
    x = torch.from_numpy(box.image_to_frame(src)).permute(2, 0, 1)[None].float() / 255
    inside = torch.from_numpy(box.inside_mask())[None, None]
    skp, tkp = to_frame_keypoints(kp[src_name], box)[None], to_frame_keypoints(kp[tgt_name], box)[None]
    assert float(background_texture(x, body_mask(skp, FRAME_HW), inside)[0]) < PLAIN_BACKGROUND
    out, repair = warp_inputs(x, skp, tkp, return_repair=True, inside=inside)
    backdrop = float(x[0, :, box.pad[1] : box.pad[1] + 20, :15].mean())  # the photo's top-left corner
    region = inside[0, 0].bool().clone()
    region[: FRAME_HW[0] - box.pad[1] - 40] = False  # the photo's bottom 40 rows: shirt hem and trousers before
    assert float(x[0, :, region].mean()) < backdrop - 0.3
    assert abs(float(out[0, :, region].mean()) - backdrop) < 0.08
    # no repair on the plain fill; only where the target body would sample below the source frame
    _, weight = limb_flow(torch.as_tensor(skp), torch.as_tensor(tkp), FRAME_HW, **CONSTRAINED_WARP)
    off_body = region & (F.max_pool2d(weight, 9, stride=1, padding=4)[0, 0] < 0.01)
    assert off_body.sum() > 500
    assert float(repair[0, 0][off_body].mean()) < 0.02
    # a CUHK03 street crop is textured: the repair model works on its fill as before
    crop = read_image(require(CUHK03 / "train") / "0004_07.jpg")
    cbox = letterbox_params((crop.shape[1], crop.shape[0]), FRAME_HW)
    cx = torch.from_numpy(cbox.image_to_frame(crop)).permute(2, 0, 1)[None].float() / 255
    with get_backend() as be:
        ckp = to_frame_keypoints(be.estimate(crop), cbox)[None]
    tex = background_texture(cx, body_mask(ckp, FRAME_HW), torch.from_numpy(cbox.inside_mask())[None, None])
    assert float(tex[0]) > PLAIN_BACKGROUND


def test_warp_never_pastes_black_where_the_body_leaves_the_source_frame():
    """A real pair from the README main job (CUHK03 train 0004_07 re-posed to the pose of 0009_05,
    placed on the source person): the target's head sits higher than the source's, so the warp
    samples above the source frame there. The bare warp's zero padding pasted a black dome (seen in
    kept outputs); the composite shows the filled background instead, and the repair mask marks
    those pixels for the model."""
    from posegen.data.images import read_image
    from posegen.pose.backends import get_backend
    from posegen.pose.keypoints import scale_keypoints
    from posegen.repose.latent import FRAME_HW, warp_inputs
    from posegen.repose.warp import CONSTRAINED_WARP, warp

    root = require(CUHK03 / "train")
    src, tim = read_image(root / "0004_07.jpg"), read_image(root / "0009_05.jpg")
    with get_backend() as be:
        s_px, t_px = be.estimate(src), be.estimate(tim)
    t_px = align_pose(scale_keypoints(t_px, (tim.shape[1], tim.shape[0]), (src.shape[1], src.shape[0])), s_px)
    box = letterbox_params((src.shape[1], src.shape[0]), FRAME_HW)
    x = torch.from_numpy(box.image_to_frame(src)).permute(2, 0, 1)[None].float() / 255
    skp, tkp = to_frame_keypoints(s_px, box)[None], to_frame_keypoints(t_px, box)[None]
    out, repair = warp_inputs(x, skp, tkp, return_repair=True)
    grid, weight = limb_flow(torch.as_tensor(skp), torch.as_tensor(tkp), FRAME_HW, **CONSTRAINED_WARP)
    outside = (grid[0].abs().amax(-1) > 1.02) & (weight[0, 0] > 0.5)  # opaque body pixels sampled off the frame
    assert outside.sum() > 50, int(outside.sum())
    assert float((warp(x, grid)[0].amax(0) < 0.03)[outside].float().mean()) > 0.9  # the bare warp: black
    assert float((out[0].amax(0) < 0.03)[outside].float().mean()) < 0.01
    assert float(repair[0, 0][outside].mean()) > 0.5


def test_person_mask_removes_a_carried_bag_with_the_moved_arm():
    """A synthetic person holding a bag below the right hand, outside the skeleton's radii, and
    swinging that arm forward in the target: without a person mask the bag stays where it was (a
    second copy beside the moved body), with one (body + bag) it is filled in and marked for repair.
    A thing in the mask far from every moving part stays."""
    from posegen.repose.latent import FRAME_HW, warp_inputs

    box = letterbox_params((64, 128), FRAME_HW)
    src = to_frame_keypoints(standing_pose(), box)
    tgt = src.copy()
    tgt[8, :2] += (8, -4)  # the right elbow and wrist swing out and up
    tgt[10, :2] += (20, -10)
    g = torch.Generator().manual_seed(0)
    x = 0.45 + 0.1 * torch.rand(1, 3, *FRAME_HW, generator=g)  # a textured grey backdrop
    body = body_mask(src[None], FRAME_HW)
    x[:, 0] = torch.where(body[:, 0] > 0.5, torch.full_like(x[:, 0], 0.9), x[:, 0])  # a red person
    wx, wy = int(src[10, 0]), int(src[10, 1])
    bag = torch.zeros(1, 1, *FRAME_HW)
    bag[..., wy + 14 : wy + 34, wx + 2 : wx + 14] = 1.0  # hanging below the right hand
    far = torch.zeros_like(bag)
    far[..., 8:20, 2:10] = 1.0  # the top-left corner, far from the moving arm
    for m in (bag, far):
        x = torch.where(m > 0, torch.tensor([0.1, 0.1, 0.9]).view(1, 3, 1, 1), x)  # blue things
    person = torch.maximum(torch.maximum(body, bag), far)
    plain = warp_inputs(x, src[None], tgt[None])
    out, repair = warp_inputs(x, src[None], tgt[None], return_repair=True, person=person)
    inner = F.max_pool2d(1 - bag, 5, stride=1, padding=2)[0, 0] < 0.5  # the bag less a 2-px rim
    blue = lambda im: (im[0, 2] - im[0, 0] > 0.5)  # noqa: E731
    assert float(blue(plain)[inner].float().mean()) > 0.9  # left behind without the mask
    assert float(blue(out)[inner].float().mean()) < 0.05  # removed with it ...
    assert float(repair[0, 0][inner].mean()) > 0.9  # ... and repainted
    assert float(blue(out)[far[0, 0] > 0].float().mean()) > 0.9  # out of reach: kept
    # the same mask with a target that moves nothing: nothing is removed
    still = warp_inputs(x, src[None], src[None], person=person)
    assert float(blue(still)[inner].float().mean()) > 0.9
    with pytest.raises(ValueError, match="uint8"):
        from posegen.pose.segmentation import PersonSegmenter

        PersonSegmenter().mask(np.zeros((8, 8, 3), np.float32))


def test_person_segmenter_masks_a_real_crop():
    """BlazePose full's person mask on a real CUHK03 val crop: the centre of the crop (the person)
    is inside, the top corners (background) outside."""
    from posegen.data.images import read_image
    from posegen.pose.segmentation import PersonSegmenter

    root = require(CUHK03 / "val")
    im = read_image(sorted(root.glob("*.jpg"))[0])
    m = PersonSegmenter().mask(im)
    h, w = im.shape[:2]
    assert m.shape == (h, w) and m.dtype == np.float32 and 0.0 <= m.min() and m.max() <= 1.0
    assert float(m[int(0.3 * h) : int(0.6 * h), int(0.4 * w) : int(0.6 * w)].mean()) > 0.8
    k = max(w // 8, 1)
    assert float(np.concatenate([m[: h // 10, :k], m[: h // 10, w - k :]]).mean()) < 0.2


# --------------------------------------------------------------------------- training
def _tiny_data(n=6):
    rng = np.random.default_rng(0)
    latents = {f"{i // 3:04d}_{i % 3:02d}.jpg": torch.from_numpy(rng.normal(size=(32, 32, 16)).astype(np.float16)) for i in range(n)}
    kp = {p: to_frame_keypoints(standing_pose(noise=2.0, seed=i), letterbox_params((64, 128), (256, 128)))
          for i, p in enumerate(latents)}  # fmt: skip
    from posegen.repose.latent_train import latent_pairs

    items = pd.DataFrame({"path": list(latents), "pid": [int(p[:4]) for p in latents], "camid": [0, 0, 1] * (n // 3)})
    return latents, kp, latent_pairs(items)


def test_latent_training_resumes_bit_identically(tmp_path):
    from posegen.repose.latent_train import LatentTrainConfig, train_latent

    latents, kp, pairs = _tiny_data()
    cfg = LatentTrainConfig(steps=4, batch_size=2, checkpoint_every=2, log_every=1, block_out_channels=[32, 32, 32],
                            attention=False, warmup_steps=1)  # fmt: skip
    train_latent(cfg, latents, kp, pairs, tmp_path / "straight")
    cfg2 = LatentTrainConfig(**{**cfg.__dict__, "steps": 2})
    train_latent(cfg2, latents, kp, pairs, tmp_path / "resumed")
    train_latent(cfg, latents, kp, pairs, tmp_path / "resumed")
    a = torch.load(tmp_path / "straight/checkpoints/step-000004/state.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed/checkpoints/step-000004/state.pt", weights_only=False)
    for k in a["unet"]:
        assert torch.equal(a["unet"][k], b["unet"][k]), k
    for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]):
        assert torch.equal(x, y)
    la = pd.read_csv(tmp_path / "straight/loss.csv")
    lb = pd.read_csv(tmp_path / "resumed/loss.csv")
    np.testing.assert_array_equal(la["loss"].to_numpy(), lb["loss"].to_numpy())


def test_training_refuses_missing_latents(tmp_path):
    from posegen.repose.latent_train import LatentTrainConfig, train_latent

    latents, kp, pairs = _tiny_data()
    latents.pop(next(iter(latents)))
    with pytest.raises(ValueError, match="no latent or keypoints"):
        train_latent(LatentTrainConfig(steps=1), latents, kp, pairs, tmp_path / "run")


def test_repair_weighted_fine_tuning_starts_from_a_saved_model_and_resumes(tmp_path):
    """``init_from`` loads a saved model's weights (fine-tuning), refuses another architecture by
    name and a model trained on another autoencoder's latents, and a run with the repair-weighted loss over the whole timestep range resumes bit for bit."""
    from posegen.repose.latent_train import LatentTrainConfig, _init_weights, check_init_autoencoder, save_latent_model, train_latent
    from posegen.repose.latent import make_denoiser

    latents, kp, pairs = _tiny_data()
    arch = dict(block_out_channels=[32, 32, 32], attention=False)
    base = LatentTrainConfig(steps=2, batch_size=2, checkpoint_every=2, log_every=1, warmup_steps=1, **arch)
    torch.manual_seed(1)
    donor = make_denoiser([32, 32, 32], 1, False)
    save_latent_model(donor, tmp_path / "donor", base, "fp", fp16=False)
    fresh = make_denoiser([32, 32, 32], 1, False)
    _init_weights(fresh, tmp_path / "donor")
    for k, v in donor.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    with pytest.raises(ValueError, match="block_out_channels"):
        _init_weights(make_denoiser([32, 64, 64], 1, False), tmp_path / "donor")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        _init_weights(fresh, tmp_path / "nowhere")
    check_init_autoencoder(tmp_path / "donor", "fp")  # the autoencoder it was trained with
    with pytest.raises(ValueError, match="another autoencoder"):
        check_init_autoencoder(tmp_path / "donor", "other")

    cfg = LatentTrainConfig(**{**base.__dict__, "steps": 4, "strength_max": 1.0, "repair_loss_weight": 4.0,
                               "init_from": str(tmp_path / "donor")})  # fmt: skip
    train_latent(cfg, latents, kp, pairs, tmp_path / "straight")
    train_latent(LatentTrainConfig(**{**cfg.__dict__, "steps": 2}), latents, kp, pairs, tmp_path / "resumed")
    train_latent(cfg, latents, kp, pairs, tmp_path / "resumed")
    a = torch.load(tmp_path / "straight/checkpoints/step-000004/state.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed/checkpoints/step-000004/state.pt", weights_only=False)
    for k in a["unet"]:
        assert torch.equal(a["unet"][k], b["unet"][k]), k
    plain = LatentTrainConfig(**{**cfg.__dict__, "repair_loss_weight": 0.0})
    train_latent(plain, latents, kp, pairs, tmp_path / "plain")
    la, lp = pd.read_csv(tmp_path / "straight/loss.csv"), pd.read_csv(tmp_path / "plain/loss.csv")
    assert not np.array_equal(la["loss"].to_numpy(), lp["loss"].to_numpy())  # the weighting is applied
    with pytest.raises(ValueError, match="repair_loss_weight"):
        LatentTrainConfig(repair_loss_weight=-1.0)


def test_predicted_repair_mask_marks_the_legs_a_step_leaves():
    """Keypoints only: a source standing with legs together, a target with both legs spread: the
    region the source's legs vacate is marked, far more than the unmoved upper body;
    :func:`predicted_repair_share` is its mean."""
    from posegen.repose.latent import FRAME_HW, predicted_repair_mask, predicted_repair_share

    box = letterbox_params((64, 128), FRAME_HW)
    src = to_frame_keypoints(standing_pose(), box)
    tgt = src.copy()
    tgt[[13, 15], 0] -= 30  # the knees and ankles spread 30 px each way
    tgt[[14, 16], 0] += 30
    m = predicted_repair_mask(src[None], tgt[None], (128, 64))
    assert m.shape == (1, 1, 128, 64)
    assert float(m[0, 0, 80:104].amax(1).min()) > 0.9  # every row of the shins (ankles at row 102)
    assert float(m[0, 0, 80:104].mean()) > 3 * float(m[0, 0, :56].mean())  # vs the head and torso
    share = predicted_repair_share(src[None], tgt[None])
    assert torch.allclose(share, m.mean((1, 2, 3)))


def test_turned_head_is_marked_for_repair_only_when_the_person_turns_round():
    """Front onto back (the same joints with left and right labels exchanged): the target's head
    is marked for repair, nothing else; the same facing, or a side view, marks nothing.
    :func:`warp_inputs` and :func:`predicted_repair_mask` both include it."""
    from posegen.pose.keypoints import COCO17_FLIP_INDEX, pose_view
    from posegen.repose.latent import FRAME_HW, predicted_repair_mask, turned_head_mask, warp_inputs

    box = letterbox_params((64, 128), FRAME_HW)
    src = to_frame_keypoints(standing_pose(), box)
    back = src[list(COCO17_FLIP_INDEX)]  # same place, facing the other way
    assert int(pose_view(src)["facing"][0]) * int(pose_view(back)["facing"][0]) == -1
    m = turned_head_mask(src[None], back[None])
    assert m.shape == (1, 1, *FRAME_HW)
    head = np.round(src[:5, :2].mean(0)).astype(int)  # (x, y) in frame pixels
    assert float(m[0, 0, head[1], head[0]]) == pytest.approx(1.0)
    ankles = int(src[15, 1])
    assert float(m[0, 0, ankles - 10 :].max()) == 0.0 and float(m[0, 0, int(src[11, 1]) :].max()) == 0.0  # hips down
    assert float(turned_head_mask(src[None], src[None]).max()) == 0.0  # same facing
    side = back.copy()
    side[[5, 6, 11, 12], 2] = 0.0  # no shoulder or hip pair: the facing is unknown
    assert float(turned_head_mask(src[None], side[None]).max()) == 0.0
    x = torch.rand(1, 3, *FRAME_HW)
    _, repair = warp_inputs(x, src[None], back[None], return_repair=True)
    assert float(repair[0, 0, head[1], head[0]]) == pytest.approx(1.0)
    _, same = warp_inputs(x, src[None], src[None], return_repair=True)
    assert float(same[0, 0, head[1], head[0]]) < 0.05
    _, off = warp_inputs(x, src[None], back[None], return_repair=True, turned_head=False)  # a sampler that does not repaint
    assert float(off[0, 0, head[1], head[0]]) < 0.05
    coarse = predicted_repair_mask(src[None], back[None], (128, 64))
    assert float(coarse[0, 0, head[1] // 2, head[0] // 2]) == pytest.approx(1.0)


# --------------------------------------------------------------------------- the shipped model
def _default_model():
    from posegen.repose import default_model_dir

    d = default_model_dir()
    if not (d / "model_index.json").is_file():
        pytest.fail(f"the default model is not shipped: {d}")
    require(TAEF2_DIR)
    return d


def test_default_model_sampling_settings_agree_everywhere():
    """The shipped model's sampling defaults live in ``model_index.json`` (what the pipeline uses);
    its card, its recipe and the built-in ``default`` recipe restate them and must not drift."""
    import json

    import yaml

    from posegen.recipe import load_recipe
    from posegen.repose import default_model_dir

    d = default_model_dir()
    index = json.loads((d / "model_index.json").read_text())
    card = json.loads((d / "model_card.json").read_text())["sampling"]
    shipped = yaml.safe_load((d / "recipe.yaml").read_text())["sample"]
    builtin = load_recipe("default").sample
    assert set(card) == {"num_inference_steps", "repair_only", "strength", "repair_strength", "turned_head", "start"}
    for key, value in card.items():
        assert index[key] == value, (key, index[key], value)
    recipe_key = {"num_inference_steps": "steps"}
    for key, value in card.items():
        assert shipped[recipe_key.get(key, key)] == value, (key, shipped[recipe_key.get(key, key)], value)
        assert getattr(builtin, recipe_key.get(key, key)) == value, key


def _val_pairs(blazepose, n):
    """The first ``n`` pairs of the committed same-view benchmark list (CUHK03 val): source and
    target images, their BlazePose keypoints (source pixels) and the target sizes ``(w, h)``."""
    from posegen.data.images import read_image

    from conftest import REPO

    val = require(CUHK03 / "val")
    pairs = pd.read_csv(REPO / "benchmarks" / "quality_pairs_same_view.csv").head(n)
    src = [read_image(val / p) for p in pairs["source"]]
    tgt = [read_image(val / p) for p in pairs["target"]]
    src_kp = np.stack([blazepose.estimate(im) for im in src])
    tgt_kp = np.stack([blazepose.estimate(im) for im in tgt])
    return src, tgt, src_kp, tgt_kp, [(im.shape[1], im.shape[0]) for im in tgt]


def test_default_model_reposes_real_val_pairs(blazepose):
    """The first 8 pairs of the committed same-view benchmark list (CUHK03 val, identities never seen
    in training): the outputs have a person in the target pose (mean OKS to the target pose the model
    used, measured 0.61; per pair 0.40-0.86), at the sources' sizes, in under a minute on a CPU."""
    from posegen.metrics import oks
    from posegen.pose.backends import NoPersonFound
    from posegen.pose.keypoints import scale_keypoints
    from posegen.repose import load_pipeline

    _default_model()
    src, _, src_kp, tgt_kp, sizes = _val_pairs(blazepose, 8)
    t0 = time.perf_counter()
    pipe = load_pipeline(None)
    out, used = pipe(src, src_kp, tgt_kp, target_sizes=sizes, generator=[torch.Generator().manual_seed(0) for _ in src],
                     return_keypoints=True)  # fmt: skip
    assert time.perf_counter() - t0 < 60
    scores = []
    for o, s, u, ts in zip(out, src, used, sizes):
        assert o.shape == s.shape and o.dtype == np.uint8
        want = scale_keypoints(u, ts, (s.shape[1], s.shape[0]))
        try:
            scores.append(oks(want, blazepose.estimate(o)))
        except NoPersonFound:
            scores.append(0.0)
    assert float(np.mean(scores)) >= 0.5, scores


def test_repair_strength_regenerates_only_the_invented_region(blazepose):
    """Differential SDEdit: with ``repair_strength`` above ``strength`` the latent cells the warp
    invented start from more noise; with ``repair_only`` the real pixels elsewhere are untouched, so
    the outputs differ from plain SDEdit in a part of the frame only. Out-of-range values are a
    ValueError."""
    from posegen.repose import load_pipeline

    _default_model()
    src, _, src_kp, tgt_kp, sizes = _val_pairs(blazepose, 2)
    pipe = load_pipeline(None)

    def run(rs):
        return pipe(src, src_kp, tgt_kp, target_sizes=sizes, strength=0.4, repair_strength=rs, num_inference_steps=8,
                    generator=[torch.Generator().manual_seed(0) for _ in src], output_type="pt", repair_only=True)  # fmt: skip

    plain, regen = run(0.4), run(1.0)
    changed = (plain - regen).abs().amax(1) > 2 / 255
    assert 0.005 < float(changed.float().mean()) < 0.5, float(changed.float().mean())
    with pytest.raises(ValueError, match="repair_strength"):
        run(1.5)


def test_latent_start_encodes_each_source_once_and_changes_only_the_repair(blazepose):
    """The shipped model starts SDEdit from the latent-space warp (``start`` in its
    ``model_index.json``): TAEF2 then encodes each distinct source once, where ``start="pixel"``
    also encodes every pixel warp. With ``repair_only`` both keep the warp's real pixels, so the
    outputs differ only inside the repaired part of the frame. An unknown start is a ValueError."""
    from posegen.repose import load_pipeline

    _default_model()
    src, _, src_kp, tgt_kp, sizes = _val_pairs(blazepose, 2)
    pipe = load_pipeline(None)
    assert pipe.config.start == "latent" and pipe.config.repair_only
    encoded = []
    encode = pipe.autoencoder.encode
    pipe.autoencoder.encode = lambda x: encoded.append(len(x)) or encode(x)
    # each source twice (two targets of one source, as augment batches them)
    src2, skp2, tkp2 = [src[0], src[0], src[1], src[1]], src_kp[[0, 0, 1, 1]], tgt_kp[[0, 1, 1, 0]]

    def run(start):
        encoded.clear()
        out = pipe(src2, skp2, tkp2, target_sizes=[sizes[0], sizes[1], sizes[1], sizes[0]], start=start,
                   generator=[torch.Generator().manual_seed(0) for _ in src2], output_type="pt")  # fmt: skip
        return out, sum(encoded)

    (latent, n_latent), (pixel, n_pixel) = run(None), run("pixel")
    assert (n_latent, n_pixel) == (2, 6)
    changed = (latent - pixel).abs().amax(1) > 4 / 255
    assert 0.0 < float(changed.float().mean()) < 0.3, float(changed.float().mean())
    with pytest.raises(ValueError, match="start"):
        run("noise")


def test_turned_head_repaints_the_head_only():
    """The shipped model repaints the head of a person who turns round (``turned_head``, on in its
    ``model_index.json``), and nothing else: a person turned round in place (left and right labels
    exchanged) differs from the same call with ``turned_head=False`` in the head only."""
    from posegen.pose.keypoints import COCO17_FLIP_INDEX
    from posegen.repose import load_pipeline

    _default_model()
    pipe = load_pipeline(None)
    assert pipe.config.turned_head is True
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(120, 40, (128, 64, 3)), 0, 255).astype(np.uint8)
    src = standing_pose()
    back = src[list(COCO17_FLIP_INDEX)]

    def run(turned):
        return pipe([img], src[None], back[None], target_sizes=[(64, 128)], turned_head=turned, num_inference_steps=2,
                    generator=[torch.Generator().manual_seed(0)], output_type="np")[0]  # fmt: skip

    on, off = run(True), run(False)
    changed = np.abs(on.astype(int) - off.astype(int)).max(-1) > 2
    assert changed[:26].any()  # the head (shoulders at row 26 of the 128-row image)
    assert not changed[40:].any()  # nothing from the elbows down


def test_bad_model_folders_are_clear_errors(tmp_path):
    from posegen.repose import load_pipeline

    d = _default_model()
    with pytest.raises(FileNotFoundError, match="nope"):
        load_pipeline(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(d, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises((FileNotFoundError, ValueError, OSError)):
        load_pipeline(broken)
    other = tmp_path / "other-resolution"
    shutil.copytree(d, other)
    cfg = json.loads((other / "unet" / "config.json").read_text())
    cfg["sample_size"] = [16, 8]
    (other / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="latents"):
        load_pipeline(other)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(d, corrupt)
    (corrupt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt|cannot load"):
        load_pipeline(corrupt)


def test_repose_refuses_a_source_without_a_person(tmp_path):
    from PIL import Image

    from posegen.repose.single import repose_one

    _default_model()
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((128, 64, 3), 127, np.uint8)).save(blank)
    tgt = require(CUHK03 / "val" / "0001_02.jpg")
    with pytest.raises(ValueError, match="blank.png"):
        repose_one(None, blank, tgt, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_augment_with_the_default_model(cuhk03_train, blazepose, tmp_path):
    """The main job without --model: the shipped model, outputs at each source's size, scored
    against the target pose placed on the source person (refilter reproduces the scores)."""
    from posegen.augment import augment
    from posegen.filter import refilter
    from posegen.recipe import load_recipe

    from posegen.pose.formats import read_poses

    _default_model()
    out = tmp_path / "out"
    rec = load_recipe("default")
    assert rec.augment.pose_bank_size == 720
    rec = rec.model_copy(update={"augment": rec.augment.model_copy(update={"pose_bank_size": 30})})  # a test-sized bank
    m = augment(cuhk03_train, out, recipe=rec, backend=blazepose, k=1, limit=6, seed=1)
    syn = m[m["synthetic"] & (m["path"] != "")]
    assert len(syn) >= 3
    # the pose bank: the 6 sources and the next 24 train images, whose poses only serve as targets
    bank = read_poses(out / ".posegen" / "poses.parquet")
    names = sorted(p.name for p in cuhk03_train.glob("*.jpg"))
    assert sorted(bank["path"]) == names[:30]
    real = m[~m["synthetic"]]
    assert sorted(real["path"]) == names[:6] and set(m["source"]) <= set(names[:6])
    assert not any((out / n).exists() for n in names[6:30])  # neither copied nor re-posed
    assert set(m.loc[m["k"] > 0, "target_pose_source"]) <= set(names[:30])
    assert set(m.loc[m["k"] > 0, "target_pose_source"]) & set(names[6:30])  # the wider bank is used
    for _, r in syn.iterrows():
        from PIL import Image

        with Image.open(out / r["path"]) as im, Image.open(cuhk03_train / r["source"]) as src:
            assert im.size == src.size  # written at the source's own size
    run = json.loads((out / ".posegen" / "run.json").read_text())
    assert run["model_kind"] == "latent" and run["model"] is None
    again = refilter(out, backend=blazepose)
    a = m.set_index(["source", "k"]).loc[syn.set_index(["source", "k"]).index]
    b = again.set_index(["source", "k"]).loc[a.index]
    np.testing.assert_allclose(a["oks"].to_numpy(float), b["oks"].to_numpy(float), atol=1e-6)


def test_augment_workers_do_not_change_the_outputs(cuhk03_train, blazepose, tmp_path):
    """Two batches at once (threads sharing two torch threads: one each) write the manifest and the
    bytes one batch at a time writes with one torch thread."""
    from posegen.augment import augment
    from posegen.recipe import load_recipe

    _default_model()
    rec = load_recipe("default")
    rec = rec.model_copy(update={"sample": rec.sample.model_copy(update={"batch_size": 2}),  # several batches
                                 "augment": rec.augment.model_copy(update={"pose_bank_size": None,  # the sources only, and the
                                                                           "honour_invented_fraction": None,  # filter's limits:
                                                                           "honour_foreign_fraction": None})})  # rows enough
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = augment(cuhk03_train, tmp_path / "one", recipe=rec, backend=blazepose, k=1, limit=6, seed=2, workers=1)
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(2)  # two workers of one torch thread each
    try:
        two = augment(cuhk03_train, tmp_path / "two", recipe=rec, backend=blazepose, k=1, limit=6, seed=2, workers=2)
        assert torch.get_num_threads() == 2  # the caller's setting is left alone
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(one, two)
    written = [r for r in one["path"] if r and one.set_index("path").loc[r, "synthetic"]]
    assert len(written) >= 3 and len(list((tmp_path / "two" / ".posegen" / "parts").glob("part-*.parquet"))) >= 3
    for rel in written:
        assert (tmp_path / "two" / rel).read_bytes() == (tmp_path / "one" / rel).read_bytes(), rel


def test_limb_motion_limits_are_the_pose_augment_scores_against(blazepose):
    """With ``limb_motion_limits`` the default model re-poses to the placed target with its limbs
    moved back within the limits, and returns that pose: the one ``augment``'s scorer (and
    ``posegen filter``) computes for the default recipe (:func:`posegen.augment.run.placed_target`),
    so the filter judges the output against what was asked. Without the limits the pose is the
    placed target itself."""
    from posegen.augment.run import limb_motion_limits, placed_target
    from posegen.pose.keypoints import scale_keypoints
    from posegen.recipe import load_recipe
    from posegen.repose import load_pipeline

    _default_model()
    recipe = load_recipe("default")
    limits = limb_motion_limits(recipe)
    assert limits == (0.2, 0.2)
    src, _, src_kp, tgt_kp, sizes = _val_pairs(blazepose, 4)
    free = recipe.model_copy(update={"augment": recipe.augment.model_copy(update={"limit_limb_motion": False})})
    moved = [not np.allclose(placed_target(recipe, sk, tk), placed_target(free, sk, tk)) for sk, tk in zip(src_kp, tgt_kp)]
    assert any(moved)  # some of these targets move a limb beyond the limits
    pipe = load_pipeline(None)
    for lim in (limits, None):
        out, used = pipe(src, src_kp, tgt_kp, target_sizes=sizes, num_inference_steps=1, limb_motion_limits=lim,
                         generator=[torch.Generator().manual_seed(0) for _ in src], return_keypoints=True)  # fmt: skip
        off = recipe.model_copy(update={"augment": recipe.augment.model_copy(update={"limit_limb_motion": lim is not None})})
        for s, sk, tk, u, ts in zip(src, src_kp, tgt_kp, used, sizes):
            got = scale_keypoints(u, ts, (s.shape[1], s.shape[0]))
            np.testing.assert_allclose(got[:, :2], placed_target(off, sk, tk)[:, :2], atol=1e-3)
