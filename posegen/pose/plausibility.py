"""Anatomical plausibility of a pose in an upright person crop (re-ID boxes, fashion photos).

:func:`pose_plausibility` flags the poses that no upright person centred in the crop can have:
they are pose-estimator failures (BlazePose sometimes returns a skeleton collapsed onto the hands or
a bag, with every score near 1.0, or puts the head below the hips) and must be neither a source nor
a re-posing target. The rules, in the order they are checked (a pose gets the first failing one as
its reason):

======================  =========================================================================
reason key              rule (``H`` = image height; torso = neck (shoulder midpoint) to mid-hip)
======================  =========================================================================
``too few joints``      fewer than ``min_keypoints`` joints with ``score >= min_score``
``collapsed``           the present joints span (max y - min y) less than ``min_span * H``: a
                        person-centred crop shows a person about as tall as the box, so a skeleton
                        over a small part of it is a collapse (or legs not found); ``min_span=None``
                        skips it (upper-body photos, e.g. DeepFashion close-ups)
``head below hips``     the head (mean y of the present nose/eyes/ears) is not at least
                        ``min_head_clearance * H`` above the hip midpoint (mean y of present hips)
``limb too long``       an upper arm or forearm longer than ``max_arm_ratio`` x torso, or a thigh or
                        shin longer than ``max_leg_ratio`` x torso (needs a shoulder and a hip)
``shoulders collapsed`` shoulder width below ``min_shoulder_ratio`` x torso while the hips are more
                        than ``hip_ratio_if_collapsed`` x torso apart (a side view narrows both)
======================  =========================================================================

The default constants were chosen on real data (``benchmarks/pose_plausibility.py``, results in
``benchmarks/results/pose_plausibility.md``): none of them flags a ground-truth Market-1501 sample
pose with enough joints, and every flagged BlazePose pose inspected on CUHK03 val was a failure.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pose_plausibility", "reason_key", "PLAUSIBILITY_REASONS", "DEFAULT_MIN_SPAN"]

#: Reason keys, in the order the rules are checked (a reason string starts with its key).
PLAUSIBILITY_REASONS = ("too few joints", "collapsed", "head below hips", "limb too long", "shoulders collapsed")

#: Default ``min_span``: smallest vertical extent of the present joints, as a share of image height.
DEFAULT_MIN_SPAN = 0.5

_HEAD = [0, 1, 2, 3, 4]
_SHOULDERS = [5, 6]
_HIPS = [11, 12]
#: (joint a, joint b, "arm"/"leg") for both sides: upper arm, forearm, thigh, shin.
_LIMBS = (
    (5, 7, "arm"), (6, 8, "arm"), (7, 9, "arm"), (8, 10, "arm"),
    (11, 13, "leg"), (12, 14, "leg"), (13, 15, "leg"), (14, 16, "leg"),
)  # fmt: skip
_LIMB_NAMES = {5: "upper arm", 6: "upper arm", 7: "forearm", 8: "forearm", 11: "thigh", 12: "thigh", 13: "shin", 14: "shin"}


def reason_key(reason: str) -> str:
    """The rule key of a reason string (its part before ``":"``); ``""`` for a plausible pose."""
    return reason.split(":", 1)[0]


def _mean_present(xy: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over axis 1 of ``xy [N, J, D]`` where ``present [N, J]``; returns (mean [N, D], any [N])."""
    cnt = present.sum(axis=1)
    tot = (xy * present[..., None]).sum(axis=1)
    return tot / np.maximum(cnt, 1)[:, None], cnt > 0


