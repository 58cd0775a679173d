"""Training the latent repair model (:mod:`posegen.repose.latent`) on a CPU or with accelerate.

Data: same-identity (source, target) pairs of a dataset's train split whose poses are usable,
weighted toward what ``augment`` asks for: a pair from the same camera (``camid``; in CUHK03 the
same view, another frame of the same walk) is drawn with total probability ``same_view_weight``,
a cross-view pair otherwise.

Latent cache (:func:`encode_images`): every image is letterboxed to 256x128
(:mod:`posegen.latent.frame`) and encoded ONCE with TAEF2; a latent is stored as
``CACHE/<autoencoder fingerprint>/<sha256 of the image file>.safetensors`` (fp16 ``[32, 32, 16]``),
so the key covers the image content and the autoencoder's weights, and a killed encoding resumes.
Training never runs the autoencoder: the conditioning warp is applied to the cached latents.

Objective: ``x0`` prediction, MSE on the target latent, ``t ~ U{0 .. t_max - 1}`` with
``t_max = strength_max * T`` — the timestep range SDEdit sampling uses — and the DDPM forward
process of :func:`make_noise_scheduler`; optionally weighted up where the warp invents pixels
(``repair_loss_weight``), the region that sampling with a ``repair_strength`` above ``strength``
regenerates from (nearly) pure noise. AdamW, linear warm-up, gradient clipping, EMA of the
weights (diffusers ``EMAModel``).

Determinism and resuming: the pairs, noise and timesteps of step ``s`` are functions of
``(seed, s, process rank)`` only; a checkpoint (every ``checkpoint_every`` steps, the last 2 kept)
holds the raw weights, the EMA weights, the optimizer and the step, so a resumed run repeats what an
uninterrupted run does, bit for bit on a CPU.

Run folder::

    RUN/config.json           the training configuration
    RUN/pairs.parquet         source, target, pid, same_view
    RUN/loss.csv              step, loss, lr, elapsed_s
    RUN/checkpoints/step-NNNNNN/   state.pt (unet, ema, optimizer, step)
    RUN/model/                the final LatentReposePipeline (EMA weights, fp16 safetensors)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from .._io import atomic_to_parquet, atomic_write_json, atomic_write_text, stable_seed
from ..data.images import read_image
from ..latent.frame import letterbox_params, to_frame_keypoints
from ..latent.taef2 import TAEF2
from .latent import FRAME_HW, LATENT_HW, latent_conditions, make_denoiser, predicted_repair_mask
from .provenance import file_digest

__all__ = [
    "LatentTrainConfig",
    "make_noise_scheduler",
    "autoencoder_fingerprint",
    "check_init_autoencoder",
    "encode_images",
    "latent_pairs",
    "train_latent",
]


@dataclass
class LatentTrainConfig:
    """Training settings of the latent repair model (all plain values; saved as ``config.json``)."""

    steps: int = 4000
    batch_size: int = 32
    learning_rate: float = 2e-4
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    strength_max: float = 0.6
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    same_view_weight: float = 0.85
    ema_decay: float = 0.999
    checkpoint_every: int = 200
    log_every: int = 20
    seed: int = 0
    min_score: float = 0.5
    block_out_channels: list = field(default_factory=lambda: [64, 128, 128])
    layers_per_block: int = 1
    attention: bool = True
    #: extra weight of the squared error inside the predicted repair region (where the warp invents
    #: pixels, :func:`~posegen.repose.latent.predicted_repair_mask` at the latent resolution): the
    #: per-element weight is ``1 + repair_loss_weight * mask``, normalised by its batch mean; 0 = plain MSE
    repair_loss_weight: float = 0.0
    #: a model folder (:func:`save_latent_model` layout) whose ``unet`` initialises a new run
    #: (fine-tuning), or ``"default"`` for the shipped default model; its architecture must equal
    #: this configuration's. None: random initialisation
    init_from: str | None = None

    def __post_init__(self):
        if self.repair_loss_weight < 0:
            raise ValueError(f"repair_loss_weight must be >= 0, got {self.repair_loss_weight}")
        if not 0 < self.strength_max <= 1:
            raise ValueError(f"strength_max must be in (0, 1], got {self.strength_max}")
        if not 0 <= self.same_view_weight <= 1:
            raise ValueError(f"same_view_weight must be in [0, 1], got {self.same_view_weight}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")


def make_noise_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "scaled_linear") -> DDIMScheduler:
    """The forward process and sampler of the latent model: DDIM, ``x0`` ("sample") prediction,
    no clipping (latents are not bounded to [-1, 1]), trailing timestep spacing."""
    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, prediction_type="sample",
        clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing",
    )  # fmt: skip


def autoencoder_fingerprint(model: TAEF2) -> str:
    """sha256 (hex, first 16 chars) over the autoencoder's state dict (names, shapes, bytes)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def encode_images(
    paths: list[str],
    root: str | os.PathLike,
    autoencoder: TAEF2,
    cache_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """TAEF2 latents of the letterboxed images, through the content-keyed cache (see the module).

    Args:
        paths: image paths relative to ``root``.
        autoencoder: the loaded TAEF2.
        cache_dir: cache root (created).

    Returns:
        ``{path: float16 [32, 32, 16]}``.
    """
    from safetensors.torch import load_file, save_file

    root = Path(root)
    folder = Path(cache_dir) / autoencoder_fingerprint(autoencoder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, torch.Tensor] = {}
    todo: list[tuple[str, Path]] = []
    for p in paths:
        f = folder / f"{file_digest(root / p, 32)}.safetensors"
        if f.exists():
            out[p] = load_file(str(f))["latent"]
        else:
            todo.append((p, f))
    done = len(out)
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        frames = []
        for p, _ in chunk:
            im = read_image(root / p)
            frames.append(letterbox_params((im.shape[1], im.shape[0]), FRAME_HW).image_to_frame(im))
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
        z = autoencoder.encode(x).half()
        for (p, f), zi in zip(chunk, z):
            tmp = f.with_suffix(".tmp")
            save_file({"latent": zi.contiguous()}, str(tmp))
            os.replace(tmp, f)
            out[p] = zi
        done += len(chunk)
        if progress:
            progress(done, len(paths))
    return out


