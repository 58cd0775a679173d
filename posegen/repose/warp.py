"""Keypoint-driven pose alignment: a dense flow from the target pose to the source pose.

The re-posing model does not have to learn from scratch where each target pixel's texture lies in
the source image: :func:`limb_flow` computes, from the two poses alone, a sampling grid that moves
every body part of the source onto the place the target pose puts it, and :func:`warp` applies it
to source images or feature maps of any resolution. The model refines this flow per resolution
with a learned residual (``posegen.repose.model``), which is the role of RePoseDM's recurrent pose
alignment (Khandelwal et al. 2024, "RePoseDM: Recurrent Pose Alignment and Gradient Guidance for
Pose Guided Image Synthesis"); the keypoint-driven initial flow is the classic per-part affine warp
of Deformable GANs (Siarohin et al. 2018, "Deformable GANs for Pose-based Human Image
Generation"), made dense and soft.

Method (all in pixels of the model frame, see below):

1. **Parts.** Ten rigid-ish parts: eight limb bones (:data:`BONES`: upper arms, forearms, thighs,
   shins), the torso (shoulders + hips) and the head (nose, eyes, ears and the neck = shoulder
   midpoint). A joint is *present* when ``score >= min_score`` (and ``> 0``, finite); a part is used
   only when its keypoints are present in BOTH poses.
2. **Per-part transforms** ``T_p``: target-frame point -> source-frame point, fitted on the part's
   shared keypoints. A bone: the 2-point similarity (rotation + uniform scale + translation) that
   maps the target bone onto the source bone. The torso: the least-squares affine map from >= 3
   shared points, or the least-squares similarity when only 2 are shared or the target points are
   nearly collinear. The head: least-squares similarity. A fit whose scale leaves
   ``[1 / max_part_scale, max_part_scale]`` (a limb foreshortened to nearly a point) is not used.
3. **Soft assignment.** Each target pixel ``x`` gets a distance ``d_p(x)`` to every used part in
   the *target* pose (point-to-segment distance for bones; distance to the convex hull of the
   part's points for the torso and head, 0 inside; the torso's is offset by ``0.12 s`` so that a
   limb lying over the torso keeps its own motion), and a softmax over parts of
   ``-d_p^2 / (2 tau^2)`` with ``tau = softness * s`` (``softness`` 0.04 by default). ``s`` is
   the target person's scale in pixels (:func:`person_scale`: the torso length, neck to mid-hip,
   with fallbacks). One more candidate, the global least-squares similarity over all shared
   keypoints (the identity when fewer than 2 are shared), has a constant distance ``0.6 s``, so
   pixels far from every part follow the person's overall motion. The source location is the softmax-weighted blend
   ``sum_p pi_p(x) T_p(x)``. Transforms of adjacent bones agree at their shared joint, so the blend
   is continuous across elbows and knees.
4. **Confidence.** ``weight(x) = max_p exp(-max(d_p(x) - r_p s, 0)^2 / (2 (0.08 s)^2))`` over used
   parts, with part radii ``r_p`` (fractions of ``s``: arms 0.09-0.10, legs 0.12-0.14, torso 0.08
   beyond its hull, head 0.22 beyond the face/neck hull): ~1 on the body, ~0 far from it, and 0
   everywhere when no part is shared.
5. **View flips** (``match_view``, on in :data:`CONSTRAINED_WARP`). When the source faces the
   camera and the target faces away (or the reverse), parts are paired by image side instead of by
   label (:func:`view_matched_source`): a keypoint warp cannot turn a person round, and pairing by
   label would drag every limb across the body.
6. **Depth order** (``depth_order``, on in :data:`CONSTRAINED_WARP`). A side-on target
   (:func:`~posegen.pose.keypoints.near_side`: the way the nose points tells which side faces the
   camera) has a far arm and a far leg. Where the far arm overlaps the torso or the near arm, and
   where the far leg overlaps the near leg, the part in front takes the pixel (:func:`_depth_ordered`);
   without it, a hidden far limb is drawn across the body. :func:`foreign_part_mask` uses the same
   order for ownership. Measured with the default model (``benchmarks/repose_quality.py default
   --sets same-view cross-view --strengths 0.4 --no-baselines --tag depth``): on the 68 same-view
   pairs with a side-on (or unknown) source or target facing, OKS 0.604 -> 0.622, identity 0.838 -> 0.843, SSIM 0.262 -> 0.265;
   over all 191, OKS 0.707 -> 0.713, PCKh 0.760 -> 0.770, identity 0.858 -> 0.860, kept 49 % both;
   cross-view OKS 0.378 -> 0.380, identity 0.777 -> 0.779, SSIM 0.191 both.

Measured on 24 same-identity pairs of real CUHK03 crops at 128x64 with BlazePose keypoints: over
the pixels with weight > 0.5, the mean L1 between the warped source and the target is 0.357 vs
0.393 for the unwarped source (images in [-1, 1]); it is lower for 3 pairs in 4 (misses seen: a
front/back view change, which keypoints cannot resolve, and a target whose legs BlazePose missed).

Conventions: keypoints are COCO-17 ``(x, y, score)`` (:data:`~posegen.pose.keypoints.COCO17_NAMES`),
x right and y down, in pixels of the model frame ``(h, w)`` with posegen's pixel-index convention
(the centre of the top-left pixel is ``(0, 0)``); :func:`keypoints_to_frame` maps keypoints measured
on an original image there with exactly the scaling of :mod:`posegen.repose.render` (a plain
resize, pixel centres aligned). Grids are in :func:`torch.nn.functional.grid_sample` normalised
coordinates ``(x, y)`` in ``[-1, 1]`` with ``align_corners=False``: pixel x maps to
``(2 x + 1) / w - 1``. Source and target share the same model frame. The flow is a fixed function
of the keypoints (computed without gradient); :func:`warp` is differentiable w.r.t. the features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from posegen.pose.keypoints import COCO17_FLIP_INDEX, NUM_KEYPOINTS, limit_limb_motion, near_side, pose_view

__all__ = [
    "BONES",
    "PARTS",
    "keypoints_to_frame",
    "person_scale",
    "limb_flow",
    "warp",
    "identity_grid",
    "composite",
    "align_pose",
    "body_mask",
    "fill_masked",
    "foreign_part_mask",
    "CONSTRAINED_WARP",
    "view_matched_source",
    "limit_placed_limbs",
]

#: :func:`limb_flow` options of posegen's default model (bounded part transforms that keep the body
#: intact): part scales clamped to [1/1.25, 1.25], a similarity torso on a reflection or a stretch
#: beyond 1.5, torso and head fitted on their axes, limbs paired by image side when the view flips,
#: a side-on person's far limbs behind the torso and the near limbs.
CONSTRAINED_WARP = dict(max_part_scale=1.25, scale_mode="clamp", torso_max_anisotropy=1.5, view_robust=True, match_view=True,
                        depth_order=True)  # fmt: skip

#: Limb bones as ``(name, (joint a, joint b))`` in COCO-17 indices.
BONES: tuple[tuple[str, tuple[int, int]], ...] = (
    ("left_upper_arm", (5, 7)),
    ("right_upper_arm", (6, 8)),
    ("left_forearm", (7, 9)),
    ("right_forearm", (8, 10)),
    ("left_thigh", (11, 13)),
    ("right_thigh", (12, 14)),
    ("left_shin", (13, 15)),
    ("right_shin", (14, 16)),
)
#: Part names in the order :func:`limb_flow` uses them internally: the bones, then torso and head.
PARTS: tuple[str, ...] = tuple(n for n, _ in BONES) + ("torso", "head")

_NECK = NUM_KEYPOINTS  # index of the derived neck (shoulder midpoint) in the extended 18-point set
_TORSO = (5, 6, 12, 11)
_HEAD = (0, 1, 2, 3, 4, _NECK)
# part radii (fraction of the person scale s) used for the confidence weight
_BONE_RADIUS = (0.10, 0.10, 0.09, 0.09, 0.14, 0.14, 0.12, 0.12)
_TORSO_RADIUS = 0.08
_HEAD_RADIUS = 0.22
_TORSO_BIAS = 0.12  # added to the torso distance in the soft assignment (limbs over the torso win)
_GLOBAL_DIST = 0.6  # constant distance of the global-similarity fallback candidate
_WEIGHT_FALLOFF = 0.08  # std of the confidence falloff outside a part's radius
#: BONES indices of each side's arm and leg, keyed by :func:`~posegen.pose.keypoints.near_side`'s sign
_ARM = {1: (0, 2), -1: (1, 3)}
_LEG = {1: (4, 6), -1: (5, 7)}
_OCCLUDED = 0.5  # added to a hidden far limb's distance (person scales): anything in front wins


# --------------------------------------------------------------------------- helpers
def identity_grid(b: int, out_hw, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The grid that samples every pixel at itself.

    Args:
        b: batch size.
        out_hw: ``(h, w)`` in pixels.
        device, dtype: of the result.

    Returns:
        ``[b, h, w, 2]`` in ``grid_sample`` normalised ``(x, y)`` coordinates (``align_corners=False``):
        ``grid[:, i, j] = ((2 j + 1) / w - 1, (2 i + 1) / h - 1)``.
    """
    h, w = int(out_hw[0]), int(out_hw[1])
    if h <= 0 or w <= 0 or b < 0:
        raise ValueError(f"need b >= 0 and a positive (h, w), got b={b}, out_hw={tuple(out_hw)}")
    xs = (2.0 * torch.arange(w, device=device, dtype=torch.float64) + 1.0) / w - 1.0
    ys = (2.0 * torch.arange(h, device=device, dtype=torch.float64) + 1.0) / h - 1.0
    g = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # [h, w, 2]
    return g.to(dtype).unsqueeze(0).expand(b, h, w, 2).contiguous()


