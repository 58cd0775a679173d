"""Keypoint conventions shared by every stage.

posegen's internal keypoint format is **COCO-17**: an array ``float32 [17, 3]`` of ``(x, y, score)``
per joint, in the order of :data:`COCO17_NAMES`. Coordinates are in **pixels of the image they were
measured on**, x to the right and y down, using the *pixel-index* convention: the centre of the
top-left pixel is ``(0, 0)`` and the centre of the bottom-right pixel is ``(W - 1, H - 1)``
(so Pose-Transfer's integer annotations and ``numpy.fliplr`` agree with it). ``score`` is in
``[0, 1]``; a joint that is missing or outside the image has score 0 and is never drawn or scored.

Other skeletons (OpenPose-18 in Pose-Transfer CSVs, BlazePose-33 from mediapipe) are converted at
the edges (readers, backends) with the functions here, never inside the stages.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "COCO17_NAMES",
    "COCO17_FLIP_INDEX",
    "COCO17_SKELETON",
    "COCO17_OKS_SIGMAS",
    "OPENPOSE18_NAMES",
    "OPENPOSE18_TO_COCO17",
    "NUM_KEYPOINTS",
    "empty_keypoints",
    "validate_keypoints",
    "flip_keypoints",
    "scale_keypoints",
    "clip_to_image",
    "num_confident",
    "openpose18_to_coco17",
    "coco17_to_openpose18",
    "pose_view",
    "near_side",
    "wrists_in_torso",
    "joint_motion",
    "limit_limb_motion",
    "ARM_JOINTS",
    "LEG_JOINTS",
    "DEFAULT_SIDE_RATIO",
]

NUM_KEYPOINTS = 17

#: COCO-17 joint names, in order.
COCO17_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

#: For a horizontally flipped image, joint ``i`` of the flipped pose is joint
#: ``COCO17_FLIP_INDEX[i]`` of the original (left and right swap).
COCO17_FLIP_INDEX: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

#: Limbs as (joint a, joint b) index pairs: the 19 edges of the COCO keypoint skeleton
#: (the ``skeleton`` field of COCO's person category, converted to 0-based indices).
COCO17_SKELETON: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12),
    (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
    (7, 9), (8, 10), (1, 2), (0, 1), (0, 2),
    (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip

#: Per-joint OKS sigmas of the COCO keypoint benchmark (cocoapi ``COCOeval``).
COCO17_OKS_SIGMAS = np.array(
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89],
    dtype=np.float32,
) / 10.0

#: OpenPose COCO-18 joint names, in order (the order of Pose-Transfer annotation CSVs).
OPENPOSE18_NAMES: tuple[str, ...] = (
    "nose",
    "neck",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "left_hip",
    "left_knee",
    "left_ankle",
    "right_eye",
    "left_eye",
    "right_ear",
    "left_ear",
)

#: ``OPENPOSE18_TO_COCO17[i]`` is the OpenPose-18 index of COCO-17 joint ``i`` (the neck, OpenPose
#: index 1, has no COCO-17 counterpart).
OPENPOSE18_TO_COCO17: tuple[int, ...] = tuple(OPENPOSE18_NAMES.index(n) for n in COCO17_NAMES)

_NECK = 1


def empty_keypoints() -> np.ndarray:
    """A pose with no joint: ``float32 [17, 3]`` of zeros (every score 0)."""
    return np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)


def validate_keypoints(kp) -> np.ndarray:
    """Check and return keypoints as a C-contiguous ``float32 [17, 3]`` array.

    Raises:
        ValueError: if the shape is not ``[17, 3]`` (or a flat 51) or a value is not finite.
    """
    arr = np.asarray(kp, dtype=np.float32)
    if arr.shape == (NUM_KEYPOINTS * 3,):
        arr = arr.reshape(NUM_KEYPOINTS, 3)
    if arr.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape [17, 3] (COCO-17 x, y, score), got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("keypoints contain NaN or infinite values")
    return np.ascontiguousarray(arr)


def flip_keypoints(kp: np.ndarray, width: int) -> np.ndarray:
    """Keypoints of the horizontally flipped image.

    Args:
        kp: ``float32 [..., 17, 3]`` COCO-17 ``(x, y, score)`` in pixels of an image ``width`` wide.
        width: image width in pixels.

    Returns:
        ``float32 [..., 17, 3]``: ``x -> width - 1 - x`` (pixel-index convention) and left/right
        joints swapped, so "left_shoulder" is still the person's left shoulder.
    """
    kp = np.asarray(kp, dtype=np.float32)
    out = kp[..., list(COCO17_FLIP_INDEX), :].copy()
    out[..., 0] = np.where(out[..., 2] > 0, (width - 1) - out[..., 0], out[..., 0])
    return out


def scale_keypoints(kp: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """Map keypoints from an image of ``src_size`` to the same image resized to ``dst_size``.

    Args:
        kp: ``float32 [..., 17, 3]`` in pixels of the source image.
        src_size: source ``(width, height)`` in pixels.
        dst_size: destination ``(width, height)`` in pixels.

    Returns:
        ``float32 [..., 17, 3]``; pixel centres are aligned (``x' = (x + 0.5) * W'/W - 0.5``), as
        for a plain (non aspect-preserving) resize. Scores are unchanged.
    """
    kp = np.array(kp, dtype=np.float32, copy=True)
    sx = dst_size[0] / float(src_size[0])
    sy = dst_size[1] / float(src_size[1])
    kp[..., 0] = (kp[..., 0] + 0.5) * sx - 0.5
    kp[..., 1] = (kp[..., 1] + 0.5) * sy - 0.5
    return kp


def clip_to_image(kp: np.ndarray, width: int, height: int) -> np.ndarray:
    """Zero the score of joints outside ``[-0.5, W - 0.5) x [-0.5, H - 0.5)`` (the image area).

    Args:
        kp: ``float32 [..., 17, 3]`` in pixels.

    Returns:
        A copy; joints outside the image get score 0 (and x = y = 0), per posegen's contract.
    """
    kp = np.array(kp, dtype=np.float32, copy=True)
    x, y = kp[..., 0], kp[..., 1]
    outside = (x < -0.5) | (y < -0.5) | (x >= width - 0.5) | (y >= height - 0.5) | ~np.isfinite(x) | ~np.isfinite(y)
    kp[..., 2] = np.where(outside, 0.0, kp[..., 2])
    kp[..., 0] = np.where(outside, 0.0, kp[..., 0])
    kp[..., 1] = np.where(outside, 0.0, kp[..., 1])
    return kp


def num_confident(kp: np.ndarray, min_score: float) -> np.ndarray | int:
    """Number of joints with ``score >= min_score`` (an int for one pose, an array for a batch)."""
    kp = np.asarray(kp)
    n = (kp[..., 2] >= min_score).sum(axis=-1)
    return int(n) if np.ndim(n) == 0 else n


def openpose18_to_coco17(kp18: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert OpenPose COCO-18 keypoints to COCO-17.

    Args:
        kp18: ``float32 [..., 18, 3]`` ``(x, y, score)`` in OpenPose-18 order (:data:`OPENPOSE18_NAMES`).

    Returns:
        ``(kp17, neck)``: ``float32 [..., 17, 3]`` in COCO-17 order and the neck ``float32 [..., 3]``,
        which COCO-17 lacks (kept so that a round trip back to OpenPose-18 is lossless).
    """
    kp18 = np.asarray(kp18, dtype=np.float32)
    if kp18.shape[-2:] != (18, 3):
        raise ValueError(f"OpenPose-18 keypoints must have shape [..., 18, 3], got {kp18.shape}")
    return kp18[..., list(OPENPOSE18_TO_COCO17), :].copy(), kp18[..., _NECK, :].copy()


