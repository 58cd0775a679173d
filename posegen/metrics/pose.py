"""Pose-fidelity metrics on COCO-17 keypoints: OKS (COCO) and PCK (PCKh as in pose-transfer work).

Keypoints follow posegen's convention (:mod:`posegen.pose.keypoints`): ``float32 [17, 3]``
``(x, y, score)`` in pixels of one image, x to the right and y down; a joint whose score is below
``min_score`` is absent. Both poses given to a metric must be in pixels of the same image.
"""

from __future__ import annotations

import numpy as np

from ..pose.keypoints import COCO17_OKS_SIGMAS, NUM_KEYPOINTS

__all__ = ["oks", "oks_batch", "pck", "PCK_REFERENCES"]

#: Reference lengths :func:`pck` understands.
PCK_REFERENCES = ("head", "torso", "bbox")

# COCO-17 indices
_NOSE, _LEYE, _REYE, _LEAR, _REAR = 0, 1, 2, 3, 4
_LSHO, _RSHO, _LHIP, _RHIP = 5, 6, 11, 12
_HEAD = (_NOSE, _LEYE, _REYE, _LEAR, _REAR)


def _pose(kp, name: str) -> np.ndarray:
    arr = np.asarray(kp, dtype=np.float64)
    if arr.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"{name} must have shape [17, 3] (COCO-17 x, y, score), got {arr.shape}")
    return arr


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
    ``k_i = 2 * sigma_i`` (COCO's per-joint sigmas, cocoapi ``COCOeval.computeOks``) and ``s^2`` the
    object *area*. A target joint whose predicted joint is absent (score < ``min_score``)
    contributes 0; the target's absent joints are ignored.

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

    Raises:
        ValueError: a pose is not ``[17, 3]``.
    """
    pred = _pose(pred, "pred")
    target = _pose(target, "target")
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


def oks_batch(pred: np.ndarray, target: np.ndarray, **kwargs) -> np.ndarray:
    """:func:`oks` for each pair of a batch.

    Args:
        pred: ``float [N, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels.
        target: ``float [N, 17, 3]``, pose ``i`` in pixels of the same image as ``pred[i]``.
        **kwargs: ``min_score``, ``area`` (a scalar for all pairs or ``float [N]``), ``sigmas``,
            as in :func:`oks`.

    Returns:
        ``float64 [N]``; NaN where the target has no present joint.

    Raises:
        ValueError: shapes are not ``[N, 17, 3]`` and equal.
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[1:] != (NUM_KEYPOINTS, 3) or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be [N, 17, 3], got {pred.shape} and {target.shape}")
    area = kwargs.pop("area", None)
    areas = np.broadcast_to(np.asarray(area, dtype=object), (len(pred),)) if area is not None else [None] * len(pred)
    return np.array(
        [oks(p, t, area=None if a is None else float(a), **kwargs) for p, t, a in zip(pred, target, areas)],
        dtype=np.float64,
    )


def pck(
    pred: np.ndarray,
    target: np.ndarray,
    *,
    alpha: float = 0.5,
    reference: str = "head",
    min_score: float = 0.5,
) -> float:
    """Percentage of correct keypoints: the share of the target's present joints that the
    prediction has present and close enough.

    The denominator is the number of target joints with score >= ``min_score``; a joint counts as
    correct when the predicted joint is present too and within the tolerance set by ``reference``
    (all lengths in pixels of the target's image):

    - ``"head"`` (PCKh as pose-transfer papers compute it on Market-1501 / DeepFashion, PATN's
      ``calPCKH_market.py``, used again by DPTN, PIDM, CFLD): the head box is the tight box of the
      target's present head joints (nose, eyes, ears; PATN's OpenPose neck, absent from COCO-17, is
      replaced by the mid-shoulder point when both shoulders are present), and a joint is correct
      when ``|dx| < alpha * box_w`` **and** ``|dy| < alpha * box_h`` (a per-axis test, as there).
      Fewer than 2 head points -> NaN (PATN skips such poses).
    - ``"torso"``: ``d < alpha * torso diameter`` (Euclidean ``d``), the torso diameter being the
      left-shoulder to right-hip distance, or right-shoulder to left-hip when that pair is missing
      (the PCK convention of LSP / Sapp & Taskar); NaN when neither pair is present.
    - ``"bbox"``: ``d < alpha * max(w, h)`` of the tight box of the target's present joints, the
      box-relative PCK some pose-transfer evaluations use.

    Args:
        pred: ``float32 [17, 3]`` COCO-17 ``(x, y, score)`` in pixels.
        target: ``float32 [17, 3]`` in pixels of the same image.
        alpha: tolerance as a fraction of the reference length (0.5 for PCKh@0.5).
        reference: ``"head"``, ``"torso"`` or ``"bbox"``.
        min_score: score at which a joint counts as present.

    Returns:
        PCK in ``[0, 1]``; NaN when the target has no present joint or the reference is undefined
        (or zero).

    Raises:
        ValueError: unknown ``reference``, ``alpha <= 0`` or a pose that is not ``[17, 3]``.
    """
    if reference not in PCK_REFERENCES:
        raise ValueError(f"reference must be one of {PCK_REFERENCES}, got {reference!r}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    pred = _pose(pred, "pred")
    target = _pose(target, "target")
    tvis = target[:, 2] >= min_score
    pvis = pred[:, 2] >= min_score
    if not tvis.any():
        return float("nan")
    diff = np.abs(pred[:, :2] - target[:, :2])
    if reference == "head":
        pts = [target[j, :2] for j in _HEAD if tvis[j]]
        if tvis[_LSHO] and tvis[_RSHO]:
            pts.append((target[_LSHO, :2] + target[_RSHO, :2]) / 2.0)
        if len(pts) < 2:
            return float("nan")
        pts = np.stack(pts)
        w, h = pts.max(axis=0) - pts.min(axis=0)
        if w <= 0 or h <= 0:
            return float("nan")
        ok = (diff[:, 0] < alpha * w) & (diff[:, 1] < alpha * h)
    else:
        if reference == "torso":
            pairs = [(a, b) for a, b in ((_LSHO, _RHIP), (_RSHO, _LHIP)) if tvis[a] and tvis[b]]
            if not pairs:
                return float("nan")
            a, b = pairs[0]
            length = float(np.linalg.norm(target[a, :2] - target[b, :2]))
        else:
            xy = target[tvis, :2]
            length = float((xy.max(axis=0) - xy.min(axis=0)).max())
        if length <= 0:
            return float("nan")
        ok = np.sqrt((diff**2).sum(axis=1)) < alpha * length
    ok = ok & pvis
    return float(ok[tvis].mean())
