"""Pose conditioning maps and image tensors at the model's resolution.

One renderer, :func:`render_pose` (batched: :func:`render_poses`), is shared by training
(:class:`posegen.repose.PairDataset`) and sampling (:class:`posegen.repose.ReposePipeline`), so the
model always sees exactly the same kind of conditioning.

The pose maps follow pose-guided person image generation practice (PATN / PIDM, Bhunia et al. 2023,
"Person Image Synthesis via Denoising Diffusion Model"): one Gaussian heatmap per joint plus one map
per limb, stacked as channels (:data:`POSE_CHANNELS` = 17 + 19 = 36):

- channels ``0..16``: COCO-17 joints in :data:`~posegen.pose.keypoints.COCO17_NAMES` order,
  ``exp(-d^2 / (2 sigma^2))`` with ``d`` the distance (model pixels) from the pixel centre to the
  joint, so the peak is 1 at the joint;
- channels ``17..35``: the 19 limbs of :data:`~posegen.pose.keypoints.COCO17_SKELETON`, in that
  order: 1 within ``limb_width`` model pixels of the segment joining the two joints, then a Gaussian
  falloff ``exp(-(d - limb_width)^2 / (2 limb_width^2))``.

A joint with ``score < min_score`` (or ``score <= 0``) is absent: its heatmap, and every limb that
touches it, is an all-zero channel. Coordinates use posegen's pixel-index convention (the centre of
the top-left pixel is ``(0, 0)``); keypoints are mapped from the image they were measured on to the
model frame with :func:`~posegen.pose.keypoints.scale_keypoints` (a plain resize, like the images).

Images go to the model as ``float32 [3, h, w]`` in ``[-1, 1]`` after a plain (non
aspect-preserving) bicubic resize to the model's resolution (:func:`image_to_tensor`).
"""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from posegen.pose.keypoints import COCO17_SKELETON, NUM_KEYPOINTS, scale_keypoints

__all__ = [
    "POSE_CHANNELS",
    "NUM_LIMBS",
    "render_pose",
    "render_poses",
    "render_poses_tensor",
    "pose_to_rgb",
    "resize_image",
    "image_to_tensor",
    "images_to_tensor",
    "tensor_to_uint8",
]

NUM_LIMBS = len(COCO17_SKELETON)
#: Channels of the pose conditioning: 17 joint heatmaps + 19 limb maps.
POSE_CHANNELS = NUM_KEYPOINTS + NUM_LIMBS

_LIMB_A = np.array([a for a, _ in COCO17_SKELETON], dtype=np.int64)
_LIMB_B = np.array([b for _, b in COCO17_SKELETON], dtype=np.int64)


def _as_sizes(image_sizes, n: int) -> np.ndarray:
    sizes = np.asarray(image_sizes, dtype=np.float64)
    if sizes.shape == (2,):
        sizes = np.broadcast_to(sizes, (n, 2))
    if sizes.shape != (n, 2):
        raise ValueError(f"image sizes must be (width, height) or one per pose [{n}, 2], got shape {sizes.shape}")
    if (sizes <= 0).any():
        raise ValueError(f"image sizes must be positive (width, height), got {sizes.tolist()}")
    return sizes