def latent_pairs(items: pd.DataFrame) -> pd.DataFrame:
    """All ordered same-pid pairs of different images.

    Args:
        items: DataFrame with ``path``, ``pid``, ``camid`` (the usable train images).

    Returns:
        DataFrame ``source, target, pid, same_view`` (``same_view``: same ``camid``), sorted.
    """
    rows = []
    for pid, g in items.sort_values("path").groupby("pid", sort=True):
        ps, cs = g["path"].tolist(), g["camid"].tolist()
        for i, (a, ca) in enumerate(zip(ps, cs)):
            for j, (b, cb) in enumerate(zip(ps, cs)):
                if i != j:
                    rows.append((a, b, int(pid), bool(ca == cb)))
    return pd.DataFrame(rows, columns=["source", "target", "pid", "same_view"])


def _pair_weights(pairs: pd.DataFrame, same_view_weight: float) -> np.ndarray:
    sv = pairs["same_view"].to_numpy(bool)
    n_s, n_c = int(sv.sum()), int((~sv).sum())
    if n_s == 0 or n_c == 0:
        return np.full(len(pairs), 1.0 / len(pairs))
    return np.where(sv, same_view_weight / n_s, (1.0 - same_view_weight) / n_c)


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    ck = run_dir / "checkpoints"
    if not ck.is_dir():
        return []
    found = []
    for d in ck.iterdir():
        if d.name.startswith("step-") and (d / "state.pt").is_file():
            found.append((int(d.name[5:]), d))
    return sorted(found)


def _batch(step: int, cfg: LatentTrainConfig, rank: int, weights: np.ndarray, latents, kps, pairs):
    """The pairs, timesteps and noise of ``step`` (functions of (seed, step, rank) only)."""
    rng = np.random.default_rng(stable_seed(cfg.seed, step, rank, "pairs"))
    idx = rng.choice(len(pairs), size=cfg.batch_size, p=weights)
    src = [pairs["source"].iloc[i] for i in idx]
    tgt = [pairs["target"].iloc[i] for i in idx]
    g = torch.Generator().manual_seed(stable_seed(cfg.seed, step, rank, "noise") % (2**63))
    t_max = max(1, int(round(cfg.strength_max * cfg.num_train_timesteps)))
    t = torch.randint(0, t_max, (cfg.batch_size,), generator=g)
    noise = torch.randn((cfg.batch_size, latents[src[0]].shape[0], *LATENT_HW), generator=g)
    zs = torch.stack([latents[p] for p in src]).float()
    zt = torch.stack([latents[p] for p in tgt]).float()
    ks = np.stack([kps[p] for p in src])
    kt = np.stack([kps[p] for p in tgt])
    return zs, zt, ks, kt, t, noise


