"""Training, calibration and evaluation of the pose-validity prior (:mod:`posegen.prior.model`).

The shipped weights come from ``benchmarks/pose_prior.py --train`` (its ``main``):

1. the pose bank, from two annotation styles: Market-1501 keypoint annotations (Pose-Transfer CSVs,
   OpenPose-18 in 128 x 64 crops, read with :func:`load_pose_bank`), ``market-annotation-train.csv``
   split by a seeded permutation into training poses (90 %) and calibration poses (10 %); and
   BlazePose-full poses (posegen's default backend) extracted from the CUHK03 detected *train*
   images, only those passing :func:`posegen.pose.extract.usable_poses` at the recipes'
   thresholds, split by identity (90 % / 10 %). ``market-annotation-test.csv`` and the BlazePose
   poses of CUHK03 *val* are held out for the evaluation only;
2. :func:`train_pose_prior` fits the denoising autoencoder with *generic* corruption only:
   isotropic Gaussian noise on every present joint (sigma log-uniform in ``noise``, in units of the
   pose's RMS radius), random joint dropout and horizontal flips (with left/right relabelling);
   ``sample_weights`` balance the two sources (half of each batch from each).
   None of the evaluation perturbations (:mod:`posegen.prior.perturb`) is used in training;
3. :func:`calibrate_threshold` sets ``config.threshold`` to the largest per-source ``quantile`` of
   the energy on the calibration poses (``groups``), so neither style has more than
   ``1 - quantile`` of its real calibration poses flagged;
4. :func:`evaluate_auc` measures the area under the ROC curve (torchmetrics ``binary_auroc``) of the
   energy at separating held-out real poses from perturbed copies of them, per kind and overall.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._io import stable_seed
from ..pose.keypoints import COCO17_FLIP_INDEX
from .model import PoseValidityPrior, normalise_pose
from .perturb import PERTURBATIONS, perturb_pose

__all__ = [
    "load_pose_bank",
    "train_pose_prior",
    "calibrate_threshold",
    "evaluate_auc",
    "perturbed_set",
    "save_pose_prior",
]


def load_pose_bank(path: str | os.PathLike, *, min_score: float = 0.5, min_joints: int = 0) -> np.ndarray:
    """Poses of a pose file (any format :func:`~posegen.pose.formats.read_poses` reads), as an array.

    Args:
        path: e.g. ``../shared/data/market1501-keypoints/market-annotation-train.csv``.
        min_score: score from which a joint is present.
        min_joints: keep only poses with at least this many present joints.

    Returns:
        ``float32 [N, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels of their images, in file order
        (failed rows dropped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    from ..pose.formats import keypoints_array, read_poses

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pose file not found: {path}")
    df = read_poses(path)
    kp = keypoints_array(df[df["status"] == "ok"])
    n = (kp[..., 2] >= min_score).sum(axis=1)
    return np.ascontiguousarray(kp[n >= max(min_joints, 1)], dtype=np.float32)


def _renormalise(xy: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid ``[B, 2]`` and RMS radius ``[B]`` of the masked joints of ``xy`` ``[B, 17, 2]``."""
    n = mask.sum(1).clamp(min=1.0)
    c = (xy * mask[..., None]).sum(1) / n[:, None]
    s = ((((xy - c[:, None]) * mask[..., None]) ** 2).sum((1, 2)) / n).clamp(min=1e-8).sqrt()
    return c, s


def train_pose_prior(
    train_kp: np.ndarray,
    *,
    steps: int = 6000,
    seed: int = 0,
    batch_size: int = 256,
    lr: float = 2e-3,
    hidden: int = 256,
    layers: int = 3,
    min_score: float = 0.5,
    min_joints: int = 8,
    noise: tuple[float, float] = (0.005, 0.15),
    max_dropout: float = 0.3,
    sample_weights: np.ndarray | None = None,
    log_every: int = 0,
) -> PoseValidityPrior:
    """Fit a :class:`~posegen.prior.model.PoseValidityPrior` on real poses (CPU, one process).

    Each step draws ``batch_size`` training poses, flips half of them horizontally (x -> -x with
    left/right joints relabelled), drops each present joint with a per-pose probability uniform in
    ``[0, max_dropout]`` (at least ``min_joints`` are kept), adds Gaussian noise of a per-pose sigma
    drawn log-uniformly in ``noise`` (units of the RMS radius) to the kept joints, re-normalises the
    noisy pose as :meth:`~posegen.prior.model.PoseValidityPrior.energy` would, and regresses the clean
    pose expressed in that same frame (MSE over kept joints, plus 0.25 x over dropped ones, whose
    positions the network inpaints). AdamW with a cosine learning-rate decay.

    Args:
        train_kp: ``float [N, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels; poses with fewer than
            ``min_joints`` present joints are skipped.
        steps: optimiser steps (6000 take about 80 s on one busy CPU core).
        seed: seeds the initialisation and every random draw; the same seed, data and settings give
            the same weights (on the same torch build and thread count).
        batch_size, lr, hidden, layers: optimisation and model size.
        min_score, min_joints: stored in the config (see the model).
        noise: ``(low, high)`` sigma range.
        max_dropout: highest per-pose joint dropout probability.
        sample_weights: optional ``float [N]`` >= 0, the relative probability of drawing each pose
            of ``train_kp`` (with replacement) into a batch, e.g. to balance poses from two sources
            (annotation styles) of different sizes; None draws uniformly.
        log_every: print the loss every this many steps (0: never).

    Returns:
        The trained prior in eval mode; ``config.threshold`` is NaN until :func:`calibrate_threshold`.

    Raises:
        ValueError: fewer than ``batch_size`` usable poses, or bad arguments (e.g. ``sample_weights``
            of the wrong length, negative, or zero on every usable pose).
    """
    kp = np.asarray(train_kp, dtype=np.float32)
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise ValueError(f"train_kp must be [N, 17, 3], got {kp.shape}")
    keep = (kp[..., 2] >= min_score).sum(1) >= min_joints
    kp = kp[keep]
    probs = None
    if sample_weights is not None:
        w = np.asarray(sample_weights, dtype=np.float64)
        if w.shape != (len(keep),):
            raise ValueError(f"sample_weights must be [N] = [{len(keep)}], got {w.shape}")
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError("sample_weights must be finite and >= 0")
        w = w[keep]
        if w.sum() <= 0:
            raise ValueError("sample_weights are zero on every usable pose")
        probs = torch.from_numpy(w / w.sum())
    if len(kp) < batch_size:
        raise ValueError(f"need at least {batch_size} poses with >= {min_joints} joints, got {len(kp)}")
    if steps < 1:
        raise ValueError("steps must be >= 1")

    gen = torch.Generator().manual_seed(stable_seed("pose-prior", seed))
    torch.manual_seed(stable_seed("pose-prior-init", seed))
    model = PoseValidityPrior(
        hidden=hidden,
        layers=layers,
        min_score=min_score,
        min_joints=min_joints,
        training={
            "seed": seed,
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "noise": list(noise),
            "max_dropout": max_dropout,
            "n_train_poses": int(len(kp)),
            "weighted_sampling": probs is not None,
        },
    )
    z_all, m_all, _ = normalise_pose(torch.from_numpy(kp), min_score)
    flip = torch.tensor(COCO17_FLIP_INDEX)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.02)
    log_lo, log_hi = np.log(noise[0]), np.log(noise[1])
    model.train()
    for step in range(steps):
        if probs is None:
            idx = torch.randint(len(kp), (batch_size,), generator=gen)
        else:
            idx = torch.multinomial(probs, batch_size, replacement=True, generator=gen)
        z, m = z_all[idx].clone(), m_all[idx].clone()
        f = torch.rand(batch_size, generator=gen) < 0.5
        z[f] = z[f][:, flip] * torch.tensor([-1.0, 1.0])
        m[f] = m[f][:, flip]
        # joint dropout, keeping at least min_joints present joints
        p = torch.rand(batch_size, 1, generator=gen) * max_dropout
        u = torch.rand(batch_size, 17, generator=gen)
        u = torch.where(m > 0, u, torch.full_like(u, 2.0))  # absent joints: never "kept"
        rank = u.argsort(dim=1).argsort(dim=1)
        kept = m * ((u >= p) | (rank < min_joints)).float()
        dropped = m - kept
        sigma = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(batch_size, 1, 1, generator=gen))
        noisy = z + sigma * torch.randn(z.shape, generator=gen)
        c, s = _renormalise(noisy, kept)
        z_in = (noisy - c[:, None]) / s[:, None, None] * kept[..., None]
        target = (z - c[:, None]) / s[:, None, None]
        pred = model.denoise(z_in, kept)
        err = ((pred - target) ** 2).sum(-1)
        loss = ((err * kept).sum(1) + 0.25 * (err * dropped).sum(1)) / kept.sum(1)
        loss = loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f}", flush=True)
    model.eval()
    model.requires_grad_(False)
    return model


def calibrate_threshold(
    model: PoseValidityPrior, real_kp: np.ndarray, quantile: float = 0.99, *, groups: np.ndarray | None = None
) -> float:
    """Set ``model.config.threshold`` to the ``quantile`` of the energy on real poses.

    Args:
        real_kp: ``float [N, 17, 3]`` real poses not used for training (NaN energies ignored).
        quantile: in ``(0, 1]``; 0.99 lets 1 % of real poses be called implausible.
        groups: optional ``[N]`` labels (e.g. the pose source: hand annotations vs a pose
            estimator); the threshold is then the *largest* per-group quantile, so that at most
            ``1 - quantile`` of the calibration poses of *each* group are called implausible
            (a pooled quantile would let the larger or tighter group set it).

    Returns:
        The threshold.

    Raises:
        ValueError: no pose (of some group) has a defined energy, or ``groups`` has the wrong length.
    """
    e = model.score(real_kp)
    if groups is None:
        groups = np.zeros(len(e), dtype=np.int64)
    groups = np.asarray(groups)
    if groups.shape != e.shape:
        raise ValueError(f"groups must be [N] = [{len(e)}], got {groups.shape}")
    per_group = []
    for g in np.unique(groups):
        eg = e[(groups == g) & ~np.isnan(e)]
        if not len(eg):
            raise ValueError(f"no calibration pose (group {g!r}) has a defined energy")
        per_group.append(float(np.quantile(eg, quantile)))
    if not per_group:
        raise ValueError("no calibration pose has a defined energy")
    thr = max(per_group)
    model.register_to_config(threshold=thr)
    return thr


def perturbed_set(real_kp: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One perturbed copy of each real pose the kind applies to.

    Args:
        real_kp: ``float [N, 17, 3]``.
        kind: one of :data:`~posegen.prior.perturb.PERTURBATIONS`.
        seed: pose ``i`` uses ``np.random.default_rng(stable_seed(seed, kind, i))``.

    Returns:
        ``(perturbed [M, 17, 3], index [M])``: the copies and the rows of ``real_kp`` they come from
        (poses the kind cannot be applied to are skipped).
    """
    out, idx = [], []
    for i, kp in enumerate(real_kp):
        try:
            out.append(perturb_pose(kp, kind, np.random.default_rng(stable_seed(seed, kind, i))))
            idx.append(i)
        except ValueError:
            continue
    return np.asarray(out, dtype=np.float32).reshape(-1, 17, 3), np.asarray(idx, dtype=np.int64)


def evaluate_auc(
    model: PoseValidityPrior, real_kp: np.ndarray, *, seed: int = 0, kinds: Sequence[str] = PERTURBATIONS
) -> dict:
    """ROC AUC of the energy at telling real poses from perturbed ones (torchmetrics ``binary_auroc``).

    Positives are perturbed poses (higher energy expected), negatives the real ones. Per kind, the
    real poses the kind was applied to are compared with their perturbed copies; ``"overall"``
    compares all real poses with all perturbed ones. Poses whose energy is NaN (too few joints) are
    left out.

    Args:
        real_kp: ``float [N, 17, 3]`` held-out real poses.
        seed: seeds the perturbations (see :func:`perturbed_set`).
        kinds: perturbation kinds.

    Returns:
        ``{kind: {"auc", "n_real", "n_perturbed", "detected_at_threshold"}, ..., "overall": {...},
        "real_flagged_at_threshold": float}`` (the ``*_at_threshold`` shares are NaN without a
        calibrated threshold).
    """
    from torchmetrics.functional.classification import binary_auroc

    def auc(neg: np.ndarray, pos: np.ndarray) -> float:
        preds = torch.from_numpy(np.concatenate([neg, pos]).astype(np.float32))
        target = torch.cat([torch.zeros(len(neg), dtype=torch.long), torch.ones(len(pos), dtype=torch.long)])
        return float(binary_auroc(preds, target))

    thr = float(model.config.threshold)
    e_real = model.score(real_kp)
    res: dict = {}
    all_pos = []
    for kind in kinds:
        pert, idx = perturbed_set(real_kp, kind, seed)
        e_pert = model.score(pert)
        ok = ~np.isnan(e_pert) & ~np.isnan(e_real[idx])
        neg, pos = e_real[idx][ok], e_pert[ok]
        all_pos.append(pos)
        res[kind] = {
            "auc": auc(neg, pos),
            "n_real": int(len(neg)),
            "n_perturbed": int(len(pos)),
            "detected_at_threshold": float(np.mean(pos > thr)) if np.isfinite(thr) else float("nan"),
        }
    neg = e_real[~np.isnan(e_real)]
    pos = np.concatenate(all_pos)
    res["overall"] = {
        "auc": auc(neg, pos),
        "n_real": int(len(neg)),
        "n_perturbed": int(len(pos)),
        "detected_at_threshold": float(np.mean(pos > thr)) if np.isfinite(thr) else float("nan"),
    }
    res["real_flagged_at_threshold"] = float(np.mean(neg > thr)) if np.isfinite(thr) else float("nan")
    return res


def save_pose_prior(model: PoseValidityPrior, folder: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``diffusion_pytorch_model.safetensors`` into ``folder``, each
    file atomically (saved in a temporary folder beside it, then renamed into place).

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prior-", dir=folder))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        mask = os.umask(0)
        os.umask(mask)
        for f in sorted(tmp.iterdir()):
            os.chmod(f, 0o666 & ~mask)  # the usual file mode, not a temp file's
            os.replace(f, folder / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