def _as_kp_tensor(kp, device=None) -> torch.Tensor:
    if isinstance(kp, torch.Tensor):
        t = kp.detach().to(device=device if device is not None else kp.device, dtype=torch.float32)
    else:
        t = torch.as_tensor(np.array(kp, dtype=np.float32), device=device)  # a copy: a read-only array (Parquet) warns
    if t.ndim != 3 or t.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape [B, 17, 3] (COCO-17 x, y, score), got {tuple(t.shape)}")
    return t


def view_matched_source(source_kp, target_kp, *, min_score: float = 0.5) -> torch.Tensor:
    """Source keypoints with their left/right labels swapped where the two poses face opposite ways.

    Facing comes from :func:`posegen.pose.keypoints.pose_view` (the sign of the left-minus-right
    shoulder and hip x offset, in torso lengths; +1 front, -1 back, 0 side-on or unknown). When the
    source faces the camera and the target faces away (or the reverse), the target's left arm lies
    on the image side where the source shows its *right* arm. A warp that pairs parts by label then
    drags every limb across the body (crossed arms, swapped legs) and still cannot turn the person
    round: no keypoint warp can show a back that the source never saw. Pairing the parts by image
    side instead (the source's labels swapped, :data:`~posegen.pose.keypoints.COCO17_FLIP_INDEX`)
    keeps each limb on its side; the output keeps the source's facing. Poses with a side-on or
    unknown facing are returned unchanged, and so are already matched ones (idempotent).

    Measured with the default model (``benchmarks/repose_quality.py default --strengths 0.4``, tags
    ``viewmatch`` and ``fashion-viewmatch``): on the 194 CUHK03 val cross-view pairs (88 of them
    front onto back or back onto front) identity 0.783 -> 0.794, OKS 0.306 -> 0.309, SSIM 0.201 ->
    0.200; on the 95 DeepFashion pairs SSIM 0.568 -> 0.603, identity 0.768 -> 0.795, OKS 0.377 ->
    0.357 (the pose estimator reads the kept front as a front); same-view pairs unchanged.

    Args:
        source_kp, target_kp: ``float [B, 17, 3]`` COCO-17 ``(x, y, score)``, pixels of one frame
            (x right, y down), numpy or torch.
        min_score: joint presence threshold.

    Returns:
        ``float32 [B, 17, 3]`` tensor on ``source_kp``'s device (CPU for numpy).

    Raises:
        ValueError: keypoints not ``[B, 17, 3]`` or batch sizes differ.
    """
    src = _as_kp_tensor(source_kp)
    tgt = _as_kp_tensor(target_kp, src.device)
    if src.shape[0] != tgt.shape[0]:
        raise ValueError(f"source and target batch sizes differ: {src.shape[0]} vs {tgt.shape[0]}")
    if src.shape[0] == 0:
        return src
    fs = pose_view(src.cpu().numpy(), min_score)["facing"].astype(np.int64)
    ft = pose_view(tgt.cpu().numpy(), min_score)["facing"].astype(np.int64)
    flip = torch.as_tensor(fs * ft == -1, device=src.device)
    return torch.where(flip[:, None, None], src[:, list(COCO17_FLIP_INDEX)], src)


def image_sizes_tensor(sizes, b: int, device=None) -> torch.Tensor:
    """Image sizes as ``float64 [B, 2]`` ``(width, height)`` pixels on ``device``.

    Args:
        sizes: one ``(width, height)`` (broadcast to the batch) or ``[B, 2]``; numpy, list or tensor.
        b: batch size ``B``.

    Raises:
        ValueError: a shape other than ``(2,)`` / ``[B, 2]``, or a non-positive size.
    """
    if isinstance(sizes, torch.Tensor):
        sz = sizes.detach().to(device=device, dtype=torch.float64)
    else:
        sz = torch.as_tensor(np.asarray(sizes, dtype=np.float64), device=device)
    if sz.shape == (2,):
        sz = sz.expand(b, 2)
    if sz.shape != (b, 2):
        raise ValueError(f"sizes must be (width, height) or [B, 2] with B={b}, got shape {tuple(sz.shape)}")
    if b and not bool((sz > 0).all()):
        raise ValueError(f"image sizes must be positive (width, height), got {sz.tolist()}")
    return sz


def keypoints_to_frame(keypoints, sizes, out_hw) -> torch.Tensor:
    """Map keypoints measured on images of ``sizes`` to pixels of the model frame ``out_hw``.

    The same plain-resize mapping as :func:`posegen.pose.keypoints.scale_keypoints` (used by
    :mod:`posegen.repose.render`): ``x' = (x + 0.5) * w / W - 0.5``, ``y' = (y + 0.5) * h / H - 0.5``.

    Args:
        keypoints: ``float [B, 17, 3]`` COCO-17 ``(x, y, score)`` (numpy or torch), pixels of image
            ``i`` of size ``sizes[i]``.
        sizes: ``[B, 2]`` ``(width, height)`` in pixels (numpy, torch or a sequence), or one
            ``(width, height)`` for all.
        out_hw: model frame ``(h, w)``.

    Returns:
        ``float32 [B, 17, 3]`` in model-frame pixels, scores unchanged; on the keypoints' device
        (CPU for numpy input).

    Raises:
        ValueError: wrong shapes or non-positive sizes.
    """
    kp = _as_kp_tensor(keypoints)
    sz = image_sizes_tensor(sizes, kp.shape[0], kp.device)
    h, w = float(out_hw[0]), float(out_hw[1])
    out = kp.clone()
    # float32 arithmetic in the same order as scale_keypoints, so render.py and warp agree exactly
    sx = (w / sz[:, 0]).to(torch.float32)[:, None]
    sy = (h / sz[:, 1]).to(torch.float32)[:, None]
    out[..., 0] = (kp[..., 0] + 0.5) * sx - 0.5
    out[..., 1] = (kp[..., 1] + 0.5) * sy - 0.5
    return out


