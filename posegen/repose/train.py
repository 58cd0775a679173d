"""Training the re-posing model: DDPM on same-identity (source, target) pairs.

The objective is the simplified DDPM loss (Ho et al. 2020): for a pair, draw ``t ~ U{0..T-1}`` and
``eps ~ N(0, I)``, noise the target ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` and regress the
network's output on ``eps`` (``prediction_type: epsilon``) or on ``v = sqrt(abar_t) eps -
sqrt(1 - abar_t) x_0`` (``v_prediction``, Salimans & Ho 2022) with an MSE, the network being conditioned
on the source image and both poses (concatenation; pose-guided diffusion after PIDM, Bhunia et al.
2023). AdamW, linear warmup then a constant learning rate, gradient clipping; ``accelerate`` handles
devices, mixed precision and several processes (``accelerate launch``: every process draws its own
``batch_size`` samples, so the global batch is ``batch_size * num_processes``).

Run folder (everything written atomically)::

    run_dir/recipe.yaml                 the recipe used (train.steps = the requested total)
    run_dir/pairs.parquet               the training pairs (source, target, pid)
    run_dir/loss.csv                    step, loss, lr, elapsed_s (one row every log_every steps)
    run_dir/checkpoints/step-000250/    unet/ (save_pretrained, the raw training weights),
                                        optimizer.pt, lr_scheduler.pt, rng.pt, state.json, and
                                        ema.pt (diffusers EMAModel state) when train.ema_decay > 0;
                                        the last 2 are kept
    run_dir/samples/step-000500.png     rows: source | target pose | generated (DDIM) | real target
                                        (generated with the EMA weights when EMA is on)
    run_dir/model/                      the final ReposePipeline (save_pretrained; the EMA weights
                                        when EMA is on) + recipe.yaml

Condition dropout (``train.pose_dropout``, ``train.appearance_dropout``, independent per sample and
per condition; :func:`condition_dropout`) trains the unconditional and pose-only predictions that
the pipeline's disentangled classifier-free guidance needs. EMA of the weights
(``train.ema_decay``, ``diffusers.training_utils.EMAModel`` with its default warm-up
``min(decay, (1 + n) / (10 + n))``) is updated after every optimizer step.

Determinism: the data order, the flips, the noise, the timesteps and the dropped conditions of
step ``s`` are functions of ``(train.seed, s)`` only (:func:`posegen._io.stable_seed`), so a run resumed from a checkpoint
repeats exactly what an uninterrupted run does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset, Sampler

from posegen._io import (
    atomic_save_image,
    atomic_to_parquet,
    atomic_write_json,
    atomic_write_text,
    stable_seed,
)
from posegen.recipe import Recipe, RecipeError, load_recipe

from .model import ReposeUNet
from ..pose.extract import usable_poses
from .pairs import PairDataset, make_pairs
from .pipeline import ReposePipeline
from .render import pose_to_rgb, render_pose
from .schedulers import make_scheduler, training_scheduler

__all__ = ["train", "denoising_loss", "condition_dropout", "TrainingError", "KEEP_CHECKPOINTS"]

log = logging.getLogger(__name__)

#: Number of checkpoints kept in ``run_dir/checkpoints``.
KEEP_CHECKPOINTS = 2
#: Pairs shown in the sample grids.
NUM_SAMPLE_PAIRS = 4

ProgressFn = Callable[[int, int, dict], None]

# recipe fields that may change between a run and its resumption (they do not change the result)
_RESUME_FREE = {
    ("name",),
    ("train", "steps"),
    ("train", "num_workers"),
    ("train", "log_every"),
    ("train", "checkpoint_every"),
    ("train", "sample_every"),
    ("sample",),
    ("filter",),
    ("augment",),
}


class TrainingError(ValueError):
    """A run folder cannot be used (different recipe, different pairs, more steps done than asked)."""


# --------------------------------------------------------------------------------------------- loss


def denoising_loss(
    unet: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    noise_scheduler,
    *,
    drop_pose: torch.Tensor | None = None,
    drop_appearance: torch.Tensor | None = None,
) -> torch.Tensor:
    """The DDPM training loss of one batch, for given noise and timesteps (Ho et al. 2020).

    Args:
        unet: a :class:`~posegen.repose.model.ReposeUNet` (or its accelerate wrapper).
        batch: ``source``, ``target`` ``[B, 3, h, w]`` in ``[-1, 1]``; ``source_pose``,
            ``target_pose`` ``[B, 36, h, w]``; ``source_keypoints``, ``target_keypoints``
            ``float32 [B, 17, 3]`` model-frame pixels (a :class:`PairDataset` batch; the keypoints
            may be absent for models that do not need them), on the unet's device.
        noise: ``[B, 3, h, w]`` standard normal.
        timesteps: ``int64 [B]`` in ``[0, num_train_timesteps)``.
        noise_scheduler: the training ``DDPMScheduler``; its ``config.prediction_type``
            (``epsilon``, ``v_prediction`` or ``sample``) chooses the regression target.
        drop_pose, drop_appearance: bool ``[B]`` condition dropout (None = keep), see
            :meth:`ReposeUNet.forward`.

    Returns:
        Scalar float32 MSE between the prediction and ``eps`` (or ``v``, or the clean ``x0``).
    """
    x0 = batch["target"]
    noisy = noise_scheduler.add_noise(x0, noise, timesteps)
    pred = unet(
        noisy, timesteps, batch["source"], batch["source_pose"], batch["target_pose"],
        source_keypoints=batch.get("source_keypoints"), target_keypoints=batch.get("target_keypoints"),
        drop_pose=drop_pose, drop_appearance=drop_appearance,
    )
    kind = noise_scheduler.config.prediction_type
    if kind == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, timesteps)
    elif kind == "sample":
        target = x0
    else:
        target = noise
    return F.mse_loss(pred.float(), target.float())


def _step_noise(seed: int, step: int, rank: int, shape, num_timesteps: int):
    g = torch.Generator(device="cpu").manual_seed(stable_seed(seed, "noise", step, rank))
    noise = torch.randn(shape, generator=g)
    t = torch.randint(0, num_timesteps, (shape[0],), generator=g, dtype=torch.int64)
    return noise, t


def condition_dropout(
    seed: int, step: int, rank: int, batch_size: int, pose_dropout: float, appearance_dropout: float
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Which samples of a step drop their pose / appearance conditions (classifier-free guidance
    training, Ho & Salimans 2022; separately per condition as in PIDM).

    Drawn from ``stable_seed(seed, "dropout", step, rank)``, independently per sample and per
    condition, so a resumed run drops exactly the same conditions.

    Returns:
        ``(drop_pose, drop_appearance)``, each bool ``[batch_size]`` on the CPU, or None when its
        probability is 0.
    """
    if pose_dropout <= 0 and appearance_dropout <= 0:
        return None, None
    g = torch.Generator(device="cpu").manual_seed(stable_seed(seed, "dropout", step, rank))
    u = torch.rand(2, batch_size, generator=g)
    dp = (u[0] < pose_dropout) if pose_dropout > 0 else None
    da = (u[1] < appearance_dropout) if appearance_dropout > 0 else None
    return dp, da