def train_latent(
    cfg: LatentTrainConfig,
    latents: dict[str, torch.Tensor],
    keypoints: dict[str, np.ndarray],
    pairs: pd.DataFrame,
    run_dir: str | os.PathLike,
    *,
    progress: Callable[[int, int, dict], None] | None = None,
    save_model: Callable[[torch.nn.Module, Path], None] | None = None,
) -> Path:
    """Train (or resume) the latent denoiser.

    Args:
        cfg: training settings.
        latents: ``{path: float16 [32, 32, 16]}`` from :func:`encode_images`.
        keypoints: ``{path: float32 [17, 3]}`` COCO-17 in pixels of the 256x128 letterbox frame.
        pairs: from :func:`latent_pairs` (every path in ``latents`` and ``keypoints``).
        run_dir: the run folder (resumes from its newest checkpoint).
        progress: ``progress(step, total, logs)``.
        save_model: ``save_model(unet_with_ema_weights, RUN/model)`` writes the final model; None
            writes only the checkpoints.

    Returns:
        ``RUN/model`` (or the run folder when ``save_model`` is None).

    Raises:
        ValueError: no pairs, or a pair whose latent/keypoints are missing.
    """
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    run_dir = Path(run_dir)
    if len(pairs) == 0:
        raise ValueError("no training pairs: need at least 2 usable images of one identity")
    missing = (set(pairs["source"]) | set(pairs["target"])) - (set(latents) & set(keypoints))
    if missing:
        raise ValueError(f"{len(missing)} pair images have no latent or keypoints, e.g. {sorted(missing)[0]}")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", asdict(cfg))
    if not (run_dir / "pairs.parquet").exists():
        atomic_to_parquet(pairs, run_dir / "pairs.parquet")

    accelerator = Accelerator()
    rank = accelerator.process_index
    torch.manual_seed(cfg.seed)
    unet = make_denoiser(cfg.block_out_channels, cfg.layers_per_block, cfg.attention)
    if cfg.init_from is not None:
        _init_weights(unet, cfg.init_from)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    start = 0
    cks = _checkpoints(run_dir)
    if cks:
        start, path = cks[-1]
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
    sched = make_noise_scheduler(cfg.num_train_timesteps, cfg.beta_schedule)
    model, optimizer = accelerator.prepare(unet, optimizer)
    device = accelerator.device
    ema.to(device)
    weights = _pair_weights(pairs, cfg.same_view_weight)
    loss_path = run_dir / "loss.csv"
    rows = pd.read_csv(loss_path).query("step <= @start").to_dict("records") if loss_path.exists() and start else []
    t0 = time.time()
    model.train()
    for step in range(start + 1, cfg.steps + 1):
        zs, zt, ks, kt, t, noise = _batch(step, cfg, rank, weights, latents, keypoints, pairs)
        zs, zt, t, noise = zs.to(device), zt.to(device), t.to(device), noise.to(device)
        with torch.no_grad():
            cond, _ = latent_conditions(zs, ks, kt, cfg.min_score)
            x_t = sched.add_noise(zt, noise, t)
        lr = cfg.learning_rate * min(1.0, step / max(1, cfg.warmup_steps))
        for g in optimizer.param_groups:
            g["lr"] = lr
        pred = model(torch.cat([x_t, cond], 1), t).sample
        if cfg.repair_loss_weight > 0:
            with torch.no_grad():
                w = 1.0 + cfg.repair_loss_weight * F.avg_pool2d(predicted_repair_mask(ks, kt, (2 * LATENT_HW[0], 2 * LATENT_HW[1]), cfg.min_score), 2).to(device)
            loss = (w * (pred.float() - zt.float()) ** 2).mean() / w.mean()
        else:
            loss = F.mse_loss(pred.float(), zt.float())
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(accelerator.unwrap_model(model).parameters())
        if step % cfg.log_every == 0 and accelerator.is_main_process:
            rows.append(dict(step=step, loss=loss.item(), lr=lr, elapsed_s=round(time.time() - t0, 1)))
            atomic_write_text(loss_path, pd.DataFrame(rows).to_csv(index=False))
        if progress:
            progress(step, cfg.steps, {"loss": loss.item()})
        if (step % cfg.checkpoint_every == 0 or step == cfg.steps) and accelerator.is_main_process:
            _save_checkpoint(run_dir, step, accelerator.unwrap_model(model), optimizer, ema)
    accelerator.wait_for_everyone()
    if save_model is None or not accelerator.is_main_process:
        return run_dir
    final = accelerator.unwrap_model(model)
    ema.copy_to(final.parameters())
    save_model(final, run_dir / "model")
    return run_dir / "model"


