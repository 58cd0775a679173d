"""posegen's default re-posing model: a constrained limb warp repaired by latent diffusion.

Don't ask a network to draw a person; move the real pixels and let a small diffusion model fix the
seams. For a source image, its keypoints and a target pose (all in the 256x128 letterbox frame of
:mod:`posegen.latent.frame`):

1. **Warp** (:func:`warp_inputs`): :func:`~posegen.repose.warp.limb_flow` with bounded part
   transforms (singular values clamped to ``[1/1.25, 1.25]``, a similarity torso when the view
   changes, an upright head), and the warped body composited by the warp's weight
   (:func:`~posegen.repose.warp.composite`) over the source with its own person filled in from the
   surroundings (:func:`~posegen.repose.warp.fill_masked`) — the source background stays behind,
   without a ghost of the source's limbs. Legs that leave the frame below a moved hip go too
   (:func:`~posegen.repose.warp.cut_leg_mask`), the letterbox padding is never a background
   sample, and on a plain backdrop (a studio photo, :func:`background_texture`) the removed region
   grows by 12 px (loose clothes reach past the skeleton) and is left to the fill, not the model.
2. **Latents**: the source is encoded with TAEF2 (:mod:`posegen.latent.taef2`, ``[32, 32, 16]``);
   the *conditioning* warp is applied in latent space (the flow resized to 32x16), so training needs
   one encoding per image, never one per pair; the *starting point* of sampling is the encoding of
   the pixel-space composite (sharper).
3. **Denoiser** (:func:`make_denoiser`): a diffusers ``UNet2DModel`` that predicts the target latent
   (``x0``) from ``[x_t, warped latent, source latent, target pose maps (36 ch), warp weight]``
   (133 channels at 32x16).
4. **SDEdit** (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic
   Differential Equations"): the warped latent is noised to ``strength`` (0 = the warp unchanged,
   1 = pure noise) and denoised in a few DDIM steps (Song et al. 2021). With ``repair_strength``
   above ``strength`` the latent cells of the repair mask start from (nearly) pure noise and the
   rest joins at ``strength`` (a per-cell strength map, as Differential Diffusion, Levin & Fried
   2023): the interpolated fill is a smooth blur that SDEdit at 0.4 keeps, so the model must paint
   that region, not touch it up. The model is trained on the whole timestep range it samples,
   with the loss weighted up in that region (:mod:`posegen.repose.latent_train`).
5. **Repair only** (default): the decoded output replaces the pixel warp only inside the repair
   mask of :func:`warp_inputs` (where the warp invented pixels; on a plain backdrop only where the
   body samples outside the source frame), as inpainting pipelines keep the unmasked pixels. Measured on 60 same-view CUHK03 val pairs at step 2400, strength 0.3: SSIM
   0.299 vs 0.292 for the whole decoded image, identity 0.873 vs 0.805 (``benchmarks/repose_quality.py``).

Conventions: keypoints are COCO-17 ``(x, y, score)`` in pixels of the working frame (x right, y
down, pixel-index convention); images ``float32 [B, 3, 256, 128]`` in ``0..1``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from ..latent.taef2 import LATENT_CHANNELS, LATENT_SCALE
from .render import POSE_CHANNELS, render_poses_tensor
from ..pose.keypoints import pose_view
from .warp import CONSTRAINED_WARP, body_mask, composite, cut_leg_mask, fill_masked, limb_flow, person_scale, view_matched_source, warp

__all__ = [
    "FRAME_HW",
    "LATENT_HW",
    "COND_CHANNELS",
    "make_denoiser",
    "flow_for",
    "latent_conditions",
    "pose_maps_latent",
    "predicted_repair_mask",
    "predicted_repair_share",
    "turned_head_mask",
    "warp_inputs",
    "plain_backdrop",
    "background_texture",
    "PLAIN_BACKGROUND",
]

#: The working frame ``(h, w)`` in pixels and its latent size.
FRAME_HW = (256, 128)
LATENT_HW = (FRAME_HW[0] // LATENT_SCALE, FRAME_HW[1] // LATENT_SCALE)
#: Channels of the conditioning concatenated to the noisy latent: warped latent, source latent,
#: target pose maps (17 joint heatmaps + 19 limb maps), warp weight.
COND_CHANNELS = 2 * LATENT_CHANNELS + POSE_CHANNELS + 1
_BODY_GAIN = 2.0
#: :func:`background_texture` below which a background is a plain backdrop (see there)
PLAIN_BACKGROUND = 0.025
_MIN_BACKGROUND = 0.005  # share of the frame below which the background texture is unknown
#: Radius of :func:`turned_head_mask`'s disc in person scales (torso lengths): the head and the top
#: of the shoulders of a standing person. Chosen on the cross-view pairs' OKS (0.25 raised it less).
HEAD_TURN_RADIUS = 0.35
#: how far (person scales) from the source's moving body pixels :func:`warp_inputs` removes the person mask too
_CARRY_REACH = 0.4
#: a source body pixel moving farther than this (person scales) counts as moved for the carry removal
_MOVE_MIN = 0.05
_CUT_LEGS = True  # remove a source's legs below its moved hips when its knees are not found
# pose maps are rendered at twice the latent resolution and average-pooled (smooth, no aliasing)
_POSE_HW = (2 * LATENT_HW[0], 2 * LATENT_HW[1])


def make_denoiser(
    block_out_channels=(64, 128, 192), layers_per_block: int = 2, attention: bool = True, norm_num_groups: int = 32
) -> UNet2DModel:
    """The latent denoiser: a diffusers ``UNet2DModel`` on ``[B, 32 + 101, 32, 16]`` -> ``[B, 32, 32, 16]``.

    Args:
        block_out_channels: widths of the three resolution levels (32x16, 16x8, 8x4).
        layers_per_block: ResNet blocks per level.
        attention: self-attention at the lowest level (and the mid block).
        norm_num_groups: GroupNorm groups.
    """
    down = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D")
    up = ("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D", "UpBlock2D")
    return UNet2DModel(
        sample_size=LATENT_HW,
        in_channels=LATENT_CHANNELS + COND_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=norm_num_groups,
        add_attention=attention,
        attention_head_dim=32,
    )


def flow_for(source_kp, target_kp, flow_hw=_POSE_HW, min_score: float = 0.5):
    """:func:`limb_flow` (with :data:`~posegen.repose.warp.CONSTRAINED_WARP`) for keypoints in :data:`FRAME_HW` pixels,
    computed on a ``flow_hw`` grid (the flow is in normalised coordinates, so a coarse grid serves
    the 32x16 latent).

    Returns:
        ``(grid float32 [B, fh, fw, 2], weight float32 [B, 1, fh, fw])``.
    """
    sx = flow_hw[1] / FRAME_HW[1]
    sy = flow_hw[0] / FRAME_HW[0]

    def scale(kp):
        kp = torch.as_tensor(kp, dtype=torch.float32).clone()
        kp[..., 0] = (kp[..., 0] + 0.5) * sx - 0.5
        kp[..., 1] = (kp[..., 1] + 0.5) * sy - 0.5
        return kp

    return limb_flow(scale(source_kp), scale(target_kp), flow_hw, min_score=min_score, **CONSTRAINED_WARP)


def pose_maps_latent(target_kp, min_score: float = 0.5) -> torch.Tensor:
    """Target pose maps at the latent resolution: ``float32 [B, 36, 32, 16]``, rendered at 64x32
    (joint sigma 1.0, limb width 0.75 pixels there) from keypoints in :data:`FRAME_HW` pixels, then
    2x2 average-pooled."""
    maps = render_poses_tensor(target_kp, (FRAME_HW[1], FRAME_HW[0]), _POSE_HW, 1.0, 0.75, min_score)
    return F.avg_pool2d(maps, 2)


def latent_conditions(source_latent: torch.Tensor, source_kp, target_kp, min_score: float = 0.5):
    """The denoiser's conditioning for a batch.

    Args:
        source_latent: ``float [B, 32, 32, 16]`` TAEF2 latents of the letterboxed sources.
        source_kp, target_kp: ``float [B, 17, 3]`` COCO-17 in :data:`FRAME_HW` pixels.

    Returns:
        ``(cond [B, 101, 32, 16], warped_latent [B, 32, 32, 16])`` in ``source_latent``'s dtype:
        ``cond = [warped latent, source latent, pose maps, warp weight]``; the warped latent is the
        latent-space composite (flow resized to 32x16) of the warped body over the source latent.
    """
    # the source's parts paired as the flow pairs them (by image side when the view flips), so
    # the removed source parts are the ones that move
    source_kp, target_kp = _paired(source_kp, target_kp, min_score)
    grid, weight = flow_for(source_kp, target_kp, min_score=min_score)
    dev, dt = source_latent.device, source_latent.dtype
    grid, weight = grid.to(dev), weight.to(dev)
    background = fill_masked(source_latent, _source_mask(source_kp, target_kp, _POSE_HW, min_score).to(dev))
    warped = composite(source_latent, grid, _opaque(weight), background)
    w_lat = F.avg_pool2d(weight, 2).to(dt)
    pose = pose_maps_latent(target_kp, min_score).to(device=dev, dtype=dt)
    return torch.cat([warped, source_latent, pose, w_lat], 1), warped


def warp_inputs(source_images: torch.Tensor, source_kp, target_kp, min_score: float = 0.5, *,
                return_repair: bool = False, inside: torch.Tensor | None = None, upscale=None, turned_head: bool = True,
                person: torch.Tensor | None = None):  # fmt: skip
    """The pixel-space warp: the warped body composited over the source, ``[B, 3, 256, 128]``.

    Args:
        source_images: ``float [B, 3, 256, 128]`` letterboxed sources in ``0..1``.
        source_kp, target_kp: ``float [B, 17, 3]`` COCO-17 in :data:`FRAME_HW` pixels.
        inside: ``float [B, 1, 256, 128]``, 1 on each image's region of the frame
            (:meth:`posegen.latent.Letterbox.inside_mask`): the edge padding is then no background
            sample (nor part of :func:`background_texture`). None: the whole frame is image.
        upscale: frame pixels per source pixel, ``[B]`` or a number (see :func:`plain_backdrop`).
        return_repair: also return the repair mask ``float32 [B, 1, 256, 128]`` in ``[0, 1]``: where
            the source's moved parts were filled in and the warped body does not cover them, and
            where the body would sample outside the source frame (the only pixels the warp had to
            invent), slightly dilated; on a plain backdrop (:data:`PLAIN_BACKGROUND`) only the
            latter: the interpolated backdrop is already right there. Plus, where the person
            turns round (front onto back or the reverse), the target's head
            (:func:`turned_head_mask` within the warped body, so the background around it is
            kept): the other side of the head has no source pixel either.
        turned_head: include that head region in the repair mask (the sampler leaves it out when
            it does not repaint, ``repair_strength <= strength``: a low-strength pass cannot turn a
            head, and would only soften the face).
        person: ``float [B, 1, 256, 128]`` in ``[0, 1]``, the source's person mask in the frame
            (:class:`posegen.pose.segmentation.PersonSegmenter`), or None. With it, the removed
            (filled, then repaired) region grows to the person mask within :data:`_CARRY_REACH`
            person scales of the source's body pixels that move (by more than :data:`_MOVE_MIN`
            person scales, :func:`_moved_source`): what the person carries or wears beyond the
            skeleton's radii (a handbag, a plastic bag, loose clothes, the far side of a wide
            torso) no longer stays behind as a second copy next to the moved body. What lies
            beyond the parts' radii is not moved (the warped body is drawn within them), so such
            an object may come out cut where the limb that held it moved.

    Body pixels whose source location lies outside the frame (a target head higher or feet lower
    than the source's) have no source pixel: the warp's zero padding would paste black there, so
    the body is made transparent in proportion (``warp`` of a ones image: the share of in-frame
    bilinear taps) and the filled background shows, marked for repair.

    Returns:
        The composite, or ``(composite, repair_mask)``.
    """
    turned = turned_head_mask(source_kp, target_kp, FRAME_HW, min_score) if return_repair and turned_head else None
    source_kp, target_kp = _paired(source_kp, target_kp, min_score)  # as latent_conditions
    grid, weight = limb_flow(source_kp, target_kp, FRAME_HW, min_score=min_score, **CONSTRAINED_WARP)
    dev = source_images.device
    fill = _source_mask(source_kp, target_kp, _POSE_HW, min_score).to(dev)
    if person is not None:
        moved = _moved_source(grid, weight, source_kp, _POSE_HW, min_score).to(dev)
        fill = torch.maximum(fill, _carried(person.to(dev).float(), _near(moved, source_kp, _POSE_HW, min_score)))
    # a plain backdrop (a studio photo): the person's clothes reach past the skeleton's radii, and
    # any backdrop pixel farther out is as good a sample, so the removed region grows by 3 cells of
    # the 64x32 mask (12 px of the frame)
    _, plain = plain_backdrop(source_images, source_kp, inside, min_score, upscale=upscale, person=fill)
    fill = torch.where(plain[:, None, None, None], F.max_pool2d(fill, 7, stride=1, padding=3), fill)
    background = fill_masked(source_images, fill, known=inside)
    wanted = _opaque(weight.to(dev))
    in_frame = warp(torch.ones_like(source_images[:, :1]), grid.to(dev))  # share of in-frame taps
    body = wanted * in_frame
    out = composite(source_images, grid.to(dev), body, background)
    if not return_repair:
        return out
    fill = F.interpolate(fill, size=FRAME_HW, mode="bilinear", align_corners=False)
    # a plain backdrop is filled right by the interpolation, and the repair model (trained on street
    # scenes) would paint texture and a halo into it: only a textured background is repaired
    repair = _repair_mask(fill * (~plain).float()[:, None, None, None], wanted, in_frame, 5)
    return out, repair if turned is None else torch.maximum(repair, turned.to(dev) * wanted)


def predicted_repair_mask(source_kp, target_kp, hw=(FRAME_HW[0] // 2, FRAME_HW[1] // 2), min_score: float = 0.5) -> torch.Tensor:
    """:func:`warp_inputs`' repair mask from the keypoints alone, on a coarse grid.

    The same construction (the source's moved body that the warped body does not cover, plus body
    pixels that would sample outside the source frame, :func:`_repair_mask`) without the images:
    the backdrop is taken as textured (a plain studio backdrop would not be repaired there). Used
    by :func:`predicted_repair_share` (target choice) and by training
    (:class:`~posegen.repose.latent_train.LatentTrainConfig` ``repair_loss_weight``).

    Args:
        source_kp, target_kp: ``float [B, 17, 3]`` COCO-17 in :data:`FRAME_HW` pixels.
        hw: the grid ``(h, w)``; the seam band is ``warp_inputs``' 5 px scaled to it (odd, >= 1).
        min_score: joint presence threshold.

    Returns:
        ``float32 [B, 1, h, w]`` in ``[0, 1]``.
    """
    turned = turned_head_mask(source_kp, target_kp, hw, min_score)
    source_kp, target_kp = _paired(source_kp, target_kp, min_score)
    grid, weight = flow_for(source_kp, target_kp, hw, min_score=min_score)
    fill = F.interpolate(_source_mask(source_kp, target_kp, _POSE_HW, min_score), size=hw, mode="bilinear", align_corners=False)
    wanted = _opaque(weight)
    in_frame = warp(torch.ones_like(fill), grid)
    return torch.maximum(_repair_mask(fill, wanted, in_frame, _seam_band(hw[0])), turned.to(wanted.device) * wanted)


def turned_head_mask(source_kp, target_kp, hw=FRAME_HW, min_score: float = 0.5, radius: float | None = None) -> torch.Tensor:
    """The target's head, where the person turns round: ``float32 [B, 1, h, w]`` in ``[0, 1]``.

    When the source faces the camera and the target faces away, or the reverse
    (:func:`posegen.pose.keypoints.pose_view` facing ``+1`` and ``-1``), the warp moves the
    source's head as it is: a face where the target shows the back of the head, or hair where it
    shows a face. Those pixels have no source: the disc of ``radius`` times the target's person
    scale (:func:`posegen.repose.warp.person_scale`) around the mean of the target's present face
    keypoints (COCO-17 0-4), with :func:`_repair_mask`'s soft seam band; :func:`warp_inputs` and
    :func:`predicted_repair_mask` mark its part inside the warped body for repair, so the model
    repaints the head from the target pose (its face keypoints) and the source latent. Without it
    (``benchmarks/repose_quality.py default --sets cross-view --no-turned-head``,
    ``benchmarks/results/repose_quality-no-head-turn.md``), on the 88 cross-view pairs that turn
    round the pose estimator reads the output as facing the source's way: OKS 0.297 to the target,
    0.463 to the target with left and right swapped; with it, 0.415 and 0.458
    (``repose_quality-head-turn.md``).

    Args:
        source_kp, target_kp: ``float [B, 17, 3]`` COCO-17 in :data:`FRAME_HW` pixels (x right,
            y down), the source's labels as detected (not view-matched).
        hw: the grid ``(h, w)`` the mask is drawn on (the frame scaled).
        min_score: joint presence threshold.
        radius: the disc's radius in person scales; None: :data:`HEAD_TURN_RADIUS`.

    Returns:
        ``float32 [B, 1, h, w]`` on the CPU; all 0 for a pair that does not turn round (same
        facing, a side view or an unknown facing) or whose target has no face keypoint.
    """
    # on the CPU whatever the keypoints' device (callers move the mask to theirs)
    src = torch.as_tensor(source_kp, dtype=torch.float32).reshape(-1, 17, 3).cpu()
    tgt = torch.as_tensor(target_kp, dtype=torch.float32).reshape(-1, 17, 3).cpu()
    h, w = int(hw[0]), int(hw[1])
    out = torch.zeros(tgt.shape[0], 1, h, w)
    if tgt.shape[0] == 0:
        return out
    turn = pose_view(src.numpy(), min_score)["facing"].astype(int) * pose_view(tgt.numpy(), min_score)["facing"].astype(int) < 0
    face = tgt[:, :5]
    present = (face[..., 2] >= min_score) & (face[..., 2] > 0)
    n = present.sum(1)
    todo = torch.from_numpy(turn) & (n > 0)
    if not bool(todo.any()):
        return out
    sy, sx = h / FRAME_HW[0], w / FRAME_HW[1]
    centre = (face[..., :2] * present[..., None]).sum(1) / n.clamp_min(1)[:, None]  # frame pixels
    cx, cy = (centre[:, 0] + 0.5) * sx - 0.5, (centre[:, 1] + 0.5) * sy - 0.5
    r = (HEAD_TURN_RADIUS if radius is None else float(radius)) * person_scale(tgt, FRAME_HW, min_score=min_score) * sy
    ys = torch.arange(h, dtype=torch.float32)[None, :, None]
    xs = torch.arange(w, dtype=torch.float32)[None, None, :]
    disc = ((xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2 <= (r**2)[:, None, None]).float()
    out[:, 0] = disc * todo[:, None, None].float()
    return _seam_soften(out, _seam_band(h))


def predicted_repair_share(source_kp, target_kp, inside: torch.Tensor | None = None, min_score: float = 0.5) -> torch.Tensor:
    """The share of the frame :func:`warp_inputs` would mark for repair, from the keypoints alone.

    The mean of :func:`predicted_repair_mask` at half the frame's resolution (128x64), an upper
    bound on a plain studio backdrop. About 20 ms on one CPU thread, cheap enough to test several
    candidate targets per source (``augment``'s target choice); the filter's
    :func:`posegen.filter.artifacts.invented_fraction` is the exact value. On the 480 targets of
    the README main job (``benchmarks/ghost_check.py --check invented``) the median absolute
    difference to it is 0.002; at 0.2 it flags 92 targets, 88 of the 90 the exact value puts above
    0.2.

    Args:
        source_kp, target_kp: ``float [B, 17, 3]`` COCO-17 in :data:`FRAME_HW` pixels.
        inside: ``float [B, 1, h, w]`` (any size), 1 on each image's region of the frame; None:
            the whole frame.
        min_score: joint presence threshold.

    Returns:
        ``float32 [B]`` in ``[0, 1]``: the mean of the coarse repair mask over ``inside``.
    """
    hw = (FRAME_HW[0] // 2, FRAME_HW[1] // 2)
    repair = predicted_repair_mask(source_kp, target_kp, hw, min_score)
    if inside is None:
        return repair.mean((1, 2, 3))
    ins = (F.interpolate(inside.float(), size=hw, mode="bilinear", align_corners=False) >= 0.5).float()
    return (repair * ins).sum((1, 2, 3)) / ins.sum((1, 2, 3)).clamp_min(1.0)


def plain_backdrop(source_images: torch.Tensor, source_kp, inside: torch.Tensor | None = None, min_score: float = 0.5,
                   *, upscale=None, person: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Is each source photographed against a plain backdrop (a studio photo)?

    Args:
        source_images: ``float [B, 3, 256, 128]`` letterboxed sources in ``0..1``.
        source_kp: ``float [B, 17, 3]`` COCO-17 in :data:`FRAME_HW` pixels.
        inside: as in :func:`warp_inputs`.
        upscale: frame pixels per source pixel, ``[B]`` or a number (:attr:`Letterbox.scale`); an
            enlarged photo's neighbouring frame pixels differ that much less, so the texture is
            multiplied by it where it exceeds 1 (a 64x128 Market-1501 crop is enlarged 2x). None: 1.
        person: the person mask at any size (default: the source's body mask with its cut-off legs,
            as :func:`warp_inputs` removes it).

    Returns:
        ``(texture float32 [B], plain bool [B])``: :func:`background_texture` (per source pixel) and
        ``texture < PLAIN_BACKGROUND``.
    """
    if person is None:
        person = _source_mask(source_kp, source_kp, _POSE_HW, min_score)
    person = F.interpolate(person.to(source_images.device).float(), size=FRAME_HW, mode="bilinear", align_corners=False)
    tex = background_texture(source_images, person, inside)
    if upscale is not None:
        tex = tex * torch.as_tensor(upscale, dtype=tex.dtype, device=tex.device).clamp_min(1.0)
    return tex, tex < PLAIN_BACKGROUND


def background_texture(images: torch.Tensor, person: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
    """How textured the background of each image is: ``float32 [B]``, the mean absolute grey-level
    difference between neighbouring pixels (x plus y, grey in ``0..1``) over the pixels outside
    the person (``person`` dilated by 4 px, below 0.05) and inside the image (``inside`` >= 0.5).

    ``images``: ``float [B, 3, h, w]`` in ``0..1``; ``person``, ``inside``: ``[B, 1, h, w]`` in
    ``[0, 1]`` (``inside`` None: everywhere). NaN where less than 0.5 % of the frame is background
    (a tight crop: the texture is unknown, and NaN is never below :data:`PLAIN_BACKGROUND`).
    Measured on real photos (``benchmarks/background_texture.py``): DeepFashion studio photos
    0.002-0.018 (5th-95th percentile), CUHK03 street crops 0.034-0.091; below
    :data:`PLAIN_BACKGROUND` a background counts as a plain backdrop.
    """
    g = images.float().mean(1, keepdim=True)
    gx = (g[..., 1:, 1:] - g[..., 1:, :-1]).abs()
    gy = (g[..., 1:, 1:] - g[..., :-1, 1:]).abs()
    bg = (F.max_pool2d(person.float(), 9, stride=1, padding=4) < 0.05).float()
    if inside is not None:
        bg = bg * (inside.to(bg) >= 0.5).float()
    bg = bg[..., 1:, 1:]
    n = bg.sum((1, 2, 3))
    tex = ((gx + gy) * bg).sum((1, 2, 3)) / n.clamp_min(1.0)
    # a tight crop with (almost) no background: unknown, never a plain backdrop
    return torch.where(n >= _MIN_BACKGROUND * bg[0].numel(), tex, torch.full_like(tex, float("nan")))


def _repair_mask(removed: torch.Tensor, wanted: torch.Tensor, in_frame: torch.Tensor, band: int) -> torch.Tensor:
    """Where the warp invents pixels, ``[B, 1, h, w]`` in ``[0, 1]``: the ``removed`` source body
    (the fill mask) where the warped body (``wanted * in_frame``) does not cover it, plus body
    pixels whose source lies outside the frame (``wanted * (1 - in_frame)``), grown by a
    ``band``-pixel max filter and softened by a ``band``-pixel mean (a seam band around the region).
    All inputs ``[B, 1, h, w]`` on one grid; ``band`` odd."""
    repair = (removed * (1.0 - wanted * in_frame) + wanted * (1.0 - in_frame)).clamp(0.0, 1.0)
    return _seam_soften(repair, band)


def _seam_band(h: int) -> int:
    """:func:`warp_inputs`' 5 px seam band on a grid ``h`` rows high (the frame scaled; odd, >= 1)."""
    return max(1, int(round(5 * h / FRAME_HW[0])) | 1)


def _seam_soften(mask: torch.Tensor, band: int) -> torch.Tensor:
    """``mask`` ``[B, 1, h, w]`` grown by a ``band``-pixel max filter and softened by a ``band``-pixel
    mean (``band`` odd): the soft seam band around a region to repair."""
    grown = F.max_pool2d(mask, band, stride=1, padding=band // 2)
    return F.avg_pool2d(grown, band, stride=1, padding=band // 2, count_include_pad=False)


def _paired(source_kp, target_kp, min_score: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Source keypoints paired as :func:`limb_flow` pairs them with :data:`CONSTRAINED_WARP` (by
    image side when the view flips, :func:`view_matched_source`), so that the removed source parts
    (:func:`_source_mask`) are the ones that move; both ``float32 [B, 17, 3]``."""
    return view_matched_source(source_kp, target_kp, min_score=min_score), torch.as_tensor(target_kp, dtype=torch.float32)


def _near(body: torch.Tensor, keypoints, hw, min_score: float) -> torch.Tensor:
    """``[B, 1, h, w]`` in ``{0, 1}``: within :data:`_CARRY_REACH` person scales of ``body`` (a soft
    body mask on an ``hw`` grid, taken where it is >= 0.5), by a square max filter whose half-side
    is that reach in grid pixels (:func:`~posegen.repose.warp.person_scale` of each sample's
    keypoints, :data:`FRAME_HW` pixels, scaled to the grid)."""
    s = person_scale(torch.as_tensor(keypoints, dtype=torch.float32), FRAME_HW, min_score=min_score)
    solid = (body >= 0.5).float()
    out = []
    for i in range(body.shape[0]):
        r = max(1, int(round(_CARRY_REACH * float(s[i]) * hw[0] / FRAME_HW[0])))
        out.append(F.max_pool2d(solid[i : i + 1], 2 * r + 1, stride=1, padding=r))
    return torch.cat(out)


def _moved_source(grid: torch.Tensor, weight: torch.Tensor, source_kp, hw, min_score: float) -> torch.Tensor:
    """Where the source's body moves: ``float32 [B, 1, h, w]`` in ``{0, 1}`` on an ``hw`` grid of
    the source frame. Each opaque target body pixel (``weight >= 0.25``, on a grid of the frame
    subsampled to ``hw``) that comes from more than :data:`_MOVE_MIN` person scales away marks the
    source cell it samples (``grid``, :func:`~posegen.repose.warp.limb_flow`'s, :data:`FRAME_HW`)."""
    b, h, w = grid.shape[0], int(hw[0]), int(hw[1])
    g = F.interpolate(grid.permute(0, 3, 1, 2).float(), size=(h, w), mode="bilinear", align_corners=False)  # [B,2,h,w]
    wt = F.interpolate(weight.float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    sx, sy = (g[:, 0] + 1) * w / 2 - 0.5, (g[:, 1] + 1) * h / 2 - 0.5  # sampled source cell, grid pixels
    dev = g.device
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=dev), torch.arange(w, dtype=torch.float32, device=dev), indexing="ij")
    scale = person_scale(torch.as_tensor(source_kp, dtype=torch.float32), FRAME_HW, min_score=min_score).to(dev) * h / FRAME_HW[0]
    far = torch.hypot(sx - xs, sy - ys) > _MOVE_MIN * scale.view(-1, 1, 1)
    hit = (wt.to(dev) >= 0.25) & far & (sx > -0.5) & (sx < w - 0.5) & (sy > -0.5) & (sy < h - 0.5)
    out = torch.zeros(b, h * w, device=dev)
    for i in range(b):
        idx = sy[i][hit[i]].round().long() * w + sx[i][hit[i]].round().long()
        out[i, idx.clamp(0, h * w - 1)] = 1.0
    return out.view(b, 1, h, w)


def _carried(person: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """The person mask (frame grid) on ``near``'s coarser grid (max pooled), kept within ``near``."""
    return (F.adaptive_max_pool2d(person, near.shape[-2:]) * near).clamp(0.0, 1.0)


def _opaque(weight: torch.Tensor) -> torch.Tensor:
    """The warp's weight made opaque on the body (``min(1, 2 w)``): the warped body must hide
    the filled background, not blend with it."""
    return (weight * _BODY_GAIN).clamp(0.0, 1.0)


def _source_mask(source_kp, target_kp, hw, min_score: float) -> torch.Tensor:
    """The mask of the source's body parts that the warp moves: :func:`body_mask` on an ``hw`` grid
    of the source joints that are present in the target too (a part the target pose lacks is not
    moved, so it is not removed either). Keypoints in :data:`FRAME_HW` pixels."""
    src = torch.as_tensor(source_kp, dtype=torch.float32).clone()
    tk = torch.as_tensor(target_kp, dtype=torch.float32)
    t_present = (tk[..., 2] >= min_score) & (tk[..., 2] > 0)
    src[..., 0] = (src[..., 0] + 0.5) * hw[1] / FRAME_HW[1] - 0.5
    src[..., 1] = (src[..., 1] + 0.5) * hw[0] / FRAME_HW[0] - 0.5
    kp = src.clone()
    kp[..., 2] = torch.where(t_present, kp[..., 2], torch.zeros_like(kp[..., 2]))
    mask = body_mask(kp, hw, min_score=min_score, gain=_BODY_GAIN)
    if not _CUT_LEGS:
        return mask
    # a moved hip whose knee the SOURCE lacks: its leg below the frame edge goes too
    legs = src.clone()
    legs[..., 11:13, 2] = kp[..., 11:13, 2]
    return torch.maximum(mask, cut_leg_mask(legs, hw, min_score=min_score, gain=_BODY_GAIN))