def coco17_to_openpose18(kp17: np.ndarray, neck: np.ndarray | None = None) -> np.ndarray:
    """Convert COCO-17 keypoints to OpenPose COCO-18.

    Args:
        kp17: ``float32 [..., 17, 3]`` in COCO-17 order.
        neck: optional ``float32 [..., 3]`` neck joint. When absent (or its score is 0 or NaN), the
            neck is the midpoint of the two shoulders, with the smaller shoulder score, as OpenPose
            defines it; it is missing (score 0) when either shoulder is.

    Returns:
        ``float32 [..., 18, 3]`` in OpenPose-18 order.
    """
    kp17 = np.asarray(kp17, dtype=np.float32)
    out = np.zeros(kp17.shape[:-2] + (18, 3), dtype=np.float32)
    out[..., list(OPENPOSE18_TO_COCO17), :] = kp17
    ls, rs = kp17[..., 5, :], kp17[..., 6, :]
    both = (ls[..., 2] > 0) & (rs[..., 2] > 0)
    mid = np.zeros(kp17.shape[:-2] + (3,), dtype=np.float32)
    mid[..., :2] = (ls[..., :2] + rs[..., :2]) / 2.0
    mid[..., 2] = np.minimum(ls[..., 2], rs[..., 2])
    mid = np.where(both[..., None], mid, 0.0)
    if neck is not None:
        neck = np.nan_to_num(np.asarray(neck, dtype=np.float32), nan=0.0)
        have = neck[..., 2] > 0
        mid = np.where(have[..., None], neck, mid)
    out[..., _NECK, :] = mid
    return out