def pose_plausibility(
    keypoints,
    image_sizes,
    *,
    min_score: float = 0.5,
    min_keypoints: int = 10,
    min_span: float | None = DEFAULT_MIN_SPAN,
    min_head_clearance: float = 0.1,
    max_arm_ratio: float = 1.25,
    max_leg_ratio: float = 1.6,
    min_shoulder_ratio: float = 0.05,
    hip_ratio_if_collapsed: float = 0.35,
) -> tuple[np.ndarray, list[str]]:
    """Flag poses impossible for an upright person crop (see the module docstring for the rules).

    Args:
        keypoints: ``float [17, 3]`` or ``[N, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels of each
            pose's image (x right, y down; score 0 = missing).
        image_sizes: ``(width, height)`` in pixels, one for all poses, or ``[N, 2]`` one per pose.
        min_score: a joint is present when ``score >= min_score``.
        min_keypoints: fewest present joints for a plausible pose.
        min_span: smallest ``(max y - min y)`` of the present joints as a share of the image
            height; ``None`` skips the check (upper-body photos).
        min_head_clearance: the head must be at least this share of the image height above the hip
            midpoint (checked when a head joint and a hip are present).
        max_arm_ratio: longest plausible upper arm / forearm, in torso lengths.
        max_leg_ratio: longest plausible thigh / shin, in torso lengths.
        min_shoulder_ratio: shoulder width below this many torso lengths is collapsed ...
        hip_ratio_if_collapsed: ... when the hips are more than this many torso lengths apart.

    Returns:
        ``(plausible, reasons)``: ``bool [N]`` (``N = 1`` for a single ``[17, 3]`` pose) and a list
        of ``N`` strings, ``""`` for a plausible pose, else ``"<key>: <detail>"`` with the key from
        :data:`PLAUSIBILITY_REASONS` (use :func:`reason_key`).

    Raises:
        ValueError: ``keypoints`` is not ``[17, 3]`` / ``[N, 17, 3]``, or holds NaN/inf;
            ``image_sizes`` is not ``(w, h)`` / ``[N, 2]`` or has a non-positive size.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise ValueError(f"keypoints must have shape [17, 3] or [N, 17, 3] (COCO-17 x, y, score), got {np.shape(keypoints)}")
    if not np.isfinite(kp).all():
        raise ValueError("keypoints contain NaN or infinite values")
    n = len(kp)
    sizes = np.asarray(image_sizes, dtype=np.float64)
    if sizes.shape == (2,):
        sizes = np.broadcast_to(sizes, (n, 2))
    if sizes.shape != (n, 2):
        raise ValueError(f"image_sizes must be (width, height) or [N, 2] with N = {n}, got shape {np.shape(image_sizes)}")
    if not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise ValueError("image_sizes must be positive (width, height) in pixels (unknown sizes, e.g. -1, are not allowed)")
    height = sizes[:, 1]

    present = kp[..., 2] >= min_score
    xy = kp[..., :2]
    count = present.sum(axis=1)
    top = np.where(present, xy[..., 1], np.inf).min(axis=1)
    bottom = np.where(present, xy[..., 1], -np.inf).max(axis=1)
    span = np.where(count > 0, bottom - top, 0.0) / height  # share of the image height
    head, has_head = _mean_present(xy[:, _HEAD], present[:, _HEAD])
    neck, has_sh = _mean_present(xy[:, _SHOULDERS], present[:, _SHOULDERS])
    hip, has_hip = _mean_present(xy[:, _HIPS], present[:, _HIPS])
    torso = np.linalg.norm(neck - hip, axis=1)
    has_torso = has_sh & has_hip
    both_sh = present[:, 5] & present[:, 6]
    both_hip = present[:, 11] & present[:, 12]
    sh_w = np.linalg.norm(xy[:, 5] - xy[:, 6], axis=1)
    hip_w = np.linalg.norm(xy[:, 11] - xy[:, 12], axis=1)

    reasons: list[str] = []
    for i in range(n):
        r = ""
        if count[i] < min_keypoints:
            r = f"too few joints: {count[i]} with score >= {min_score:g} (< {min_keypoints})"
        elif min_span is not None and span[i] < min_span:
            r = f"collapsed: joints span {span[i]:.2f} of the image height (< {min_span:g})"
        elif has_head[i] and has_hip[i] and (hip[i, 1] - head[i, 1]) < min_head_clearance * height[i]:
            r = (
                f"head below hips: head {(hip[i, 1] - head[i, 1]) / height[i]:+.2f} of the image height above "
                f"the hips (< {min_head_clearance:g})"
            )
        elif has_torso[i]:
            t = max(torso[i], 1e-6)
            for a, b, kind in _LIMBS:
                if present[i, a] and present[i, b]:
                    ratio = float(np.linalg.norm(xy[i, a] - xy[i, b])) / t
                    limit = max_arm_ratio if kind == "arm" else max_leg_ratio
                    if ratio > limit:
                        r = f"limb too long: {_LIMB_NAMES[a]} {ratio:.2f} torso lengths (> {limit:g})"
                        break
            if not r and both_sh[i] and both_hip[i] and sh_w[i] < min_shoulder_ratio * t and hip_w[i] > hip_ratio_if_collapsed * t:
                r = (
                    f"shoulders collapsed: shoulder width {sh_w[i] / t:.2f} torso lengths (< {min_shoulder_ratio:g}) "
                    f"with hips {hip_w[i] / t:.2f} apart"
                )
        reasons.append(r)
    return np.array([r == "" for r in reasons], dtype=bool), reasons