def render_poses(
    keypoints: np.ndarray,
    image_sizes,
    resolution: tuple[int, int],
    sigma: float,
    limb_width: float,
    min_score: float = 0.5,
) -> np.ndarray:
    """Render a batch of poses (see :func:`render_pose`, which this vectorises).

    Args:
        keypoints: ``float32 [B, 17, 3]`` COCO-17 ``(x, y, score)``; pose ``i`` is in pixels of an
            image of size ``image_sizes[i]``.
        image_sizes: ``(width, height)`` for all poses, or ``[B, 2]`` one per pose.
        resolution: model ``(height, width)``.
        sigma, limb_width, min_score: as in :func:`render_pose`.

    Returns:
        ``float32 [B, 36, h, w]`` in ``[0, 1]``.

    Raises:
        ValueError: wrong keypoint shape, non-positive sizes or parameters.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim != 3 or kp.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape [B, 17, 3] (COCO-17 x, y, score), got {kp.shape}")
    if sigma <= 0 or limb_width <= 0:
        raise ValueError(f"sigma and limb_width must be positive, got {sigma}, {limb_width}")
    h, w = int(resolution[0]), int(resolution[1])
    b = kp.shape[0]
    out = np.zeros((b, POSE_CHANNELS, h, w), dtype=np.float32)
    if b == 0:
        return out
    sizes = _as_sizes(image_sizes, b)
    # map every pose into the model frame (plain resize, pixel centres aligned)
    scaled = np.stack(
        [scale_keypoints(kp[i], (sizes[i, 0], sizes[i, 1]), (w, h)) for i in range(b)]
    )
    x, y = scaled[..., 0], scaled[..., 1]  # [B, 17]
    score = kp[..., 2]
    present = (score >= min_score) & (score > 0) & np.isfinite(x) & np.isfinite(y)
    x = np.where(present, x, 0.0).astype(np.float32)
    y = np.where(present, y, 0.0).astype(np.float32)

    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    # joint heatmaps: separable Gaussians, peak 1 at the joint
    inv = np.float32(1.0 / (2.0 * sigma * sigma))
    gx = np.exp(-((xs[None, None, :] - x[..., None]) ** 2) * inv)  # [B, 17, w]
    gy = np.exp(-((ys[None, None, :] - y[..., None]) ** 2) * inv)  # [B, 17, h]
    heat = gy[..., :, None] * gx[..., None, :]
    out[:, :NUM_KEYPOINTS] = np.where(present[..., None, None], heat, 0.0)

    # limb maps: distance from each pixel centre to the segment a-b
    ax, ay = x[:, _LIMB_A], y[:, _LIMB_A]  # [B, 19]
    bx, by = x[:, _LIMB_B], y[:, _LIMB_B]
    limb_ok = present[:, _LIMB_A] & present[:, _LIMB_B]
    vx, vy = bx - ax, by - ay
    vv = vx * vx + vy * vy
    safe_vv = np.where(vv > 1e-12, vv, 1.0)
    px = xs[None, None, None, :] - ax[..., None, None]  # [B, 19, 1, w]
    py = ys[None, None, :, None] - ay[..., None, None]  # [B, 19, h, 1]
    t = (px * vx[..., None, None] + py * vy[..., None, None]) / safe_vv[..., None, None]
    t = np.where((vv > 1e-12)[..., None, None], np.clip(t, 0.0, 1.0), 0.0)
    dx = px - t * vx[..., None, None]
    dy = py - t * vy[..., None, None]
    d = np.sqrt(dx * dx + dy * dy)
    lw = np.float32(limb_width)
    limb = np.where(d <= lw, 1.0, np.exp(-((d - lw) ** 2) / (2.0 * lw * lw)))
    out[:, NUM_KEYPOINTS:] = np.where(limb_ok[..., None, None], limb, 0.0)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def render_pose(
    keypoints: np.ndarray,
    image_size: tuple[int, int],
    resolution: tuple[int, int],
    sigma: float,
    limb_width: float,
    min_score: float = 0.5,
) -> np.ndarray:
    """Render one pose as conditioning maps at the model's resolution.

    Args:
        keypoints: ``float32 [17, 3]`` COCO-17 ``(x, y, score)`` in pixels of an image of
            ``image_size`` (pixel-index convention, x right, y down).
        image_size: ``(width, height)`` of the image the keypoints were measured on.
        resolution: model ``(height, width)``; keypoints are mapped there with
            :func:`~posegen.pose.keypoints.scale_keypoints` (plain resize).
        sigma: Gaussian heatmap std, in model pixels (``ModelConfig.pose_sigma``).
        limb_width: limb half-width, in model pixels (``ModelConfig.limb_width``); also the std of
            the soft falloff outside it.
        min_score: a joint with a lower score is absent (zero heatmap, zero limbs touching it).

    Returns:
        ``float32 [36, h, w]`` in ``[0, 1]``: 17 joint heatmaps (COCO-17 order, peak 1 at the
        joint) then 19 limb maps (:data:`~posegen.pose.keypoints.COCO17_SKELETON` order).

    Raises:
        ValueError: keypoints not ``[17, 3]``, or a non-positive size/sigma/limb width.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.shape != (NUM_KEYPOINTS, 3):
        raise ValueError(f"keypoints must have shape [17, 3] (COCO-17 x, y, score), got {kp.shape}")
    return render_poses(kp[None], [tuple(image_size)], resolution, sigma, limb_width, min_score)[0]