# --------------------------------------------------------------------------------------------- data


class _Stream(Dataset):
    """Global sample position ``p`` -> item ``perm_e[p % n]`` of epoch ``e = p // n``."""

    def __init__(self, ds: PairDataset, seed: int):
        self.ds = ds
        self.seed = seed
        self.n = len(ds)
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _perm_of(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            rng = np.random.default_rng(stable_seed(self.seed, "order", epoch))
            self._perm = rng.permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def __len__(self) -> int:  # positions are unbounded; len is only informative
        return self.n

    def __getitem__(self, p: int):
        epoch, r = divmod(int(p), self.n)
        return self.ds.get(int(self._perm_of(epoch)[r]), epoch)


class _StepBatches(Sampler):
    """Batches of global positions for steps ``start+1 .. total`` of process ``rank``."""

    def __init__(self, start: int, total: int, batch_size: int, rank: int, world: int):
        self.start, self.total, self.b, self.rank, self.world = start, total, batch_size, rank, world

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self):
        for s in range(self.start, self.total):  # s = step index (0-based) -> step s + 1
            base = (s * self.world + self.rank) * self.b
            yield list(range(base, base + self.b))


# ----------------------------------------------------------------------------------------- run dir


def _recipe_dict(recipe: Recipe) -> dict:
    return recipe.model_dump(mode="json")