def _init_weights(unet, model_dir: str | os.PathLike) -> None:
    """Load the ``unet`` of a saved latent model folder (``"default"``: the shipped default model)
    into ``unet`` (float32, strict).

    Raises:
        FileNotFoundError: ``model_dir/unet`` is missing.
        ValueError: its architecture differs from ``unet``'s.
    """
    from diffusers import UNet2DModel

    src = _init_dir(model_dir) / "unet"
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"init_from: no model at {src} (expected config.json and weights)")
    init = UNet2DModel.from_pretrained(str(src)).float()
    keys = ("in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types", "sample_size")
    diff = [k for k in keys if list(np.atleast_1d(init.config[k])) != list(np.atleast_1d(unet.config[k]))]
    if diff:
        raise ValueError(f"init_from: {src} differs from the configured denoiser in {diff}")
    unet.load_state_dict(init.state_dict(), strict=True)


def _init_dir(model_dir: str | os.PathLike) -> Path:
    """The folder of an ``init_from`` value (``"default"``: the shipped default model)."""
    if str(model_dir) == "default":
        from .pipeline import default_model_dir

        return Path(default_model_dir())
    return Path(model_dir)


def check_init_autoencoder(model_dir: str | os.PathLike, fingerprint: str) -> None:
    """Refuse to fine-tune a model trained on another autoencoder's latents.

    Args:
        model_dir: the ``init_from`` model folder (or ``"default"``).
        fingerprint: :func:`autoencoder_fingerprint` of the run's autoencoder.

    Raises:
        ValueError: the model's ``model_index.json`` names a different ``autoencoder_fingerprint``
            (a model without one, e.g. a bare ``unet`` folder, is not checked).
    """
    index = _init_dir(model_dir) / "model_index.json"
    want = json.loads(index.read_text()).get("autoencoder_fingerprint", "") if index.is_file() else ""
    if want and want != fingerprint:
        raise ValueError(f"init_from: {_init_dir(model_dir)} was trained on another autoencoder's latents "
                         f"(fingerprint {want} != {fingerprint} of latent.autoencoder)")  # fmt: skip


def _save_checkpoint(run_dir: Path, step: int, unet, optimizer, ema) -> None:
    ck = run_dir / "checkpoints"
    ck.mkdir(parents=True, exist_ok=True)
    tmp = ck / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save({"unet": unet.state_dict(), "optimizer": optimizer.state_dict(), "ema": ema.state_dict(), "step": step}, tmp / "state.pt")
    final = ck / f"step-{step:06d}"
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for _, old in _checkpoints(run_dir)[:-2]:
        shutil.rmtree(old, ignore_errors=True)


def frame_keypoints(poses: pd.DataFrame) -> dict[str, np.ndarray]:
    """``{path: float32 [17, 3]}``: each pose (pixels of its image) in the 256x128 letterbox frame.

    Args:
        poses: DataFrame with ``path``, ``width``, ``height``, ``keypoints``.
    """
    out = {}
    for p, w, h, kp in zip(poses["path"], poses["width"], poses["height"], poses["keypoints"]):
        box = letterbox_params((int(w), int(h)), FRAME_HW)
        out[p] = to_frame_keypoints(np.asarray(kp, np.float32).reshape(17, 3), box)
    return out


