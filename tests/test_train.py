"""posegen.repose.train on real CUHK03 pairs (4 identities, real BlazePose keypoints), CPU-sized.

The data comes from the session fixture ``cuhk03_small`` (tests/conftest.py), which skips with a
clear reason when ``../shared`` is absent.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from posegen._io import stable_seed
from posegen.data.images import read_image
from posegen.recipe import load_recipe
from posegen.repose import PairDataset, ReposePipeline, ReposeUNet, make_pairs, train
from posegen.repose.schedulers import training_scheduler
from posegen.repose.train import TrainingError, denoising_loss

STEPS = 120


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _recipe(name="tiny", **train):
    r = load_recipe(name)
    return r.model_copy(update={"train": r.train.model_copy(update=train)})


def _micro_recipe(**train):
    """A much smaller network than ``tiny`` for the resume/determinism checks (speed only)."""
    r = _recipe(**train)
    model = r.model.model_copy(
        update={"resolution": (32, 16), "block_out_channels": (8, 16), "attention_levels": (False, True),
                "norm_num_groups": 4, "texture_channels": (8, 8), "cross_attention_dim": 16,
                "attention_head_dim": 8, "focal_size": (8, 8)}
    )
    return r.model_copy(update={"model": model, "name": "micro"})


def _held_batch(root, manifest, poses, recipe, n=8):
    """A fixed batch (no flips) with fixed noise and timesteps spread over the schedule."""
    pairs = make_pairs(manifest, poses, min_score=recipe.pose.min_score, min_keypoints=recipe.pose.min_keypoints)
    ds = PairDataset(root, pairs, poses, recipe.model, flip_prob=0.0, min_score=recipe.pose.min_score)
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int)
    items = [ds.get(int(i), augment=False) for i in idx]
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    g = torch.Generator().manual_seed(1234)
    noise = torch.randn(batch["target"].shape, generator=g)
    t = torch.linspace(50, recipe.train.num_train_timesteps - 50, n).long()
    return batch, noise, t


def _held_loss(unet, held, recipe) -> float:
    batch, noise, t = held
    unet.eval()
    with torch.no_grad():
        return float(denoising_loss(unet, batch, noise, t, training_scheduler(recipe.train)))


@pytest.fixture(scope="module")
def tiny_run(cuhk03_small, tmp_path_factory):
    root, manifest, poses = cuhk03_small
    recipe = _recipe(batch_size=4, warmup_steps=10, checkpoint_every=50, sample_every=60, log_every=10)
    run_dir = tmp_path_factory.mktemp("tiny_run")
    events = []
    t0 = time.perf_counter()
    model_dir = train(recipe, manifest, poses, root, run_dir, steps=STEPS,
                      progress=lambda s, tot, logs: events.append((s, tot, dict(logs))))
    return {"recipe": recipe, "run_dir": run_dir, "model_dir": model_dir, "events": events,
            "seconds": time.perf_counter() - t0, "data": cuhk03_small}


def test_loss_falls_on_a_fixed_batch(tiny_run):
    root, manifest, poses = tiny_run["data"]
    recipe = tiny_run["recipe"]
    held = _held_batch(root, manifest, poses, recipe)
    torch.manual_seed(stable_seed(recipe.train.seed, "init"))
    before = _held_loss(ReposeUNet.from_config_recipe(recipe.model, min_score=recipe.pose.min_score), held, recipe)
    after = _held_loss(ReposeUNet.from_pretrained(tiny_run["model_dir"] / "unet"), held, recipe)
    assert after < 0.5 * before, f"held-out denoising loss {before:.3f} -> {after:.3f}"
    assert after < 0.35


def test_run_dir_contents(tiny_run):
    run_dir, model_dir, recipe = tiny_run["run_dir"], tiny_run["model_dir"], tiny_run["recipe"]
    assert model_dir == run_dir / "model"
    assert load_recipe(run_dir / "recipe.yaml").train.steps == STEPS
    pairs = pd.read_parquet(run_dir / "pairs.parquet")
    assert list(pairs.columns) == ["source", "target", "pid"] and len(pairs) > 20
    loss = pd.read_csv(run_dir / "loss.csv")
    assert list(loss.columns) == ["step", "loss", "lr", "elapsed_s"]
    assert loss["step"].tolist() == list(range(10, STEPS + 1, 10))
    assert np.isfinite(loss["loss"]).all() and loss["loss"].iloc[-5:].mean() < loss["loss"].iloc[:2].mean()
    assert loss["lr"].iloc[0] < recipe.train.learning_rate == loss["lr"].iloc[-1]  # warmup
    assert (loss["elapsed_s"].diff().dropna() > 0).all()
    # checkpoints every 50 steps and at the end; the last 2 kept
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["step-000100", "step-000120"]
    last = run_dir / "checkpoints" / "step-000120"
    for f in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "optimizer.pt",
              "lr_scheduler.pt", "rng.pt", "state.json", "ema.pt"):
        assert (last / f).is_file(), f
    assert json.loads((last / "state.json").read_text())["step"] == STEPS
    # a sample grid every 60 steps: 4 rows (source | pose | generated | target)
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == ["step-000060.png", "step-000120.png"]
    grid = np.asarray(Image.open(run_dir / "samples" / "step-000120.png"))
    assert grid.ndim == 3 and grid.shape[0] > grid.shape[1]
    # progress events
    kinds = [e[2]["event"] for e in tiny_run["events"]]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == STEPS
    assert all(e[1] == STEPS for e in tiny_run["events"])


def test_final_model_loads_and_generates(tiny_run, cuhk03_small):
    root, manifest, poses = cuhk03_small
    pipe = ReposePipeline.from_pretrained(tiny_run["model_dir"])
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.scheduler.config.beta_schedule == tiny_run["recipe"].train.beta_schedule
    ok = poses[poses["status"] == "ok"].reset_index(drop=True)
    src = [read_image(root / p) for p in ok["path"][:2]]
    skp = np.stack(ok["keypoints"][:2])
    tkp = np.stack(ok["keypoints"][2:4])
    tsz = list(zip(ok["width"][2:4], ok["height"][2:4]))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    out = pipe(src, skp, tkp, target_sizes=tsz, num_inference_steps=10, generator=gens)
    h, w = tiny_run["recipe"].model.resolution
    assert out.shape == (2, h, w, 3) and out.dtype == np.uint8 and out.std() > 5
    # asking again for the same steps returns at once
    t0 = time.perf_counter()
    again = train(tiny_run["recipe"], manifest, poses, root, tiny_run["run_dir"], steps=STEPS)
    assert again == tiny_run["model_dir"] and time.perf_counter() - t0 < 5.0


def test_final_model_holds_the_ema_weights(tiny_run):
    assert tiny_run["recipe"].train.ema_decay > 0
    ema = torch.load(tiny_run["run_dir"] / "checkpoints" / "step-000120" / "ema.pt", weights_only=False)
    assert ema["optimization_step"] == STEPS
    final = ReposeUNet.from_pretrained(tiny_run["model_dir"] / "unet")
    raw = ReposeUNet.from_pretrained(tiny_run["run_dir"] / "checkpoints" / "step-000120" / "unet")
    params = list(final.parameters())
    assert len(params) == len(ema["shadow_params"])
    for p, shadow in zip(params, ema["shadow_params"]):
        assert torch.equal(p.detach(), shadow.to(p.dtype))
    # ... and they are not the raw training weights
    assert any(not torch.equal(a, b) for a, b in zip(params, raw.parameters()))


class _Stop(Exception):
    pass


def test_resume_continues_from_last_checkpoint_and_matches(cuhk03_small, tmp_path):
    root, manifest, poses = cuhk03_small
    recipe = _micro_recipe(batch_size=2, warmup_steps=3, checkpoint_every=10, sample_every=1000, log_every=5,
                           ema_decay=0.9, pose_dropout=0.3, appearance_dropout=0.3)
    assert recipe.model.conditioning.pose_aligned and recipe.model.conditioning.focal_tokens
    steps = 30
    # uninterrupted reference
    ref = train(recipe, manifest, poses, root, tmp_path / "ref", steps=steps)

    # interrupted at step 25 (after the checkpoint at 20), then resumed
    def stop_at_25(step, total, logs):
        if logs["event"] == "step" and step == 25:
            raise _Stop

    run = tmp_path / "run"
    with pytest.raises(_Stop):
        train(recipe, manifest, poses, root, run, steps=steps, progress=stop_at_25)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000010", "step-000020"]
    assert pd.read_csv(run / "loss.csv")["step"].tolist() == [5, 10, 15, 20, 25]
    assert not (run / "model").exists()

    events = []
    out = train(recipe, manifest, poses, root, run, steps=steps, progress=lambda s, t, l: events.append((s, l)))
    assert events[0] == (20, {"event": "start", "resumed": True, "pairs": events[0][1]["pairs"]})
    steps_run = [s for s, l in events if l["event"] == "step"]
    assert steps_run == list(range(21, steps + 1))  # no step repeated, none skipped
    log_run = pd.read_csv(run / "loss.csv")
    log_ref = pd.read_csv(tmp_path / "ref" / "loss.csv")
    assert log_run["step"].tolist() == list(range(5, steps + 1, 5))
    np.testing.assert_array_equal(log_run["loss"].to_numpy(), log_ref["loss"].to_numpy())
    # same final weights as the uninterrupted run (same data order, flips and noise per step)
    a = ReposeUNet.from_pretrained(ref / "unet").state_dict()
    b = ReposeUNet.from_pretrained(out / "unet").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ema_ref = torch.load(tmp_path / "ref" / "checkpoints" / "step-000030" / "ema.pt", weights_only=False)
    ema_run = torch.load(run / "checkpoints" / "step-000030" / "ema.pt", weights_only=False)
    assert all(torch.equal(x, y) for x, y in zip(ema_ref["shadow_params"], ema_run["shadow_params"]))

    # extending a finished run continues it; a different recipe is refused with the field named
    out2 = train(recipe, manifest, poses, root, run, steps=steps + 5)
    assert json.loads((out2 / "train_state.json").read_text())["step"] == steps + 5
    assert pd.read_csv(run / "loss.csv")["step"].tolist()[-2:] == [30, 35]
    other = recipe.model_copy(update={"train": recipe.train.model_copy(update={"learning_rate": 1e-3})})
    with pytest.raises(TrainingError, match="train.learning_rate"):
        train(other, manifest, poses, root, run, steps=steps + 10)
    with pytest.raises(TrainingError, match="more than"):
        train(recipe, manifest, poses, root, run, steps=10)


def test_no_pairs_is_a_clear_error(cuhk03_small, tmp_path):
    root, manifest, poses = cuhk03_small
    one_each = manifest.drop_duplicates("pid")  # one image per identity -> no pair
    with pytest.raises(ValueError, match="no training pairs"):
        train(_micro_recipe(), one_each, poses, root, tmp_path / "run", steps=5)
    assert not (tmp_path / "run" / "model").exists()


def test_full_model_overfits_four_real_pairs(cuhk03_small, tmp_path):
    """A tiny full model (texture attention + pose alignment + focal tokens) trained on 4 real
    CUHK03 pairs generates images closer to the real targets (SSIM) than the source images are."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    root, manifest, poses = cuhk03_small
    ok = set(poses.loc[poses["status"] == "ok", "path"])
    rows = []
    for pid, grp in manifest[manifest["path"].isin(ok)].groupby("pid"):
        a = grp[grp["path"].str.contains(r"_0[0-4]\.")]  # view A
        b = grp[grp["path"].str.contains(r"_0[5-9]\.")]  # view B: a different camera and pose
        if len(a) and len(b):
            rows += [a.iloc[[0]], b.iloc[[0]]]
        if len(rows) == 4:
            break
    assert len(rows) == 4, "need two identities with a usable image in each view"
    small = pd.concat(rows).reset_index(drop=True)  # 2 pids x 2 images -> 4 ordered pairs
    r = load_recipe("tiny")
    recipe = r.model_copy(update={"train": r.train.model_copy(update={
        "batch_size": 4, "learning_rate": 2e-3, "warmup_steps": 10, "flip_prob": 0.0, "pose_dropout": 0.0,
        "appearance_dropout": 0.0, "ema_decay": 0.0, "checkpoint_every": 1000, "sample_every": 1000,
        "log_every": 50, "seed": 3})})
    model_dir = train(recipe, small, poses, root, tmp_path / "run", steps=150)
    pairs = pd.read_parquet(tmp_path / "run" / "pairs.parquet")
    assert len(pairs) == 4
    pipe = ReposePipeline.from_pretrained(model_dir)
    by_path = poses.drop_duplicates("path").set_index("path")
    src = [read_image(root / p) for p in pairs["source"]]
    tgt = [read_image(root / p) for p in pairs["target"]]
    skp = np.stack([by_path.loc[p, "keypoints"] for p in pairs["source"]])
    tkp = np.stack([by_path.loc[p, "keypoints"] for p in pairs["target"]])
    tsz = [(im.shape[1], im.shape[0]) for im in tgt]
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    out = pipe(src, skp, tkp, target_sizes=tsz, num_inference_steps=20, generator=gens, output_type="pt")
    h, w = recipe.model.resolution
    from posegen.repose.render import images_to_tensor

    real = images_to_tensor(tgt, (h, w))
    source = images_to_tensor(src, (h, w))
    s_gen = float(ssim((out + 1) / 2, (real + 1) / 2, data_range=1.0))
    s_src = float(ssim((source + 1) / 2, (real + 1) / 2, data_range=1.0))
    assert s_gen > s_src + 0.2, f"SSIM to the real target: generated {s_gen:.3f}, source {s_src:.3f}"
