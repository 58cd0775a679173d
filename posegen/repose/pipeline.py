"""Sampling: re-pose source images to target poses with a trained :class:`ReposeUNet`.

:class:`ReposePipeline` is a diffusers ``DiffusionPipeline`` with two components, ``unet``
(:class:`~posegen.repose.model.ReposeUNet`) and ``scheduler`` (any sampler of
:mod:`posegen.repose.schedulers`). The reverse process starts from Gaussian noise and applies the
scheduler's update rule with the network conditioned on the source image and the source/target pose
maps (pose-guided diffusion with source conditioning, after PIDM, Bhunia et al. 2023; samplers DDIM,
Song et al. 2021, or DPM-Solver++, Lu et al. 2022, ...).

A saved pipeline is a folder ``model_index.json`` + ``unet/`` + ``scheduler/``; ``model_index.json``
names the unet class by its importable module (``["posegen.repose.model", "ReposeUNet"]``), so
``ReposePipeline.from_pretrained(folder)`` works offline with nothing but posegen installed.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as dlogging
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .model import ReposeUNet
from .render import images_to_tensor, render_poses_tensor, tensor_to_uint8
from .schedulers import make_scheduler

__all__ = ["ReposePipeline", "load_pipeline"]


def _check_local_pipeline(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"re-posing model folder not found: {p}")
    if not (p / "model_index.json").is_file():
        raise FileNotFoundError(
            f"not a saved ReposePipeline (missing {p / 'model_index.json'}); "
            "train one with `posegen train` or point to its model/ folder"
        )
    for sub in ("unet", "scheduler"):
        if not (p / sub).is_dir():
            raise FileNotFoundError(f"saved ReposePipeline is incomplete: missing folder {p / sub}")
    return p


def _sizes(sizes, n: int, what: str) -> np.ndarray:
    arr = np.asarray(sizes, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n, 2)).copy()
    if arr.shape != (n, 2):
        raise ValueError(f"{what} must be one (width, height) or one per sample [{n}, 2], got shape {arr.shape}")
    if (arr <= 0).any():
        raise ValueError(f"{what} must be positive (width, height) pairs")
    return arr


class ReposePipeline(DiffusionPipeline):
    """Generate a source person in target poses.

    Components:
        unet: :class:`~posegen.repose.model.ReposeUNet`.
        scheduler: a diffusers scheduler; switch with
            ``pipe.scheduler = make_scheduler("dpm++", pipe.scheduler.config)``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: ReposeUNet, scheduler):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def resolution(self) -> tuple[int, int]:
        """Output ``(height, width)``, the model's resolution."""
        return self.unet.resolution

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "ReposePipeline":
        """Load a saved pipeline from a **local** folder (never downloads).

        Raises:
            FileNotFoundError: the folder, its ``model_index.json``, ``unet/`` or ``scheduler/`` is
                missing (the message names the path).
        """
        path = _check_local_pipeline(pretrained_model_name_or_path)
        kwargs.setdefault("local_files_only", True)
        bar_was_on = dlogging.is_progress_bar_enabled()
        dlogging.disable_progress_bar()  # the library never prints; diffusers would draw a tqdm bar
        try:
            pipe = super().from_pretrained(str(path), **kwargs)
        finally:
            if bar_was_on:
                dlogging.enable_progress_bar()
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def pose_maps(self, keypoints, image_sizes) -> torch.Tensor:
        """Pose conditioning ``float32 [B, 36, h, w]`` on the unet's device, rendered with the
        unet's own ``pose_sigma`` / ``limb_width`` / ``min_score`` (see :func:`render_pose`).

        Args:
            keypoints: ``[B, 17, 3]`` COCO-17 in pixels of images of ``image_sizes`` ``(w, h)``.
        """
        cfg = self.unet.config
        return render_poses_tensor(
            keypoints,
            image_sizes,
            self.resolution,
            cfg.pose_sigma,
            cfg.limb_width,
            cfg.min_score,
            device=self.unet.device,
            dtype=self.unet.dtype,
        )

    @torch.no_grad()
    def __call__(
        self,
        source_images: Sequence[np.ndarray],
        source_keypoints,
        target_keypoints,
        *,
        source_sizes=None,
        target_sizes,
        num_inference_steps: int = 20,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "np",
        eta: float = 0.0,
    ):
        """Re-pose each source image to its target pose.

        Args:
            source_images: ``B`` RGB images, each ``uint8 [H_i, W_i, 3]`` (any size; resized to the
                model's resolution with a plain bicubic resize), or a ``uint8 [B, H, W, 3]`` array.
            source_keypoints: ``[B, 17, 3]`` COCO-17 ``(x, y, score)`` in pixels of each source image.
            target_keypoints: ``[B, 17, 3]`` COCO-17 in pixels of an image of ``target_sizes[i]``.
            source_sizes: ``(width, height)`` the source keypoints refer to, one or ``[B, 2]``;
                default: each source image's own size.
            target_sizes: ``(width, height)`` the target keypoints refer to, one or ``[B, 2]``
                (e.g. the size of the image the target pose was taken from).
            num_inference_steps: sampler steps.
            generator: None (global RNG), one ``torch.Generator`` for the whole batch, or a list of
                ``B`` generators, one per sample: then sample ``i`` depends only on its own inputs
                and generator, not on the rest of the batch (up to float rounding).
            output_type: ``"np"`` -> ``uint8 [B, h, w, 3]``; ``"pil"`` -> list of ``PIL.Image``;
                ``"pt"`` -> ``float32 [B, 3, h, w]`` tensor in ``[-1, 1]`` (on the CPU).
            eta: DDIM stochasticity (ignored by other samplers); 0 = deterministic DDIM.

        Returns:
            Images at the model's resolution ``(h, w)``, in the format of ``output_type``.

        Raises:
            ValueError: inconsistent batch sizes or shapes, a generator list of the wrong length,
                an unknown ``output_type``, or ``num_inference_steps < 1``.
        """
        if output_type not in ("np", "pil", "pt"):
            raise ValueError(f"output_type must be 'np', 'pil' or 'pt', got {output_type!r}")
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if isinstance(source_images, np.ndarray) and source_images.ndim == 4:
            source_images = list(source_images)
        images = [np.asarray(im) for im in source_images]
        b = len(images)
        if b == 0:
            raise ValueError("no source images given")
        for i, im in enumerate(images):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"source image {i} must be uint8 [H, W, 3] RGB, got {im.dtype} {im.shape}")
        src_kp = np.asarray(source_keypoints, dtype=np.float32)
        tgt_kp = np.asarray(target_keypoints, dtype=np.float32)
        for name, kp in (("source_keypoints", src_kp), ("target_keypoints", tgt_kp)):
            if kp.shape != (b, 17, 3):
                raise ValueError(f"{name} must be [{b}, 17, 3] (one COCO-17 pose per image), got {kp.shape}")
        if source_sizes is None:
            source_sizes = [(im.shape[1], im.shape[0]) for im in images]
        src_sizes = _sizes(source_sizes, b, "source_sizes")
        tgt_sizes = _sizes(target_sizes, b, "target_sizes")
        if isinstance(generator, (list, tuple)):
            if len(generator) != b:
                raise ValueError(f"got {len(generator)} generators for {b} images; pass one per image")
            generator = list(generator)

        device = self.unet.device
        dtype = self.unet.dtype
        h, w = self.resolution
        source = images_to_tensor(images, (h, w)).to(device=device, dtype=dtype)
        source_pose = self.pose_maps(src_kp, src_sizes)
        target_pose = self.pose_maps(tgt_kp, tgt_sizes)

        self.scheduler.set_timesteps(int(num_inference_steps), device=device)
        latents = randn_tensor((b, 3, h, w), generator=generator, device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
        step_params = inspect.signature(self.scheduler.step).parameters
        extra = {}
        if "generator" in step_params:
            extra["generator"] = generator
        if "eta" in step_params:
            extra["eta"] = eta
        for t in self.scheduler.timesteps:
            model_in = self.scheduler.scale_model_input(latents, t)
            pred = self.unet(model_in, t, source, source_pose, target_pose)
            latents = self.scheduler.step(pred, t, latents, **extra).prev_sample

        out = latents.float().clamp(-1.0, 1.0).cpu()
        if output_type == "pt":
            return out
        arr = tensor_to_uint8(out)
        if output_type == "pil":
            return [Image.fromarray(a) for a in arr]
        return arr


def load_pipeline(
    path: str | os.PathLike,
    scheduler: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> ReposePipeline:
    """Load a trained re-posing model folder (a saved :class:`ReposePipeline`), offline.

    Args:
        path: the folder (``model_index.json`` + ``unet/`` + ``scheduler/``), e.g. ``RUN/model``.
        scheduler: None to keep the saved sampler, or a name of :data:`SCHEDULERS` to switch to it
            (same forward process and prediction type as the saved one).
        device: where to run (``"cpu"``, ``"cuda"``, ...).
        dtype: optional weights dtype (e.g. ``torch.float16`` on a GPU).

    Raises:
        FileNotFoundError: missing folder or files (named in the message).
        ValueError: unknown scheduler name.
    """
    pipe = ReposePipeline.from_pretrained(path)
    if scheduler is not None:
        pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to(device)
    if dtype is not None:
        pipe = pipe.to(dtype=dtype)
    return pipe
