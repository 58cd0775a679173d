"""posegen.repose: pose rendering, the denoiser, samplers, the pipeline and pairs (tiny CPU models)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from posegen.pose.keypoints import COCO17_SKELETON, flip_keypoints
from posegen.recipe import load_recipe
from posegen.repose import (
    POSE_CHANNELS,
    SCHEDULERS,
    PairDataset,
    ReposePipeline,
    ReposeUNet,
    load_pipeline,
    make_pairs,
    make_scheduler,
    pose_to_rgb,
    render_pose,
    render_poses,
)

RES = (32, 16)  # (h, w) of the test models


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _kp(rng: np.random.Generator, w: float, h: float, n: int | None = None) -> np.ndarray:
    shape = (17, 3) if n is None else (n, 17, 3)
    kp = np.zeros(shape, np.float32)
    kp[..., 0] = rng.uniform(0, w - 1, shape[:-1])
    kp[..., 1] = rng.uniform(0, h - 1, shape[:-1])
    kp[..., 2] = 0.9
    return kp


@pytest.fixture(scope="module")
def tiny_unet() -> ReposeUNet:
    torch.manual_seed(0)
    return ReposeUNet(
        resolution=RES,
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_levels=(False, True),
        norm_num_groups=4,
        pose_sigma=1.0,
        limb_width=0.75,
    ).eval()


@pytest.fixture()
def pipe(tiny_unet) -> ReposePipeline:
    sched = make_scheduler("ddim", num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    p = ReposePipeline(unet=tiny_unet, scheduler=sched)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    sizes = [(30, 70), (44, 130), (25, 60)]  # (w, h) of each source image
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    src_kp = np.stack([_kp(rng, w, h) for w, h in sizes])
    tgt_kp = _kp(rng, 64, 128, n=3)
    return images, src_kp, tgt_kp


def _gens(seeds):
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


# ------------------------------------------------------------------------------------ render


def test_render_pose_shape_range_and_peak():
    kp = np.zeros((17, 3), np.float32)
    # joint 5 at pixel (x=50, y=150) of a 100x300 image -> (15.5, 63.5) ... choose exact centres:
    # model (h, w) = (64, 32): x' = (x + .5) * 0.32 - .5, y' = (y + .5) * 64/300 - .5
    # pick x' = 10, y' = 40 -> x = 10.5 / 0.32 - .5, y = 40.5 * 300 / 64 - .5
    kp[5] = (10.5 / 0.32 - 0.5, 40.5 * 300 / 64 - 0.5, 0.9)
    kp[6] = (20.5 / 0.32 - 0.5, 40.5 * 300 / 64 - 0.5, 0.9)  # right shoulder at (20, 40)
    kp[7] = (5.0, 5.0, 0.3)  # below min_score -> absent
    maps = render_pose(kp, (100, 300), (64, 32), sigma=1.0, limb_width=0.75, min_score=0.5)
    assert maps.shape == (POSE_CHANNELS, 64, 32) == (36, 64, 32)
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    # the heatmap peaks (value 1) exactly at the mapped joint
    y, x = np.unravel_index(maps[5].argmax(), maps[5].shape)
    assert (y, x) == (40, 10)
    assert maps[5, 40, 10] == pytest.approx(1.0, abs=1e-5)
    assert maps[5, 40, 12] == pytest.approx(np.exp(-2.0), rel=1e-4)  # 2 px away, sigma 1
    # absent joints (score 0 or < min_score) give all-zero channels, and so do their limbs
    assert not maps[0].any() and not maps[7].any()
    for li, (a, b) in enumerate(COCO17_SKELETON):
        ch = maps[17 + li]
        if {a, b} == {5, 6}:
            assert ch[40, 15] == 1.0 and ch[40, 10:21].min() == 1.0  # on the shoulder line
            assert ch[45, 15] < 0.01  # far from it
        else:
            assert not ch.any(), f"limb {a}-{b} should be empty"


def test_render_poses_batch_matches_single_and_flip():
    rng = np.random.default_rng(1)
    kps = _kp(rng, 80, 200, n=4)
    kps[1, 3:6, 2] = 0.0
    sizes = [(80, 200)] * 4
    batch = render_poses(kps, sizes, (64, 32), 1.0, 0.75)
    for i in range(4):
        np.testing.assert_allclose(batch[i], render_pose(kps[i], (80, 200), (64, 32), 1.0, 0.75), atol=1e-6)
    # rendering a flipped pose == flipping the maps of the original with left/right swapped
    flipped = render_pose(flip_keypoints(kps[0], 80), (80, 200), (64, 32), 1.0, 0.75)
    from posegen.pose.keypoints import COCO17_FLIP_INDEX

    mirrored = batch[0][:, :, ::-1]
    np.testing.assert_allclose(flipped[:17], mirrored[list(COCO17_FLIP_INDEX)], atol=1e-5)
    rgb = pose_to_rgb(batch[0])
    assert rgb.shape == (64, 32, 3) and rgb.dtype == np.uint8 and rgb.max() > 0
    with pytest.raises(ValueError, match=r"\[17, 3\]"):
        render_pose(np.zeros((18, 3)), (10, 10), (64, 32), 1.0, 1.0)


# ------------------------------------------------------------------------------------- model


def test_model_forward_shapes_and_dtype(tiny_unet):
    b, (h, w) = 2, RES
    x = torch.randn(b, 3, h, w)
    src = torch.rand(b, 3, h, w) * 2 - 1
    sp, tp = torch.rand(b, 36, h, w), torch.rand(b, 36, h, w)
    with torch.no_grad():
        out = tiny_unet(x, torch.tensor([1, 500]), src, sp, tp)
        out_scalar = tiny_unet(x, 10, src, sp, tp)
    assert out.shape == (b, 3, h, w) and out.dtype == torch.float32
    assert out_scalar.shape == (b, 3, h, w) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="target_pose"):
        tiny_unet(x, 10, src, sp, tp[:, :35])


def test_model_from_recipe_and_bad_config():
    r = load_recipe("tiny")
    m = ReposeUNet.from_config_recipe(r.model, min_score=0.4)
    assert m.resolution == tuple(r.model.resolution)
    assert m.config.min_score == 0.4 and m.config.pose_sigma == r.model.pose_sigma
    assert m.unet.config.in_channels == 3 + 3 + 36 + 36 + 4  # tiny is the full model: + warped source, weight
    concat = r.model.model_copy(update={"conditioning": r.model.conditioning.model_copy(
        update={"texture_attention": False, "pose_aligned": False, "focal_tokens": False})})
    assert ReposeUNet.from_config_recipe(concat).unet.config.in_channels == 3 + 3 + 36 + 36
    with pytest.raises(ValueError, match="divisible"):
        ReposeUNet(resolution=(30, 16), block_out_channels=(8, 16, 16), attention_levels=(False,) * 3, norm_num_groups=4)


# -------------------------------------------------------------------------------- schedulers


def test_make_scheduler_names():
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    assert {"ddim", "dpm++", "dpmsolver++", "ddpm", "unipc", "euler"} <= set(SCHEDULERS)
    tc = load_recipe("tiny").train
    s = make_scheduler("ddim", tc)
    assert isinstance(s, DDIMScheduler) and s.config.beta_schedule == tc.beta_schedule
    d = make_scheduler("DPM++", s.config)
    assert isinstance(d, DPMSolverMultistepScheduler) and d.config.algorithm_type == "dpmsolver++"
    assert d.config.prediction_type == tc.prediction_type
    assert isinstance(make_scheduler("euler", s.config), EulerDiscreteScheduler)
    with pytest.raises(ValueError, match="known schedulers: ddim"):
        make_scheduler("plms")


# ---------------------------------------------------------------------------------- pipeline


def test_pipeline_output_and_determinism(pipe, inputs):
    images, skp, tkp = inputs
    out = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=4, generator=_gens([1, 2, 3]))
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (3, *RES, 3)
    again = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=4, generator=_gens([1, 2, 3]))
    np.testing.assert_array_equal(out, again)
    other = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=4, generator=_gens([4, 5, 6]))
    assert not np.array_equal(out, other)
    pils = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=2, output_type="pil",
                generator=torch.Generator().manual_seed(0))
    assert len(pils) == 3 and pils[0].size == (RES[1], RES[0])
    pt = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=2, output_type="pt")
    assert pt.shape == (3, 3, *RES) and pt.min() >= -1 and pt.max() <= 1
    with pytest.raises(ValueError, match="generators"):
        pipe(images, skp, tkp, target_sizes=(64, 128), generator=_gens([1]) * 2)
    with pytest.raises(ValueError, match="target_keypoints"):
        pipe(images, skp, tkp[:2], target_sizes=(64, 128))


@pytest.mark.parametrize("name", ["ddim", "dpm++", "ddpm", "unipc", "euler"])
def test_pipeline_schedulers_by_name(pipe, inputs, name):
    images, skp, tkp = inputs
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    a = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=3, generator=_gens([7, 8, 9]))
    b = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=3, generator=_gens([7, 8, 9]))
    assert a.shape == (3, *RES, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["ddim", "ddpm"])  # deterministic and stochastic update rules
def test_per_sample_generators_independent_of_batch(pipe, inputs, name):
    images, skp, tkp = inputs
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    full = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=5,
                generator=_gens([10, 11, 12]), output_type="pt")
    # DDIM/DDPM clip x0, so a random model's outputs are not saturated: the check is meaningful
    assert (full.abs() < 0.99).float().mean() > 0.3
    alone = pipe(images[1:2], skp[1:2], tkp[1:2], target_sizes=(64, 128), num_inference_steps=5,
                 generator=_gens([11]), output_type="pt")
    torch.testing.assert_close(alone[0], full[1], atol=1e-3, rtol=0)
    # and sample 1 is the same whatever its neighbours are
    swapped = pipe([images[2], images[1]], skp[[2, 1]], tkp[[2, 1]], target_sizes=(64, 128),
                   num_inference_steps=5, generator=_gens([99, 11]), output_type="pt")
    torch.testing.assert_close(swapped[1], full[1], atol=1e-3, rtol=0)


def test_save_and_load_pretrained_offline(pipe, inputs, tmp_path):
    images, skp, tkp = inputs
    pipe.save_pretrained(tmp_path / "model")
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert index["unet"][0].startswith("posegen.repose") and index["unet"][1] == "ReposeUNet"
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ReposePipeline.from_pretrained(tmp_path / "model")
    assert isinstance(loaded.unet, ReposeUNet)
    a = pipe(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=4, generator=_gens([1, 2, 3]))
    b = loaded(images, skp, tkp, target_sizes=(64, 128), num_inference_steps=4, generator=_gens([1, 2, 3]))
    np.testing.assert_array_equal(a, b)
    via = load_pipeline(tmp_path / "model", scheduler="dpm++")
    assert type(via.scheduler).__name__ == "DPMSolverMultistepScheduler"
    assert via(images[:1], skp[:1], tkp[:1], target_sizes=(64, 128), num_inference_steps=2).shape == (1, *RES, 3)


def test_missing_model_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        ReposePipeline.from_pretrained(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_pipeline(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        load_pipeline(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="config.json"):
        ReposeUNet.from_pretrained(tmp_path / "empty")


# ------------------------------------------------------------------------------------- pairs


def _toy_dataset(tmp_path, n_pids=3, per_pid=3):
    from PIL import Image

    rng = np.random.default_rng(3)
    rows, prow = [], []
    for pid in range(n_pids):
        for k in range(per_pid):
            path = f"{pid:04d}_{k:02d}.png"
            w, h = 20 + k, 50 + 2 * k
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / path)
            kp = _kp(rng, w, h)
            status = "ok"
            if pid == 0 and k == 2:
                kp[:12, 2] = 0.1  # too few confident joints
            if pid == 1 and k == 0:
                status = "failed"
            rows.append({"path": path, "pid": pid, "camid": k % 2, "split": "train"})
            prow.append({"path": path, "width": w, "height": h, "keypoints": kp, "status": status,
                         "reason": "", "backend": "test", "weights": "none"})
    rows.append({"path": "9999_00.png", "pid": 9999, "camid": 0, "split": "query"})
    return pd.DataFrame(rows), pd.DataFrame(prow)


def test_make_pairs_and_dataset(tmp_path):
    manifest, poses = _toy_dataset(tmp_path)
    pairs = make_pairs(manifest, poses, min_score=0.5, min_keypoints=8)
    assert list(pairs.columns) == ["source", "target", "pid"]
    # pid 0: 2 usable images -> 2 ordered pairs; pid 1: 2 usable -> 2; pid 2: 3 -> 6
    assert pairs.groupby("pid").size().to_dict() == {0: 2, 1: 2, 2: 6}
    assert (pairs["source"] != pairs["target"]).all()
    assert pairs.equals(make_pairs(manifest.sample(frac=1, random_state=1), poses, min_score=0.5, min_keypoints=8))
    assert pairs.equals(pairs.sort_values(["pid", "source", "target"]).reset_index(drop=True))
    assert len(make_pairs(manifest, poses, min_score=0.5, min_keypoints=8, splits=("query",))) == 0

    cfg = load_recipe("tiny").model
    ds = PairDataset(tmp_path, pairs, poses, cfg, flip_prob=0.5, seed=0)
    item = ds[0]
    h, w = cfg.resolution
    assert set(item) == {"source", "target", "source_pose", "target_pose", "source_keypoints", "target_keypoints"}
    assert item["source_keypoints"].shape == (17, 3) and item["target_keypoints"].dtype == torch.float32
    assert item["source"].shape == (3, h, w) and item["target"].shape == (3, h, w)
    assert item["source_pose"].shape == (36, h, w) and item["target_pose"].dtype == torch.float32
    assert item["source"].min() >= -1 and item["source"].max() <= 1
    # flips are deterministic per (seed, epoch, idx), and a flip mirrors image and pose together
    for k in ("source", "target", "source_pose", "target_pose", "source_keypoints", "target_keypoints"):
        assert torch.equal(ds.get(3, epoch=2)[k], ds.get(3, epoch=2)[k])
    plain = ds.get(0, augment=False)
    never = PairDataset(tmp_path, pairs, poses, cfg, flip_prob=0.0)
    always = PairDataset(tmp_path, pairs, poses, cfg, flip_prob=1.0)
    assert torch.equal(never[0]["source"], plain["source"])
    assert torch.equal(always[0]["source"], plain["source"].flip(-1))
    from posegen.pose.keypoints import COCO17_FLIP_INDEX

    torch.testing.assert_close(always[0]["source_pose"][:17], plain["source_pose"][list(COCO17_FLIP_INDEX)].flip(-1),
                               atol=1e-5, rtol=0)
    # the batch's model-frame keypoints are flipped with the image and are what the maps show
    np.testing.assert_allclose(always[0]["source_keypoints"].numpy(),
                               flip_keypoints(plain["source_keypoints"].numpy(), w), atol=1e-5)
    maps = render_pose(always[0]["source_keypoints"].numpy(), (w, h), (h, w), cfg.pose_sigma, cfg.limb_width)
    np.testing.assert_allclose(maps, always[0]["source_pose"].numpy(), atol=1e-5)


class _OracleUNet(ReposeUNet):
    """Predicts exactly (noise, clean image or v) for a target equal to the source image (DDPM
    forward process), per ``self.prediction_type``."""

    def forward(self, sample, timestep, source, source_pose, target_pose, **kwargs):
        ac = self.alphas_cumprod[torch.as_tensor(timestep).long().cpu()].to(sample.device)
        ac = ac.view(-1, 1, 1, 1) if ac.ndim else ac
        eps = (sample - ac.sqrt() * source) / (1 - ac).sqrt()
        if self.prediction_type == "sample":
            return source.expand_as(sample)
        if self.prediction_type == "v_prediction":
            return ac.sqrt() * eps - (1 - ac).sqrt() * source
        return eps


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("name", ["ddim", "dpm++", "ddpm", "unipc", "euler"])
def test_samplers_recover_the_target_with_an_oracle_denoiser(name, prediction_type):
    """The pipeline's loop (timesteps, scale_model_input, step) is right for every sampler and
    every prediction type."""
    from posegen.repose.schedulers import training_scheduler

    tc = load_recipe("tiny").train.model_copy(update={"prediction_type": prediction_type})
    unet = _OracleUNet(resolution=RES, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)
    unet.alphas_cumprod = training_scheduler(tc).alphas_cumprod
    unet.prediction_type = prediction_type
    pipe = ReposePipeline(unet=unet, scheduler=make_scheduler(name, tc))
    img = np.random.default_rng(5).integers(0, 256, (*RES, 3), dtype=np.uint8)
    kp = np.zeros((1, 17, 3), np.float32)
    out = pipe([img], kp, kp, target_sizes=(RES[1], RES[0]), num_inference_steps=8,
               generator=torch.Generator().manual_seed(0))
    assert np.abs(out[0].astype(int) - img).max() <= 1
