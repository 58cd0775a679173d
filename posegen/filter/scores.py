"""Quality filter, first version: pose fidelity (OKS) and sanity of generated images.

A generated image is kept when

1. it is finite and not blank (pixel standard deviation, on a 0..1 scale, >= ``min_std``), and
2. a person is found in it by the pose backend, and
3. the OKS between the *target* pose and the pose re-estimated on the output reaches ``min_oks``.

Every rejection gets one reason (the first check that fails): ``"non-finite output"``,
``"blank output"``, ``"target pose empty"``, ``"no person found in output"`` or
``"low pose fidelity (OKS < t)"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..pose.backends import NoPersonFound, PoseBackend
from ..pose.keypoints import COCO17_OKS_SIGMAS, empty_keypoints

__all__ = ["oks", "FilterScores", "score_output"]


def oks(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    min_score: float = 0.5,
    area: float | None = None,
    sigmas: np.ndarray = COCO17_OKS_SIGMAS,
) -> float:
    """Object keypoint similarity between a predicted and a target pose (COCO keypoint metric).

    ``OKS = mean_i exp(-d_i^2 / (2 s^2 k_i^2))`` over the target's present joints ``i`` (score >=
    ``min_score``), with ``d_i`` the pixel distance between predicted and target joint,
    ``k_i = 2 * sigma_i`` (COCO's per-joint sigmas) and ``s^2`` the object *area*. A target joint
    whose predicted joint is absent (score < ``min_score``) contributes 0.

    Area used: unless ``area`` is given, the area in pixels^2 of the tight bounding box of the
    target's present joints (at least 1). COCO uses the person's segmentation area; for pose-only
    data the keypoint box is the usual stand-in and, being smaller, makes the score a bit stricter.

    Args:
        pred: ``float32 [17, 3]`` COCO-17 ``(x, y, score)`` in pixels.
        target: ``float32 [17, 3]`` in pixels of the same image.
        min_score: score at which a joint counts as present.
        area: object area in pixels^2, or None for the keypoint box.
        sigmas: per-joint sigmas, ``float [17]``.

    Returns:
        OKS in ``[0, 1]``, or NaN when the target has no present joint.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    vis = target[:, 2] >= min_score
    if not vis.any():
        return float("nan")
    if area is None:
        xy = target[vis, :2]
        span = xy.max(axis=0) - xy.min(axis=0)
        area = float(span[0] * span[1])
    area = max(float(area), 1.0)
    k2 = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    d2 = ((pred[:, :2] - target[:, :2]) ** 2).sum(axis=1)
    sim = np.exp(-d2 / (2.0 * area * k2))
    sim = np.where(pred[:, 2] >= min_score, sim, 0.0)
    return float(sim[vis].mean())


@dataclass(frozen=True)
class FilterScores:
    """Scores and decision for one generated image.

    Attributes:
        oks: OKS(target, re-estimated), NaN when not computed.
        std: pixel standard deviation on a 0..1 scale.
        n_keypoints: joints re-estimated with score >= min_score (0 if no person).
        keypoints: re-estimated ``float32 [17, 3]`` in pixels of the scored image.
        kept: the decision.
        reason: ``""`` when kept, else the first failed check (see module docstring).
    """

    oks: float
    std: float
    n_keypoints: int
    keypoints: np.ndarray
    kept: bool
    reason: str


def score_output(
    image: np.ndarray,
    target_keypoints: np.ndarray,
    backend: PoseBackend,
    *,
    min_oks: float,
    min_std: float,
    min_score: float = 0.5,
) -> FilterScores:
    """Score one generated image against its target pose and decide whether to keep it.

    Args:
        image: the output, ``float [H, W, 3]`` in ``[0, 1]`` (non-finite values are detected) or
            ``uint8 [H, W, 3]`` RGB.
        target_keypoints: ``float32 [17, 3]`` target pose in pixels of ``image``.
        backend: pose backend used to re-estimate the pose of the output.
        min_oks: OKS needed to keep the image.
        min_std: minimum pixel standard deviation (0..1 scale); below it the output is blank.
        min_score: keypoint presence threshold (for OKS and the keypoint count).

    Returns:
        :class:`FilterScores`.
    """
    img = np.asarray(image)
    as_float = img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)
    empty = empty_keypoints()
    if not np.isfinite(as_float).all():
        return FilterScores(float("nan"), float("nan"), 0, empty, False, "non-finite output")
    std = float(as_float.std())
    if std < min_std:
        return FilterScores(float("nan"), std, 0, empty, False, "blank output")
    if not (np.asarray(target_keypoints)[:, 2] >= min_score).any():
        return FilterScores(float("nan"), std, 0, empty, False, "target pose empty")
    u8 = img if img.dtype == np.uint8 else np.clip(np.round(as_float * 255.0), 0, 255).astype(np.uint8)
    try:
        kp = backend.estimate(u8)
    except NoPersonFound:
        return FilterScores(0.0, std, 0, empty, False, "no person found in output")
    n_kp = int((kp[:, 2] >= min_score).sum())
    score = oks(kp, target_keypoints, min_score=min_score)
    if not score >= min_oks:
        return FilterScores(score, std, n_kp, kp, False, f"low pose fidelity (OKS < {min_oks:g})")
    return FilterScores(score, std, n_kp, kp, True, "")
