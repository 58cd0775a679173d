"""Image-artifact scores of a re-posed image: black holes, torn seams and smears on the person.

A keypoint-driven warp leaves damage that the repair model may not fully hide and that the pose and
identity checks do not see:

- **holes**: target pixels that had no source pixel (the warp sampled outside the source frame or
  off the body) come out black;
- **seams**: where neighbouring parts move differently the texture tears: sharp lines, cut or
  duplicated limb edges;
- **smears**: stretched or resampled texture is blurry, with less fine detail than the source.

Every score compares the output with its *source* image, each in its own person region, so dark
clothes or a blurry camera do not count as damage. Both images are resized to the working frame
:data:`WORK_HW` (256x128, h x w, plain bicubic resize, :func:`posegen.repose.render.resize_image`)
and turned into luminance ``L`` (BT.601, 0..255); keypoints are scaled the same way.

Regions (from the COCO-17 pose, joints with ``score >= min_score``, at least 2 needed; else the
scores are NaN):

- the **person box** (:func:`person_box`): the box of the present joints, padded by 10 % of its
  height on every side, clipped to the frame;
- the **body** (:func:`person_mask`): pixels within ``0.06 x`` box height (>= 3 px) of the skeleton
  (limbs, shoulder and hip lines, torso sides, nose-neck) plus the filled torso quadrilateral.

Scores (:func:`artifact_scores`):

``hole_fraction``
    share of the output's person box made of *hole* pixels minus the same share in the source's
    box. A hole pixel is near-black (every channel <= :data:`BLACK_LEVEL`) and flat (luminance range
    <= :data:`FLAT_RANGE` over its 5x5 window). Real CUHK03 photos have none: dark clothes keep
    JPEG noise and never reach that black (0 of 748 real images had a single such pixel).
``seam_fraction``
    share of the output's body whose contrast-normalised gradient (Sobel magnitude of ``L`` divided
    by ``1 + std(L)`` over the body) exceeds the 99th percentile of the same in the source's body,
    minus that share in the source (1 % by construction): discontinuities stronger than the
    source's strongest edges.
``sharpness_ratio``
    fine-detail share of the output's body divided by the source's: fine detail is
    ``mean |L - gauss_1px(L)|`` over ``mean |grad L|`` (high-frequency energy per unit of edge
    energy, independent of contrast); ``< 1`` = less fine detail than the source (a smear).
``foreign_fraction``
    predicted from the two poses alone, no pixels: the share of the target's body (the limb warp's
    weight > 0.5, :data:`posegen.repose.warp.CONSTRAINED_WARP`) whose warp samples a source pixel
    that clearly belongs to *another* body part (:func:`posegen.repose.warp.foreign_part_mask`): a
    torso pixel copying the arm that lay across it in the source, a leg copying the other leg.
    Such pixels have no true source pixel, and the outputs show a ghost limb or a smear there.
    Looked at on the 348 kept outputs of the README main job (commit 6af7beb): of the 20 with the
    highest fraction (>= 0.06) nearly all show a ghost limb or a smeared limb or bag; of 20 at
    0.000 nearly none.
``invented_fraction``
    predicted from the source image and the two poses: the share of the source's region of the
    256x128 letterbox frame (:mod:`posegen.latent.frame`) that the default model's warp has no
    source pixel for, the repair mask of :func:`posegen.repose.latent.warp_inputs` (the source's
    moved body filled in from its surroundings where the warped body does not cover it, body
    pixels that would sample outside the source frame, and the head of a person who turns round,
    :func:`posegen.repose.latent.turned_head_mask`). On a tight street crop the background
    behind the person is mostly unknown: the default model repaints that region, but legs drawn
    into a large one come out broken or smeared. On the README main job with the check off
    (``benchmarks/ghost_check.py --check invented``, strips
    ``benchmarks/results/invented_check-top.jpg`` / ``-low.jpg``), most of the 20 kept outputs
    with the highest share (0.24-0.35) show such legs; of the 20 lowest (0.00-0.06) one shows
    doubled shorts. At 0.2, 242 of its 282 kept outputs stay.

The thresholds (:class:`posegen.recipe.FilterConfig` ``max_hole_fraction``, ``max_seam_fraction``,
``min_sharpness_ratio``) come from ``benchmarks/filter_thresholds.py``
(``benchmarks/results/filter_thresholds.md``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..pose.keypoints import scale_keypoints
from ..repose.render import resize_image

__all__ = [
    "WORK_HW",
    "ARTIFACT_COLUMNS",
    "BLACK_LEVEL",
    "FLAT_RANGE",
    "person_mask",
    "person_box",
    "hole_map",
    "artifact_scores",
    "foreign_fraction",
    "foreign_fractions",
    "invented_fraction",
    "invented_mask",
    "luminance",
]

#: Working frame ``(h, w)`` in which the artifact scores are computed.
WORK_HW = (256, 128)
#: Columns (score names) of :func:`artifact_scores`.
ARTIFACT_COLUMNS = ("hole_fraction", "seam_fraction", "sharpness_ratio", "foreign_fraction", "invented_fraction")
#: A pixel whose every channel (0..255) is at most this is near-black.
BLACK_LEVEL = 16
#: A 5x5 window whose luminance range (0..255) is at most this is flat.
FLAT_RANGE = 2.0
#: Body radius as a fraction of the keypoint-box height; box padding, the same.
BODY_RADIUS, BOX_PAD = 0.06, 0.10

# skeleton segments of the body region (COCO-17; 17 = neck, the shoulder midpoint)
_SEGMENTS = (
    (5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16),
    (5, 6), (11, 12), (5, 11), (6, 12), (0, 17),
)  # fmt: skip
_TORSO = (5, 6, 12, 11)


def luminance(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB -> ``float64 [H, W]`` luminance (BT.601) on 0..255."""
    f = np.asarray(image, dtype=np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _present(keypoints: np.ndarray, min_score: float):
    kp = np.asarray(keypoints, dtype=np.float64).reshape(17, 3)
    return kp, (kp[:, 2] >= min_score) & np.isfinite(kp).all(1)


def person_box(keypoints: np.ndarray, hw: tuple[int, int] = WORK_HW, *, min_score: float = 0.5) -> np.ndarray | None:
    """``bool [h, w]`` person box of a pose in pixels of the ``hw`` frame (module docstring), or
    None with fewer than 2 present joints or an empty box."""
    kp, pres = _present(keypoints, min_score)
    if pres.sum() < 2:
        return None
    h, w = int(hw[0]), int(hw[1])
    x, y = kp[pres, 0], kp[pres, 1]
    pad = BOX_PAD * float(y.max() - y.min())
    y0, y1 = max(0, int(np.floor(y.min() - pad))), min(h, int(np.ceil(y.max() + pad)) + 1)
    x0, x1 = max(0, int(np.floor(x.min() - pad))), min(w, int(np.ceil(x.max() + pad)) + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _seg_dist2(xx, yy, a, b):
    d = b - a
    L = float(d @ d)
    t = np.zeros_like(xx) if L == 0 else np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / L, 0, 1)
    return (xx - a[0] - t * d[0]) ** 2 + (yy - a[1] - t * d[1]) ** 2


def person_mask(keypoints: np.ndarray, hw: tuple[int, int] = WORK_HW, *, min_score: float = 0.5) -> np.ndarray | None:
    """``bool [h, w]`` body region of a pose: the dilated skeleton plus the torso (module
    docstring), or None with fewer than 2 present joints or an empty region.

    Args:
        keypoints: ``float [17, 3]`` COCO-17 ``(x, y, score)`` in pixels of the ``hw`` frame.
        hw: ``(h, w)`` of the mask.
        min_score: joint presence threshold.
    """
    kp, pres = _present(keypoints, min_score)
    if pres.sum() < 2:
        return None
    h, w = int(hw[0]), int(hw[1])
    xy = kp[:, :2]
    ext = np.vstack([xy, (xy[5] + xy[6]) / 2])
    ep = np.append(pres, pres[5] & pres[6])
    r = max(BODY_RADIUS * float(xy[pres, 1].max() - xy[pres, 1].min()), 3.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    d2 = np.full((h, w), np.inf)
    segs = [(a, b) for a, b in _SEGMENTS if ep[a] and ep[b]]
    for a, b in segs:
        d2 = np.minimum(d2, _seg_dist2(xx, yy, ext[a], ext[b]))
    if not segs:  # isolated joints: discs around them
        for j in np.flatnonzero(pres):
            d2 = np.minimum(d2, (xx - xy[j, 0]) ** 2 + (yy - xy[j, 1]) ** 2)
    mask = d2 <= r * r
    if pres[list(_TORSO)].all():  # the torso quadrilateral (inside = same side of every edge)
        poly = xy[list(_TORSO)]
        s = np.stack([(poly[(i + 1) % 4, 0] - poly[i, 0]) * (yy - poly[i, 1])
                      - (poly[(i + 1) % 4, 1] - poly[i, 1]) * (xx - poly[i, 0]) for i in range(4)])  # fmt: skip
        mask |= (s >= 0).all(0) | (s <= 0).all(0)
    return mask if mask.any() else None


def hole_map(image: np.ndarray) -> np.ndarray:
    """``bool [H, W]`` hole pixels of a ``uint8 [H, W, 3]`` RGB image: near-black and flat."""
    img = np.asarray(image, dtype=np.uint8)
    lum = luminance(img)
    rng = ndimage.maximum_filter(lum, size=5, mode="nearest") - ndimage.minimum_filter(lum, size=5, mode="nearest")
    return (img.max(axis=2) <= BLACK_LEVEL) & (rng <= FLAT_RANGE)


def _grad(lum: np.ndarray) -> np.ndarray:
    return np.hypot(ndimage.sobel(lum, 1, mode="nearest"), ndimage.sobel(lum, 0, mode="nearest")) / 8.0


def artifact_scores(
    output: np.ndarray,
    source: np.ndarray,
    target_keypoints: np.ndarray,
    source_keypoints: np.ndarray,
    *,
    min_score: float = 0.5,
    hw: tuple[int, int] = WORK_HW,
) -> dict[str, float]:
    """Hole, seam and smear scores of one output against its source (see the module docstring).

    Args:
        output: ``uint8 [H, W, 3]`` RGB generated image.
        source: ``uint8 [h, w, 3]`` RGB source image (any size).
        target_keypoints: ``float [17, 3]`` COCO-17 target pose in pixels of ``output``.
        source_keypoints: ``float [17, 3]`` source pose in pixels of ``source``.
        min_score: joint presence threshold.
        hw: working frame ``(h, w)``.

    Returns:
        ``{"hole_fraction", "seam_fraction", "sharpness_ratio", "foreign_fraction", "invented_fraction"}`` (floats); all
        NaN when either pose has fewer than 2 present joints (no person region), a ratio NaN when
        the source has no detail.
    """
    res = {k: float("nan") for k in ARTIFACT_COLUMNS}
    out, src = np.asarray(output, dtype=np.uint8), np.asarray(source, dtype=np.uint8)
    h, w = int(hw[0]), int(hw[1])
    t_kp = scale_keypoints(np.asarray(target_keypoints, np.float32).reshape(17, 3), (out.shape[1], out.shape[0]), (w, h))
    s_kp = scale_keypoints(np.asarray(source_keypoints, np.float32).reshape(17, 3), (src.shape[1], src.shape[0]), (w, h))
    b_out, b_src = person_box(t_kp, hw, min_score=min_score), person_box(s_kp, hw, min_score=min_score)
    m_out, m_src = person_mask(t_kp, hw, min_score=min_score), person_mask(s_kp, hw, min_score=min_score)
    if b_out is None or b_src is None or m_out is None or m_src is None:
        return res
    o, s = resize_image(out, hw), resize_image(src, hw)
    res["hole_fraction"] = float(hole_map(o)[b_out].mean() - hole_map(s)[b_src].mean())
    lo, ls = luminance(o), luminance(s)
    go, gs = _grad(lo), _grad(ls)
    no, ns = go / (1.0 + lo[m_out].std()), gs / (1.0 + ls[m_src].std())
    t = float(np.percentile(ns[m_src], 99))
    res["seam_fraction"] = float((no[m_out] > t).mean() - (ns[m_src] > t).mean())
    fo = np.abs(lo - ndimage.gaussian_filter(lo, 1.0, mode="nearest"))
    fs = np.abs(ls - ndimage.gaussian_filter(ls, 1.0, mode="nearest"))
    den = fs[m_src].mean() / max(gs[m_src].mean(), 1e-9)
    if den > 0 and go[m_out].mean() > 0:
        res["sharpness_ratio"] = float(fo[m_out].mean() / go[m_out].mean() / den)
    elif den > 0:
        res["sharpness_ratio"] = 0.0
    res["foreign_fraction"] = foreign_fraction(s_kp, t_kp, hw, min_score=min_score)
    t_src = scale_keypoints(np.asarray(target_keypoints, np.float32).reshape(17, 3), (out.shape[1], out.shape[0]), (src.shape[1], src.shape[0]))
    res["invented_fraction"] = invented_fraction(src, source_keypoints, t_src, min_score=min_score)
    return res


def invented_fraction(source: np.ndarray, source_keypoints: np.ndarray, target_keypoints: np.ndarray, *, min_score: float = 0.5) -> float:
    """Share of the frame the default model's warp must invent (module docstring).

    Args:
        source: ``uint8 [h, w, 3]`` RGB source image (any size).
        source_keypoints, target_keypoints: ``float [17, 3]`` COCO-17 ``(x, y, score)``, both in
            pixels of ``source`` (x right, y down).
        min_score: joint presence threshold.

    Returns:
        The mean of :func:`posegen.repose.latent.warp_inputs`' repair mask (``[0, 1]``) over the
        source's region of the 256x128 letterbox frame, in ``[0, 1]``; NaN when either pose has
        fewer than 2 present joints.

    Raises:
        ValueError: keypoints that are not 17 ``(x, y, score)`` rows.
    """
    found = invented_mask(source, source_keypoints, target_keypoints, min_score=min_score)
    if found is None:
        return float("nan")
    repair, inside = found
    return float(repair[inside].mean())


def invented_mask(source: np.ndarray, source_keypoints: np.ndarray, target_keypoints: np.ndarray, *,
                  min_score: float = 0.5) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """Where the default model's warp must invent pixels, in the source's 256x128 letterbox frame
    (:mod:`posegen.latent.frame`).

    Args: as :func:`invented_fraction`.

    Returns:
        ``(repair float32 [256, 128] in [0, 1], inside bool [256, 128])``: :func:`posegen.repose.latent.warp_inputs`'
        repair mask and the source's region of the frame; None when either pose has fewer than 2
        present joints.

    Raises:
        ValueError: keypoints that are not 17 ``(x, y, score)`` rows.
    """
    import torch

    from ..latent import letterbox_params, to_frame_keypoints
    from ..repose.latent import FRAME_HW, warp_inputs

    sk = np.asarray(source_keypoints, np.float32).reshape(17, 3)
    tk = np.asarray(target_keypoints, np.float32).reshape(17, 3)
    if min((sk[:, 2] >= min_score).sum(), (tk[:, 2] >= min_score).sum()) < 2:
        return None
    src = np.asarray(source, dtype=np.uint8)
    box = letterbox_params((src.shape[1], src.shape[0]), FRAME_HW)
    x = torch.from_numpy(np.ascontiguousarray(box.image_to_frame(src))).permute(2, 0, 1)[None].float() / 255.0
    inside = torch.from_numpy(np.ascontiguousarray(box.inside_mask()))[None, None].float()
    skp = torch.from_numpy(to_frame_keypoints(sk, box))[None]
    tkp = torch.from_numpy(to_frame_keypoints(tk, box))[None]
    _, repair = warp_inputs(x, skp, tkp, min_score, return_repair=True, inside=inside, upscale=box.scale[0])
    return repair[0, 0].numpy(), inside[0, 0].numpy() >= 0.5


def foreign_fraction(source_keypoints: np.ndarray, target_keypoints: np.ndarray, hw: tuple[int, int] = WORK_HW, *, min_score: float = 0.5) -> float:
    """Share of the target body whose limb warp copies another body part (module docstring).

    Args:
        source_keypoints, target_keypoints: ``float [17, 3]`` COCO-17 poses, both in pixels of the
            ``hw`` frame ``(h, w)``.
        hw: the frame.
        min_score: joint presence threshold.

    Returns:
        A share in ``[0, 1]``; NaN when the target pose has no body (no warp weight > 0.5).
    """
    s = np.asarray(source_keypoints, np.float32).reshape(1, 17, 3)
    return float(foreign_fractions(s, np.asarray(target_keypoints, np.float32).reshape(1, 17, 3), hw, min_score=min_score)[0])


def foreign_fractions(source_keypoints: np.ndarray, target_keypoints: np.ndarray, hw: tuple[int, int] = WORK_HW, *,
                      min_score: float = 0.5) -> np.ndarray:  # fmt: skip
    """:func:`foreign_fraction` of a batch of pairs in one pass (``augment``'s target choice).

    Args:
        source_keypoints: ``float [N, 17, 3]``, or ``[17, 3]`` for one source against every target.
        target_keypoints: ``float [N, 17, 3]``; both COCO-17 ``(x, y, score)`` in pixels of the
            ``hw`` frame ``(h, w)`` (x right, y down).
        hw, min_score: as :func:`foreign_fraction`.

    Returns:
        ``float64 [N]`` shares in ``[0, 1]``, NaN where the target pose has no body.

    Raises:
        ValueError: keypoints that are not 17 ``(x, y, score)`` rows, or a source batch that is
            neither 1 nor ``N``.
    """
    import torch

    from ..repose.warp import CONSTRAINED_WARP, foreign_part_mask, limb_flow

    tk = torch.as_tensor(np.asarray(target_keypoints, np.float32).reshape(-1, 17, 3))
    sk = torch.as_tensor(np.asarray(source_keypoints, np.float32).reshape(-1, 17, 3))
    if sk.shape[0] not in (1, tk.shape[0]):
        raise ValueError(f"need 1 source pose or one per target, got {sk.shape[0]} for {tk.shape[0]} targets")
    sk = sk.expand(tk.shape[0], 17, 3).contiguous()
    grid, weight = limb_flow(sk, tk, hw, min_score=min_score, **CONSTRAINED_WARP)
    body = weight[:, 0] > 0.5
    foreign = foreign_part_mask(sk, tk, grid, hw, min_score=min_score, match_view=CONSTRAINED_WARP["match_view"],
                                depth_order=CONSTRAINED_WARP["depth_order"])[:, 0]  # fmt: skip
    n = body.sum((1, 2)).double()
    share = (foreign * body).sum((1, 2)).double() / n.clamp_min(1)
    return torch.where(n > 0, share, torch.full_like(share, float("nan"))).numpy()