def _recipe_diff(a: Recipe, b: Recipe) -> list[str]:
    da, db = _recipe_dict(a), _recipe_dict(b)
    diffs = []
    for sec in sorted(set(da) | set(db)):
        if (sec,) in _RESUME_FREE:
            continue
        va, vb = da.get(sec), db.get(sec)
        if isinstance(va, dict) and isinstance(vb, dict):
            for k in sorted(set(va) | set(vb)):
                if (sec, k) in _RESUME_FREE:
                    continue
                if va.get(k) != vb.get(k):
                    diffs.append(f"{sec}.{k}: {va.get(k)!r} in the run, {vb.get(k)!r} now")
        elif va != vb:
            diffs.append(f"{sec}: {va!r} in the run, {vb!r} now")
    return diffs


def _write_recipe(recipe: Recipe, path: Path) -> None:
    text = yaml.safe_dump(_recipe_dict(recipe), sort_keys=False)
    atomic_write_text(path, f"# recipe used by posegen train\n{text}")


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "checkpoints"
    out = []
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith("step-") and (p / "state.json").is_file():
                try:
                    out.append((int(p.name[5:]), p))
                except ValueError:
                    continue
    return sorted(out)


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _torch_save_atomic(obj: Any, path: Path) -> None:
    from posegen._io import atomic_write

    atomic_write(path, lambda p: torch.save(obj, p))