def _present(kp: torch.Tensor, min_score: float) -> torch.Tensor:
    s = kp[..., 2]
    return (s >= min_score) & (s > 0) & torch.isfinite(kp).all(-1)


def _extend_with_neck(xy: torch.Tensor, pres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 17, 2]``, ``[B, 17]`` -> ``[B, 18, 2]``, ``[B, 18]`` with the neck (shoulder midpoint)."""
    neck = (xy[:, 5] + xy[:, 6]) / 2.0
    return torch.cat([xy, neck[:, None]], 1), torch.cat([pres, (pres[:, 5] & pres[:, 6])[:, None]], 1)


def person_scale(keypoints, out_hw, *, min_score: float = 0.5) -> torch.Tensor:
    """A person's size in pixels, for distances that should scale with the person.

    The torso length (neck = shoulder midpoint to hip midpoint); when not both shoulders and hips
    are present, the longer same-side shoulder-hip distance; never less than a quarter of the
    diagonal of the present keypoints' box (a bent-over, foreshortened torso); a quarter of
    ``max(h, w)`` when fewer than 2 joints are present; at least 1 pixel.

    Args:
        keypoints: ``float [B, 17, 3]`` COCO-17 ``(x, y, score)`` pixels of a frame ``out_hw``.
        out_hw: ``(h, w)`` of that frame.
        min_score: a joint with a lower score is absent.

    Returns:
        ``float32 [B]`` pixels.
    """
    kp = _as_kp_tensor(keypoints)
    xy = torch.nan_to_num(kp[..., :2].double())
    pres = _present(kp, min_score)
    b = kp.shape[0]

    def dist(i, j):
        return torch.linalg.vector_norm(xy[:, i] - xy[:, j], dim=-1)

    zero = torch.zeros(b, dtype=torch.float64, device=kp.device)
    both = pres[:, 5] & pres[:, 6] & pres[:, 11] & pres[:, 12]
    torso = torch.where(
        both, torch.linalg.vector_norm((xy[:, 5] + xy[:, 6] - xy[:, 11] - xy[:, 12]) / 2.0, dim=-1), zero
    )
    left = torch.where(pres[:, 5] & pres[:, 11], dist(5, 11), zero)
    right = torch.where(pres[:, 6] & pres[:, 12], dist(6, 12), zero)
    s = torch.where(both, torso, torch.maximum(left, right))
    big = torch.finfo(torch.float64).max
    lo = torch.where(pres[..., None], xy, torch.full_like(xy, big)).amin(1)
    hi = torch.where(pres[..., None], xy, torch.full_like(xy, -big)).amax(1)
    n = pres.sum(1)
    diag = torch.where(n >= 2, torch.linalg.vector_norm(hi - lo, dim=-1), zero)
    s = torch.maximum(s, diag / 4.0)
    s = torch.where(n >= 2, s, torch.full_like(s, max(float(out_hw[0]), float(out_hw[1])) / 4.0))
    return s.clamp_min(1.0).to(torch.float32)


# --------------------------------------------------------------------------- transform fitting
def _centred(t, s, m):
    """Masked centroids and centred point sets of ``t``, ``s`` (``[..., K, 2]``, mask ``[..., K]``):
    ``(n [...], t_mean [..., 2], s_mean [..., 2], t_centred, s_centred)``, absent points zeroed."""
    mf = m.to(t.dtype)
    n = mf.sum(-1)
    nn = n.clamp_min(1.0)[..., None]
    tm = (t * mf[..., None]).sum(-2) / nn
    sm = (s * mf[..., None]).sum(-2) / nn
    return n, tm, sm, (t - tm[..., None, :]) * mf[..., None], (s - sm[..., None, :]) * mf[..., None]


def _fit_similarity(t, s, m):
    """Least-squares similarity ``s ~ A t + c`` per ``[..., K]`` point set (Umeyama, no reflection).

    ``t``, ``s``: float64 ``[..., K, 2]``; ``m``: bool ``[..., K]``. Returns ``A [..., 2, 2]``,
    ``c [..., 2]``, ``ok [...]`` (>= 2 points with spread); ``A = I, c = 0`` where not ok.
    """
    n, tm, sm, tc, sc = _centred(t, s, m)
    den = (tc * tc).sum((-1, -2))
    re = (sc[..., 0] * tc[..., 0] + sc[..., 1] * tc[..., 1]).sum(-1)
    im = (sc[..., 1] * tc[..., 0] - sc[..., 0] * tc[..., 1]).sum(-1)
    ok = (n >= 2) & (den > 0.25)
    den = torch.where(ok, den, torch.ones_like(den))
    a = torch.where(ok, re / den, torch.ones_like(re))
    bq = torch.where(ok, im / den, torch.zeros_like(im))
    A = torch.stack([torch.stack([a, -bq], -1), torch.stack([bq, a], -1)], -2)
    c = sm - (A @ tm[..., None])[..., 0]
    c = torch.where(ok[..., None], c, torch.zeros_like(c))
    return A, c, ok


def _fit_affine(t, s, m):
    """Least-squares affine ``s ~ A t + c`` per ``[..., K]`` point set; ``ok`` needs >= 3 points not
    nearly collinear (smallest/largest principal std of the target points > 0.1)."""
    n, tm, sm, tc, sc = _centred(t, s, m)
    C = tc.transpose(-1, -2) @ tc  # [..., 2, 2]
    X = sc.transpose(-1, -2) @ tc
    tr = C[..., 0, 0] + C[..., 1, 1]
    det = C[..., 0, 0] * C[..., 1, 1] - C[..., 0, 1] * C[..., 1, 0]
    disc = (tr * tr / 4.0 - det).clamp_min(0.0).sqrt()
    lmax, lmin = tr / 2.0 + disc, tr / 2.0 - disc
    ok = (n >= 3) & (lmax > 0.25) & (lmin > 0.01 * lmax)
    det = torch.where(ok, det, torch.ones_like(det))
    adj = torch.stack(
        [torch.stack([C[..., 1, 1], -C[..., 0, 1]], -1), torch.stack([-C[..., 1, 0], C[..., 0, 0]], -1)], -2
    )
    A = X @ (adj / det[..., None, None])
    eye = torch.eye(2, dtype=t.dtype, device=t.device).expand_as(A)
    A = torch.where(ok[..., None, None], A, eye)
    c = sm - (A @ tm[..., None])[..., 0]
    c = torch.where(ok[..., None], c, torch.zeros_like(c))
    return A, c, ok


def _scale_ok(A, max_scale: float):
    sv = torch.linalg.svdvals(A)  # [..., 2], descending
    return (sv[..., 0] <= max_scale) & (sv[..., 1] >= 1.0 / max_scale)


def _axes(P: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """``[B, 18, 2]`` points (with the neck) -> ``[B, 3, 2]``: neck, mid-hip, face centre (mean of
    the face points present in both poses; zeros when absent, see :func:`_axes_present`)."""
    mid_hip = (P[:, 11] + P[:, 12]) / 2.0
    fm = shared[:, :5].to(P.dtype)
    face = (P[:, :5] * fm[..., None]).sum(1) / fm.sum(1).clamp_min(1.0)[:, None]
    return torch.stack([P[:, _NECK], mid_hip, face], 1)


def _axes_present(shared: torch.Tensor) -> torch.Tensor:
    """Presence ``[B, 3]`` of the points of :func:`_axes`."""
    return torch.stack([shared[:, _NECK], shared[:, 11] & shared[:, 12], shared[:, :5].any(1)], 1)


def _clamp_scale(A, max_scale: float):
    """``A`` with its singular values clamped into ``[1 / max_scale, max_scale]`` (same rotations)."""
    U, sv, Vh = torch.linalg.svd(A)
    sv = sv.clamp(1.0 / max_scale, max_scale)
    return U @ torch.diag_embed(sv) @ Vh


# --------------------------------------------------------------------------- distances
def _segment_sqdist(X, Y, a, b):
    """Squared distance from pixel centres ``(X, Y)`` (``[h, w]``-broadcastable) to segments ``a-b``
    (``[B, S, 2]``) -> ``[B, S, h, w]``; a zero-length segment is its point."""
    ax, ay = a[..., 0, None, None], a[..., 1, None, None]
    vx, vy = (b[..., 0] - a[..., 0])[..., None, None], (b[..., 1] - a[..., 1])[..., None, None]
    vv = vx * vx + vy * vy
    vv = torch.where(vv > 1e-12, vv, torch.full_like(vv, float("inf")))  # a point: t = 0
    px, py = X - ax, Y - ay
    # full-size [B, S, h, w] work in place: this runs per part and pixel on every warp and check
    t = (px * vx + py * vy).div_(vv).clamp_(0.0, 1.0)
    dx = torch.addcmul(px, t, vx, value=-1.0)
    dy = torch.addcmul(py, t, vy, value=-1.0)
    return dx.mul_(dx).addcmul_(dy, dy)


def _convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Vertices of the convex hull of ``(x, y)`` points, counter-clockwise in x-right/y-up terms
    (every interior point is on the positive side of each edge ``a -> b``: ``(b - a) x (p - a) > 0``),
    collinear points dropped; 1 or 2 points (or all collinear: the two ends) come back as a point
    or a segment. Andrew's monotone chain (Andrew 1979)."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return pts

    def turn(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[tuple[float, float]] = []
    upper: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and turn(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and turn(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return hull if len(hull) >= 2 else pts[:1] + pts[-1:]


def _hull_distance(X, Y, pts, mask):
    """Distance from pixel centres to the convex hull of the present points (0 inside).

    ``pts`` ``[B, K, 2]``, ``mask`` ``[B, K]`` -> ``[B, h, w]`` (``inf`` where no point is present).
    Each item's hull (:func:`_convex_hull`, at most ``K`` edges) is found on the CPU; a pixel is
    inside when it is on the inner side of every edge of a hull with area, and outside its distance
    is the minimum over the hull's edges (a single present point: the distance to it; two, or all
    on a line: to the segment between the extreme ones).
    """
    b = pts.shape[0]
    P = pts.detach().cpu().double().tolist()
    M = mask.detach().cpu().tolist()
    hulls = [_convex_hull([(p[0], p[1]) for p, m in zip(P[i], M[i]) if m]) for i in range(b)]
    e = max([1] + [len(h) for h in hulls])
    a = torch.zeros(b, e, 2, dtype=torch.float64)
    c = torch.zeros(b, e, 2, dtype=torch.float64)
    used = torch.zeros(b, dtype=torch.bool)
    poly = torch.zeros(b, dtype=torch.bool)
    for i, h in enumerate(hulls):
        n = len(h)
        if n == 0:
            continue
        used[i] = True
        ends = [(h[j], h[(j + 1) % n]) for j in range(n)] if n >= 2 else [(h[0], h[0])]
        ends += [(h[-1], h[-1])] * (e - len(ends))  # padding: a zero-length edge on a vertex
        a[i] = torch.tensor([u for u, _ in ends], dtype=torch.float64)
        c[i] = torch.tensor([v for _, v in ends], dtype=torch.float64)
        twice_area = sum(h[j][0] * h[(j + 1) % n][1] - h[(j + 1) % n][0] * h[j][1] for j in range(n))
        poly[i] = n >= 3 and abs(twice_area) > 1e-6
    dev = pts.device
    a, c = a.to(device=dev, dtype=pts.dtype), c.to(device=dev, dtype=pts.dtype)
    d = _segment_sqdist(X, Y, a, c).amin(1)
    ex, ey = (c[..., 0] - a[..., 0])[..., None, None], (c[..., 1] - a[..., 1])[..., None, None]
    side = ex * (Y - a[..., 1, None, None]) - ey * (X - a[..., 0, None, None])  # (c - a) x (p - a)
    inside = (side >= 0).all(1) & poly.to(dev)[:, None, None]
    d = torch.where(inside, torch.zeros_like(d), d)
    d = torch.where(used.to(dev)[:, None, None], d, torch.full_like(d, float("inf")))
    return d.sqrt()


def _part_distances(K: torch.Tensor, shared: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Pixel distances ``float32 [B, P, h, w]`` from every pixel centre of an ``hw`` frame to each
    part of :data:`PARTS` (bone segments; torso and head convex hulls, 0 inside) of the extended
    18-point set ``K`` ``[B, 18, 2]`` in pixels of that frame (x, y). ``inf`` for a bone with an
    end not in ``shared`` ``bool [B, 18]`` and for a torso or head none of whose points are."""
    h, w = int(hw[0]), int(hw[1])
    Kf = K.float()
    dev = K.device
    ys = torch.arange(h, device=dev, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=dev, dtype=torch.float32)[None, :]
    ia = torch.tensor([a for _, (a, _) in BONES], device=dev)
    ib = torch.tensor([b for _, (_, b) in BONES], device=dev)
    d_bone = _segment_sqdist(xs, ys, Kf[:, ia], Kf[:, ib]).sqrt()
    d_bone = torch.where((shared[:, ia] & shared[:, ib])[..., None, None], d_bone, torch.full_like(d_bone, float("inf")))
    ti, hi_ = list(_TORSO), list(_HEAD)
    d_torso = _hull_distance(xs, ys, Kf[:, ti], shared[:, ti])
    d_head = _hull_distance(xs, ys, Kf[:, hi_], shared[:, hi_])
    return torch.cat([d_bone, d_torso[:, None], d_head[:, None]], 1)