def _upright(kp: np.ndarray, height: float, min_score: float) -> bool:
    """A quick plausibility test for a training pose: head above the hips and the present joints
    spanning at least 60 % of the crop's height (re-ID crops are person boxes)."""
    pres = (kp[:, 2] >= min_score) & (kp[:, 2] > 0)
    head, hips = [i for i in range(5) if pres[i]], [i for i in (11, 12) if pres[i]]
    if not head or not hips or pres.sum() < 2:
        return False
    if kp[head, 1].mean() >= kp[hips, 1].mean():
        return False
    ys = kp[pres, 1]
    return float(ys.max() - ys.min()) >= 0.6 * height


def prepare_training_data(
    data_dir: str | os.PathLike,
    poses: pd.DataFrame,
    autoencoder: TAEF2,
    cache_dir: str | os.PathLike,
    *,
    min_score: float = 0.5,
    min_keypoints: int = 10,
    layout: str | None = None,
    progress: Callable[[int, int], None] | None = None,
):
    """Usable train images of a dataset, their cached latents, frame keypoints and pairs.

    An image is used when its pose is ``ok`` with ``>= min_keypoints`` joints of score ``>=
    min_score``, the head is above the hips and the joints span >= 60 % of the crop height.

    Returns:
        ``(latents, keypoints, pairs)`` as :func:`train_latent` takes them.
    """
    from ..data import load_dataset
    from ..pose.extract import usable_poses

    ds = load_dataset(data_dir, layout)
    ds = ds[(ds["split"] == "train") & ~ds["synthetic"]]
    ok = poses[usable_poses(poses, min_score=min_score, min_keypoints=min_keypoints).to_numpy()]
    upright = [_upright(np.asarray(k, np.float32).reshape(17, 3), h, min_score) for k, h in zip(ok["keypoints"], ok["height"])]
    ok = ok[np.asarray(upright, dtype=bool)]
    items = ds[ds["path"].isin(set(ok["path"]))][["path", "pid", "camid"]]
    latents = encode_images(sorted(items["path"]), data_dir, autoencoder, cache_dir, progress=progress)
    kps = frame_keypoints(ok[ok["path"].isin(set(items["path"]))])
    return latents, kps, latent_pairs(items)


def save_latent_model(
    unet, out_dir: str | os.PathLike, cfg: LatentTrainConfig, fingerprint: str, *,
    strength: float = 0.4, num_inference_steps: int = 4, fp16: bool = True, repair_only: bool = True,
    repair_strength: float | None = None, turned_head: bool = False, person_masks: bool = False, start: str = "pixel",
) -> Path:
    """Write a :class:`~posegen.repose.latent_pipeline.LatentReposePipeline` folder (atomically).

    Args:
        unet: the denoiser (copied; with the weights to ship, e.g. the EMA weights).
        cfg: the training configuration (its schedule defines the scheduler).
        fingerprint: :func:`autoencoder_fingerprint` of the TAEF2 it was trained with.
        strength, num_inference_steps, repair_only, repair_strength, turned_head, person_masks, start: sampling
            defaults stored in ``model_index.json``.
        fp16: store the weights as float16 safetensors.

    Returns:
        ``out_dir``.
    """
    import copy

    from .latent_pipeline import LatentReposePipeline

    out_dir = Path(out_dir)
    net = copy.deepcopy(unet).to("cpu")
    if fp16:
        net = net.half()
    pipe = LatentReposePipeline(
        net, make_noise_scheduler(cfg.num_train_timesteps, cfg.beta_schedule), strength=strength,
        num_inference_steps=num_inference_steps, autoencoder_fingerprint=fingerprint, min_score=cfg.min_score,
        repair_only=repair_only, repair_strength=repair_strength, turned_head=turned_head, person_masks=person_masks,
        start=start,
    )  # fmt: skip
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return out_dir