def _save_checkpoint(run_dir: Path, step: int, unet, optimizer, lr_sched, state: dict, ema=None) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    unet.save_pretrained(tmp / "unet")
    _torch_save_atomic(optimizer.state_dict(), tmp / "optimizer.pt")
    _torch_save_atomic(lr_sched.state_dict(), tmp / "lr_scheduler.pt")
    if ema is not None:
        _torch_save_atomic(ema.state_dict(), tmp / "ema.pt")
    rng = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    _torch_save_atomic(rng, tmp / "rng.pt")
    atomic_write_json(tmp / "state.json", state)
    _replace_dir(tmp, final)
    for _, old in _checkpoints(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextlib.contextmanager
def _ema_weights(ema, model: torch.nn.Module):
    """Temporarily load the EMA weights into ``model`` (no-op when ``ema`` is None); the training
    weights are restored exactly afterwards."""
    if ema is None:
        yield model
        return
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        yield model
    finally:
        ema.restore(model.parameters())


def _write_loss_csv(path: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows, columns=["step", "loss", "lr", "elapsed_s"])
    atomic_write_text(path, df.to_csv(index=False, float_format="%.6g"))


def _read_loss_csv(path: Path, upto: int) -> list[dict]:
    if not path.is_file():
        return []
    df = pd.read_csv(path)
    df = df[df["step"] <= upto]
    return [
        {"step": int(r.step), "loss": float(r.loss), "lr": float(r.lr), "elapsed_s": float(r.elapsed_s)}
        for r in df.itertuples()
    ]


def _sample_pairs(pairs: pd.DataFrame, n: int = NUM_SAMPLE_PAIRS) -> list[int]:
    """Fixed pair indices for the sample grids: one pair from each of ``n`` evenly spread pids."""
    pids = sorted(pairs["pid"].unique())
    k = min(n, len(pids))
    out = []
    for j in range(k):
        pid = pids[(j * len(pids)) // k]
        idx = np.flatnonzero(pairs["pid"].to_numpy() == pid)
        out.append(int(idx[len(idx) // 2]))
    return out


def _sample_grid(unet: ReposeUNet, ds: PairDataset, recipe: Recipe, indices: list[int]) -> np.ndarray:
    """``uint8`` grid, one column per pair; rows: source | target pose | generated | real target."""
    h, w = ds.resolution
    was_training = unet.training
    unet.eval()
    pipe = ReposePipeline(unet=unet, scheduler=make_scheduler("ddim", recipe.train))
    pipe.set_progress_bar_config(disable=True)
    src = [ds.image(ds.pairs["source"][i]) for i in indices]
    tgt = [ds.image(ds.pairs["target"][i]) for i in indices]
    skp = np.stack([ds.keypoints(ds.pairs["source"][i]) for i in indices])
    tkp = np.stack([ds.keypoints(ds.pairs["target"][i]) for i in indices])
    gens = [torch.Generator().manual_seed(stable_seed(recipe.train.seed, "sample", i)) for i in indices]
    gen = pipe(
        src, skp, tkp, source_sizes=(w, h), target_sizes=(w, h),
        num_inference_steps=recipe.sample.steps, generator=gens, output_type="np",
        pose_guidance_scale=recipe.sample.pose_guidance,
        appearance_guidance_scale=recipe.sample.appearance_guidance,
    )
    if was_training:
        unet.train()
    poses = [
        pose_to_rgb(render_pose(k, (w, h), (h, w), ds.sigma, ds.limb_width, ds.min_score)) for k in tkp
    ]
    rows = [src, poses, list(gen), tgt]
    scale = max(1, 128 // h)
    pad = 2
    n = len(indices)
    grid = np.full((4 * (h * scale + pad) + pad, n * (w * scale + pad) + pad, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            big = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
            y0 = pad + r * (h * scale + pad)
            x0 = pad + c * (w * scale + pad)
            grid[y0 : y0 + h * scale, x0 : x0 + w * scale] = big
    return grid


def _save_final_model(run_dir: Path, unet: ReposeUNet, recipe: Recipe, step: int) -> Path:
    final = run_dir / "model"
    tmp = run_dir / ".model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    scheduler = make_scheduler(recipe.sample.scheduler, recipe.train)
    pipe = ReposePipeline(unet=unet, scheduler=scheduler)
    pipe.save_pretrained(tmp)
    _write_recipe(recipe, tmp / "recipe.yaml")
    atomic_write_json(tmp / "train_state.json", {"step": step, "recipe": recipe.name})
    _replace_dir(tmp, final)
    return final


def _no_pairs_message(manifest: pd.DataFrame, poses: pd.DataFrame, recipe: Recipe) -> str:
    n_train = int((manifest["split"].astype(str) == "train").sum()) if "split" in manifest else len(manifest)
    good = int(usable_poses(poses, min_score=recipe.pose.min_score, min_keypoints=recipe.pose.min_keypoints).sum())
    return (
        "no training pairs: need at least two images of one pid in split 'train' whose pose is ok "
        f"with >= {recipe.pose.min_keypoints} joints at score >= {recipe.pose.min_score} "
        f"(manifest: {n_train} train images; poses: {good} usable of {len(poses)})"
    )


# -------------------------------------------------------------------------------------------- train


def train(
    recipe: Recipe,
    manifest: pd.DataFrame,
    poses: pd.DataFrame,
    root: str | Path,
    run_dir: str | Path,
    *,
    steps: int | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Train (or resume training) the re-posing model; returns the final model folder.

    Args:
        recipe: the validated recipe (``model``, ``train``, ``pose`` and ``sample`` sections used).
        manifest: ``path`` (relative to ``root``), ``pid``, ``split``; rows of split ``train`` are used.
        poses: ``path``, ``width``, ``height``, ``keypoints`` (``float32 [17, 3]`` in pixels of the
            original image), ``status``.
        root: dataset root.
        run_dir: run folder (created); see the module docstring for its layout.
        steps: total optimizer steps, overriding ``recipe.train.steps``.
        progress: optional ``progress(step, total, logs)`` called on the main process: once with
            ``logs["event"] == "start"`` (``step`` = the step resumed from, 0 for a new run), after
            every step with ``event "step"`` and ``loss`` (this step's), ``lr``, ``elapsed_s``, then
            ``event "checkpoint"`` / ``"sample"`` with ``path`` when one is written, and
            ``event "done"`` with ``path`` (the model folder) at the end. Raising from it stops
            training (the last checkpoint stays usable).

    Returns:
        ``run_dir / "model"``: a saved :class:`~posegen.repose.pipeline.ReposePipeline` with the
        recipe's sampler (``sample.scheduler``) and ``recipe.yaml``.

    Resuming: when ``run_dir`` holds checkpoints, training continues from the last one (the loss
    log is cut back to it and continues); when ``run_dir/model`` is already at ``steps``, it is
    returned at once. A larger ``steps`` than before extends a finished run.

    Raises:
        ValueError: no training pairs (the message says what was available).
        TrainingError (a ValueError): ``run_dir`` was trained with a different recipe (fields
            named), on different pairs, or already has more steps than ``steps``.
        RecipeError: ``sample.scheduler`` is not a known scheduler name.
    """
    from accelerate import Accelerator

    total = int(steps if steps is not None else recipe.train.steps)
    if total < 1:
        raise ValueError(f"steps must be >= 1, got {total}")
    recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"steps": total})})
    tc = recipe.train
    try:
        make_scheduler(recipe.sample.scheduler, tc)
    except ValueError as e:
        raise RecipeError(f"sample.scheduler: {e}") from None
    run_dir = Path(run_dir)
    root = Path(root)

    # ---- an existing run: same recipe, maybe already done
    recipe_path = run_dir / "recipe.yaml"
    if recipe_path.is_file():
        saved = load_recipe(recipe_path)
        diffs = _recipe_diff(saved, recipe)
        if diffs:
            raise TrainingError(
                f"{run_dir} was trained with a different recipe; use a new run folder or the same "
                "recipe. Differences:\n  " + "\n  ".join(diffs)
            )
    model_dir = run_dir / "model"
    state_file = model_dir / "train_state.json"
    ckpts = _checkpoints(run_dir)
    done = None
    if state_file.is_file() and (model_dir / "model_index.json").is_file():
        done = int(json.loads(state_file.read_text())["step"])
    last = ckpts[-1][0] if ckpts else 0
    if max(last, done or 0) > total:
        raise TrainingError(
            f"{run_dir} already has {max(last, done or 0)} training steps, more than the {total} asked; "
            "ask for at least that many or use a new run folder"
        )
    if done is not None and done < total and not ckpts:
        raise TrainingError(
            f"{model_dir} holds a model trained for {done} steps but {run_dir / 'checkpoints'} has no "
            "checkpoint to continue from; use a new run folder"
        )
    if done == total:
        log.info("%s: already trained to %d steps", model_dir, total)
        if progress is not None:
            progress(total, total, {"event": "done", "path": str(model_dir)})
        return model_dir

    # ---- pairs
    pairs = make_pairs(
        manifest, poses, min_score=recipe.pose.min_score, min_keypoints=recipe.pose.min_keypoints
    )
    if len(pairs) == 0:
        raise ValueError(_no_pairs_message(manifest, poses, recipe))
    pairs_path = run_dir / "pairs.parquet"
    if ckpts and pairs_path.is_file():
        old = pd.read_parquet(pairs_path)
        same = len(old) == len(pairs) and (
            old[["source", "target"]].astype(str).to_numpy() == pairs[["source", "target"]].to_numpy()
        ).all()
        if not same:
            raise TrainingError(
                f"{run_dir} was trained on different pairs ({len(old)} then, {len(pairs)} now): "
                "the manifest or poses changed; use a new run folder"
            )

    accelerator = Accelerator(mixed_precision=tc.mixed_precision)
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_recipe(recipe, recipe_path)
        if not pairs_path.is_file() or not ckpts:
            atomic_to_parquet(pairs, pairs_path)
    accelerator.wait_for_everyone()

    ds = PairDataset(root, pairs, poses, recipe.model, tc.flip_prob, tc.seed, min_score=recipe.pose.min_score)
    sample_idx = _sample_pairs(pairs)

    # ---- model, optimizer, schedule (fresh or from the last checkpoint)
    from diffusers.optimization import get_scheduler

    start = 0
    state: dict = {}
    if ckpts:
        start, ckpt = ckpts[-1]
        log.info("resuming %s from %s", run_dir, ckpt)
        unet = ReposeUNet.from_pretrained(ckpt / "unet")
        state = json.loads((ckpt / "state.json").read_text())
    else:
        torch.manual_seed(stable_seed(tc.seed, "init"))
        unet = ReposeUNet.from_config_recipe(recipe.model, min_score=recipe.pose.min_score)
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay)
    lr_sched = get_scheduler(
        "constant_with_warmup", optimizer, num_warmup_steps=tc.warmup_steps, num_training_steps=total
    )
    if ckpts:
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=False))
        lr_sched.load_state_dict(torch.load(ckpt / "lr_scheduler.pt", map_location="cpu", weights_only=False))
        rng = torch.load(ckpt / "rng.pt", map_location="cpu", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
    ema = None
    if tc.ema_decay > 0:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(unet.parameters(), decay=float(tc.ema_decay))
        if ckpts:
            ema_path = ckpt / "ema.pt"
            if not ema_path.is_file():
                raise TrainingError(f"train.ema_decay > 0 but the checkpoint has no EMA state: {ema_path} is missing")
            ema.load_state_dict(torch.load(ema_path, map_location="cpu", weights_only=False))
    model, optimizer = accelerator.prepare(unet, optimizer)
    noise_sched = training_scheduler(tc)
    device = accelerator.device
    if ema is not None:
        ema.to(device)

    loss_path = run_dir / "loss.csv"
    rows = _read_loss_csv(loss_path, start) if accelerator.is_main_process else []
    window: list[float] = list(state.get("loss_window", []))
    elapsed_before = float(state.get("elapsed_s", 0.0))
    t0 = time.perf_counter()
    if accelerator.is_main_process and start > 0:
        _write_loss_csv(loss_path, rows)  # cut back to the checkpoint
    if progress is not None and accelerator.is_main_process:
        progress(start, total, {"event": "start", "resumed": start > 0, "pairs": len(pairs)})

    loader = DataLoader(
        _Stream(ds, tc.seed),
        batch_sampler=_StepBatches(start, total, tc.batch_size, rank, world),
        num_workers=tc.num_workers,
        persistent_workers=False,
    )
    step = start
    for batch in loader:
        step += 1
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        noise, t = _step_noise(tc.seed, step, rank, batch["target"].shape, tc.num_train_timesteps)
        noise, t = noise.to(device), t.to(device)
        drop_pose, drop_app = condition_dropout(
            tc.seed, step, rank, noise.shape[0], tc.pose_dropout, tc.appearance_dropout
        )
        drop_pose = None if drop_pose is None else drop_pose.to(device)
        drop_app = None if drop_app is None else drop_app.to(device)
        lr = float(optimizer.param_groups[0]["lr"])
        with accelerator.autocast():
            loss = denoising_loss(model, batch, noise, t, noise_sched, drop_pose=drop_pose, drop_appearance=drop_app)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
        optimizer.step()
        lr_sched.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(model.parameters())

        loss_val = float(accelerator.reduce(loss.detach(), reduction="mean").item())
        if not np.isfinite(loss_val):
            raise FloatingPointError(f"training loss is {loss_val} at step {step}; lower train.learning_rate")
        window.append(loss_val)
        elapsed = elapsed_before + (time.perf_counter() - t0)
        is_main = accelerator.is_main_process
        if step % tc.log_every == 0 or step == total:
            rows.append({"step": step, "loss": float(np.mean(window)), "lr": lr, "elapsed_s": round(elapsed, 3)})
            window = []
            if is_main:
                _write_loss_csv(loss_path, rows)
        if progress is not None and is_main:
            progress(step, total, {"event": "step", "loss": loss_val, "lr": lr, "elapsed_s": elapsed})
        if step % tc.sample_every == 0 or step == total:
            if is_main:
                with _ema_weights(ema, accelerator.unwrap_model(model)) as m:
                    grid = _sample_grid(m, ds, recipe, sample_idx)
                from PIL import Image

                png = atomic_save_image(Image.fromarray(grid), run_dir / "samples" / f"step-{step:06d}.png")
                if progress is not None:
                    progress(step, total, {"event": "sample", "path": str(png)})
            accelerator.wait_for_everyone()
        if step % tc.checkpoint_every == 0 or step == total:
            if is_main:
                ck = _save_checkpoint(
                    run_dir, step, accelerator.unwrap_model(model), optimizer, lr_sched,
                    {"step": step, "total": total, "loss_window": window, "elapsed_s": elapsed},
                    ema=ema,
                )
                log.info("checkpoint %s", ck)
                if progress is not None:
                    progress(step, total, {"event": "checkpoint", "path": str(ck)})
            accelerator.wait_for_everyone()

    if accelerator.is_main_process:
        with _ema_weights(ema, accelerator.unwrap_model(model)) as m:
            out = _save_final_model(run_dir, m, recipe, step)
        if progress is not None:
            progress(step, total, {"event": "done", "path": str(out)})
    accelerator.wait_for_everyone()
    return model_dir