#: Part groups of :func:`foreign_part_mask`: joint neighbours (upper arm and forearm, thigh and
#: shin) are one group, so pixels at an elbow or a knee never count as foreign.
_PART_GROUP = (0, 1, 0, 1, 2, 3, 2, 3, 4, 5)  # left arm, right arm, left leg, right leg, torso, head


def _owner(d: torch.Tensor, s: torch.Tensor, margin: float) -> torch.Tensor:
    """``long [B, h, w]``: the part group that clearly owns each pixel, -1 for none.

    A pixel belongs to the group with the smallest biased distance ``d + bias * s`` (limbs win over
    the torso within ``_TORSO_BIAS * s``, as in :func:`limb_flow`) when it lies within one of that
    group's part radii and every other group is at least ``margin * s`` farther away."""
    bias = torch.zeros(len(PARTS), device=d.device)
    bias[len(BONES)] = _TORSO_BIAS
    radius = torch.tensor(_BONE_RADIUS + (_TORSO_RADIUS, _HEAD_RADIUS), device=d.device)
    sb = s.reshape(-1, 1, 1, 1)
    db = d + bias[None, :, None, None] * sb
    group = torch.tensor(_PART_GROUP, device=d.device)
    groups = range(int(group.max()) + 1)
    dg = torch.stack([db[:, group == g].amin(1) for g in groups], 1)  # [B, G, h, w]
    within = torch.stack([(d[:, group == g] <= radius[group == g][None, :, None, None] * sb).any(1) for g in groups], 1)
    two = torch.topk(dg, 2, dim=1, largest=False)
    best, second = two.values[:, 0], two.values[:, 1]
    own = two.indices[:, 0]
    clear = torch.gather(within, 1, own[:, None])[:, 0] & (second - best >= margin * sb[:, 0])
    return torch.where(clear & torch.isfinite(best), own, torch.full_like(own, -1))