#: :func:`pose_view`: a pose whose left-right x offset is below this many torso lengths is side-on.
DEFAULT_SIDE_RATIO = 0.15


def pose_view(keypoints, min_score: float = 0.5, *, side_ratio: float = DEFAULT_SIDE_RATIO) -> dict[str, np.ndarray]:
    """Which way each pose faces, and how wide its torso looks, from shoulders and hips.

    For a person facing the camera the person's left shoulder (and hip) is on the image's right,
    so ``l_shoulder.x > r_shoulder.x``. The signed offset ``dx`` is the mean of
    ``l_shoulder.x - r_shoulder.x`` and ``l_hip.x - r_hip.x`` over the pairs whose two joints are
    present (``score >= min_score``), divided by the torso length (neck = midpoint of the present
    shoulders, to the midpoint of the present hips).

    Args:
        keypoints: ``float [17, 3]`` or ``[N, 17, 3]`` COCO-17 ``(x, y, score)``, pixels, x right,
            y down.
        min_score: a joint is present when ``score >= min_score``.
        side_ratio: ``|dx|`` below this (in torso lengths) counts as a side view (facing 0).

    Returns:
        A dict of arrays of length ``N`` (1 for a single pose):

        - ``"facing"``: ``int8``, ``+1`` front-ish (``dx >= side_ratio``), ``-1`` back-ish
          (``dx <= -side_ratio``), ``0`` side-on or unknown;
        - ``"dx"``: ``float32``, the signed offset in torso lengths; NaN when unknown (no complete
          shoulder or hip pair, or no shoulder and hip to measure the torso);
        - ``"aspect"``: ``float32``, shoulder width / torso length; NaN unless both shoulders and a
          hip are present.

    Raises:
        ValueError: ``keypoints`` is not ``[17, 3]`` / ``[N, 17, 3]``.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[1:] != (17, 3):
        raise ValueError(f"keypoints must have shape [17, 3] or [N, 17, 3] (COCO-17 x, y, score), got {np.shape(keypoints)}")
    pres = kp[..., 2] >= min_score
    xy = kp[..., :2]

    def mid(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        cnt = pres[:, a].astype(float) + pres[:, b]
        tot = xy[:, a] * pres[:, a, None] + xy[:, b] * pres[:, b, None]
        return tot / np.maximum(cnt, 1)[:, None], cnt > 0

    neck, has_sh = mid(5, 6)
    hip, has_hip = mid(11, 12)
    torso = np.where(has_sh & has_hip, np.linalg.norm(neck - hip, axis=1), np.nan)
    torso = np.where(torso > 0, torso, np.nan)
    pair_sh = pres[:, 5] & pres[:, 6]
    pair_hip = pres[:, 11] & pres[:, 12]
    d_sh = xy[:, 5, 0] - xy[:, 6, 0]
    d_hip = xy[:, 11, 0] - xy[:, 12, 0]
    n_pairs = pair_sh.astype(float) + pair_hip
    with np.errstate(invalid="ignore", divide="ignore"):
        dx = np.where(n_pairs > 0, (d_sh * pair_sh + d_hip * pair_hip) / np.maximum(n_pairs, 1), np.nan) / torso
        aspect = np.where(pair_sh, np.linalg.norm(xy[:, 5] - xy[:, 6], axis=1), np.nan) / torso
    facing = np.zeros(len(kp), dtype=np.int8)
    facing[dx >= side_ratio] = 1
    facing[dx <= -side_ratio] = -1
    return {"facing": facing, "dx": dx.astype(np.float32), "aspect": aspect.astype(np.float32)}


def near_side(keypoints, min_score: float = 0.5, *, side_ratio: float = DEFAULT_SIDE_RATIO,
              min_offset: float = 0.05) -> np.ndarray:  # fmt: skip
    """Which side of a side-on person is nearer the camera (its arm and leg in front).

    A person seen side-on (:func:`pose_view` facing 0 with a known ``dx``) who faces the image's
    left shows the camera their *left* side, and the reverse. The way they face is where the nose
    lies from the head: ``nose.x - ref.x`` with ``ref`` the mean of the present ears (the shoulder
    midpoint when no ear is present), in torso lengths; ``|offset| < min_offset`` is unknown.

    Checked by ``benchmarks/near_side.py`` (``benchmarks/results/near_side.md``): on the Market-1501
    ground-truth poses it decides 472 of 686 side-on ones, and where the annotators marked more
    joints on one arm (they leave out what they cannot see), that is the arm it calls near in 98.0 %
    of 409; on CUHK03 val with MoveNet, the near arm has the higher mean keypoint score in 91.8 %
    of 194.

    Args:
        keypoints: ``float [17, 3]`` or ``[N, 17, 3]`` COCO-17 ``(x, y, score)``, pixels, x right,
            y down.
        min_score: a joint is present when ``score >= min_score``.
        side_ratio: :func:`pose_view`'s side-on bound.
        min_offset: the smallest nose offset, in torso lengths, that decides.

    Returns:
        ``int8 [N]`` (``[1]`` for a single pose): ``+1`` the person's left side is nearer the
        camera, ``-1`` the right side, ``0`` not side-on or unknown (no nose, no ear and no
        shoulder, or no torso length).

    Raises:
        ValueError: ``keypoints`` is not ``[17, 3]`` / ``[N, 17, 3]``.
    """
    view = pose_view(keypoints, min_score, side_ratio=side_ratio)
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    pres = kp[..., 2] >= min_score

    def mean_xy(idx) -> tuple[np.ndarray, np.ndarray]:
        m = pres[:, idx, None]
        n = m.sum(1)
        return (kp[:, idx, :2] * m).sum(1) / np.maximum(n, 1), n[:, 0] > 0

    ears, has_ear = mean_xy([3, 4])
    neck, has_sh = mean_xy([5, 6])
    hip, has_hip = mean_xy([11, 12])
    ref = np.where(has_ear, ears[:, 0], neck[:, 0])
    torso = np.where(has_sh & has_hip, np.linalg.norm(neck - hip, axis=1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        offset = np.where(pres[:, 0] & (has_ear | has_sh) & (torso > 0), (kp[:, 0, 0] - ref) / torso, np.nan)
    side_on = (view["facing"] == 0) & np.isfinite(view["dx"])
    out = np.zeros(len(kp), dtype=np.int8)
    decided = side_on & np.isfinite(offset) & (np.abs(np.nan_to_num(offset)) >= min_offset)
    out[decided & (offset < 0)] = 1  # faces the image's left: the left side faces the camera
    out[decided & (offset > 0)] = -1
    return out


def wrists_in_torso(keypoints, min_score: float = 0.5, *, margin: float = 0.05) -> np.ndarray:
    """Which wrists lie over the torso: inside the quadrilateral of the shoulders and hips.

    A hand held in front of the body (a phone, a cup, folded arms) puts the wrist there; a hanging
    or swinging arm does not. posegen's limb warp can move a forearm from beside the body onto the
    torso, but the result is the hanging forearm's side view laid flat across the chest (a slab),
    so ``augment`` avoids targets that do it (:func:`posegen.augment.targets.choose_targets`'
    ``honour`` test, recipe ``augment.avoid_hands_onto_torso``).

    Args:
        keypoints: ``float [17, 3]`` or ``[N, 17, 3]`` COCO-17 ``(x, y, score)``, pixels, x right,
            y down.
        min_score: a joint is present when ``score >= min_score``; a wrist is inside only when it
            and all four torso joints are present.
        margin: how far inside every edge the wrist must be, in torso lengths (shoulder midpoint
            to hip midpoint), so that a hand at the hip's side does not count.

    Returns:
        ``bool [N, 2]``: (left wrist, right wrist) inside.

    Raises:
        ValueError: ``keypoints`` is not ``[17, 3]`` / ``[N, 17, 3]``.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.shape[-2:] != (NUM_KEYPOINTS, 3) or kp.ndim not in (2, 3):
        raise ValueError(f"keypoints must be [17, 3] or [N, 17, 3], got {kp.shape}")
    kp = kp.reshape(-1, NUM_KEYPOINTS, 3)
    pres = kp[..., 2] >= min_score
    quad = kp[:, [5, 6, 12, 11], :2]  # left shoulder, right shoulder, right hip, left hip: a loop
    torso = np.linalg.norm(quad[:, :2].mean(1) - quad[:, 2:].mean(1), axis=1)
    a, b = quad, np.roll(quad, -1, axis=1)
    edge = b - a  # [N, 4, 2]
    area2 = (edge[:, :, 0] * (a[:, :, 1] + b[:, :, 1])).sum(1)  # twice the signed area (shoelace)
    sign = np.where(area2 < 0, 1.0, -1.0)[:, None]  # orient so that inside is positive
    out = np.zeros((len(kp), 2), dtype=bool)
    ok_torso = pres[:, [5, 6, 11, 12]].all(1) & (torso > 0) & (np.abs(area2) > 0)
    for c, j in enumerate((9, 10)):
        d = kp[:, j, None, :2] - a
        cross = edge[:, :, 0] * d[:, :, 1] - edge[:, :, 1] * d[:, :, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            dist = sign * cross / np.linalg.norm(edge, axis=2)  # signed distance to each edge's line
        out[:, c] = ok_torso & pres[:, j] & (dist >= margin * torso[:, None]).all(1)
    return out


#: COCO-17 joints of :func:`joint_motion`'s two limb groups: elbows and wrists, knees and ankles.
ARM_JOINTS = (7, 8, 9, 10)
LEG_JOINTS = (13, 14, 15, 16)


def joint_motion(source_kp, target_kp, joints=ARM_JOINTS, min_score: float = 0.5) -> np.ndarray:
    """How far a target pose moves some joints: the largest displacement among ``joints``, in torso lengths.

    For each pair, the distance between the source's and the target's same joint (both present),
    the largest over ``joints``, divided by the source's torso length (shoulder midpoint to hip
    midpoint). The two poses must share a frame: the target already placed on the source person
    (:func:`posegen.repose.warp.align_pose`) and paired as the warp pairs them
    (:func:`posegen.repose.warp.view_matched_source` when the view flips). posegen's limb warp moves
    a forearm or a shin as a rigid capsule of source pixels: a large move drags what lies beside
    the source's limb along (pale curves across a shirt, a bag smeared into the legs) and leaves a
    hole where the limb was, which the repair model paints as a smear. ``augment`` prefers targets
    that move the limbs little (recipe ``augment.max_arm_motion`` / ``max_leg_motion``,
    :func:`posegen.augment.targets.choose_targets`' ``prefer``).

    Args:
        source_kp, target_kp: ``float [17, 3]`` or ``[N, 17, 3]`` COCO-17 ``(x, y, score)``, pixels
            of one frame, x right, y down; a single source pose is compared with every target.
        joints: COCO-17 indices (:data:`ARM_JOINTS`, :data:`LEG_JOINTS`).
        min_score: a joint is present when ``score >= min_score``.

    Returns:
        ``float64 [N]``: the displacement in source torso lengths; NaN where none of ``joints`` is
        present in both poses or the source's torso length is unknown (a shoulder or a hip missing,
        or zero length).

    Raises:
        ValueError: keypoints that are not ``[17, 3]`` / ``[N, 17, 3]``, batch sizes that differ,
            or no joint index in ``0..16``.
    """
    src = np.asarray(source_kp, dtype=np.float64)
    tgt = np.asarray(target_kp, dtype=np.float64)
    for name, kp in (("source_kp", src), ("target_kp", tgt)):
        if kp.shape[-2:] != (NUM_KEYPOINTS, 3) or kp.ndim not in (2, 3):
            raise ValueError(f"{name} must be [17, 3] or [N, 17, 3], got {kp.shape}")
    idx = [int(j) for j in joints]
    if not idx or not all(0 <= j < NUM_KEYPOINTS for j in idx):
        raise ValueError(f"joints must be COCO-17 indices 0..16, got {list(joints)}")
    src, tgt = src.reshape(-1, NUM_KEYPOINTS, 3), tgt.reshape(-1, NUM_KEYPOINTS, 3)
    if len(src) == 1 and len(tgt) != 1:
        src = np.repeat(src, len(tgt), axis=0)
    if len(src) != len(tgt):
        raise ValueError(f"got {len(src)} source and {len(tgt)} target poses")
    both = (src[:, idx, 2] >= min_score) & (tgt[:, idx, 2] >= min_score)
    d = np.where(both, np.linalg.norm(src[:, idx, :2] - tgt[:, idx, :2], axis=2), -np.inf).max(1)
    torso_ok = (src[:, [5, 6, 11, 12], 2] >= min_score).all(1)
    torso = np.linalg.norm(src[:, [5, 6], :2].mean(1) - src[:, [11, 12], :2].mean(1), axis=1)
    ok = both.any(1) & torso_ok & (torso > 0)
    return np.where(ok, d / np.where(ok, torso, 1.0), np.nan)


#: COCO-17 (root, middle, end) of each limb for :func:`limit_limb_motion`: shoulder, elbow, wrist;
#: hip, knee, ankle.
_LIMBS = (((5, 7, 9), "arm"), ((6, 8, 10), "arm"), ((11, 13, 15), "leg"), ((12, 14, 16), "leg"))


def _wrap(a: np.ndarray) -> np.ndarray:
    """Angles wrapped into ``[-pi, pi)``."""
    return (a + np.pi) % (2 * np.pi) - np.pi


def limit_limb_motion(source_kp, target_kp, max_arm: float | None, max_leg: float | None, min_score: float = 0.5,
                      iterations: int = 20) -> np.ndarray:  # fmt: skip
    """A target pose with each limb turned back toward the source's until it moves at most a limit.

    For each limb (left and right arm: shoulder, elbow, wrist; left and right leg: hip, knee,
    ankle), the largest displacement of its middle and end joints from the source's same joints,
    in source torso lengths (:func:`joint_motion`), is compared with its limit (``max_arm`` for
    arms, ``max_leg`` for legs). Beyond it, the limb's two bones keep the target's lengths and its
    root (shoulder or hip), and their angles are interpolated from the source's toward the
    target's (each by the shorter way round), ``angle = a_s + f (a_t - a_s)``, with the largest
    ``f`` in ``[0, 1]`` (bisection, ``iterations`` steps) at which the limb moves at most the limit
    (``f = 0`` when even the source's angles move it farther: the limb then hangs as the source's
    from the target's shoulder or hip). A limb with a joint missing in either pose is interpolated
    linearly instead, joint by joint, ``s + f (t - s)`` with ``f = limit / motion``. Shoulders, hips,
    head and the limbs within their limit keep the target's positions; scores keep the target's.
    posegen's limb warp honours small limb moves well and large ones badly (a moved forearm or shin
    drags its surroundings along and leaves a hole that is painted as a smear): ``augment`` asks the
    default model for the limited pose (recipe ``augment.limit_limb_motion``).

    Args:
        source_kp, target_kp: ``float [17, 3]`` or ``[N, 17, 3]`` COCO-17 ``(x, y, score)``, pixels
            of one frame (x right, y down), the target already placed on the source person and the
            source paired as the warp pairs them (:func:`joint_motion`); one source pose may serve
            every target.
        max_arm, max_leg: the limits in source torso lengths; None leaves those limbs unchanged.
        min_score: a joint is present when ``score >= min_score``.
        iterations: bisection steps for ``f`` (20: to about 1e-6).

    Returns:
        ``float32 [N, 17, 3]``: the limited target poses (a pose whose source torso length is
        unknown is returned unchanged).

    Raises:
        ValueError: as :func:`joint_motion`; a limit that is not positive.
    """
    for name, lim in (("max_arm", max_arm), ("max_leg", max_leg)):
        if lim is not None and not lim > 0:
            raise ValueError(f"{name} must be positive or None, got {lim}")
    out = np.array(np.asarray(target_kp, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 3))
    src = np.asarray(source_kp, dtype=np.float64)
    src = np.repeat(src.reshape(1, NUM_KEYPOINTS, 3), len(out), 0) if src.ndim == 2 else src.reshape(-1, NUM_KEYPOINTS, 3)
    torso = np.linalg.norm(src[:, [5, 6], :2].mean(1) - src[:, [11, 12], :2].mean(1), axis=1)
    for (r, m, e), kind in _LIMBS:
        lim = max_arm if kind == "arm" else max_leg
        if lim is None:
            continue
        motion = joint_motion(src, out, (m, e), min_score)  # checks shapes; NaN = unknown
        over = motion > lim
        if not over.any():
            continue
        pres = lambda kp, j: kp[:, j, 2] >= min_score  # noqa: E731
        whole = over & pres(src, r) & pres(src, m) & pres(src, e) & pres(out, r) & pres(out, m) & pres(out, e)
        # bones turned: the target's lengths and root, angles from the source's toward the target's
        u_t, v_t = out[:, m, :2] - out[:, r, :2], out[:, e, :2] - out[:, m, :2]
        u_s, v_s = src[:, m, :2] - src[:, r, :2], src[:, e, :2] - src[:, m, :2]
        l1, l2 = np.linalg.norm(u_t, axis=1), np.linalg.norm(v_t, axis=1)
        a1s, a2s = np.arctan2(u_s[:, 1], u_s[:, 0]), np.arctan2(v_s[:, 1], v_s[:, 0])
        d1 = _wrap(np.arctan2(u_t[:, 1], u_t[:, 0]) - a1s)
        d2 = _wrap(np.arctan2(v_t[:, 1], v_t[:, 0]) - a2s)

        def at(f):
            a1, a2 = a1s + f * d1, a2s + f * d2
            mid = out[:, r, :2] + l1[:, None] * np.stack([np.cos(a1), np.sin(a1)], 1)
            end = mid + l2[:, None] * np.stack([np.cos(a2), np.sin(a2)], 1)
            return mid, end

        def moved(f):
            mid, end = at(f)
            d = np.maximum(np.linalg.norm(mid - src[:, m, :2], axis=1), np.linalg.norm(end - src[:, e, :2], axis=1))
            with np.errstate(invalid="ignore", divide="ignore"):
                return d / torso

        lo, hi = np.zeros(len(out)), np.ones(len(out))
        for _ in range(int(iterations)):
            mid_f = (lo + hi) / 2
            ok = moved(mid_f) <= lim
            lo, hi = np.where(ok, mid_f, lo), np.where(ok, hi, mid_f)
        mid, end = at(lo)
        out[:, m, :2] = np.where(whole[:, None], mid, out[:, m, :2])
        out[:, e, :2] = np.where(whole[:, None], end, out[:, e, :2])
        # a limb with a joint missing: the present joints moved linearly toward the source's
        part = over & ~whole
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(part, lim / motion, 1.0)
        for j in (m, e):
            both = part & pres(src, j) & pres(out, j)
            blended = src[:, j, :2] + f[:, None] * (out[:, j, :2] - src[:, j, :2])
            out[:, j, :2] = np.where(both[:, None], blended, out[:, j, :2])
    return out.astype(np.float32)
