"""Sampling with posegen's default model: warp, encode, SDEdit-repair, decode (see
:mod:`posegen.repose.latent`).

:class:`LatentReposePipeline` is a diffusers ``DiffusionPipeline`` with the components ``unet`` (a
``UNet2DModel`` from :func:`~posegen.repose.latent.make_denoiser`) and ``scheduler`` (DDIM, ``x0``
prediction). The TAEF2 autoencoder is not saved with the model (its MIT-licensed weights live
outside the repository, ``../shared/weights/taef2``): :func:`load_latent_pipeline` loads it from a
local folder and checks its fingerprint against the one the model was trained with.

A saved pipeline is a folder ``model_index.json`` + ``unet/`` + ``scheduler/``;
``model_index.json`` also holds the sampling defaults (``strength``, ``num_inference_steps``,
``repair_only``, ``repair_strength``, ``turned_head``, ``person_masks``, ``start``; a model saved
before one of them existed has none, and the old behaviour is its default) and the autoencoder
fingerprint.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DiffusionPipeline, UNet2DModel
from diffusers.utils import logging as dlogging
from diffusers.utils.torch_utils import randn_tensor

from ..latent.frame import from_frame_keypoints, letterbox_params, to_frame_keypoints
from ..latent.taef2 import LATENT_SCALE, TAEF2
from .latent import FRAME_HW, latent_conditions, warp_inputs
from .pipeline import _sizes, check_repose_inputs
from .warp import align_pose, limit_placed_limbs

_SEGMENTER_LOCK = threading.Lock()

__all__ = ["LatentReposePipeline", "load_latent_pipeline"]


class LatentReposePipeline(DiffusionPipeline):
    """Re-pose people by a constrained limb warp repaired with latent diffusion (SDEdit).

    Components: ``unet`` (``UNet2DModel``), ``scheduler`` (``DDIMScheduler``); plus the attribute
    ``autoencoder`` (:class:`~posegen.latent.TAEF2`), set by :func:`load_latent_pipeline`.
    """

    model_cpu_offload_seq = "unet"
    #: outputs of ``output_type="np"`` come back at each source image's own size
    returns_source_size = True

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler: DDIMScheduler,
        strength: float = 0.4,
        num_inference_steps: int = 4,
        autoencoder_fingerprint: str = "",
        min_score: float = 0.5,
        repair_only: bool = False,
        repair_strength: float | None = None,
        turned_head: bool = False,
        person_masks: bool = False,
        start: str = "pixel",
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(
            strength=float(strength), num_inference_steps=int(num_inference_steps),
            autoencoder_fingerprint=str(autoencoder_fingerprint), min_score=float(min_score),
            repair_only=bool(repair_only), repair_strength=None if repair_strength is None else float(repair_strength),
            turned_head=bool(turned_head), person_masks=bool(person_masks), start=str(start),
        )  # fmt: skip
        self.autoencoder: TAEF2 | None = None

    def _segmenter(self):
        """The :class:`~posegen.pose.segmentation.PersonSegmenter`, created on first use; one thread
        at a time runs it (its LiteRT interpreter is not thread-safe, and ``augment`` may call the
        pipeline from several threads)."""
        with _SEGMENTER_LOCK:
            if getattr(self, "_person_segmenter", None) is None:
                from .._parallel import Serialized
                from ..pose.segmentation import PersonSegmenter

                self._person_segmenter = Serialized(PersonSegmenter())
        return self._person_segmenter

    @property
    def resolution(self) -> tuple[int, int]:
        """The working frame ``(height, width)`` (256, 128)."""
        return FRAME_HW

    @torch.no_grad()
    def __call__(
        self,
        source_images: Sequence[np.ndarray],
        source_keypoints,
        target_keypoints,
        *,
        source_sizes=None,
        target_sizes,
        num_inference_steps: int | None = None,
        strength: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "np",
        align: bool = True,
        start: str | None = None,
        repair_only: bool | None = None,
        repair_strength: float | None = None,
        turned_head: bool | None = None,
        person_masks: bool | None = None,
        limb_motion_limits: tuple[float | None, float | None] | None = None,
        return_keypoints: bool = False,
    ):
        """Re-pose each source image to its target pose.

        Args:
            source_images: ``B`` RGB images ``uint8 [H_i, W_i, 3]``, any sizes (letterboxed into
                the 256x128 frame, :mod:`posegen.latent.frame`).
            source_keypoints: ``[B, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels of each source.
            target_keypoints: ``[B, 17, 3]`` COCO-17 in pixels of an image of ``target_sizes[i]``.
            source_sizes: ``(width, height)`` the source keypoints refer to (default: each
                image's size; must equal it).
            target_sizes: ``(width, height)`` the target keypoints refer to, one or ``[B, 2]``.
            num_inference_steps: DDIM steps actually run (default: the model's).
            strength: SDEdit strength in ``(0, 1]``: the warped latent is noised to timestep
                ``strength * T`` (0 would return the warp, 1 starts from pure noise; a model trained
                with ``strength_max`` < 1 only knows that range). Default: the model's.
            generator: None, one ``torch.Generator``, or one per sample (sample ``i`` then depends
                only on its own inputs and generator).
            output_type: ``"np"``: a list of ``uint8 [H_i, W_i, 3]`` at each SOURCE's size (the
                frame cropped back and resized); ``"pil"``: the same as PIL images; ``"pt"``:
                ``float32 [B, 3, 256, 128]`` frame tensor in ``[-1, 1]``.
            align: place the target pose on the source person first (translation + uniform scale
                of :func:`~posegen.repose.warp.align_pose`; what ``augment`` wants). False keeps
                the target pose where it is in its own image (mapped through that image's own
                letterbox), as pose-transfer benchmarks with a real target image need.
            start: SDEdit's starting latent: ``"pixel"`` = the encoded pixel-space warp (sharper
                when the whole decoded output is used), ``"latent"`` = the latent-space warp the
                model is conditioned on (no second encoding per image; with ``repair_only`` and
                ``repair_strength`` the outputs match ``"pixel"``'s, SSIM 0.272 vs 0.274 on the
                same-view pairs, ``benchmarks/results/repose_quality-latent-start-nhwc.md``). Default:
                the model's (``"pixel"`` for older models).
            repair_only: paste the model's output only where the warp had to invent pixels (the
                repair mask of :func:`~posegen.repose.latent.warp_inputs`: the source's moved parts
                not covered by the warped body, plus a seam band; with ``repair_strength`` above
                ``strength`` also the head of a person who turns round,
                :func:`~posegen.repose.latent.turned_head_mask`) and keep the warp's real pixels
                elsewhere; False = the decoded model output everywhere. Default: the model's.
            repair_strength: SDEdit strength inside the repair region (the latent cells holding
                any pixel of the repair mask), where the warp's start is a smooth fill the model
                would otherwise keep: a per-cell strength map as in Differential Diffusion (Levin &
                Fried 2023), the rest held at the warp noised to the current timestep until its own
                ``strength`` is reached (blended sampling, Avrahami et al. 2023). None or
                ``<= strength``: one strength everywhere. It needs a model trained on timesteps up
                to ``repair_strength * T``. Default: the model's (None for older models).
            turned_head: with ``repair_strength`` above ``strength``, also repaint the head of a
                person who turns round (:func:`~posegen.repose.latent.turned_head_mask`). Default:
                the model's (False for older models).
            person_masks: remove what the source person carries or wears beyond the skeleton
                (the person mask of :class:`~posegen.pose.segmentation.PersonSegmenter`, BlazePose
                full's segmentation output, on each letterboxed source) near the moved parts along
                with the body (``person`` of :func:`~posegen.repose.latent.warp_inputs`), so that no
                second copy stays behind. Default: the model's (False for older models).
            limb_motion_limits: with ``align``, ``(max_arm, max_leg)`` in source torso lengths: each
                limb of the placed target is turned back toward the source's (bone lengths kept)
                until it moves at most that (:func:`~posegen.pose.keypoints.limit_limb_motion`, the
                source paired as the warp pairs it; None in the pair leaves those limbs): the pose
                the warp can honour (``augment.limit_limb_motion``). None: the placed target as it
                is. Ignored without ``align``.
            return_keypoints: also return the target keypoints used (after alignment and limits),
                ``float32 [B, 17, 3]`` in pixels of ``target_sizes`` (per-axis rescaled from the
                source's pixels, so ``scale_keypoints(kp, target_size, source_size)`` gives them
                on the output image).

        Returns:
            Images as ``output_type`` says; with ``return_keypoints``, ``(images, keypoints)``.

        Raises:
            RuntimeError: no autoencoder loaded.
            ValueError: inconsistent shapes or sizes, an unknown ``output_type`` or ``start``,
                ``strength`` or ``repair_strength`` outside ``(0, 1]``, ``num_inference_steps < 1``.
        """
        if self.autoencoder is None:
            raise RuntimeError("no autoencoder: load the pipeline with posegen.repose.load_pipeline()")
        if output_type not in ("np", "pil", "pt"):
            raise ValueError(f"output_type must be 'np', 'pil' or 'pt', got {output_type!r}")
        if start is None:
            start = str(getattr(self.config, "start", "pixel"))
        if start not in ("pixel", "latent"):
            raise ValueError(f"start must be 'pixel' or 'latent', got {start!r}")
        steps = int(num_inference_steps or self.config.num_inference_steps)
        strength = float(self.config.strength if strength is None else strength)
        if steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {steps}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if repair_strength is None:
            repair_strength = getattr(self.config, "repair_strength", None)
        if repair_strength is not None and not 0.0 < float(repair_strength) <= 1.0:
            raise ValueError(f"repair_strength must be in (0, 1], got {repair_strength}")
        differential = repair_strength is not None and float(repair_strength) > strength
        if isinstance(source_images, np.ndarray) and source_images.ndim == 4:
            source_images = list(source_images)
        images, src_kp, tgt_kp = check_repose_inputs(source_images, source_keypoints, target_keypoints)
        b = len(images)
        own = np.array([(im.shape[1], im.shape[0]) for im in images], dtype=np.float64)
        if source_sizes is not None and not np.allclose(_sizes(source_sizes, b, "source_sizes"), own):
            raise ValueError("source_sizes must equal the source images' own sizes for this pipeline")
        tgt_sizes = _sizes(target_sizes, b, "target_sizes")
        if isinstance(generator, (list, tuple)) and len(generator) != b:
            raise ValueError(f"got {len(generator)} generators for {b} images; pass one per image")
        min_score = float(self.config.min_score)
        if repair_only is None:
            repair_only = bool(getattr(self.config, "repair_only", False))
        if turned_head is None:
            turned_head = bool(getattr(self.config, "turned_head", False))
        if person_masks is None:
            person_masks = bool(getattr(self.config, "person_masks", False))

        boxes = [letterbox_params((im.shape[1], im.shape[0]), FRAME_HW) for im in images]
        frames = np.stack([bx.image_to_frame(im) for bx, im in zip(boxes, images)])
        skp = np.stack([to_frame_keypoints(k, bx) for k, bx in zip(src_kp, boxes)])
        if align:
            used_src_px = align_pose(tgt_kp, src_kp, min_score=min_score)  # source pixels
            if limb_motion_limits is not None:
                used_src_px = limit_placed_limbs(src_kp, used_src_px, *limb_motion_limits, min_score=min_score)
            tkp = np.stack([to_frame_keypoints(k, bx) for k, bx in zip(used_src_px, boxes)])
        else:
            tboxes = [letterbox_params((int(s[0]), int(s[1])), FRAME_HW) for s in tgt_sizes]
            tkp = np.stack([to_frame_keypoints(k, bx) for k, bx in zip(tgt_kp, tboxes)])
            used_src_px = np.stack([from_frame_keypoints(k, bx) for k, bx in zip(tkp, boxes)])

        device, dtype = self.unet.device, self.unet.dtype
        ae = self.autoencoder.to(device)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32) / 255.0
        # one encoding per distinct source image (augment passes each source's K targets together)
        first: dict[int, int] = {}
        which = [first.setdefault(id(im), i) for i, im in enumerate(source_images)]
        uniq = sorted(set(which))
        z_uniq = ae.encode(x[uniq])
        z_src = z_uniq[[uniq.index(w) for w in which]]
        cond, warped_latent = latent_conditions(z_src, skp, tkp, min_score)
        inside = torch.from_numpy(np.stack([bx.inside_mask() for bx in boxes]))[:, None].to(device)
        upscale = [bx.scale[0] for bx in boxes]
        person = None
        if person_masks:
            seg = self._segmenter()
            person = torch.from_numpy(np.stack([seg.mask(f) for f in frames]))[:, None].to(device) * inside
        pixel_warp, repair = warp_inputs(x, skp, tkp, min_score, return_repair=True, inside=inside, upscale=upscale,
                                         turned_head=differential and bool(turned_head), person=person)  # fmt: skip
        z0 = ae.encode(pixel_warp) if start == "pixel" else warped_latent

        # a scheduler of this call's own: its timesteps are state, and calls may run in several threads
        sched = type(self.scheduler).from_config(self.scheduler.config)
        top = float(repair_strength) if differential else strength
        total = max(steps, int(round(steps / top)))
        sched.set_timesteps(total, device=device)
        timesteps = sched.timesteps[total - steps :]
        noise = randn_tensor(z0.shape, generator=generator, device=device, dtype=torch.float32)
        z0 = z0.float()
        lat = sched.add_noise(z0, noise, timesteps[:1].repeat(b))
        if differential:
            # latent cells with any pixel to repair start at repair_strength; the others join at the
            # first timestep <= strength * T, held at the noised warp until then
            regen = F.max_pool2d((repair >= 0.5).float(), LATENT_SCALE) > 0
            t_join = next((t for t in timesteps if t <= strength * sched.config.num_train_timesteps), timesteps[-1])
        cond = cond.to(dtype)
        for t in timesteps:
            if differential and t > t_join:
                lat = torch.where(regen, lat, sched.add_noise(z0, noise, t.repeat(b)))
            pred = self.unet(torch.cat([lat.to(dtype), cond], 1), t).sample.float()
            lat = sched.step(pred, t, lat, generator=generator).prev_sample
        out = ae.decode(lat.float())
        if repair_only:  # keep the warp's real pixels; the model's only where the warp invented them
            out = repair * out + (1.0 - repair) * pixel_warp
        out = out.cpu()

        if output_type == "pt":
            result = out * 2.0 - 1.0
        else:
            u8 = (out.permute(0, 2, 3, 1).numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
            result = [bx.frame_to_image(f) for bx, f in zip(boxes, u8)]
            if output_type == "pil":
                from PIL import Image

                result = [Image.fromarray(r) for r in result]
        if not return_keypoints:
            return result
        kp_out = used_src_px.astype(np.float32).copy()
        rx = (tgt_sizes[:, 0] / own[:, 0]).astype(np.float32)[:, None]
        ry = (tgt_sizes[:, 1] / own[:, 1]).astype(np.float32)[:, None]
        kp_out[..., 0] = (kp_out[..., 0] + 0.5) * rx - 0.5
        kp_out[..., 1] = (kp_out[..., 1] + 0.5) * ry - 0.5
        kp_out[..., 2] = tgt_kp[..., 2]
        return result, kp_out


def load_latent_pipeline(
    path: str | os.PathLike,
    autoencoder: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    check_fingerprint: bool = True,
    autoencoder_precision: str | None = None,
) -> LatentReposePipeline:
    """Load a saved :class:`LatentReposePipeline` and its TAEF2 autoencoder, offline.

    Args:
        path: the model folder (``model_index.json``, ``unet/``, ``scheduler/``).
        autoencoder: the folder with ``taef2_encoder.pth`` / ``taef2_decoder.pth``; None =
            :func:`posegen.latent.default_taef2_dir`.
        check_fingerprint: refuse an autoencoder whose weights differ from the training ones.
        autoencoder_precision: how TAEF2 runs (:data:`posegen.latent.taef2.PRECISIONS`; None =
            ``$POSEGEN_TAEF2_PRECISION``, else ``"auto"``: bfloat16 on a CPU with native bfloat16,
            about 2x faster encoding and decoding, :func:`posegen.latent.taef2.native_bf16`).

    Raises:
        FileNotFoundError: a missing folder or file (named).
        ValueError: unreadable or mismatched weights, an autoencoder fingerprint mismatch, or an
            unknown precision.
    """
    from ..latent.taef2 import load_taef2
    from .latent_train import autoencoder_fingerprint

    p = Path(path)
    for need in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json"):
        if not (p / need).is_file():
            raise FileNotFoundError(f"re-posing model is incomplete: missing {p / need}")
    bar_was_on = dlogging.is_progress_bar_enabled()
    dlogging.disable_progress_bar()
    try:
        pipe = LatentReposePipeline.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot load the re-posing model in {p}: {str(exc).splitlines()[0]}") from exc
    finally:
        if bar_was_on:
            dlogging.enable_progress_bar()
    if tuple(pipe.unet.config.sample_size) != (FRAME_HW[0] // 8, FRAME_HW[1] // 8):
        raise ValueError(
            f"model {p} works on latents {tuple(pipe.unet.config.sample_size)}, this posegen on "
            f"{(FRAME_HW[0] // 8, FRAME_HW[1] // 8)} (a {FRAME_HW[0]}x{FRAME_HW[1]} frame)"
        )
    if autoencoder_precision is None:
        autoencoder_precision = os.environ.get("POSEGEN_TAEF2_PRECISION") or "auto"
    ae = load_taef2(autoencoder, precision=autoencoder_precision)
    want = pipe.config.autoencoder_fingerprint
    if check_fingerprint and want and autoencoder_fingerprint(ae) != want:
        raise ValueError(
            f"the autoencoder in {autoencoder or 'the default TAEF2 folder'} is not the one model {p} was "
            f"trained with (fingerprint {autoencoder_fingerprint(ae)} != {want})"
        )
    pipe.autoencoder = ae
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    return pipe