def export_checkpoint(run_dir: str | os.PathLike, out_dir: str | os.PathLike, fingerprint: str, **kw) -> tuple[Path, int]:
    """The newest checkpoint of a run, with its EMA weights, as a model folder (:func:`save_latent_model`).

    Returns:
        ``(out_dir, step)``.

    Raises:
        FileNotFoundError: the run has no checkpoint.
    """
    from diffusers.training_utils import EMAModel

    run_dir = Path(run_dir)
    cks = _checkpoints(run_dir)
    if not cks:
        raise FileNotFoundError(f"no checkpoint under {run_dir / 'checkpoints'}")
    step, path = cks[-1]
    cfg = LatentTrainConfig(**json.loads((run_dir / "config.json").read_text()))
    unet = make_denoiser(cfg.block_out_channels, cfg.layers_per_block, cfg.attention)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    unet.load_state_dict(state["unet"])
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    ema.load_state_dict(state["ema"])
    ema.copy_to(unet.parameters())
    return save_latent_model(unet, out_dir, cfg, fingerprint, **kw), step


def config_from_recipe(recipe) -> LatentTrainConfig:
    """The :class:`LatentTrainConfig` of a recipe's ``latent`` section (and ``pose.min_score``).

    Raises:
        ValueError: the recipe has no ``latent`` section.
    """
    lc = recipe.latent
    if lc is None:
        raise ValueError(f"recipe {recipe.name!r} has no latent section (not a latent-model recipe)")
    return LatentTrainConfig(
        steps=lc.steps, batch_size=lc.batch_size, learning_rate=lc.learning_rate, warmup_steps=lc.warmup_steps,
        strength_max=lc.strength_max, same_view_weight=lc.same_view_weight, ema_decay=lc.ema_decay,
        checkpoint_every=lc.checkpoint_every, seed=lc.seed, min_score=recipe.pose.min_score,
        repair_loss_weight=lc.repair_loss_weight, init_from=lc.init_from,
        block_out_channels=list(lc.block_out_channels), layers_per_block=lc.layers_per_block, attention=lc.attention,
    )  # fmt: skip


def train_latent_recipe(
    recipe,
    data_dir: str | os.PathLike,
    poses: pd.DataFrame,
    run_dir: str | os.PathLike,
    *,
    steps: int | None = None,
    layout: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """``posegen train`` for a latent recipe: encode (cached), train (resumable), save the model.

    Args:
        recipe: a :class:`~posegen.recipe.Recipe` with a ``latent`` section.
        data_dir: the dataset folder (its ``train`` split is used).
        poses: the dataset's poses (``extract-poses`` output, :func:`posegen.pose.formats.read_poses`).
        run_dir: the run folder (``RUN/latent-cache`` holds the latents; see the module for the rest).
        steps: overrides ``latent.steps``.
        progress: ``progress(stage, done, total)`` with stage ``"encode"`` or ``"train"``.

    Returns:
        ``RUN/model``: a :class:`~posegen.repose.latent_pipeline.LatentReposePipeline` folder with the
        recipe as ``recipe.yaml``.

    Raises:
        ValueError: no latent section, no same-identity pairs of usable images, or an ``init_from``
            model trained with another autoencoder (:func:`check_init_autoencoder`).
        FileNotFoundError: the TAEF2 weights are missing.
    """
    import yaml

    from ..latent.taef2 import load_taef2

    cfg = config_from_recipe(recipe)
    if steps is not None:
        cfg.steps = int(steps)
    run_dir = Path(run_dir)
    ae = load_taef2(recipe.latent.autoencoder)
    fingerprint = autoencoder_fingerprint(ae)
    if cfg.init_from is not None:
        check_init_autoencoder(cfg.init_from, fingerprint)
    cb = progress or (lambda stage, done, total: None)
    latents, kps, pairs = prepare_training_data(
        data_dir, poses, ae, run_dir / "latent-cache", min_score=recipe.pose.min_score,
        min_keypoints=recipe.latent.min_keypoints, layout=layout, progress=lambda d, t: cb("encode", d, t),
    )  # fmt: skip

    def save(unet, out):
        save_latent_model(unet, out, cfg, fingerprint, strength=recipe.sample.strength,
                          num_inference_steps=recipe.sample.steps, repair_only=recipe.sample.repair_only,
                          repair_strength=recipe.sample.repair_strength, turned_head=recipe.sample.turned_head,
                          person_masks=recipe.sample.person_masks, start=recipe.sample.start)  # fmt: skip
        atomic_write_text(out / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))

    return train_latent(cfg, latents, kps, pairs, run_dir, progress=lambda s, n, logs: cb("train", s, n), save_model=save)