@torch.no_grad()
def foreign_part_mask(source_kp, target_kp, grid: torch.Tensor, out_hw, *, min_score: float = 0.5, margin: float = 0.03,
                      match_view: bool = False, depth_order: bool = False) -> torch.Tensor:
    """Where the warp copies another body part: ``float32 [B, 1, h, w]`` in ``{0, 1}``.

    A target pixel that clearly belongs to one part group of the target pose (left arm, right arm,
    left leg, right leg, torso, head; see :func:`_owner`) but samples, through ``grid``, a source
    pixel that clearly belongs to *another* group of the source pose copies that part's texture:
    a ghost arm on the torso where the source's arm lay across it, a second leg where the legs
    crossed. Such pixels have no true source pixel (the part behind was occluded in the source).

    Args:
        source_kp, target_kp: ``float [B, 17, 3]`` COCO-17 in pixels of the ``out_hw`` frame.
        grid: ``float [B, h, w, 2]`` from :func:`limb_flow` (same frame).
        out_hw: ``(h, w)``.
        min_score: joint presence threshold.
        margin: how much nearer (fraction of the person scale) the owning group must be than any
            other, so that boundary pixels between parts never count.
        match_view: the source's parts as :func:`limb_flow` with ``match_view=True`` paired them
            (:func:`view_matched_source`); pass the same value the grid was made with.
        depth_order: ownership in both poses with a side-on person's far limbs behind what covers
            them (:func:`_depth_ordered`, as :func:`limb_flow` with ``depth_order=True``): a torso
            pixel with the far arm hidden behind it belongs to the torso, so a far arm drawn from
            there copies the torso, and the torso sampling itself there copies nothing.

    Returns:
        ``float32 [B, 1, h, w]``, 1 where the sampled source pixel belongs to another part group.
    """
    src = _as_kp_tensor(source_kp)
    tgt = _as_kp_tensor(target_kp, src.device)
    if match_view:
        src = view_matched_source(src, tgt, min_score=min_score)
    h, w = int(out_hw[0]), int(out_hw[1])
    ps, pt = _present(src, min_score), _present(tgt, min_score)
    S, ps = _extend_with_neck(torch.nan_to_num(src[..., :2].double()), ps)
    T, pt = _extend_with_neck(torch.nan_to_num(tgt[..., :2].double()), pt)
    shared = ps & pt

    def owner(kp, K):
        d = _part_distances(K, shared, (h, w))
        s = person_scale(kp, (h, w), min_score=min_score)
        if depth_order:
            d = _depth_ordered(d, torch.as_tensor(near_side(kp.cpu().numpy(), min_score), device=d.device), s.reshape(-1, 1, 1, 1))
        return _owner(d, s, margin)

    own_t, own_s = owner(tgt, T), owner(src, S)
    g = grid.to(device=src.device, dtype=torch.float32)
    sampled = F.grid_sample(own_s[:, None].float(), g, mode="nearest", padding_mode="border", align_corners=False)[:, 0].long()
    foreign = (own_t >= 0) & (sampled >= 0) & (own_t != sampled)
    return foreign[:, None].float()


