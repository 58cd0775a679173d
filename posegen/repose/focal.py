"""Multi-focal conditioning regions: face, upper-body and lower-body boxes from keypoints, and crops.

MCLD (Multi-focal Conditioned Latent Diffusion for person image synthesis, 2025) conditions the
denoiser not only on the whole source image but also on crops of the regions whose details a
diffusion model tends to lose -- the face and the clothing/texture of the upper and lower body --
each encoded as its own group of condition tokens. posegen takes the regions from the source pose:
:func:`focal_boxes` turns COCO-17 keypoints into one box per region of :data:`REGIONS` and
:func:`crop_regions` cuts fixed-size crops out of an image batch with
:func:`torchvision.ops.roi_align` (differentiable w.r.t. the images).

Regions (COCO-17 joint indices, :data:`~posegen.pose.keypoints.COCO17_NAMES`):

- ``face``: nose, eyes, ears (0-4). A square box centred on the present face joints (moved up by
  5 % of its side: the face joints sit around the eye line, half-way down the head), side
  ``max(1.6 * spread, 0.5 * shoulder width, 0.4 * torso length)`` -- ``spread`` is the larger extent
  (x or y) of the present face joints, the shoulder width and torso length (shoulder midpoint to
  hip midpoint) count only when their joints are present.
- ``upper``: shoulders, elbows, wrists, hips (5-12): the box of the present joints (torso + arms).
- ``lower``: hips, knees, ankles (11-16): the box of the present joints.

Every box is padded on each side by ``margin * max(box width, box height)`` (so a thin box, e.g.
legs seen from the side, still covers the limbs' width), then clipped to the image when its size is
given. A region with fewer than ``min_joints`` present joints (``score >= min_score``), or whose
clipped box is under 1 pixel wide or high, is invalid.

Coordinates: boxes are ``(x0, y0, x1, y1)`` in posegen's pixel-index convention, the same frame as
the keypoints (x right, y down, the centre of the top-left pixel is ``(0, 0)``, so an image of
width ``W`` spans ``[-0.5, W - 0.5]``); :func:`crop_regions` converts them to roi_align's
continuous convention (pixel ``i`` spans ``[i, i + 1]``) itself.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import roi_align

from posegen.pose.keypoints import NUM_KEYPOINTS
from .warp import image_sizes_tensor

__all__ = ["REGIONS", "REGION_JOINTS", "focal_boxes", "crop_regions"]

#: Region names, in the order of the boxes / crops.
REGIONS: tuple[str, ...] = ("face", "upper", "lower")
#: COCO-17 joints of each region.
REGION_JOINTS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4),
    (5, 6, 7, 8, 9, 10, 11, 12),
    (11, 12, 13, 14, 15, 16),
)

_FACE_SPREAD = 1.6
_FACE_SHOULDER = 0.5
_FACE_TORSO = 0.4
_FACE_UP = 0.05


def _box_of(xy: torch.Tensor, pres: torch.Tensor) -> torch.Tensor:
    """Bounding box ``[B, 4]`` of the present points (zeros where none)."""
    big = torch.finfo(xy.dtype).max
    lo = torch.where(pres[..., None], xy, torch.full_like(xy, big)).amin(1)
    hi = torch.where(pres[..., None], xy, torch.full_like(xy, -big)).amax(1)
    box = torch.cat([lo, hi], -1)
    return torch.where(pres.any(1)[:, None], box, torch.zeros_like(box))


def focal_boxes(
    keypoints,
    sizes=None,
    *,
    min_score: float = 0.5,
    min_joints: tuple[int, int, int] = (2, 3, 2),
    margin: float = 0.15,
):
    """One box per region of :data:`REGIONS` (face, upper body, lower body) from COCO-17 keypoints.

    Args:
        keypoints: ``float [B, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels (pixel-index
            convention, x right, y down); numpy or torch.
        sizes: optional ``[B, 2]`` (or one) ``(width, height)`` of the images, to clip the boxes to
            ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``; without it the boxes are not clipped.
        min_score: a joint with a lower score (or score 0, or non-finite) is absent.
        min_joints: the fewest present joints for (face, upper, lower) to be valid.
        margin: padding on each side, as a fraction of the larger side of the region's box.

    Returns:
        ``(boxes, valid)``: ``boxes`` ``float32 [B, 3, 4]`` ``(x0, y0, x1, y1)`` in the keypoints'
        pixels (zeros for an invalid region), ``valid`` ``bool [B, 3]``; numpy arrays for numpy
        input, tensors on the keypoints' device for torch input.

    Raises:
        ValueError: keypoints not ``[B, 17, 3]``, sizes not ``[B, 2]``/``(2,)`` or not positive,
            ``margin < 0`` or ``min_joints`` not three non-negative counts.
    """
    is_numpy = not isinstance(keypoints, torch.Tensor)
    if is_numpy:
        kp = torch.as_tensor(np.asarray(keypoints, dtype=np.float32))
    else:
        kp = keypoints.detach().float()
    if kp.ndim != 3 or kp.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape [B, 17, 3] (COCO-17 x, y, score), got {tuple(kp.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if len(min_joints) != len(REGIONS) or any(int(m) < 0 for m in min_joints):
        raise ValueError(f"min_joints must be three non-negative counts (face, upper, lower), got {min_joints}")
    b, dev = kp.shape[0], kp.device
    xy = torch.nan_to_num(kp[..., :2].double())
    pres = (kp[..., 2] >= min_score) & (kp[..., 2] > 0) & torch.isfinite(kp).all(-1)

    boxes, valid = [], []
    for r, joints in enumerate(REGION_JOINTS):
        j = list(joints)
        p = pres[:, j]
        box = _box_of(xy[:, j], p)
        if REGIONS[r] == "face":
            n = p.sum(1).clamp_min(1)
            centre = (xy[:, j] * p[..., None]).sum(1) / n[:, None]
            spread = torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
            zero = torch.zeros_like(spread)
            shoulders = pres[:, 5] & pres[:, 6]
            hips = pres[:, 11] & pres[:, 12]
            sw = torch.where(shoulders, torch.linalg.vector_norm(xy[:, 5] - xy[:, 6], dim=-1), zero)
            tl = torch.where(
                shoulders & hips,
                torch.linalg.vector_norm((xy[:, 5] + xy[:, 6] - xy[:, 11] - xy[:, 12]) / 2.0, dim=-1),
                zero,
            )
            side = torch.maximum(torch.maximum(_FACE_SPREAD * spread, _FACE_SHOULDER * sw), _FACE_TORSO * tl)
            cy = centre[:, 1] - _FACE_UP * side
            half = side / 2.0
            box = torch.stack([centre[:, 0] - half, cy - half, centre[:, 0] + half, cy + half], -1)
        pad = margin * torch.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1])
        box = box + torch.stack([-pad, -pad, pad, pad], -1)
        boxes.append(box)
        valid.append(p.sum(1) >= int(min_joints[r]))
    boxes_t = torch.stack(boxes, 1)  # [B, 3, 4] float64
    valid_t = torch.stack(valid, 1)

    if sizes is not None:
        sz = image_sizes_tensor(sizes, b, dev)
        lo = torch.full_like(boxes_t[..., 0], -0.5)
        wmax = (sz[:, 0, None] - 0.5).expand_as(lo)
        hmax = (sz[:, 1, None] - 0.5).expand_as(lo)
        boxes_t = torch.stack(
            [
                torch.minimum(torch.maximum(boxes_t[..., 0], lo), wmax),
                torch.minimum(torch.maximum(boxes_t[..., 1], lo), hmax),
                torch.minimum(torch.maximum(boxes_t[..., 2], lo), wmax),
                torch.minimum(torch.maximum(boxes_t[..., 3], lo), hmax),
            ],
            -1,
        )
    valid_t = valid_t & (boxes_t[..., 2] - boxes_t[..., 0] >= 1.0) & (boxes_t[..., 3] - boxes_t[..., 1] >= 1.0)
    boxes_t = torch.where(valid_t[..., None], boxes_t, torch.zeros_like(boxes_t)).float()
    if is_numpy:
        return boxes_t.numpy(), valid_t.numpy()
    return boxes_t, valid_t


def crop_regions(images: torch.Tensor, boxes, valid, out_hw=(16, 16)) -> torch.Tensor:
    """Fixed-size crops of the focal regions, via :func:`torchvision.ops.roi_align` (``aligned=True``).

    Args:
        images: ``float [B, C, H, W]`` (any range; C is 3 for RGB), any float dtype and device.
        boxes: ``[B, R, 4]`` ``(x0, y0, x1, y1)`` in pixels of THIS image frame, pixel-index
            convention (from :func:`focal_boxes`; scale them yourself if the keypoints were measured
            in another frame). Numpy or torch.
        valid: ``bool [B, R]``; an invalid region's crop is exactly zero.
        out_hw: crop size ``(hc, wc)``.

    Returns:
        ``[B, R, C, hc, wc]`` in ``images``' dtype and device (bilinear, each output bin the average
        of roi_align's adaptive samples); differentiable w.r.t. ``images``.

    Raises:
        ValueError: shapes that do not match.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a tensor [B, C, H, W], got {getattr(images, 'shape', type(images))}")
    bsz, c = images.shape[:2]
    bx = torch.as_tensor(np.asarray(boxes) if not isinstance(boxes, torch.Tensor) else boxes)
    vd = torch.as_tensor(np.asarray(valid) if not isinstance(valid, torch.Tensor) else valid)
    if bx.ndim != 3 or bx.shape[0] != bsz or bx.shape[2] != 4:
        raise ValueError(f"boxes must be [B, R, 4] with B={bsz}, got shape {tuple(bx.shape)}")
    r = bx.shape[1]
    if tuple(vd.shape) != (bsz, r):
        raise ValueError(f"valid must be [B, R] = [{bsz}, {r}], got shape {tuple(vd.shape)}")
    hc, wc = int(out_hw[0]), int(out_hw[1])
    if hc <= 0 or wc <= 0:
        raise ValueError(f"out_hw must be positive, got {tuple(out_hw)}")
    dev = images.device
    # roi_align kernels: float32/64 everywhere, float16 on CUDA; others go through float32
    work = images.dtype if images.dtype in (torch.float32, torch.float64) or (
        images.dtype == torch.float16 and images.is_cuda
    ) else torch.float32
    vd = vd.to(device=dev, dtype=torch.bool)
    bx = bx.to(device=dev, dtype=work) + 0.5  # pixel-index -> roi_align's continuous coordinates
    dummy = torch.tensor([0.0, 0.0, 1.0, 1.0], device=dev, dtype=work)  # a harmless box, zeroed below
    bx = torch.where(vd[..., None], bx, dummy)
    idx = torch.arange(bsz, device=dev, dtype=work)[:, None, None].expand(bsz, r, 1)
    rois = torch.cat([idx, bx], -1).reshape(bsz * r, 5)
    crops = roi_align(images.to(work), rois, (hc, wc), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    crops = crops.reshape(bsz, r, c, hc, wc)
    crops = torch.where(vd[:, :, None, None, None], crops, torch.zeros_like(crops))
    return crops.to(images.dtype)
