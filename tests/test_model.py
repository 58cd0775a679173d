"""posegen.repose.model: the conditioned re-posing network, guidance and condition dropout (tiny CPU models)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from posegen.recipe import load_recipe
from posegen.repose import ReposePipeline, ReposeUNet, make_scheduler
from posegen.repose.model import FlowRefiner, FocalEncoder, TextureEncoder, TextureTokens
from posegen.repose.train import condition_dropout

RES = (32, 16)  # (h, w)
pytestmark = pytest.mark.usefixtures("one_torch_thread")

FULL = dict(texture_attention=True, pose_aligned=True, focal_tokens=True)


def _model(seed=0, perturb=True, **flags) -> ReposeUNet:
    torch.manual_seed(seed)
    m = ReposeUNet(
        resolution=RES, block_out_channels=(8, 16), layers_per_block=1, attention_levels=(False, True),
        norm_num_groups=4, pose_sigma=1.0, limb_width=0.75, cross_attention_dim=16, attention_head_dim=8,
        texture_channels=(8, 8), focal_size=(8, 8), focal_tokens_per_region=4, **flags,
    ).eval()
    if perturb:  # zero-initialised convs would hide whether a path reaches the output
        with torch.no_grad():
            for p in m.parameters():
                if not p.any():
                    p.normal_(0, 0.2)
    return m


def _person(b: int, seed: int, w: float = RES[1], h: float = RES[0]) -> torch.Tensor:
    """Plausible upright COCO-17 poses in a ``w x h`` frame, jittered."""
    base = np.array(
        [[.5, .1], [.45, .08], [.55, .08], [.4, .1], [.6, .1], [.3, .25], [.7, .25], [.25, .42], [.75, .42],
         [.22, .55], [.78, .55], [.38, .55], [.62, .55], [.37, .75], [.63, .75], [.36, .93], [.64, .93]],
        np.float32,
    )
    rng = np.random.default_rng(seed)
    kp = np.zeros((b, 17, 3), np.float32)
    kp[..., 0] = base[:, 0] * (w - 1) + rng.normal(0, 0.6, (b, 17))
    kp[..., 1] = base[:, 1] * (h - 1) + rng.normal(0, 0.6, (b, 17))
    kp[..., 2] = 0.9
    return torch.from_numpy(kp)


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = RES
    return dict(
        sample=torch.randn(b, 3, h, w, generator=g),
        source=torch.rand(b, 3, h, w, generator=g) * 2 - 1,
        source_pose=torch.rand(b, 36, h, w, generator=g),
        target_pose=torch.rand(b, 36, h, w, generator=g),
        source_keypoints=_person(b, seed + 1),
        target_keypoints=_person(b, seed + 2),
    )


def _run(m, x, t=10, **kw):
    x = dict(x)
    with torch.no_grad():
        return m(x.pop("sample"), t, x.pop("source"), x.pop("source_pose"), x.pop("target_pose"), **x, **kw)


# ------------------------------------------------------------------------------ modules


def test_submodule_shapes_and_dtypes():
    enc = TextureEncoder(39, (8, 16, 16), 4)
    feats = enc(torch.randn(2, 39, 32, 16))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 32, 16), (2, 16, 16, 8), (2, 16, 8, 4)]
    assert all(f.dtype == torch.float32 for f in feats)
    tok = TextureTokens((16, 16), ((16, 8), (8, 4)), 24)
    out = tok(feats[1:])
    assert out.shape == (2, 16 * 8 + 8 * 4, 24) == (2, tok.num_tokens, 24) and out.dtype == torch.float32
    assert tok.null().shape == (1, tok.num_tokens, 24)
    foc = FocalEncoder(8, 24, 4, 4)
    assert foc(torch.randn(2, 3, 3, 16, 16)).shape == (2, 12, 24)
    with pytest.raises(ValueError, match="perfect square"):
        FocalEncoder(8, 24, 3, 4)
    ref = FlowRefiner(8 + 36, 8)
    delta = ref(torch.randn(2, 44, 16, 8))
    assert delta.shape == (2, 16, 8, 2) and not delta.any()  # zero-initialised: the analytic flow is kept


@pytest.mark.parametrize(
    "flags",
    [{}, {"texture_attention": True}, {"pose_aligned": True}, {"focal_tokens": True}, FULL],
    ids=["concat", "texture", "aligned", "focal", "full"],
)
def test_forward_shapes_per_conditioning(flags):
    m = _model(**flags)
    x = _inputs(3)
    out = _run(m, x, torch.tensor([1, 500, 999]))
    assert out.shape == (3, 3, *RES) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert m.conditioned == bool(flags)
    assert type(m.unet).__name__ == ("UNet2DConditionModel" if flags else "UNet2DModel")
    # training step works (gradients reach the new modules)
    m.train()
    y = m(x["sample"], 5, x["source"], x["source_pose"], x["target_pose"],
          source_keypoints=x["source_keypoints"], target_keypoints=x["target_keypoints"])
    y.pow(2).mean().backward()
    for name in ("texture_encoder", "focal_encoder", "refiners"):
        if hasattr(m, name):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(m, name).parameters()), name


def test_keypoints_required_and_checked():
    m = _model(**FULL)
    x = _inputs(2)
    x.pop("target_keypoints")
    with pytest.raises(ValueError, match="target_keypoints is required"):
        _run(m, x)
    x["target_keypoints"] = torch.zeros(2, 18, 3)
    with pytest.raises(ValueError, match=r"target_keypoints must be \[2, 17, 3\]"):
        _run(m, x)
    with pytest.raises(ValueError, match="drop_pose"):
        _run(m, _inputs(2), drop_pose=torch.zeros(3, dtype=torch.bool))


def test_full_model_from_recipe():
    r = load_recipe("tiny")
    m = ReposeUNet.from_config_recipe(r.model, min_score=r.pose.min_score)
    assert m.config.texture_attention and m.config.pose_aligned and m.config.focal_tokens
    assert m.unet.config.in_channels == 3 + 3 + 36 + 36 + 4  # + warped source + flow weight
    assert m.unet.config.cross_attention_dim == r.model.cross_attention_dim


def test_old_concat_config_loads_as_concat(tmp_path):
    m = _model(perturb=False)
    m.save_pretrained(tmp_path / "unet")
    cfg_path = tmp_path / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    old_keys = {"resolution", "block_out_channels", "layers_per_block", "attention_levels", "norm_num_groups",
                "pose_sigma", "limb_width", "min_score", "_class_name", "_diffusers_version"}
    cfg_path.write_text(json.dumps({k: v for k, v in cfg.items() if k in old_keys}))
    loaded = ReposeUNet.from_pretrained(tmp_path / "unet")
    assert not loaded.conditioned and type(loaded.unet).__name__ == "UNet2DModel"
    x = _inputs(2)
    torch.testing.assert_close(_run(loaded, x), _run(m, x), rtol=0, atol=0)


# ------------------------------------------------------------------------------ dropout


def test_condition_dropout_rates_and_determinism():
    n_steps, b = 400, 16
    draws = [condition_dropout(7, s, 0, b, 0.1, 0.25) for s in range(1, n_steps + 1)]
    dp = torch.stack([d[0] for d in draws]).float()
    da = torch.stack([d[1] for d in draws]).float()
    n = n_steps * b  # 6400 draws: std of a rate ~0.004-0.005
    assert abs(dp.mean().item() - 0.1) < 0.02 and abs(da.mean().item() - 0.25) < 0.025
    assert abs((dp * da).mean().item() - 0.025) < 0.01  # independent
    assert n == dp.numel()
    again = condition_dropout(7, 5, 0, b, 0.1, 0.25)
    assert torch.equal(again[0], draws[4][0]) and torch.equal(again[1], draws[4][1])
    assert condition_dropout(7, 5, 0, b, 0.0, 0.0) == (None, None)
    assert condition_dropout(7, 5, 0, b, 0.0, 0.3)[0] is None


def test_dropped_conditions_do_not_affect_the_output():
    m = _model(**FULL)
    x = _inputs(2)
    other = dict(x, source=-x["source"], source_pose=x["source_pose"].flip(-1), target_pose=x["target_pose"].flip(0),
                 source_keypoints=_person(2, 50), target_keypoints=_person(2, 60))
    # appearance dropped: the source image does not matter (sample 0 dropped, sample 1 kept)
    da = torch.tensor([True, False])
    a = _run(m, x, drop_appearance=da)
    b = _run(m, dict(x, source=other["source"]), drop_appearance=da)
    assert torch.equal(a[0], b[0])
    assert (a[1] - b[1]).abs().max() > 1e-3
    # pose dropped: target pose maps and target keypoints do not matter
    dp = torch.tensor([True, False])
    a = _run(m, x, drop_pose=dp)
    b = _run(m, dict(x, target_pose=other["target_pose"], target_keypoints=other["target_keypoints"]), drop_pose=dp)
    assert torch.equal(a[0], b[0]) and (a[1] - b[1]).abs().max() > 1e-3
    # both dropped: nothing but x_t and t matters
    both = torch.tensor([True, True])
    a = _run(m, x, drop_pose=both, drop_appearance=both)
    b = _run(m, other, drop_pose=both, drop_appearance=both)
    assert torch.equal(a, b)
    # None == all False
    torch.testing.assert_close(_run(m, x), _run(m, x, drop_pose=torch.zeros(2, dtype=torch.bool),
                                                  drop_appearance=torch.zeros(2, dtype=torch.bool)))


# ------------------------------------------------------------------------------ guidance


class _CondUNet(ReposeUNet):
    """Returns ``base[condition] + sample id`` (u -> 1, p -> 10, f -> 100; the id is the source's
    first value) and records the batch size of every call."""

    calls: list

    def forward(self, sample, timestep, source, source_pose, target_pose, *, drop_pose=None,
                drop_appearance=None, **kw):
        b = sample.shape[0]
        self.calls.append(b)
        dp = torch.zeros(b, dtype=torch.bool) if drop_pose is None else drop_pose
        da = torch.zeros(b, dtype=torch.bool) if drop_appearance is None else drop_appearance
        base = torch.where(dp & da, 1.0, torch.where(da, 10.0, torch.where(dp, float("nan"), 100.0)))
        val = base + source[:, 0, 0, 0]
        return val.view(b, 1, 1, 1).expand(b, 3, *sample.shape[2:]).clone()


@pytest.mark.parametrize("wp,wa", [(1.0, 1.0), (2.0, 3.0), (2.5, 2.5), (1.0, 4.0), (0.0, 2.0)])
def test_disentangled_guidance_formula(wp, wa):
    unet = _CondUNet(resolution=RES, block_out_channels=(8, 16), attention_levels=(False, False), norm_num_groups=4)
    unet.calls = []
    pipe = ReposePipeline(unet=unet, scheduler=make_scheduler("ddim"))
    b = 3
    ids = torch.arange(b, dtype=torch.float32)
    cond = {"source": ids.view(b, 1, 1, 1).expand(b, 3, *RES).clone(),
            "source_pose": torch.zeros(b, 36, *RES), "target_pose": torch.zeros(b, 36, *RES)}
    pred = pipe.guided_prediction(torch.zeros(b, 3, *RES), torch.tensor(500), cond, wp, wa)
    u, p, f = 1 + ids, 10 + ids, 100 + ids
    hand = u + wp * (p - u) + wa * (f - p)
    torch.testing.assert_close(pred[:, 0, 0, 0], hand)
    assert len(unet.calls) == 1  # one batched forward
    n_terms = sum(c != 0 for c in (1 - wp, wp - wa, wa))
    assert unet.calls[0] == (b if (wp, wa) == (1.0, 1.0) else n_terms * b)
    if (wp, wa) == (2.0, 3.0):
        assert unet.calls[0] == 3 * b


def test_guided_sampling_runs_and_differs():
    m = _model(**FULL)
    pipe = ReposePipeline(unet=m, scheduler=make_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (40, 20, 3), dtype=np.uint8) for _ in range(2)]
    skp = _person(2, 3, 20, 40).numpy()
    tkp = _person(2, 4, 20, 40).numpy()

    def gen(**kw):
        return pipe(imgs, skp, tkp, target_sizes=(20, 40), num_inference_steps=3, output_type="pt",
                    generator=[torch.Generator().manual_seed(i) for i in range(2)], **kw)

    plain = gen()
    guided = gen(pose_guidance_scale=2.0, appearance_guidance_scale=1.5)
    assert guided.shape == plain.shape == (2, 3, *RES)
    assert (guided - plain).abs().max() > 1e-3
    torch.testing.assert_close(gen(pose_guidance_scale=1.0, appearance_guidance_scale=1.0), plain)


# ------------------------------------------------------------------------------ prior guidance


class _QuadraticPrior:
    """Energy ``sum_j ||xy_j - ref_j||^2 / (2 S^2)`` pulling every joint to a fixed pose."""

    def __init__(self, ref: torch.Tensor, scale: float):
        self.ref, self.scale, self.calls = ref, scale, 0

    def energy(self, keypoints: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        d = keypoints[..., :2] - self.ref[..., :2].to(keypoints.device)
        return (d * d).sum((-1, -2)) / (2 * self.scale**2)


class _RecordingUNet(ReposeUNet):
    seen: list

    def forward(self, sample, timestep, source, source_pose, target_pose, *, target_keypoints=None, **kw):
        self.seen.append((target_keypoints.clone(), target_pose.clone()))
        return torch.zeros_like(sample)


def test_prior_guidance_moves_target_keypoints_and_rerenders():
    unet = _RecordingUNet(resolution=RES, block_out_channels=(8, 16), attention_levels=(False, False),
                          norm_num_groups=4, pose_sigma=1.0, limb_width=0.75)
    unet.seen = []
    pipe = ReposePipeline(unet=unet, scheduler=make_scheduler("ddim"))
    pipe.set_progress_bar_config(disable=True)
    img = np.zeros((32, 16, 3), np.uint8)
    tkp = _person(1, 0).numpy()
    ref = _person(1, 9)
    ref[..., :2] += torch.tensor([2.0, 3.0])  # a different, shifted pose
    tkp[0, 4, 2] = 0.1  # an absent joint must not move
    prior = _QuadraticPrior(ref, scale=10.0)
    _, used = pipe([img], tkp, tkp, target_sizes=(16, 32), num_inference_steps=10, pose_prior=prior,
                   prior_guidance_scale=0.3, return_keypoints=True)
    assert prior.calls == 10 and len(unet.seen) == 10
    present = np.arange(17) != 4
    d0 = np.abs(tkp[0, present, :2] - ref[0, present, :2].numpy()).mean()
    d1 = np.abs(used[0, present, :2] - ref[0, present, :2].numpy()).mean()
    assert d1 < 0.5 * d0, (d0, d1)
    np.testing.assert_allclose(used[0, 4], tkp[0, 4], atol=1e-4)  # absent joint untouched
    # the network saw keypoints moving step by step, and pose maps re-rendered from them
    first, last = unet.seen[0], unet.seen[-1]
    assert not torch.equal(first[0], last[0]) and not torch.equal(first[1], last[1])
    j = 9  # left wrist: its heatmap peak follows the keypoint
    y, x = np.unravel_index(last[1][0, j].numpy().argmax(), RES)
    assert abs(x - last[0][0, j, 0].item()) <= 1 and abs(y - last[0][0, j, 1].item()) <= 1
    # scale 0 = off: keypoints unchanged; and a scale without a prior is an error
    unet.seen = []
    _, same = pipe([img], tkp, tkp, target_sizes=(16, 32), num_inference_steps=3, return_keypoints=True)
    np.testing.assert_allclose(same, tkp, atol=1e-4)
    with pytest.raises(ValueError, match="pose_prior"):
        pipe([img], tkp, tkp, target_sizes=(16, 32), num_inference_steps=2, prior_guidance_scale=1.0)


# ------------------------------------------------------------------------------ save / load


def test_full_model_save_load_identical_samples(tmp_path):
    m = _model(**FULL)
    pipe = ReposePipeline(unet=m, scheduler=make_scheduler("dpm++"))
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "model")
    loaded = ReposePipeline.from_pretrained(tmp_path / "model")
    assert loaded.unet.config.focal_tokens and loaded.unet.conditioned
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (64, 32, 3), dtype=np.uint8) for _ in range(2)]
    skp = _person(2, 5, 32, 64).numpy()
    tkp = _person(2, 6, 32, 64).numpy()
    kw = dict(target_sizes=(32, 64), num_inference_steps=4, pose_guidance_scale=2.0, appearance_guidance_scale=1.5)
    a = pipe(imgs, skp, tkp, generator=[torch.Generator().manual_seed(i) for i in range(2)], **kw)
    b = loaded(imgs, skp, tkp, generator=[torch.Generator().manual_seed(i) for i in range(2)], **kw)
    np.testing.assert_array_equal(a, b)