def _depth_ordered(d: torch.Tensor, near: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Part distances with a side-on person's far limbs pushed behind what covers them.

    ``d`` ``float32 [B, P, h, w]`` (:func:`_part_distances`, unused parts ``inf``), ``near``
    ``int [B]`` (:func:`~posegen.pose.keypoints.near_side`: +1 the left side is near, -1 the right,
    0 leaves the item unchanged), ``s`` ``[B, 1, 1, 1]`` person scales in pixels. A pixel is
    covered where it lies within a near arm bone's radius or within the torso bias of the torso
    hull (the torso's extent in the soft assignment) for the far arm, and within a near leg bone's
    radius for the far leg; there the far limb's distance grows by :data:`_OCCLUDED` person
    scales, so the covering part takes the pixel. Elsewhere (a far arm swung clear of the body)
    the far limb keeps its pixels.
    """
    out = d.clone()
    torso = len(BONES)
    radius = torch.tensor(_BONE_RADIUS, device=d.device)
    for side in (1, -1):
        sel = near == side
        if not bool(sel.any()):
            continue
        dd, sb = d[sel], s[sel]

        def covered(bones):
            idx = list(bones)
            return (dd[:, idx] <= radius[idx][None, :, None, None] * sb).any(1, keepdim=True)

        arm = covered(_ARM[side]) | (dd[:, torso:torso + 1] <= _TORSO_BIAS * sb)
        leg = covered(_LEG[side])
        far_arm, far_leg = list(_ARM[-side]), list(_LEG[-side])
        sub = out[sel]
        sub[:, far_arm] = sub[:, far_arm] + _OCCLUDED * sb * arm.float()
        sub[:, far_leg] = sub[:, far_leg] + _OCCLUDED * sb * leg.float()
        out[sel] = sub
    return out


# --------------------------------------------------------------------------- the flow
@torch.no_grad()
def limb_flow(
    source_kp,
    target_kp,
    out_hw,
    *,
    min_score: float = 0.5,
    softness: float = 0.04,
    max_part_scale: float = 4.0,
    scale_mode: str = "drop",
    torso_max_anisotropy: float | None = None,
    view_robust: bool = False,
    match_view: bool = False,
    depth_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense target->source flow from per-part transforms fitted on the keypoints (see the module).

    Args:
        source_kp: ``float [B, 17, 3]`` COCO-17 ``(x, y, score)`` of the source image, ALREADY in
            model-frame pixels (:func:`keypoints_to_frame`), numpy or torch.
        target_kp: ``float [B, 17, 3]``, the target pose in the same frame.
        out_hw: model frame ``(h, w)``.
        min_score: a joint with a lower score is absent.
        softness: the soft-assignment temperature ``tau`` as a fraction of the target person's
            scale (:func:`person_scale`); smaller = sharper part boundaries. With the default, a
            part 3.75 tau away from a pixel (5 px for a 128 px tall person) pulls it by < 0.1 %.
        max_part_scale: the bound on a part transform's scale (singular values outside
            ``[1 / max_part_scale, max_part_scale]``).
        scale_mode: what happens to a part transform outside that bound: ``"drop"`` (the part is
            not used; the original behaviour) or ``"clamp"`` (its singular values are clamped into
            the bound, keeping rotation and the part's anchor point, so a foreshortened limb is
            moved but never zoomed: the bounded part transforms of posegen's default model).
        torso_max_anisotropy: None keeps the free least-squares affine torso. A number: the torso
            uses the affine fit only when it has no reflection (``det > 0``) and the ratio of its
            singular values is at most this; otherwise (a change of view, e.g. a side-view torso
            fitted onto a back view) it falls back to the least-squares similarity, which cannot
            stretch the torso.
        view_robust: fit the torso's similarity fallback and the head's similarity on their
            *axes* (neck -> mid-hip; neck -> centre of the present face points) instead of on all
            their points. Axes do not depend on left/right, so when the view flips (a front-view
            source, a back-view target: left and right shoulders swap sides) the torso and head
            are not rotated upside down; the head is kept upright (scale and translation only,
            the neck mapped onto the neck).
        match_view: when the two poses face opposite ways (front onto back), pair each source
            limb with the target limb on the same image side (:func:`view_matched_source`)
            instead of the same anatomical side, so limbs are not dragged across the body.
        depth_order: for a side-on target (:func:`~posegen.pose.keypoints.near_side`), the far
            arm passes behind the torso and the near arm, and the far leg behind the near leg
            (:func:`_depth_ordered`): where they overlap, the pixel follows the part in front
            instead of drawing the hidden limb across it.

    Returns:
        ``(grid, weight)``: ``grid`` ``float32 [B, h, w, 2]``, for every target-frame pixel the
        source-frame location to sample, in ``grid_sample`` normalised ``(x, y)`` coordinates
        (``align_corners=False``); ``weight`` ``float32 [B, 1, h, w]`` in ``[0, 1]``, how confidently
        the pixel lies on a body part whose transform is defined (~0 far from the body; all 0 when
        no part is present in both poses, where the grid is the global similarity or the identity).
        On ``source_kp``'s device (CPU for numpy). No gradient flows to the keypoints.

    Raises:
        ValueError: keypoints not ``[B, 17, 3]`` or batch sizes differ, non-positive ``out_hw``,
            ``softness <= 0`` or ``max_part_scale <= 1``, an unknown ``scale_mode``.
    """
    if scale_mode not in ("drop", "clamp"):
        raise ValueError(f"scale_mode must be 'drop' or 'clamp', got {scale_mode!r}")
    device = source_kp.device if isinstance(source_kp, torch.Tensor) else (
        target_kp.device if isinstance(target_kp, torch.Tensor) else None
    )
    src = _as_kp_tensor(source_kp, device)
    tgt = _as_kp_tensor(target_kp, src.device)
    if src.shape[0] != tgt.shape[0]:
        raise ValueError(f"source and target batch sizes differ: {src.shape[0]} vs {tgt.shape[0]}")
    if match_view:
        src = view_matched_source(src, tgt, min_score=min_score)
    h, w = int(out_hw[0]), int(out_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"out_hw must be a positive (h, w), got {tuple(out_hw)}")
    if softness <= 0 or max_part_scale <= 1:
        raise ValueError(f"need softness > 0 and max_part_scale > 1, got {softness}, {max_part_scale}")
    b, dev = src.shape[0], src.device
    if b == 0:
        return identity_grid(0, (h, w), dev), torch.zeros(0, 1, h, w, device=dev)

    ps, pt = _present(src, min_score), _present(tgt, min_score)
    S, ps = _extend_with_neck(torch.nan_to_num(src[..., :2].double()), ps)
    T, pt = _extend_with_neck(torch.nan_to_num(tgt[..., :2].double()), pt)
    shared = ps & pt  # [B, 18]

    # ---- per-part transforms (float64), [B, P, 2, 2] and [B, P, 2]
    ia = [a for _, (a, _) in BONES]
    ib = [bb for _, (_, bb) in BONES]
    bone_idx = torch.tensor([ia, ib], device=dev).T  # [8, 2]
    clamp = scale_mode == "clamp"

    def bound(A, c, ok, T_pts, m):
        if not clamp:
            return A, c, ok & _scale_ok(A, max_part_scale)
        A2 = _clamp_scale(A, max_part_scale)
        # keep the part's anchor (its target centroid) mapping where it did
        n = m.to(T_pts.dtype).sum(-1).clamp_min(1.0)[..., None]
        tm = (T_pts * m[..., None].to(T_pts.dtype)).sum(-2) / n
        c2 = c + ((A - A2) @ tm[..., None])[..., 0]
        return A2, c2, ok

    A_b, c_b, ok_b = _fit_similarity(T[:, bone_idx], S[:, bone_idx], shared[:, bone_idx])
    A_b, c_b, ok_b = bound(A_b, c_b, ok_b, T[:, bone_idx], shared[:, bone_idx])

    ti = list(_TORSO)
    A_ta, c_ta, ok_ta = _fit_affine(T[:, ti], S[:, ti], shared[:, ti])
    if torso_max_anisotropy is not None:
        sv = torch.linalg.svdvals(A_ta)
        ok_ta = ok_ta & (torch.linalg.det(A_ta) > 0) & (sv[..., 0] <= torso_max_anisotropy * sv[..., 1])
    A_ta, c_ta, ok_ta = bound(A_ta, c_ta, ok_ta, T[:, ti], shared[:, ti])
    if view_robust:
        Ta, Sa = _axes(T, shared), _axes(S, shared)
        ma = _axes_present(shared)
        A_ts, c_ts, ok_ts = _fit_similarity(Ta[:, :2], Sa[:, :2], ma[:, :2])
        A_ts, c_ts, ok_ts = bound(A_ts, c_ts, ok_ts, Ta[:, :2], ma[:, :2])
    else:
        A_ts, c_ts, ok_ts = _fit_similarity(T[:, ti], S[:, ti], shared[:, ti])
        A_ts, c_ts, ok_ts = bound(A_ts, c_ts, ok_ts, T[:, ti], shared[:, ti])
    A_t = torch.where(ok_ta[:, None, None], A_ta, A_ts)
    c_t = torch.where(ok_ta[:, None], c_ta, c_ts)
    ok_t = ok_ta | ok_ts

    hi_ = list(_HEAD)
    if view_robust:
        # upright head: no rotation (a profile face fitted onto a frontal one would tip the head
        # over), scale = ratio of the neck-to-face distances (bounded), the neck mapped to the neck
        ok_h = ma[:, 0] & ma[:, 2]
        dt = torch.linalg.vector_norm(Ta[:, 2] - Ta[:, 0], dim=-1)
        ds = torch.linalg.vector_norm(Sa[:, 2] - Sa[:, 0], dim=-1)
        ok_h = ok_h & (dt > 0.5)
        k = torch.where(ok_h, ds / dt.clamp_min(1e-6), torch.ones_like(dt)).clamp(1.0 / max_part_scale, max_part_scale)
        A_h = k[:, None, None] * torch.eye(2, dtype=T.dtype, device=dev).expand(b, 2, 2)
        c_h = torch.where(ok_h[:, None], Sa[:, 0] - k[:, None] * Ta[:, 0], torch.zeros_like(Sa[:, 0]))
    else:
        A_h, c_h, ok_h = _fit_similarity(T[:, hi_], S[:, hi_], shared[:, hi_])
        A_h, c_h, ok_h = bound(A_h, c_h, ok_h, T[:, hi_], shared[:, hi_])

    A_g, c_g, _ = _fit_similarity(T[:, :NUM_KEYPOINTS], S[:, :NUM_KEYPOINTS], shared[:, :NUM_KEYPOINTS])

    A = torch.cat([A_b, A_t[:, None], A_h[:, None], A_g[:, None]], 1).float()  # [B, P+1, 2, 2]
    c = torch.cat([c_b, c_t[:, None], c_h[:, None], c_g[:, None]], 1).float()
    ok = torch.cat([ok_b, ok_t[:, None], ok_h[:, None]], 1)  # [B, P]

    # ---- distances in the target frame (float32), [B, P, h, w]
    d = _part_distances(T, shared, (h, w))
    ys = torch.arange(h, device=dev, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=dev, dtype=torch.float32)[None, :]

    s = person_scale(tgt, (h, w), min_score=min_score).to(dev)[:, None, None, None]  # [B,1,1,1]
    tau = softness * s
    bias = torch.zeros(len(PARTS), device=dev)
    bias[len(BONES)] = _TORSO_BIAS
    radius = torch.tensor(_BONE_RADIUS + (_TORSO_RADIUS, _HEAD_RADIUS), device=dev)
    okp = ok[..., None, None]
    d = torch.where(okp, d, torch.full_like(d, float("inf")))
    d_body = d  # the confidence weight: a hidden limb is still body
    if depth_order:
        d = _depth_ordered(d, torch.as_tensor(near_side(tgt.cpu().numpy(), min_score), device=dev), s)

    logits = -0.5 * ((d + bias[None, :, None, None] * s) / tau) ** 2
    g_logit = torch.full((b, 1, h, w), -0.5 * (_GLOBAL_DIST / softness) ** 2, device=dev)
    pi = torch.softmax(torch.cat([logits, g_logit], 1), dim=1)  # [B, P+1, h, w]

    # ---- blended source location
    # sum_p pi_p (A_p x + c_p) = (sum_p pi_p A_p) x + sum_p pi_p c_p: blend the 6 transform
    # coefficients per pixel (one batched matmul), then apply them once
    coef = torch.cat([A.flatten(2), c], 2)  # [B, P+1, 6]: a00 a01 a10 a11 c0 c1
    m = torch.einsum("bphw,bpk->bkhw", pi, coef)  # [B, 6, h, w]
    src_x = m[:, 0] * xs + m[:, 1] * ys + m[:, 4]
    src_y = m[:, 2] * xs + m[:, 3] * ys + m[:, 5]
    grid = torch.stack([(2.0 * src_x + 1.0) / w - 1.0, (2.0 * src_y + 1.0) / h - 1.0], dim=-1)

    # ---- confidence
    aff = torch.exp(-0.5 * (torch.relu(d_body - radius[None, :, None, None] * s) / (_WEIGHT_FALLOFF * s)) ** 2)
    aff = torch.where(okp, aff, torch.zeros_like(aff))
    weight = aff.amax(1, keepdim=True).clamp(0.0, 1.0)
    return grid.float().contiguous(), weight.float().contiguous()


def _resize_maps(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, h, w]`` (float32) to ``hw``, antialiased when shrinking."""
    shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=shrink)


def warp(features: torch.Tensor, grid: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Resample source features with a flow grid from :func:`limb_flow`.

    The grid, given at the model resolution ``(h, w)``, is resized to the features' ``(h', w')``:
    its displacement from :func:`identity_grid` is resized bilinearly (antialiased when shrinking;
    normalised coordinates mean the same place at every resolution) and added back to the
    identity grid at ``(h', w')``, so an identity flow stays exactly the identity. Then
    ``grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)``.

    Args:
        features: ``[B, C, h', w']`` any float dtype and device (source image or feature maps).
        grid: ``[B, h, w, 2]`` normalised ``(x, y)`` sampling locations (``align_corners=False``).
        weight: optional ``[B, 1, h, w]`` confidence; when given, resized the same way and
            multiplied into the output.

    Returns:
        ``[B, C, h', w']`` in ``features``' dtype and device; differentiable w.r.t. ``features``
        (and ``grid``/``weight`` if they require grad).

    Raises:
        ValueError: shapes or batch sizes that do not match.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be [B, C, h, w], got shape {tuple(features.shape)}")
    if grid.ndim != 4 or grid.shape[-1] != 2 or grid.shape[0] != features.shape[0]:
        raise ValueError(
            f"grid must be [B, h, w, 2] with B={features.shape[0]}, got shape {tuple(grid.shape)}"
        )
    bsz, _, fh, fw = features.shape
    h, w = grid.shape[1], grid.shape[2]
    g = grid.to(device=features.device, dtype=torch.float32)
    if (h, w) != (fh, fw):
        ident = identity_grid(bsz, (h, w), features.device)
        delta = _resize_maps((g - ident).permute(0, 3, 1, 2), (fh, fw)).permute(0, 2, 3, 1)
        g = identity_grid(bsz, (fh, fw), features.device) + delta
    out = F.grid_sample(features, g.to(features.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    if weight is not None:
        if weight.ndim != 4 or weight.shape[0] != bsz or weight.shape[1] != 1:
            raise ValueError(f"weight must be [B, 1, h, w] with B={bsz}, got shape {tuple(weight.shape)}")
        wt = weight.to(device=features.device, dtype=torch.float32)
        if wt.shape[-2:] != (fh, fw):
            wt = _resize_maps(wt, (fh, fw))
        out = out * wt.to(features.dtype)
    return out


def composite(
    source: torch.Tensor, grid: torch.Tensor, weight: torch.Tensor, background: torch.Tensor | None = None
) -> torch.Tensor:
    """The warped body over a background: ``weight * warp(source) + (1 - weight) * background``.

    Where the target pose has no body part (weight ~0) the background's pixels stay, so the output
    never has the black holes of a bare warp and keeps the source's surroundings.

    Args:
        source: ``[B, C, h', w']`` images or latents (any float dtype).
        grid, weight: from :func:`limb_flow` (resized to ``(h', w')`` like :func:`warp` does).
        background: ``[B, C, h', w']``, e.g. the source with its person filled in
            (:func:`fill_masked` over :func:`body_mask`); None = the source itself.

    Returns:
        ``[B, C, h', w']`` in ``source``'s dtype.
    """
    warped = warp(source, grid)
    wt = weight.to(device=source.device, dtype=torch.float32)
    if wt.shape[-2:] != source.shape[-2:]:
        wt = _resize_maps(wt, tuple(source.shape[-2:]))
    wt = wt.to(source.dtype)
    bg = source if background is None else background
    return wt * warped + (1 - wt) * bg


@torch.no_grad()
def body_mask(keypoints, out_hw, *, min_score: float = 0.5, gain: float = 2.0) -> torch.Tensor:
    """Soft mask of the person's body in its own image: ``float32 [B, 1, h, w]`` in ``[0, 1]``.

    The confidence weight of :func:`limb_flow` for the identity flow (the pose onto itself), times
    ``gain`` and clipped, so the mask covers the parts' radii plus their falloff. Keypoints are
    ``[B, 17, 3]`` in pixels of the frame ``out_hw`` (h, w).
    """
    kp = _as_kp_tensor(keypoints)
    _, w = limb_flow(kp, kp, out_hw, min_score=min_score)
    return (w * gain).clamp(0.0, 1.0)


def cut_leg_mask(keypoints, out_hw, *, min_score: float = 0.5, gain: float = 2.0) -> torch.Tensor:
    """Soft mask of the legs a pose does not show: ``float32 [B, 1, h, w]`` in ``[0, 1]``.

    Where a hip is present and its knee is not (an upper-body photo whose legs leave the frame, or
    legs the pose model missed), the leg is taken to go straight down from the hip past the bottom
    edge, with the thigh's radius and falloff of :func:`body_mask` (and its ``gain``): the trousers
    of a fashion close-up are part of the person too. Zero where every present hip has its knee.
    Keypoints are ``[B, 17, 3]`` in pixels of the frame ``out_hw`` (h, w).
    """
    kp = _as_kp_tensor(keypoints)
    h, w = int(out_hw[0]), int(out_hw[1])
    pres = _present(kp, min_score)
    s = person_scale(kp, (h, w), min_score=min_score).to(kp.device)[:, None, None]  # [B,1,1]
    ys = torch.arange(h, device=kp.device, dtype=torch.float32)[:, None]
    xs = torch.arange(w, device=kp.device, dtype=torch.float32)[None, :]
    out = torch.zeros(kp.shape[0], h, w, device=kp.device)
    for hip, knee, radius in ((11, 13, _BONE_RADIUS[4]), (12, 14, _BONE_RADIUS[5])):
        cut = (pres[:, hip] & ~pres[:, knee]).float()[:, None, None]
        hx, hy = kp[:, hip, 0, None, None].float(), kp[:, hip, 1, None, None].float()
        d = torch.where(ys >= hy, (xs - hx).abs(), torch.sqrt((xs - hx) ** 2 + (ys - hy) ** 2))  # to the ray down
        out = torch.maximum(out, cut * torch.exp(-0.5 * (torch.relu(d - radius * s) / (_WEIGHT_FALLOFF * s)) ** 2))
    return (out[:, None] * gain).clamp(0.0, 1.0)


def fill_masked(x: torch.Tensor, mask: torch.Tensor, levels: int = 6, known: torch.Tensor | None = None) -> torch.Tensor:
    """Fill the masked region of images or latents from its surroundings (push-pull interpolation).

    Pull: the values outside the mask (``mask < 0.05``; its soft rim is partly person) and their
    0/1 weights are average-pooled level by level;
    push: from the coarsest level back up, each pixel takes its own weighted mean where its weight
    is high and the upsampled coarser estimate where it is low. The result is a smooth background
    under the person: the source with its person removed, where :func:`composite` puts the warped
    body (Gortler et al. 1996, "The Lumigraph", push-pull).

    Args:
        x: ``[B, C, h, w]`` float.
        mask: ``[B, 1, h, w]`` in ``[0, 1]`` (1 = to fill), resized to ``x`` when needed.
        levels: pyramid levels (each halves the size, stopping at 1 pixel).
        known: ``[B, 1, h, w]`` (resized like ``mask``): pixels below 0.5 are not samples either
            (the edge padding of a letterboxed frame, :meth:`posegen.latent.Letterbox.inside_mask`,
            repeats the image's border rows: a cut-off person's clothes). None: every pixel.

    Returns:
        ``[B, C, h, w]``: ``x * (1 - mask) + filled * mask`` in ``x``'s dtype.
    """
    m = mask.to(device=x.device, dtype=torch.float32)
    if m.shape[-2:] != x.shape[-2:]:
        m = _resize_maps(m, tuple(x.shape[-2:])).clamp(0.0, 1.0)
    xf = x.float()
    wgt = (m < 0.05).to(xf.dtype)  # the soft rim of the mask (partly person) is not background
    if known is not None:
        k = known.to(device=x.device, dtype=torch.float32)
        if k.shape[-2:] != x.shape[-2:]:
            k = _resize_maps(k, tuple(x.shape[-2:]))
        wgt = wgt * (k >= 0.5).to(xf.dtype)
    pyr = [(xf * wgt, wgt)]
    for _ in range(levels):
        v, wv = pyr[-1]
        if min(v.shape[-2:]) < 2:
            break
        pyr.append((F.avg_pool2d(v, 2, ceil_mode=True), F.avg_pool2d(wv, 2, ceil_mode=True)))
    v, wv = pyr[-1]
    # a coarsest cell without a sample takes the mean of every sample (zero when there is none)
    overall = (xf * wgt).sum((-2, -1), keepdim=True) / wgt.sum((-2, -1), keepdim=True).clamp_min(1e-6)
    est = torch.where(wv > 1e-6, v / wv.clamp_min(1e-6), overall)
    for v, wv in reversed(pyr[:-1]):
        up = F.interpolate(est, size=v.shape[-2:], mode="bilinear", align_corners=False)
        a = wv.clamp(0.0, 1.0)
        est = a * (v / wv.clamp_min(1e-6)) + (1 - a) * up
    return (xf * (1 - m) + est * m).to(x.dtype)


def align_pose(target_kp, source_kp, *, min_score: float = 0.5, max_scale: float = 2.0) -> np.ndarray:
    """Move and scale a target pose onto the source person's place and size.

    A target pose drawn from another image (another identity, another crop) is placed where the
    source person stands: uniform scale ``person_scale(source) / person_scale(target)`` (clamped to
    ``[1 / max_scale, max_scale]``) about the target's torso centre, then a translation putting that
    centre on the source's torso centre (the mean of the present shoulders and hips; all present
    joints when no torso joint is present). The warp then only articulates the body, never zooms
    it (RePoseDM's pose alignment, done on the keypoints).

    Args:
        target_kp, source_kp: ``float [B, 17, 3]`` (or ``[17, 3]``) COCO-17 ``(x, y, score)`` in
            pixels of the SAME frame.
        min_score: a joint with a lower score is absent.
        max_scale: bound on the scale change.

    Returns:
        ``float32`` like ``target_kp``, scores unchanged; a pose without present joints (either
        side) is returned unchanged.
    """
    t = np.array(target_kp, dtype=np.float32, copy=True)
    s = np.asarray(source_kp, dtype=np.float32)
    single = t.ndim == 2
    if single:
        t, s = t[None], s[None]
    if t.shape != s.shape or t.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"poses must both be [B, 17, 3], got {t.shape} and {s.shape}")
    frame = (1.0, 1.0)  # person_scale only uses the frame when < 2 joints are present
    st = person_scale(t, frame, min_score=min_score).numpy()
    ss = person_scale(s, frame, min_score=min_score).numpy()
    for i in range(len(t)):
        pt = (t[i, :, 2] >= min_score) & (t[i, :, 2] > 0)
        psrc = (s[i, :, 2] >= min_score) & (s[i, :, 2] > 0)
        if pt.sum() < 2 or psrc.sum() < 2:
            continue
        torso = np.zeros(NUM_KEYPOINTS, bool)
        torso[list(_TORSO)] = True
        ct = t[i, pt & torso, :2].mean(0) if (pt & torso).any() else t[i, pt, :2].mean(0)
        cs = s[i, psrc & torso, :2].mean(0) if (psrc & torso).any() else s[i, psrc, :2].mean(0)
        k = float(np.clip(ss[i] / st[i], 1.0 / max_scale, max_scale))
        t[i, :, :2] = (t[i, :, :2] - ct) * k + cs
    return t[0] if single else t


def limit_placed_limbs(source_kp, target_kp, max_arm: float | None, max_leg: float | None, *, min_score: float = 0.5) -> np.ndarray:
    """Target poses placed on the source person with each limb moved back within the limb-motion
    limits, the source paired as the warp pairs it (:func:`view_matched_source`, labels swapped
    when the two face opposite ways) before :func:`posegen.pose.keypoints.limit_limb_motion` turns
    the limbs. The one place both :class:`~posegen.repose.LatentReposePipeline` (``align`` with
    ``limb_motion_limits``) and ``augment``'s target choice and scoring
    (:func:`posegen.augment.run.placed_target`) limit a target.

    Args:
        source_kp: ``float [17, 3]`` (one source for every target) or ``[N, 17, 3]`` COCO-17
            ``(x, y, score)``, pixels of the source image (x right, y down).
        target_kp: ``float [N, 17, 3]`` (or ``[17, 3]``), already placed on the source person
            (:func:`align_pose`), same pixels.
        max_arm, max_leg: the limits in source torso lengths (None: those limbs unchanged).
        min_score: joint presence threshold.

    Returns:
        ``float32 [N, 17, 3]`` numpy, source pixels.

    Raises:
        ValueError: keypoints that are not ``[17, 3]`` / ``[N, 17, 3]``, batch sizes that differ, a
            limit that is not positive.
    """
    tgt = np.array(target_kp, dtype=np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    src = np.array(source_kp, dtype=np.float32)
    src = np.repeat(src.reshape(1, NUM_KEYPOINTS, 3), len(tgt), 0) if src.ndim == 2 else src
    paired = view_matched_source(src, tgt, min_score=min_score).numpy()
    return limit_limb_motion(paired, tgt, max_arm, max_leg, min_score=min_score)