def render_poses_tensor(
    keypoints,
    image_sizes,
    resolution: tuple[int, int],
    sigma: float,
    limb_width: float,
    min_score: float = 0.5,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """:func:`render_poses` as a torch tensor ``[B, 36, h, w]`` on ``device`` (same maps, same values).

    ``keypoints`` may be a numpy array or a tensor ``[B, 17, 3]`` (moved to the CPU to render).
    """
    if isinstance(keypoints, torch.Tensor):
        keypoints = keypoints.detach().float().cpu().numpy()
    maps = render_poses(keypoints, image_sizes, resolution, sigma, limb_width, min_score)
    return torch.from_numpy(maps).to(device=device, dtype=dtype)


def _limb_colours() -> np.ndarray:
    cols = [colorsys.hsv_to_rgb(i / NUM_LIMBS, 0.9, 1.0) for i in range(NUM_LIMBS)]
    return np.array(cols, dtype=np.float32)  # [19, 3] in [0, 1]


def pose_to_rgb(pose_maps: np.ndarray | torch.Tensor) -> np.ndarray:
    """A picture of pose maps for humans: limbs in distinct colours, joints in white, black background.

    Args:
        pose_maps: ``[36, h, w]`` (numpy or tensor) in ``[0, 1]`` from :func:`render_pose`.

    Returns:
        ``uint8 [h, w, 3]`` RGB.
    """
    if isinstance(pose_maps, torch.Tensor):
        pose_maps = pose_maps.detach().float().cpu().numpy()
    m = np.asarray(pose_maps, dtype=np.float32)
    if m.ndim != 3 or m.shape[0] != POSE_CHANNELS:
        raise ValueError(f"pose maps must have shape [36, h, w], got {m.shape}")
    limbs = m[NUM_KEYPOINTS:]  # [19, h, w]
    cols = _limb_colours()
    idx = limbs.argmax(axis=0)
    strength = limbs.max(axis=0)
    rgb = cols[idx] * strength[..., None] * 0.8
    joints = m[:NUM_KEYPOINTS].max(axis=0)[..., None]
    rgb = rgb * (1.0 - joints) + joints
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def resize_image(image: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """Plain (non aspect-preserving) bicubic resize of an RGB image to ``resolution``.

    Args:
        image: ``uint8 [H, W, 3]`` RGB.
        resolution: ``(height, width)``.

    Returns:
        ``uint8 [h, w, 3]`` (the input itself if it already has that size). PIL's bicubic filter
        antialiases when shrinking.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {img.dtype} {img.shape}")
    h, w = int(resolution[0]), int(resolution[1])
    if img.shape[:2] == (h, w):
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC), dtype=np.uint8)


def image_to_tensor(image: np.ndarray, resolution: tuple[int, int] | None = None) -> torch.Tensor:
    """``uint8 [H, W, 3]`` RGB -> ``float32 [3, h, w]`` in ``[-1, 1]`` (resized if ``resolution``)."""
    img = resize_image(image, resolution) if resolution is not None else np.asarray(image)
    if not img.flags.writeable or not img.flags.c_contiguous:
        img = np.array(img, copy=True, order="C")
    t = torch.from_numpy(img).permute(2, 0, 1).float()
    return t / 127.5 - 1.0


def images_to_tensor(images: Sequence[np.ndarray], resolution: tuple[int, int]) -> torch.Tensor:
    """A list of ``uint8 [H_i, W_i, 3]`` RGB images -> ``float32 [B, 3, h, w]`` in ``[-1, 1]``."""
    return torch.stack([image_to_tensor(im, resolution) for im in images])


def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """``[B, 3, h, w]`` (or ``[3, h, w]``) in ``[-1, 1]`` -> ``uint8 [B, h, w, 3]`` (or ``[h, w, 3]``), clipped."""
    x = x.detach().float().cpu().clamp(-1.0, 1.0)
    x = ((x + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()
