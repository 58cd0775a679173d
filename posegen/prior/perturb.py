"""Implausible versions of real poses, for *evaluating* a pose prior (never for training it).

Three kinds, all in pixels and applied to present joints only (score >= ``min_score``); the torso
length ``T`` is the mean shoulder-to-hip distance over the sides where both joints are present
(else 0.3 x the height of the present joints' box):

- ``"swap"``: limb joints exchanged: either one left/right pair at one level of a limb (elbows,
  wrists, knees or ankles; the rest of both limbs stays, so each limb is broken on one side), or a
  joint exchanged between an arm and a leg of the same side (wrist <-> ankle, elbow <-> knee).
  Only exchanges that move the joints by at least ``min_shift * T`` are drawn (in a side view the
  left and right limbs overlap and exchanging them changes nothing); none -> ``ValueError``.
- ``"jitter"``: ``n`` present joints (``n`` uniform in ``n_joints``) each moved in a random direction
  by a distance uniform in ``fraction * T``.
- ``"bone"``: one limb bone (upper arm, forearm, thigh, shin) with both ends present scaled by x0.3
  or x2.5 (``bone_factors``) about its parent joint; the child joint and its descendants (the wrist
  for the upper arm, the ankle for the thigh) move with it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["perturb_pose", "torso_length", "PERTURBATIONS"]

PERTURBATIONS = ("swap", "jitter", "bone")

_LR_PAIRS = ((7, 8), (9, 10), (13, 14), (15, 16))  # elbows, wrists, knees, ankles
_ARM_LEG = ((9, 15), (10, 16), (7, 13), (8, 14))  # wrist-ankle, elbow-knee, same side
# (parent, child, descendants of child)
_BONES = (
    (5, 7, (9,)), (7, 9, ()), (6, 8, (10,)), (8, 10, ()),
    (11, 13, (15,)), (13, 15, ()), (12, 14, (16,)), (14, 16, ()),
)  # fmt: skip


def torso_length(keypoints: np.ndarray, min_score: float = 0.5) -> float:
    """Mean shoulder-to-hip distance (pixels) over the sides with both joints present; else 0.3 x
    the height of the present joints' box; 0 when no joint is present.

    Args:
        keypoints: ``float [17, 3]`` COCO-17 ``(x, y, score)`` in pixels.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    vis = kp[:, 2] >= min_score
    sides = [np.linalg.norm(kp[s, :2] - kp[h, :2]) for s, h in ((5, 11), (6, 12)) if vis[s] and vis[h]]
    if sides:
        return float(np.mean(sides))
    if not vis.any():
        return 0.0
    return 0.3 * float(np.ptp(kp[vis, 1]))


def perturb_pose(
    keypoints: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    *,
    min_score: float = 0.5,
    min_shift: float = 0.3,
    n_joints: tuple[int, int] = (3, 5),
    fraction: tuple[float, float] = (0.2, 0.5),
    bone_factors: tuple[float, ...] = (0.3, 2.5),
) -> np.ndarray:
    """An implausible copy of a pose (see the module docstring for the kinds).

    Args:
        keypoints: ``float [17, 3]`` COCO-17 ``(x, y, score)`` in pixels.
        kind: ``"swap"``, ``"jitter"`` or ``"bone"``.
        rng: the source of randomness (the result is deterministic for its state).
        min_score: score from which a joint is present.
        min_shift: ``"swap"``: least displacement of the exchanged joints, in torso lengths.
        n_joints: ``"jitter"``: inclusive range of the number of joints moved.
        fraction: ``"jitter"``: range of the displacement, in torso lengths.
        bone_factors: ``"bone"``: the scale factors to draw from.

    Returns:
        ``float32 [17, 3]``; scores unchanged.

    Raises:
        ValueError: unknown ``kind``, a pose that is not ``[17, 3]``, or a pose the kind cannot be
            applied to (no eligible joints; the message says why).
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"kind must be one of {PERTURBATIONS}, got {kind!r}")
    kp = np.array(keypoints, dtype=np.float32, copy=True)
    if kp.shape != (17, 3):
        raise ValueError(f"keypoints must be [17, 3], got {kp.shape}")
    vis = kp[:, 2] >= min_score
    t = torso_length(kp, min_score)
    if t <= 0:
        raise ValueError("pose has no extent (no torso length)")
    if kind == "swap":
        cands = [
            (a, b)
            for a, b in _LR_PAIRS + _ARM_LEG
            if vis[a] and vis[b] and np.linalg.norm(kp[a, :2] - kp[b, :2]) >= min_shift * t
        ]
        if not cands:
            raise ValueError(f"no limb joints to exchange that are {min_shift} torso lengths apart")
        a, b = cands[rng.integers(len(cands))]
        kp[[a, b], :2] = kp[[b, a], :2]
    elif kind == "jitter":
        present = np.flatnonzero(vis)
        lo, hi = n_joints
        n = int(rng.integers(lo, hi + 1))
        if len(present) < n:
            raise ValueError(f"jitter needs {n} present joints, the pose has {len(present)}")
        joints = rng.choice(present, size=n, replace=False)
        ang = rng.uniform(0, 2 * np.pi, size=n)
        dist = rng.uniform(fraction[0], fraction[1], size=n) * t
        kp[joints, 0] += (dist * np.cos(ang)).astype(np.float32)
        kp[joints, 1] += (dist * np.sin(ang)).astype(np.float32)
    else:
        cands = [bone for bone in _BONES if vis[bone[0]] and vis[bone[1]]]
        if not cands:
            raise ValueError("no limb bone with both ends present")
        parent, child, desc = cands[rng.integers(len(cands))]
        factor = float(bone_factors[rng.integers(len(bone_factors))])
        new_child = kp[parent, :2] + factor * (kp[child, :2] - kp[parent, :2])
        delta = new_child - kp[child, :2]
        kp[child, :2] = new_child
        for d in desc:
            if vis[d]:
                kp[d, :2] += delta
    return kp
